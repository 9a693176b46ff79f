"""The rmcore version as cache keys see it: release version + a digest of the library's source.

A Prefect task's own source hash does not see changes inside rmcore, so every cache key
includes this fingerprint: editing a cleaning rule invalidates the caches that depend on it.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import rmcore

_ROOTS = (Path(rmcore.__file__).parent, Path(rmcore.__file__).parent.parent / "data_contracts")


@lru_cache(maxsize=1)
def rmcore_fingerprint() -> str:
    h = hashlib.sha256(rmcore.__version__.encode())
    for root in _ROOTS:
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return f"{rmcore.__version__}+{h.hexdigest()[:12]}"
