"""rmcore: the rmflow library. Pure functions and classes; imports neither prefect nor mlflow."""

__version__ = "0.1.0"
