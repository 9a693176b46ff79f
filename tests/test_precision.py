"""bf16 or fp32 by measurement (rmcore.precision): the choice, its reason, the cache, the warning."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest
import torch
from train_helpers import tiny_config

from rmcore import precision as P
from rmcore.precision import BF16_MIN_SPEEDUP, Precision, resolve_precision
from rmcore.train import train_reward_model

SLOW_BF16 = {"bf16": 0.9, "fp32": 142.0}  # the AVX2-only EPYC of issue 11
FAST_BF16 = {"bf16": 393.0, "fp32": 142.0}  # AVX512-BF16 / AMX


def fixed(rates):
    calls = []

    def probe(hidden, intermediate):
        calls.append((hidden, intermediate))
        return rates

    probe.calls = calls
    return probe


def test_auto_follows_the_probe_on_cpu():
    slow = resolve_precision("auto", torch.device("cpu"), hidden=384, intermediate=1536, probe=fixed(SLOW_BF16))
    assert slow.bf16 is False and slow.name == "fp32"
    assert slow.reason.startswith("auto: bf16 is not") and "0.9" in slow.reason and "142.0" in slow.reason
    fast = resolve_precision("auto", "cpu", hidden=384, intermediate=1536, probe=fixed(FAST_BF16))
    assert fast.bf16 is True and fast.reason.startswith("auto: bf16 is faster")
    # the cut-off: a bf16 gain below BF16_MIN_SPEEDUP is not worth bf16's extra casts
    edge = {"bf16": 142.0 * BF16_MIN_SPEEDUP * 0.99, "fp32": 142.0}
    assert resolve_precision("auto", "cpu", hidden=384, probe=fixed(edge)).bf16 is False
    params = fast.as_params()
    assert params["precision"] == "bf16" and params["probe_bf16_gflops"] == 393.0


def test_tiny_models_are_probed_at_a_meaningful_shape():
    probe = fixed(FAST_BF16)
    resolve_precision("auto", "cpu", hidden=32, intermediate=64, probe=probe)
    resolve_precision("auto", "cpu", hidden=384, intermediate=1536, probe=probe)
    assert probe.calls == [(256, 1024), (384, 1536)]


def test_explicit_bf16_on_a_slow_cpu_runs_and_warns_once_with_both_rates(caplog):
    P._warned.clear()
    with caplog.at_level(logging.WARNING, logger="rmcore.precision"):
        first = resolve_precision(True, "cpu", hidden=384, intermediate=1536, probe=fixed(SLOW_BF16))
        again = resolve_precision(True, "cpu", hidden=384, intermediate=1536, probe=fixed(SLOW_BF16))
    assert first.bf16 and again.bf16  # runs as asked
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "SLOWER" in warnings[0] and "0.9" in warnings[0] and "142.0" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rmcore.precision"):
        resolve_precision(True, "cpu", hidden=384, intermediate=1536, probe=fixed(FAST_BF16))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_false_never_probes_and_cuda_asks_the_gpu():
    def boom(hidden, intermediate):
        raise AssertionError("probed")

    off = resolve_precision(False, "cpu", hidden=384, probe=boom)
    assert off == Precision(False, "false", "bf16: false in the config", "cpu")
    cuda = resolve_precision("auto", torch.device("cuda"), hidden=384, probe=boom)
    assert cuda.bf16 == torch.cuda.is_bf16_supported() and cuda.reason.startswith("auto: this GPU")


def test_probe_is_measured_once_per_machine_and_cached(tmp_path, monkeypatch):
    measured = []

    def measure(hidden, intermediate):
        measured.append((hidden, intermediate))
        return dict(SLOW_BF16)

    monkeypatch.setattr(P, "measure_cpu_matmul", measure)
    probe = P.cached_cpu_probe(tmp_path)
    assert probe(384, 1536) == SLOW_BF16 and probe(384, 1536) == SLOW_BF16
    assert measured == [(384, 1536)]
    (cached,) = tmp_path.glob("precision-*.json")
    assert json.loads(cached.read_text())["bf16"] == 0.9
    # another ISA cap (the same CPU limited to another ISA) is another machine: measured again
    other = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2" else "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", other)
    probe(384, 1536)
    assert len(measured) == 2 and len(list(tmp_path.glob("precision-*.json"))) == 2


def test_the_real_probe_measures_both_dtypes():
    rates = P.measure_cpu_matmul(256, 1024, rows=64)
    assert set(rates) == {"bf16", "fp32"} and all(math.isfinite(v) and v > 0 for v in rates.values())


@pytest.mark.parametrize(("rates", "engine_bf16"), [(SLOW_BF16, False), (FAST_BF16, True)])
def test_training_records_the_choice(tiny_bert, mixture, tmp_path, rates, engine_bf16, caplog):
    cfg = tiny_config(tiny_bert, bf16="auto", max_steps=2)
    with caplog.at_level(logging.INFO, logger="rmcore"):
        run = train_reward_model(
            cfg, mixture_path=mixture, output_dir=tmp_path / "out", precision_probe=fixed(rates)
        )
    assert run.precision["bf16"] is engine_bf16 and run.precision["requested"] == "auto"
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["precision"] == run.precision
    text = caplog.text
    assert f"precision: {'bf16' if engine_bf16 else 'fp32'} (auto: " in text
    assert ("attention implementation: eager" in text) is engine_bf16  # fp32 on CPU: SDPA
    # progress lines: step/total, loss, accuracy, real tokens/s and an ETA / done
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train step ")]
    assert [line.split(" | ")[0] for line in lines] == ["train step 1/2 (50%)", "train step 2/2 (100%)"]
    assert "loss " in lines[0] and "accuracy " in lines[0] and "real tok/s" in lines[0] and "ETA " in lines[0]
    assert lines[1].endswith("done")


def test_eval_auto_resolves_on_the_device(tiny_bert):
    from rmcore.evaluate.config import EvalConfig
    from rmcore.evaluate.precision import autocast_dtype, load_model_for_eval, precision_name

    config = EvalConfig(bf16_mode="weights")
    _, slow, why = load_model_for_eval(tiny_bert, config, probe=fixed(SLOW_BF16))
    assert slow.bf16 is False and precision_name(slow) == "fp32" and autocast_dtype(slow) is None
    assert "0.9" in why.reason
    model, fast, _ = load_model_for_eval(tiny_bert, config, probe=fixed(FAST_BF16))
    assert precision_name(fast) == "bf16 weights" and next(model.parameters()).dtype == torch.bfloat16
