"""Every table rmflow writes, as a pyarrow schema with a name and a version.

A contract lists required columns with their types; ``extra_allowed`` names the
optional columns a table may carry on top (the pair contract allows none but
``meta``: SPEC section 3). ``validate`` names every missing, extra or mistyped
column at once, so one run of a broken stage tells the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

CONTRACT_VERSION = "1.0"

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)


class ContractError(ValueError):
    """A table does not match its contract; the message names the columns."""


@dataclass(frozen=True)
class Contract:
    name: str
    schema: pa.Schema
    extra_allowed: tuple[pa.Field, ...] = field(default_factory=tuple)
    version: str = CONTRACT_VERSION

    @property
    def full_schema(self) -> pa.Schema:
        return pa.schema(list(self.schema) + list(self.extra_allowed))


PAIRS = Contract(
    "pairs",
    pa.schema(
        [
            ("pair_id", pa.string()),
            ("source", pa.string()),
            ("prompt", MESSAGES),
            ("chosen", MESSAGES),
            ("rejected", MESSAGES),
            ("chosen_score", pa.float64()),
            ("rejected_score", pa.float64()),
            ("split", pa.string()),
        ]
    ),
    # Row provenance inside the raw input (row number in its file): lets a user find
    # the original row of any pair. The only extra column the pair contract allows.
    extra_allowed=(pa.field("source_row", pa.int64()),),
)

# A mixture is the pair contract plus the recipe's view of where each row came from.
MIXTURE = Contract(
    "mixture",
    pa.schema(list(PAIRS.schema) + [("subset", pa.string())]),
    extra_allowed=PAIRS.extra_allowed,
)

QUARANTINE = Contract(
    "quarantine",
    pa.schema(
        [
            ("source", pa.string()),
            ("source_row", pa.int64()),
            ("reason", pa.string()),
            ("raw", pa.string()),  # the offending row as JSON text, nothing lost
        ]
    ),
)

RAW_MANIFEST = Contract(
    "raw_manifest",
    pa.schema(
        [
            ("source", pa.string()),
            ("subset", pa.string()),
            ("split", pa.string()),
            ("origin", pa.string()),  # local file path or hub id@revision
            ("revision", pa.string()),
            ("rows", pa.int64()),
            ("sha256", pa.string()),
            ("output", pa.string()),
            ("fetched_at", pa.string()),
        ]
    ),
)

SOURCE_STATS = Contract(
    "source_stats",
    pa.schema(
        [
            ("source", pa.string()),
            ("raw_rows", pa.int64()),  # rows read from the source's files
            ("unit", pa.string()),  # what rows_in counts: "row", or "candidate" comparisons
            ("rows_in", pa.int64()),  # = pairs + sum(dropped) + quarantined, in ``unit``
            ("pairs", pa.int64()),
            ("mean_len_chosen", pa.float64()),
            ("mean_len_rejected", pa.float64()),
            ("max_len", pa.int64()),
            ("dropped", pa.string()),  # JSON object rule -> count
            ("quarantined", pa.int64()),
        ]
    ),
)

REWARDBENCH_SCORES = Contract(
    "rewardbench_scores",
    pa.schema(
        [
            ("subset", pa.string()),
            ("id", pa.int64()),
            ("score_chosen", pa.float64()),
            ("score_rejected", pa.float64()),
        ]
    ),
)

# Per-pair rewards on held-out pairs (evaluation stage); lengths in words of the answer.
HELDOUT_SCORES = Contract(
    "heldout_scores",
    pa.schema(
        [
            ("pair_id", pa.string()),
            ("source", pa.string()),
            ("score_chosen", pa.float64()),
            ("score_rejected", pa.float64()),
            ("len_chosen", pa.int64()),
            ("len_rejected", pa.int64()),
        ]
    ),
)

RANKING_OUTCOMES = Contract(
    "ranking_outcomes",
    pa.schema([("item_a", pa.string()), ("item_b", pa.string()), ("winner", pa.string())]),
)

# A Bradley-Terry leaderboard (rmcore.ranking RankingResult.to_table): strongest first.
RANKING_LEADERBOARD = Contract(
    "ranking_leaderboard",
    pa.schema(
        [
            ("rank", pa.int64()),
            ("item", pa.string()),
            ("strength", pa.float64()),  # log-strength, normalised as the fit's notes say
            ("std_error", pa.float64()),
            ("ci_low", pa.float64()),  # 95% interval
            ("ci_high", pa.float64()),
            ("wins", pa.int64()),
            ("losses", pa.int64()),
            ("ties", pa.int64()),
        ]
    ),
)

# Ranked groups for listwise training (rmcore.data.groups): one prompt, k >= 2 responses, each
# a whole conversation ending with its answer, with its score and its rank tier (0 = best,
# equal scores share a tier). Built from the all-pairs pairing of a source, so the listwise and
# the pairwise model see the same prompts and responses.
RANKED_GROUPS = Contract(
    "ranked_groups",
    pa.schema(
        [
            ("group_id", pa.string()),
            ("source", pa.string()),
            ("prompt", MESSAGES),
            ("responses", pa.list_(MESSAGES)),
            ("scores", pa.list_(pa.float64())),
            ("tiers", pa.list_(pa.int32())),
            ("split", pa.string()),
        ]
    ),
)

# Rated responses for multi-objective regression (rmcore.data.rated): one response per row,
# the whole conversation ending with it, and one nullable column per rated attribute
# (HelpSteer's 0-4 ratings; a missing rating is null and masked in the loss, never guessed).
RATED_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
RATED_RESPONSES = Contract(
    "rated_responses",
    pa.schema(
        [
            ("response_id", pa.string()),
            ("source", pa.string()),
            ("prompt", MESSAGES),
            ("conversation", MESSAGES),
            *[(name, pa.float64()) for name in RATED_ATTRIBUTES],
            ("split", pa.string()),
            ("source_row", pa.int64()),
        ]
    ),
)

CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in (
        PAIRS, MIXTURE, QUARANTINE, RAW_MANIFEST, SOURCE_STATS, REWARDBENCH_SCORES, HELDOUT_SCORES,
        RANKING_OUTCOMES, RANKING_LEADERBOARD, RANKED_GROUPS, RATED_RESPONSES,
    )
}


def contract(name: str) -> Contract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise ContractError(f"unknown contract {name!r}; known: {sorted(CONTRACTS)}") from None


def _type_ok(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual.equals(expected):
        return True
    # Large/small string variants and all-null columns are compatible encodings.
    if pa.types.is_null(actual):
        return True
    if pa.types.is_string(expected) and pa.types.is_large_string(actual):
        return True
    if pa.types.is_list(expected) and (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
        return _type_ok(actual.value_type, expected.value_type)
    if pa.types.is_struct(expected) and pa.types.is_struct(actual):
        want = {expected.field(i).name: expected.field(i).type for i in range(expected.num_fields)}
        have = {actual.field(i).name: actual.field(i).type for i in range(actual.num_fields)}
        return want.keys() == have.keys() and all(_type_ok(have[k], want[k]) for k in want)
    return False


def validate(table: pa.Table, spec: Contract | str, *, where: str = "table") -> pa.Table:
    """Check ``table`` against a contract; return it cast to the contract's exact schema.

    Raises ContractError naming every missing, extra and mistyped column.
    """
    spec = contract(spec) if isinstance(spec, str) else spec
    allowed = spec.full_schema
    required = {f.name for f in spec.schema}
    have = {f.name: f.type for f in table.schema}
    missing = sorted(required - have.keys())
    extra = sorted(have.keys() - {f.name for f in allowed})
    mistyped = [
        f"{f.name} (is {have[f.name]}, contract says {f.type})"
        for f in allowed
        if f.name in have and not _type_ok(have[f.name], f.type)
    ]
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if extra:
        problems.append(f"extra columns: {', '.join(extra)}")
    if mistyped:
        problems.append(f"mistyped columns: {'; '.join(mistyped)}")
    if problems:
        raise ContractError(f"{where} does not match contract {spec.name!r} v{spec.version}: " + "; ".join(problems))
    target = pa.schema([f for f in allowed if f.name in have])
    return table.select([f.name for f in target]).cast(target)
