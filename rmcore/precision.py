"""bf16 or fp32, chosen by measurement: ``resolve_precision(requested, device, ...)``.

A CPU's bf16 speed cannot be told from its name. Measured with torch 2.13 on 2 cores:
with AMX or AVX512-BF16 a bf16 matmul runs at ~390-440 GFLOP/s against ~140 for fp32; on
an AVX2-only CPU bf16 falls back to a reference kernel at ~0.9 GFLOP/s, 150x slower than
fp32 (bench/RESULTS.md). So ``bf16: auto`` (the default for training and evaluation):

- on CUDA: bf16 when ``torch.cuda.is_bf16_supported()``;
- on CPU: a one-off probe times a matmul of the model's own layer shape (hidden x
  intermediate) in both dtypes, in well under a second, and bf16 is picked only when it is
  at least ``BF16_MIN_SPEEDUP`` times faster than fp32 (only the matmuls gain; casts,
  norms and the master-weight copies cost extra). The result is cached per machine in the
  user's cache dir, keyed by the CPU model and flags, torch's CPU capability, the oneDNN ISA
  cap, the thread count, the torch version and the shape.

An explicit ``bf16: true`` on a device where bf16 is slower than fp32 runs as asked and
warns once with the two measured rates. The choice and its reason go to the log, the
training summary and the MLflow params (``Precision.as_params``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BF16_MIN_SPEEDUP = 1.3
"""bf16 matmuls must beat fp32 by this factor on CPU before ``auto`` picks bf16: on the fast
CPUs seen so far they win 2.8-3x, on AVX2-only CPUs they lose 150x, so any cut-off between
1.1 and 2.5 makes the same choices; 1.3 leaves room for the casts bf16 training adds."""
PROBE_ROWS = 512
"""Rows (tokens) of the probe matmul: one micro-batch's worth, the shape training runs."""
MIN_PROBE_HIDDEN = 256
"""Smaller models are probed at hidden 256 x intermediate 1024."""
PROBE_SECONDS = 0.15
"""Time budget per dtype; a dtype whose first call alone exceeds it is measured by that call."""

Probe = Callable[[int, int], dict[str, float]]
"""``probe(hidden, intermediate) -> {"bf16": GFLOP/s, "fp32": GFLOP/s}``."""

_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Precision:
    """The dtype a run computes in, and why."""

    bf16: bool
    requested: str
    """What the config asked for: "auto", "true" or "false"."""
    reason: str
    device: str
    bf16_gflops: float | None = None
    fp32_gflops: float | None = None

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def as_params(self) -> dict[str, Any]:
        """Flat params for MLflow / summaries: ``precision``, ``precision_requested``, ..."""
        out: dict[str, Any] = {
            "precision": self.name,
            "precision_requested": self.requested,
            "precision_reason": self.reason,
        }
        if self.bf16_gflops is not None:
            out["probe_bf16_gflops"] = round(self.bf16_gflops, 1)
            out["probe_fp32_gflops"] = round(self.fp32_gflops or 0.0, 1)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Precision:
        """The inverse of ``to_dict`` (a stored training summary back to an object)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def resolve_for_model(
    requested: bool | str, device: Any, hf_config: Any, *, probe: Probe | None = None
) -> Precision:
    """``resolve_precision`` probed at a model's own layer shape (its text config's hidden and
    intermediate sizes), logged with its reason."""
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    precision = resolve_precision(
        requested,
        device,
        hidden=int(getattr(text, "hidden_size", 0) or 768),
        intermediate=getattr(text, "intermediate_size", None),
        probe=probe,
    )
    log.info("precision: %s (%s)", precision.name, precision.reason)
    return precision


def resolve_precision(
    requested: bool | str,
    device: Any,
    *,
    hidden: int,
    intermediate: int | None = None,
    probe: Probe | None = None,
    cache_dir: Path | None = None,
) -> Precision:
    """bf16 or fp32 for ``device`` (a torch.device or "cpu"/"cuda") given the config's ``bf16``.

    ``probe`` replaces the CPU measurement (tests); ``cache_dir`` the user's cache dir.
    """
    import torch

    device_type = getattr(device, "type", str(device))
    asked = "auto" if requested == "auto" else ("true" if requested else "false")
    if asked == "false":
        return Precision(False, asked, "bf16: false in the config", device_type)
    if device_type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if asked == "true":
            return Precision(True, asked, "bf16: true in the config", device_type)
        why = "this GPU supports bf16" if supported else "this GPU has no bf16 support"
        return Precision(supported, asked, f"auto: {why}", device_type)
    if device_type != "cpu":
        return Precision(asked == "true", asked, f"auto: no probe for device {device_type!r}", device_type)
    # at a tiny model's own sizes (hidden 16-64) a matmul measures call overhead, not the dtype
    hidden, inter = max(hidden, MIN_PROBE_HIDDEN), max(intermediate or 4 * hidden, 4 * MIN_PROBE_HIDDEN)
    rates = (probe or cached_cpu_probe(cache_dir))(hidden, inter)
    bf, fp = float(rates["bf16"]), float(rates["fp32"])
    fast = bf >= BF16_MIN_SPEEDUP * fp
    measured = f"bf16 matmul {bf:.1f} GFLOP/s vs fp32 {fp:.1f} on this CPU ({hidden}x{inter})"
    if asked == "true":
        if bf < fp:
            key = (measured, "slow")
            if key not in _warned:
                _warned.add(key)
                log.warning(
                    "bf16: true runs as asked, but bf16 is %.0fx SLOWER than fp32 here: %s. "
                    "Set bf16: auto (or false) to compute in fp32.",
                    fp / max(bf, 1e-9), measured,
                )
        return Precision(True, asked, f"bf16: true in the config; {measured}", device_type, bf, fp)
    verdict = "bf16 is faster" if fast else f"bf16 is not {BF16_MIN_SPEEDUP}x faster"
    return Precision(fast, asked, f"auto: {verdict}: {measured}", device_type, bf, fp)


def default_cache_dir() -> Path:
    """The user's cache dir for rmflow (``$XDG_CACHE_HOME/rmflow``, else ``~/.cache/rmflow``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rmflow"


