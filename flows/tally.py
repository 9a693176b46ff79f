"""What a pipeline run recomputed and what it took from the cache, said in one line.

Every cached stage is called through a ``StageTally``: it reads the task's final state in this
process (Prefect names a cache hit "Cached"), so the count is exact and needs no API read-back.
The pipeline ends its log and its summary artifact with ``StageTally.line``, e.g.
"3 recomputed, 23 cached; mixture rebuilt with the same digest 1a2b3c4d5e6f, training reused".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.futures import PrefectFuture

CACHED = "Cached"


class StageTally:
    """Task name -> final state name ("Cached" or "Completed"), in the order they ran."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    def call(self, stage: str, task: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``task`` in this flow run; record whether it ran or was served from the cache."""
        state = task(*args, return_state=True, **kwargs)
        self.states[stage] = state.name
        return state.result()  # raises the task's error when it failed

    def result(self, name: str, future: PrefectFuture) -> Any:
        """The result of a submitted task, recorded like ``call``."""
        future.wait()
        self.states[name] = future.state.name
        return future.result()

    def record(self, name: str, state_name: str) -> None:
        """A stage that ran elsewhere (a train flow run on a work pool)."""
        self.states[name] = state_name

    @property
    def cached(self) -> list[str]:
        return [n for n, s in self.states.items() if s == CACHED]

    @property
    def recomputed(self) -> list[str]:
        return [n for n, s in self.states.items() if s != CACHED]

    def line(self, *, mixture_digest: str | None = None, mixture: str = "mixture", train: str = "train") -> str:
        """"n recomputed, m cached" and what that meant for the mixture and the model."""
        text = f"{len(self.recomputed)} recomputed, {len(self.cached)} cached"
        digest = f" {mixture_digest[:12]}" if mixture_digest else ""
        if mixture in self.states and train in self.states:
            mixture_cached, train_cached = self.states[mixture] == CACHED, self.states[train] == CACHED
            if mixture_cached and train_cached:
                text += f"; mixture digest{digest} unchanged, training reused"
            elif train_cached:
                text += f"; mixture rebuilt with the same digest{digest}, training reused"
            else:
                text += f"; mixture digest{digest}, model trained"
        return text
