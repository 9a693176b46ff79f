"""Dispatch of the train stage to a work pool, without workers: which deployment, and the cache
check that comes first (the end-to-end run on the real stack is tests/test_dispatch_stack.py)."""

from __future__ import annotations

import pytest
from train_helpers import train_config

from flows.context import RunContext
from flows.dispatch import DispatchError, cached_model_dir, train_deployment
from rmcore.data.mixtures import MixtureConfig, SourceSpec
from rmcore.recipe import Recipe
from tasks.caching import mark_complete
from tasks.train import TRAIN


@pytest.mark.usefixtures("prefect_harness")
def test_the_train_deployment_is_found_by_its_pool_and_its_absence_is_explained():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with pytest.raises(DispatchError, match=r"no deployment of the rmflow-train flow runs on that pool"):
        train_deployment("gpu-nowhere")

    @flow(name="rmflow-train")
    def stand_in() -> None:
        return None

    with get_client(sync_client=True) as client:
        for pool in ("gpu-dispatch-test", "cpu-dispatch-test"):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
        flow_id = client.create_flow(stand_in)
        client.create_deployment(flow_id=flow_id, name="on-gpu", work_pool_name="gpu-dispatch-test")
        client.create_deployment(flow_id=flow_id, name="elsewhere", work_pool_name="cpu-dispatch-test")
    assert train_deployment("gpu-dispatch-test") == "rmflow-train/on-gpu"


def test_a_cached_model_is_seen_before_any_dispatch(tmp_path):
    train = train_config(model="m", work_pool="gpu")
    ctx = RunContext(Recipe(name="r", data=MixtureConfig(name="r", sources=(SourceSpec("orca"),)), train=train), None, "test", tmp_path)
    mixture = {"path": str(tmp_path / "mix.parquet"), "digest": "d" * 64}
    assert not cached_model_dir(ctx, mixture)
    out = TRAIN.output_dir({"train": train, "mixture_digest": mixture["digest"], "work": str(tmp_path)})
    out.mkdir(parents=True)
    mark_complete(out)
    assert cached_model_dir(ctx, mixture)
    # the placement is not in the key: the same model is found for another pool or rank count
    moved = RunContext(Recipe(name="r", data=MixtureConfig(name="r", sources=(SourceSpec("orca"),)), train=train_config(model="m", processes=1)), None, "test", tmp_path)
    assert cached_model_dir(moved, mixture)