def machine_key(hidden: int, intermediate: int) -> str:
    """What a probe result depends on: CPU model + flags, torch and its ISA caps, threads, shape."""
    import torch

    cpu = _cpuinfo()
    parts = {
        "cpu": cpu.get("model name", platform.processor()),
        "flags": cpu.get("flags", ""),
        "torch": torch.__version__,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "threads": torch.get_num_threads(),
        "shape": [PROBE_ROWS, hidden, intermediate],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cached_cpu_probe(cache_dir: Path | None = None) -> Probe:
    """The CPU probe, its result kept in ``cache_dir/precision-<machine key>.json``."""

    def probe(hidden: int, intermediate: int) -> dict[str, float]:
        from rmcore.io import write_json

        path = (cache_dir or default_cache_dir()) / f"precision-{machine_key(hidden, intermediate)}.json"
        try:
            cached = json.loads(path.read_text())
            return {"bf16": float(cached["bf16"]), "fp32": float(cached["fp32"])}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        rates = measure_cpu_matmul(hidden, intermediate)
        try:
            write_json(rates | {"measured_at": time.time()}, path)
        except OSError as exc:  # a read-only home still trains; it just probes again next time
            log.info("precision probe not cached (%s): %s", path, exc)
        return rates

    return probe


def measure_cpu_matmul(hidden: int, intermediate: int, rows: int = PROBE_ROWS) -> dict[str, float]:
    """GFLOP/s of a ``[rows, hidden] x [hidden, intermediate]`` matmul in bf16 and fp32."""
    return {name: _gflops(name, rows, hidden, intermediate) for name in ("bf16", "fp32")}


def _gflops(name: str, rows: int, k: int, n: int) -> float:
    import torch

    dtype = torch.bfloat16 if name == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, k, generator=gen).to(dtype)
    b = torch.randn(k, n, generator=gen).to(dtype)
    flop = 2.0 * rows * k * n
    t0 = time.perf_counter()
    torch.matmul(a, b)  # warm-up; on a slow-path CPU this one call says enough
    first = time.perf_counter() - t0
    if first > PROBE_SECONDS:
        return flop / first / 1e9
    best, end = 0.0, time.perf_counter() + PROBE_SECONDS
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, flop / (time.perf_counter() - t0) / 1e9)
    return best


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out


def cpu_description() -> dict[str, str]:
    """CPU model and the flags that decide matmul speed (for benchmarks and reports)."""
    import torch

    info = _cpuinfo()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    flags = [f for f in info.get("flags", "").split() if f in wanted]
    return {
        "model": info.get("model name", platform.processor() or platform.machine()),
        "flags": " ".join(flags),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
    }
