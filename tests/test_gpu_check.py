"""The GPU check (bench/gpu_check.py, issue 14) stays runnable while no GPU is lent.

``--dry`` runs the script's own code path on CPU (tiny Llama, fp32, max length 128, TRL's
RewardTrainer, rmflow's packed training and a 2-step ZeRO-2 launch through torchrun) and must
print one JSON line with every key the GPU run prints. The arithmetic behind the reported numbers
and the synthetic tokenizer are checked by hand below, without a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check

KEYS = {
    "ok", "mode", "device", "cpu", "versions", "flash_attn", "model", "max_length", "dtype", "batch_pairs",
    "micro_batch", "warmup_steps", "timed_steps", "pairs", "mean_sequence_tokens", "gradient_checkpointing",
    "attention", "rmflow_packed", "tokens_per_s", "ratio_rmflow_vs_trl", "padding_efficiency",
    "rmflow_grouped_padding_efficiency", "step_s", "real_tokens_per_pair", "model_tflops", "peak_tflops", "mfu",
    "mfu_of_measured_peak", "peak_gpu_mem_gib", "peak_rss_mib", "first_last_loss", "zero2_launch", "skipped",
    "wall_s", "errors",
}  # fmt: skip


def test_tokenizer_gives_one_token_per_word_plus_two_per_message():
    tok = gpu_check.build_tokenizer(vocab=20, max_length=64)
    assert len(tok) == 20
    msgs = [{"role": "user", "content": "t1 t2"}, {"role": "assistant", "content": "t3"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    # <|user|>=4, t1=6+1, t2=6+2, </s>=2, <|assistant|>=5, t3=6+3, </s>=2 (6 specials first)
    assert tok(text, add_special_tokens=False)["input_ids"] == [4, 7, 8, 2, 5, 9, 2]


def test_synthetic_pairs_fit_max_length_and_spread():
    plan = gpu_check.DRY_PLAN
    lengths = gpu_check.synthetic_lengths(plan)
    assert len(lengths) == plan.pairs == (1 + 2) * 4
    sides = [p + side + 4 for p, c, r in lengths for side in (c, r)]  # 2 template tokens per message
    assert max(sides) <= plan.max_length
    assert min(sides) < max(sides)  # lengths vary: TRL's padding has something to pad


def test_summary_skips_warmup_and_works_out_rates_and_mfu():
    plan = gpu_check.DRY_PLAN  # warmup 1; 2 layers, hidden 64
    step = {"seconds": 0.5, "real": 100, "processed": 200, "pairs": 2, "sum_sq": 2500}
    run = {"steps": [{**step, "seconds": 9.0, "real": 1}, step, step]}
    s = gpu_check.summarize(run, plan, params=1000, peak=1e-5, measured=2e-5)
    assert s["tokens_per_s"] == 200  # 200 real tokens in 1.0 s; the 9 s warm-up step is not counted
    assert s["padding_efficiency"] == s["grouped_padding_efficiency"] == 0.5
    assert s["step_s"] == 0.5 and s["real_tokens_per_pair"] == 50
    # 6 * 1000 params * 200 tokens + 6 * 2 layers * 64 * (2500 + 2500) = 1.2e6 + 3.84e6 FLOP in 1 s
    assert s["model_tflops"] == pytest.approx(5.04e-6)
    assert s["mfu"] == pytest.approx(0.504) and s["mfu_of_measured"] == pytest.approx(0.252)
    packed = gpu_check.summarize({**run, "packed": True}, plan, params=1000, peak=None, measured=2e-5)
    assert packed["padding_efficiency"] == 1.0 and packed["mfu"] is None


def test_dense_bf16_peak_by_card_name():
    assert gpu_check.spec_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_check.spec_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.spec_peak_tflops("NVIDIA H200") == 989.4
    assert gpu_check.spec_peak_tflops("Tesla T4") is None


@pytest.fixture(scope="module")
def dry() -> tuple[int, dict, str]:
    for name in ("trl", "datasets", "deepspeed"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(
                f"{name} is not installed (the dry check runs TRL and DeepSpeed: rmflow[dev,deepspeed])"
            )
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (
        f"stdout must be one JSON line: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-4000:]}"
    )
    return proc.returncode, json.loads(lines[0]), proc.stderr


@pytest.mark.slow
def test_dry_run_prints_every_key_of_the_gpu_run(dry):
    """~1 min here (5 Python processes on CPU); DeepSpeed also compiles its CPU shm comm op on
    first use in a TORCH_EXTENSIONS_DIR (1-2 min more)."""
    code, out, stderr = dry
    assert out["ok"] and not out["errors"] and code == 0, f"{out.get('errors')}\n{stderr[-4000:]}"
    assert KEYS <= out.keys(), f"missing keys: {sorted(KEYS - out.keys())}"
    assert out["mode"] == "dry" and out["dtype"] == "fp32" and out["max_length"] == 128
    assert out["model"]["layers"] == 2 and out["model"]["hidden"] == 64


@pytest.mark.slow
def test_dry_run_values_are_sane(dry):
    _, out, _ = dry
    assert out["ratio_rmflow_vs_trl"] > 0
    assert all(out["tokens_per_s"][k] > 0 for k in ("trl", "rmflow"))
    assert out["rmflow_packed"] is True
    assert out["padding_efficiency"]["rmflow"] >= 0.95
    assert 0 < out["padding_efficiency"]["trl"] < 1  # TRL pads each batch to its longest sequence
    assert out["peak_gpu_mem_gib"] == {"trl": None, "rmflow": None}  # no GPU in dry mode
    assert all(0 < out["mfu_of_measured_peak"][k] for k in ("trl", "rmflow"))
    zero2 = out["zero2_launch"]
    assert zero2["finished"] is True and zero2["error"] is None
    assert zero2["steps"] == 2 and zero2["processes"] == 1 and zero2["model_saved"] is True
