"""Model registry: register a trained reward model as a raw-reward pyfunc; the champion gate.

``register_reward_model`` logs the model folder into the pipeline's MLflow run as a
models-from-code pyfunc (``reward_pyfunc_entry.py``, no pickle), registers a version with
lineage tags and points the alias ``candidate`` at it. Registering the same run + model
folder again returns the existing version (found by run id and model-folder digest).

``promote_if_better`` moves ``champion`` to a version only if its RewardBench overall is
not lower than the current champion's (the first scored version becomes champion), and
records the decision on the version (tags), on its run (tags) and in the returned object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import tracking

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"
TAG_MODEL_TYPE = "rmflow.model_type"
"""Model-version and run tag: bt, listwise or regression (a version without it is bt: registered
before model types existed)."""


def champion_alias(model_type: str = "bt") -> str:
    """The alias of a model type's champion: ``champion`` for Bradley-Terry (as always), else
    ``champion-<type>``. The gate compares like with like: a listwise model never takes the place
    of a Bradley-Terry champion, nor is measured against it."""
    return CHAMPION if model_type == "bt" else f"{CHAMPION}-{model_type}"


MODEL_ARTIFACT = "reward_model"
TAG_MODEL_DIGEST = "rmflow.model_digest"
TAG_SCORE = "rmflow.rewardbench_overall"
TAG_DECISION = "rmflow.gate.decision"
TAG_REASON = "rmflow.gate.reason"
TAG_CHAMPION_BEFORE = "rmflow.gate.champion_before"

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent


@dataclass(frozen=True)
class RegistrationResult:
    name: str
    version: int
    model_uri: str
    """``models:/NAME/VERSION``."""
    run_id: str
    created: bool
    """False when the same run + model folder was already registered (idempotent retry)."""
    model_digest: str


@dataclass(frozen=True)
class GateDecision:
    name: str
    version: int
    score: float
    promoted: bool
    champion_before: int | None
    champion_score: float | None
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def model_dir_digest(model_dir: str | Path) -> str:
    """sha256 over the folder's relative file paths and bytes (identifies a saved model)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\x00")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc (given explicitly: MLflow's inference
    would load the model in a subprocess just to find them)."""
    reqs = []
    for dist in (
        "mlflow",
        "torch",
        "transformers",
        "tokenizers",
        "safetensors",
        "pandas",
        "numpy",
        "pyarrow",
        "pyyaml",
    ):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def reward_signature():
    """The pyfunc's schema: rows of ``prompt`` + ``response`` or of ``messages`` (each column
    optional; ``prompt`` may be a string or a list of messages) -> one float ``reward``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema(
        [
            ColSpec(AnyType(), "prompt", required=False),
            ColSpec("string", "response", required=False),
            ColSpec(AnyType(), "messages", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "reward")]))


def pyfunc_model_kwargs(model_dir: str | Path, *, batch_size: int = 16) -> dict:
    """Arguments for ``mlflow.pyfunc.log_model``/``save_model``: models-from-code entry, the
    folder as artifact, rmcore + data_contracts + reward_pyfunc.py as code, pinned requirements."""
    model_dir = Path(model_dir)
    reward_json = model_dir / "rmflow_reward.json"
    meta = {"rmflow_reward": json.loads(reward_json.read_text())} if reward_json.exists() else {}
    return {
        "python_model": str(_HERE / "reward_pyfunc_entry.py"),
        "artifacts": {MODEL_ARTIFACT: str(model_dir)},
        "code_paths": [str(_ROOT / "rmcore"), str(_ROOT / "data_contracts"), str(_HERE / "reward_pyfunc.py")],
        "pip_requirements": _requirements(),
        "model_config": {"batch_size": batch_size},
        "signature": reward_signature(),
        "metadata": meta,
    }


