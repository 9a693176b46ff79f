"""The registration task: log the evaluated model to MLflow, register it, apply the champion gate.

Not cached (it writes to the registry) but idempotent: a version that already holds the
same model folder is reused, so a rerun or a retry never registers a duplicate; of two runs
registering the same folder at once, the later version is withdrawn.
"""

from __future__ import annotations

from prefect import task
from prefect.logging import get_run_logger

import tracking
from tasks.integrity import InputChanged, retry_unless_input_changed
from tracking import registry


def existing_version(name: str, model_digest: str) -> int | None:
    """A version of ``name`` whose model folder has this digest, from any run."""
    versions = tracking.client().search_model_versions(
        f"name = '{tracking.quote_filter_value(name)}' and tags.`{registry.TAG_MODEL_DIGEST}` = '{model_digest}'"
    )
    return min((int(v.version) for v in versions), default=None)


def withdraw_version(name: str, version: int) -> None:
    """Delete a model version and the logged model it was registered from (its run keeps no
    orphaned model: a withdrawn duplicate leaves nothing behind)."""
    c = tracking.client()
    mv = c.get_model_version(name, str(version))
    model_id = getattr(mv, "model_id", None)
    if not model_id and str(mv.source or "").startswith("models:/m-"):  # registered from a logged model
        model_id = str(mv.source).removeprefix("models:/").split("/", 1)[0]
    c.delete_model_version(name, str(version))
    if model_id:
        c.delete_logged_model(model_id)


@task(
    name="register",
    task_run_name="register {name}",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_input_changed,
    persist_result=False,
    result_serializer="json",  # a failed run's exception is still written: as JSON, never pickled
)
def register_task(
    model_dir: str,
    *,
    name: str,
    run_id: str,
    tags: dict[str, str],
    rewardbench_overall: float | None,
    promote: bool,
    model_digest: str | None = None,
    model_type: str = "bt",
) -> dict:
    """Register a model version (alias ``candidate``); promote to ``champion`` through the gate.

    ``model_digest``: the content digest the model was trained and evaluated with; a folder
    that no longer has it is refused (its scores are not its own), never registered.
    ``model_type``: the gate compares like with like (``registry.champion_alias``)."""
    logger = get_run_logger()
    digest = registry.model_dir_digest(model_dir)
    if model_digest is not None and digest != model_digest:
        raise InputChanged(
            f"{model_dir}: its content digest {digest[:16]}... is not {model_digest[:16]}..., the model that "
            "was evaluated: the folder changed after evaluation, so it was not registered. Fix: rerun the "
            "pipeline (`rmflow run RECIPE`): the train stage checks its folder and rebuilds it"
        )
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
            withdraw_version(name, version)
            tracking.client().set_registered_model_alias(name, registry.CANDIDATE, str(first))
            logger.info("%s v%d holds the same model folder: v%d withdrawn", name, first, version)
            version, created = first, False
    else:
        tracking.client().set_registered_model_alias(name, registry.CANDIDATE, str(version))
        created = False
        logger.info("model folder already registered as %s v%d: not registering it again", name, version)
    result = {"name": name, "version": version, "created": created, "model_uri": f"models:/{name}/{version}"}
    past = None if created else registry.recorded_decision(name, version)
    if past is not None:
        # A rerun reusing a registered model: the gate decided when it was registered, and a
        # registry's past does not change (no tag of the version or of its run is rewritten).
        result["gate"] = {**past.to_dict(), "reused": True}
        logger.info(
            "champion gate: decided when v%d was registered (%s); not decided again", version, past.reason
        )
    elif promote:
        decision = registry.promote_if_better(name, version, score, model_type)
        result["gate"] = decision.to_dict()
        logger.info("champion gate: %s", decision.reason)
    if not created:
        result["reused_run"] = registry.version_run(name, version)
    result["champion"] = registry.current_champion(name, model_type)
    result["champion_alias"] = registry.champion_alias(model_type)
    return result
