"""The adapter interface every source implements, and the result it returns.

An adapter knows where its source lives (hub id, pinned revision, file patterns in
the hub repo, which a local mirror reproduces as ``<data_dir>/<hub id>/<path>``),
and turns raw rows into the pair contract with the recipe's rules. Every raw row is
accounted for: ``rows_in == kept + sum(dropped.values()) + quarantined``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import pyarrow as pa

Pairing = Literal["best-vs-random", "all-pairs"]


@dataclass(frozen=True)
class CleanOptions:
    """How a source is paired and capped (SPEC section 3); seeded, so deterministic."""

    pairing: Pairing | None = None
    """best-vs-random (v1) or all-pairs (v2); for sources with several responses per prompt."""
    per_prompt: int | None = None
    """At most this many pairs per prompt (SHP: 1 in v1, 5 in v2)."""
    filter: str | None = None
    """A named row filter the source offers (Orca: ``argilla-recommended``); none: every row."""
    seed: int = 42


SINGLE_PAIR_OPTIONS = frozenset({"per_prompt"})
"""Options of a source whose rows are already one chosen/rejected pair each."""
MULTI_RESPONSE_OPTIONS = frozenset({"per_prompt", "pairing"})
"""Options of a source with several rated responses per prompt (pairs are drawn from them)."""


def check_options(adapter: SourceAdapter, options: CleanOptions, where: str = "") -> None:
    """Refuse an option the source does not use (it would be silently ignored), naming both."""
    given = {k for k in ("pairing", "per_prompt", "filter") if getattr(options, k) is not None}
    for key in sorted(given - adapter.options):
        takes = ", ".join(sorted(adapter.options)) or "none"
        raise ValueError(
            f"{where + '.' if where else ''}{key}: source {adapter.name!r} does not use {key!r} "
            f"(it would be ignored); options it takes: {takes}"
        )
    filters = getattr(adapter, "filters", ())
    if options.filter is not None and options.filter not in filters:
        raise ValueError(
            f"{where + '.' if where else ''}filter: {options.filter!r} is not a filter of source {adapter.name!r}; "
            f"its filters: {', '.join(filters) or 'none'}"
        )


class AccountingError(RuntimeError):
    """rows_in != kept + dropped + quarantined: a bug, never a data problem."""


@dataclass
class CleanResult:
    source: str
    rows_in: int
    pairs: pa.Table
    """Pair contract rows."""
    quarantine: pa.Table
    """Quarantine contract rows: source, source_row, reason, raw (JSON)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Rule name -> rows removed by it (SPEC section 9 names)."""
    unit: str = "row"
    """What ``rows_in`` counts. ``row``: one raw row is one candidate comparison. ``candidate``
    (sources with several responses per prompt): ``rows_in`` = the n(n-1)/2 candidate
    comparisons of every prompt with n >= 2 responses + one unit per raw row that cannot
    form any (quarantined, or a prompt with < 2 responses); ``raw_rows`` then says how
    many raw rows were read."""
    raw_rows: int | None = None
    """Raw rows read (equals ``rows_in`` when ``unit == "row"``)."""

    @property
    def quarantine_reasons(self) -> dict[str, int]:
        """Reason code (the part of ``reason`` before ':') -> quarantined rows."""
        codes = [r.split(":", 1)[0] for r in self.quarantine.column("reason").to_pylist()]
        return {c: codes.count(c) for c in sorted(set(codes))}

    @property
    def kept(self) -> int:
        return self.pairs.num_rows

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows

    def check_accounting(self) -> None:
        total = self.kept + sum(self.dropped.values()) + self.quarantined
        if total != self.rows_in:
            raise AccountingError(
                f"{self.source}: rows_in={self.rows_in} but kept={self.kept} + dropped={sum(self.dropped.values())}"
                f" {self.dropped} + quarantined={self.quarantined} = {total}"
            )


class SourceAdapter(Protocol):
    name: str
    """rmflow's source name, e.g. ``hh-rlhf/helpful-base`` or ``ultrafeedback``."""
    hub_id: str
    revision: str
    """Pinned hub revision (commit sha) used when loading from the hub."""
    splits: tuple[str, ...]
    options: frozenset[str]
    """The ``CleanOptions`` its rules read besides ``seed``: ``per_prompt`` (every source: a
    seeded cap of pairs per prompt) and ``pairing`` (sources with several rated responses per
    prompt). A recipe or command giving any other option is refused (``check_options``)."""
    columns: tuple[str, ...] | None
    """The Parquet columns its rules read (a mirror decodes only these); None: all."""
    streams: bool
    """Whether it has ``clean_batches(batches, rows, options, split=...)``: a Parquet mirror is
    then cleaned batch by batch instead of being read whole."""

    def file_patterns(self, split: str) -> list[str]:
        """Glob patterns, relative to the dataset repo root, for one split's files on the hub.

        Alternatives in order of preference (the first that matches is read). A mirror
        also accepts other extensions and the hub's two Parquet layouts (rmcore.data.sources.mirror)."""

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        """Raw rows (as read from the files) -> pairs + quarantine + drop counts."""