def log_reward_pyfunc(run_id: str, model_dir: str | Path, *, batch_size: int = 16) -> str:
    """Log ``model_dir`` as the raw-reward pyfunc into run ``run_id``; return the model URI.

    rmcore, data_contracts and reward_pyfunc.py travel in the model's code/ directory.
    """
    import mlflow

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"{model_dir}: not a saved model folder (no config.json); pass the training output"
        )
    for f in model_dir.rglob("*"):
        if f.is_file():
            tracking.check_file_has_no_secret(f)
    kwargs = {"name": MODEL_ARTIFACT, **pyfunc_model_kwargs(model_dir, batch_size=batch_size)}
    active = mlflow.active_run()
    if active is not None and active.info.run_id != run_id:
        raise RuntimeError(
            f"another MLflow run ({active.info.run_id}) is active; cannot log the model into {run_id}"
        )
    if active is not None:
        info = mlflow.pyfunc.log_model(**kwargs)
    else:
        status = tracking.client().get_run(run_id).info.status
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(**kwargs)
        if status == "RUNNING":  # leaving start_run() marked the pipeline's run FINISHED
            tracking.client().update_run(run_id, status="RUNNING")
    return info.model_uri


def discard_unfinished_models(run_id: str) -> list[str]:
    """Delete the run's ``reward_model`` logged models that never finished (status PENDING: a
    registration killed while logging); their ids. Run before logging it again, so the run holds
    one finished model, not a dead one beside it."""
    from mlflow.entities import LoggedModelStatus

    c = tracking.client()
    experiment_id = c.get_run(run_id).info.experiment_id
    models = c.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{tracking.quote_filter_value(run_id)}'",
    )
    dead = [m.model_id for m in models if m.name == MODEL_ARTIFACT and m.status == LoggedModelStatus.PENDING]
    for model_id in dead:
        c.delete_logged_model(model_id)
        log.warning(
            "run %s: deleted logged model %s, left unfinished by a killed registration", run_id, model_id
        )
    return dead


def find_registered_version(name: str, run_id: str, model_digest: str) -> int | None:
    """Version of ``name`` registered from ``run_id`` with this model-folder digest, if any."""
    versions = tracking.client().search_model_versions(
        f"name = '{tracking.quote_filter_value(name)}' and run_id = '{tracking.quote_filter_value(run_id)}'"
    )
    matches = sorted(int(v.version) for v in versions if v.tags.get(TAG_MODEL_DIGEST) == model_digest)
    return matches[0] if matches else None


def register_reward_model(
    model_dir: str | Path,
    *,
    name: str,
    run_id: str,
    tags: dict[str, str],
    rewardbench_overall: float,
) -> RegistrationResult:
    """Register ``model_dir`` (from run ``run_id``) as a version of ``name``; alias ``candidate``.

    ``tags``: lineage for the version (mixture digest, config hash, git revision, ...);
    the RewardBench overall and the model-folder digest are added. Idempotent per
    (run, model folder): a retry returns the version registered before.
    """
    import mlflow

    digest = model_dir_digest(model_dir)
    c = tracking.client()
    version = find_registered_version(name, run_id, digest)
    created = version is None
    if created:
        discard_unfinished_models(run_id)
        model_uri = log_reward_pyfunc(run_id, model_dir)
        all_tags = {
            **{k: str(v) for k, v in tags.items()},
            TAG_MODEL_DIGEST: digest,
            TAG_SCORE: repr(float(rewardbench_overall)),
        }
        all_tags = tracking.redact_mapping(all_tags, what="model version tag")
        mv = mlflow.register_model(model_uri, name, tags=all_tags)
        version = int(mv.version)
        log.info("registered %s version %d from run %s", name, version, run_id)
    else:
        log.info(
            "%s version %d already holds run %s's model (digest %s); not registering again",
            name,
            version,
            run_id,
            digest[:12],
        )
    c.set_registered_model_alias(name, CANDIDATE, str(version))
    return RegistrationResult(name, version, f"models:/{name}/{version}", run_id, created, digest)


def _version_score(name: str, version: int) -> float:
    mv = tracking.client().get_model_version(name, str(version))
    if TAG_SCORE not in mv.tags:
        raise ValueError(
            f"model {name} version {version} has no {TAG_SCORE} tag, so the gate cannot compare it; "
            f"tag it (MlflowClient().set_model_version_tag) or move the {CHAMPION!r} alias by hand"
        )
    return float(mv.tags[TAG_SCORE])


