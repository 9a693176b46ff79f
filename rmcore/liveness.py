"""Who owns a piece of work on this machine, and whether that process still exists.

Temp files (rmcore.io) and the MLflow runs of pipelines (tracking.orphan_runs) record the writer's
pid and a digest of the host name; a later run removes or closes only what belongs to this host
and to a process that no longer exists, never the work of a live concurrent run.
"""

from __future__ import annotations

import hashlib
import os
import socket

HOST_DIGEST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
"""8 hex digits naming this host (the name itself is not written anywhere)."""


def process_gone(pid: int) -> bool:
    """True only if no process ``pid`` exists on this host (a zombie or another user's counts as alive)."""
    if pid <= 0:
        return False  # 0 / negative address process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. EPERM: it exists
    return False
