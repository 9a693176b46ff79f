"""Secrets never reach MLflow.

No param or tag whose key names a secret (a key segment "token", "secret", "password" or
"key": ``hf_token``, ``api_key``) is logged, and no param, tag, dataset field or text artifact
may contain the value of an environment variable whose name contains TOKEN/SECRET/PASSWORD/KEY
(e.g. ``HF_TOKEN``): such params/tags are dropped with a warning and such files are refused.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# Environment variable names that hold secrets (substring match: HF_TOKEN, PREFECT_API_KEY...).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY", re.IGNORECASE)
# Param/tag keys that name a secret: one of those words as a whole key segment
# ("hf_token", "api_key", "db.password"), so "tokenizer" or "tokens_per_s" still pass.
SECRET_KEY = re.compile(r"(^|[._\-/])(token|secret|password|passwd|key)($|[._\-/])", re.IGNORECASE)
_MIN_SECRET_LEN = 6
_SCAN_LIMIT = 64 << 20  # bytes; larger files (model weights) are not scanned for secrets


class SecretLeakError(RuntimeError):
    """A file about to be logged contains the value of a secret environment variable."""


# ---------------------------------------------------------------- secrets


def secret_values(env: Mapping[str, str] | None = None) -> set[str]:
    """Values of environment variables whose name looks secret (long enough to be one)."""
    env = os.environ if env is None else env
    return {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}


def is_secret(key: str, value: str, secrets: set[str]) -> bool:
    """True if ``key`` names a secret or ``key``/``value`` holds a secret env value."""
    return bool(SECRET_KEY.search(key)) or any(s in value or s in key for s in secrets)


def redact_mapping(items: Mapping[str, str], *, what: str = "param") -> dict[str, str]:
    """``items`` without secret-looking keys or values holding a secret env value (warns per drop)."""
    secrets = secret_values()
    kept = {}
    for key, value in items.items():
        if is_secret(key, value, secrets):
            log.warning("not logging %s %r: its name or value looks like a secret", what, key)
            continue
        kept[key] = value
    return kept


def check_file_has_no_secret(path: Path) -> None:
    """Raise SecretLeakError if ``path`` (when small enough to scan) contains a secret env value."""
    secrets = secret_values()
    if not secrets or path.stat().st_size > _SCAN_LIMIT:
        return
    data = path.read_bytes()
    for s in secrets:
        if s.encode() in data:
            raise SecretLeakError(
                f"{path}: contains the value of a secret environment variable; remove it before logging"
            )