def current_champion(name: str, model_type: str = "bt") -> int | None:
    """Version holding the model type's champion alias (``champion_alias``), or None."""
    from mlflow.exceptions import MlflowException

    try:
        return int(tracking.client().get_model_version_by_alias(name, champion_alias(model_type)).version)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(e).lower():
            return None
        raise


def promote_if_better(name: str, version: int, score: float, model_type: str = "bt") -> GateDecision:
    """Point the champion alias of ``model_type`` at ``version`` if ``score`` >= that champion's
    RewardBench overall (like with like: ``champion_alias``).

    The first version to pass the gate becomes champion; a NaN score never does. The
    decision is tagged on the version and its run and returned with a reason.
    """
    version = int(version)
    score = float(score)
    before = current_champion(name, model_type)
    before_score = _version_score(name, before) if before is not None else None
    void = _unfinished_source(name, before) if before is not None and before != version else None
    if math.isnan(score):
        promoted, reason = False, f"RewardBench overall is NaN; champion stays {before}"
    elif void:
        promoted = True
        reason = (
            f"champion v{before}'s run {void}: not a valid bar (its pipeline never finished); "
            f"RewardBench overall {score:.4f} takes its place"
        )
    elif before is None:
        promoted, reason = True, f"first champion (RewardBench overall {score:.4f})"
    elif before == version:
        promoted, reason = True, f"already champion (RewardBench overall {score:.4f})"
    elif score >= before_score:
        promoted = True
        reason = f"RewardBench overall {score:.4f} >= champion v{before}'s {before_score:.4f}"
    else:
        promoted = False
        reason = f"RewardBench overall {score:.4f} < champion v{before}'s {before_score:.4f}; champion stays v{before}"
    kind = "" if model_type == "bt" else f" ({model_type} models)"
    decision = GateDecision(name, version, score, promoted, before, before_score, reason + kind)
    _record(decision, champion_alias(model_type))
    return decision


def recorded_decision(name: str, version: int) -> GateDecision | None:
    """The gate decision recorded on a version when it was registered (None if no gate ran for it:
    e.g. the registration was killed before the gate)."""
    tags = tracking.client().get_model_version(name, str(version)).tags
    if TAG_DECISION not in tags:
        return None
    before = tags.get(TAG_CHAMPION_BEFORE) or None
    return GateDecision(
        name, int(version), float(tags.get(TAG_SCORE, "nan")), tags[TAG_DECISION] == "promoted",
        int(before) if before else None, None, tags.get(TAG_REASON, ""),
    )  # fmt: skip


def version_run(name: str, version: int) -> str | None:
    """The MLflow run a version was registered from."""
    return tracking.client().get_model_version(name, str(version)).run_id


def _unfinished_source(name: str, version: int) -> str | None:
    """``"<run id> ended KILLED"`` when the run a version came from was killed or failed, else None:
    such a version was promoted by a pipeline that never finished, so it is no bar for the next."""
    c = tracking.client()
    run_id = c.get_model_version(name, str(version)).run_id
    if not run_id:
        return None
    status = c.get_run(run_id).info.status
    return f"{run_id} ended {status}" if status in ("KILLED", "FAILED") else None


def _record(d: GateDecision, alias: str = CHAMPION) -> None:
    c = tracking.client()
    if d.promoted:
        c.set_registered_model_alias(d.name, alias, str(d.version))
    label = "promoted" if d.promoted else "refused"
    tags = {
        TAG_DECISION: label,
        TAG_REASON: d.reason,
        TAG_CHAMPION_BEFORE: str(d.champion_before or ""),
        TAG_SCORE: repr(d.score),  # later gates compare against the score this one used
    }
    for key, value in tags.items():
        c.set_model_version_tag(d.name, str(d.version), key, value)
    run_id = c.get_model_version(d.name, str(d.version)).run_id
    if run_id:
        tracking.set_tags(run_id, {**tags, "rmflow.gate.version": str(d.version)})
        tracking.log_metrics(run_id, {"gate/promoted": 1.0 if d.promoted else 0.0})
    log.info("gate %s v%d: %s (%s)", d.name, d.version, label, d.reason)
