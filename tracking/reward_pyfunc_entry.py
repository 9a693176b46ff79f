"""MLflow models-from-code entry point: MLflow executes this file to build the pyfunc.

Logged with the model (no pickle): the class comes from ``reward_pyfunc.py`` shipped in
the model's ``code/`` directory, or from the installed rmflow when logging.
"""

import mlflow.models

try:  # loading a logged model: the copy in its code/ directory is on sys.path
    from reward_pyfunc import RewardModelPyfunc
except ImportError:  # logging from an rmflow checkout
    from tracking.reward_pyfunc import RewardModelPyfunc

mlflow.models.set_model(RewardModelPyfunc())
