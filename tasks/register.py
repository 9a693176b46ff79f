"""The registration task: log the evaluated model to MLflow, register it, apply the champion gate.

Not cached (it writes to the registry) but idempotent: a version that already holds the
same model folder is reused, so a rerun or a retry never registers a duplicate; of two runs
registering the same folder at once, the later version is withdrawn.
"""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

import tracking
from tracking import registry


def existing_version(name: str, model_digest: str) -> int | None:
    """A version of ``name`` whose model folder has this digest, from any run."""
    versions = tracking.client().search_model_versions(
        f"name = '{tracking.quote_filter_value(name)}' and tags.`{registry.TAG_MODEL_DIGEST}` = '{model_digest}'"
    )
    return min((int(v.version) for v in versions), default=None)


@task(name="register", task_run_name="register {name}", retries=2, retry_delay_seconds=5)
def register_task(
    model_dir: str,
    *,
    name: str,
    run_id: str,
    tags: dict[str, str],
    rewardbench_overall: float | None,
    promote: bool,
) -> dict:
    """Register a model version (alias ``candidate``); promote to ``champion`` through the gate."""
    logger = get_run_logger()
    digest = registry.model_dir_digest(model_dir)
    version = existing_version(name, digest)
    score = float("nan") if rewardbench_overall is None else float(rewardbench_overall)
    if version is None:
        reg = registry.register_reward_model(
            model_dir, name=name, run_id=run_id, tags=tags, rewardbench_overall=score
        )
        version, created = reg.version, reg.created
        first = existing_version(name, digest)
        if created and first is not None and first < version:
            # Another run registered the same folder at the same moment (the check above and
            # the registration are not one atomic step): keep the earliest version, drop ours.
            tracking.client().delete_model_version(name, str(version))
            tracking.client().set_registered_model_alias(name, registry.CANDIDATE, str(first))
            logger.info("%s v%d holds the same model folder: v%d withdrawn", name, first, version)
            version, created = first, False
    else:
        tracking.client().set_registered_model_alias(name, registry.CANDIDATE, str(version))
        created = False
        logger.info("model folder already registered as %s v%d: not registering it again", name, version)
    result = {"name": name, "version": version, "created": created, "model_uri": f"models:/{name}/{version}"}
    if promote:
        decision = registry.promote_if_better(name, version, score)
        result["gate"] = decision.to_dict()
        logger.info("champion gate: %s", decision.reason)
    result["champion"] = registry.current_champion(name)
    return result
