"""Pair ids, candidate comparisons per prompt, best-vs-random / all-pairs selection, per-prompt caps.

Sources with several scored responses per prompt (UltraFeedback, HelpSteer) are paired
here, vectorised with numpy so a million prompts take seconds. The unit of accounting
for them is the *candidate comparison*: a prompt with n >= 2 responses holds n(n-1)/2
candidates, and each is kept or removed by exactly one named rule; a prompt with fewer
than two responses counts as one unit removed by the caller's rule. Everything random
is drawn from ``numpy.random.default_rng(seed)`` in a fixed order, so a seed fixes the
output.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rmcore.io import digest_strings

BEST_VS_RANDOM = "best-vs-random"
ALL_PAIRS = "all-pairs"
PAIRINGS = (BEST_VS_RANDOM, ALL_PAIRS)

# Rule names (SPEC section 9) shared by the grouped sources.
UNRATED = "unrated_response"
SAME_TEXT = "chosen_equals_rejected"
EQUAL_SCORES = "equal_scores"
NOT_SELECTED = "not_best_vs_random"
ALL_SCORES_EQUAL = "all_scores_equal"
"""Best-vs-random: a prompt whose rated responses all share one score has nothing lower to draw."""
PER_PROMPT_CAP = "per_prompt_cap"


# ---------------------------------------------------------------- pair ids


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def pair_id(source: str, chosen: list[dict[str, str]], rejected: list[dict[str, str]]) -> str:
    """Stable id of a comparison: sha256 over source + canonical JSON of both message lists."""
    return digest_strings(source, canonical_json(chosen), canonical_json(rejected))


_DIGEST = operator.methodcaller("digest")
_JSON_ESCAPES = (
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\t", "\\t"),
    ("\b", "\\b"),
    ("\f", "\\f"),
)
_OTHER_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'


def _escape_all(strings: pa.Array) -> pa.Array:
    out = strings
    for raw, escaped in _JSON_ESCAPES:
        out = pc.replace_substring(out, raw, escaped)
    rare = pc.match_substring_regex(strings, _OTHER_CONTROL)
    if pc.any(rare).as_py():  # control characters without a short escape: let json do the few rows
        fixed = out.to_pylist()
        for i in np.flatnonzero(rare.to_numpy(zero_copy_only=False)):
            fixed[i] = json.dumps(strings[int(i)].as_py(), ensure_ascii=False)[1:-1]
        out = pa.array(fixed, pa.string())
    return out


def json_escape(strings: pa.Array) -> pa.Array:
    """Arrow strings -> their JSON string bodies, exactly as ``json.dumps(ensure_ascii=False)``.

    One scan finds the strings that need any escaping; only those go through the
    replacement passes (most prompts and many answers need none).
    """
    needs = pc.fill_null(pc.match_substring_regex(strings, _NEEDS_ESCAPE), False)
    n = pc.sum(needs).as_py() or 0
    if n == 0:
        return strings
    if n == len(strings):
        return _escape_all(strings)
    return pc.replace_with_mask(strings, needs, _escape_all(strings.filter(needs)))


def single_turn_pair_ids(
    source: str, prompt_esc: pa.Array, chosen_esc: pa.Array, rejected_esc: pa.Array
) -> pa.Array:
    """``pair_id`` for many single-turn pairs at once (same bytes hashed, same ids), as an Arrow array."""
    user, mid, end = '[{"content":"', '","role":"user"},{"content":"', '","role":"assistant"}]'
    # digest_strings(source, chosen_json, rejected_json) hashes "source\0chosen_json\0rejected_json\0"
    joined = pc.binary_join_element_wise(
        source,
        "\x00",
        user,
        prompt_esc,
        mid,
        chosen_esc,
        end,
        "\x00",
        user,
        prompt_esc,
        mid,
        rejected_esc,
        end,
        "\x00",
        "",
    )
    n = len(joined)
    if n == 0:
        return pa.array([], pa.string())
    # Hash straight out of the Arrow buffer and hex-encode all digests at once:
    # the only Python per pair is the sha256 call itself.
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset : joined.offset + n + 1]
    data = memoryview(joined.buffers()[2])
    views = map(data.__getitem__, map(slice, offsets[:-1].tolist(), offsets[1:].tolist()))
    digests = b"".join(map(_DIGEST, map(hashlib.sha256, views)))
    hex_offsets = np.arange(0, 64 * (n + 1), 64, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(hex_offsets), pa.py_buffer(binascii.hexlify(digests)))


# ---------------------------------------------------------------- grouped pairing


@dataclass
class GroupPairs:
    """Selected comparisons as item indices, plus how many candidates each rule removed."""

    chosen: np.ndarray
    rejected: np.ndarray
    group: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)


def _combinations(n: int) -> np.ndarray:
    i, j = np.triu_indices(n, k=1)
    return np.stack([i, j], axis=1)


def all_candidates(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (a, b) item pair with a < b inside each group of a CSR ``offsets`` array.

    Returns item index arrays a, b and the group of each candidate, ordered by group then (a, b).
    """
    sizes = np.diff(offsets)
    parts_a, parts_b, parts_g = [], [], []
    for n in np.unique(sizes[sizes >= 2]):
        groups = np.flatnonzero(sizes == n)
        combos = _combinations(int(n))
        starts = offsets[groups][:, None]
        parts_a.append((starts + combos[:, 0]).ravel())
        parts_b.append((starts + combos[:, 1]).ravel())
        parts_g.append(np.repeat(groups, len(combos)))
    if not parts_a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    a, b, g = (np.concatenate(p).astype(np.int64) for p in (parts_a, parts_b, parts_g))
    order = np.lexsort((b, a, g))
    return a[order], b[order], g[order]


def same_text(texts: pa.Array, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of candidates whose two response texts are identical."""
    out = np.zeros(len(a), dtype=bool)
    if len(a) == 0:
        return out
    lengths = pc.fill_null(pc.binary_length(texts), -1).to_numpy(zero_copy_only=False)
    maybe = np.flatnonzero(lengths[a] == lengths[b])  # only equal lengths can be equal texts
    if len(maybe):
        eq = pc.equal(texts.take(pa.array(a[maybe])), texts.take(pa.array(b[maybe])))
        out[maybe] = pc.fill_null(eq, False).to_numpy(zero_copy_only=False).astype(bool)
    return out


def _label(scores: np.ndarray, texts: pa.Array, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of candidates removed by each rule, first rule wins: unrated, same text, equal scores."""
    unrated = np.isnan(scores[a]) | np.isnan(scores[b])
    same = ~unrated & same_text(texts, a, b)
    equal = ~unrated & ~same & (scores[a] == scores[b])
    return {UNRATED: unrated, SAME_TEXT: same, EQUAL_SCORES: equal}


def pairs_all(offsets: np.ndarray, scores: np.ndarray, texts: pa.Array) -> GroupPairs:
    """v2: every candidate of every group; chosen = the higher score."""
    a, b, g = all_candidates(offsets)
    masks = _label(scores, texts, a, b)
    keep = ~(masks[UNRATED] | masks[SAME_TEXT] | masks[EQUAL_SCORES])
    a, b, g = a[keep], b[keep], g[keep]
    a_wins = scores[a] > scores[b]
    chosen, rejected = np.where(a_wins, a, b), np.where(a_wins, b, a)
    return GroupPairs(chosen, rejected, g, {k: int(m.sum()) for k, m in masks.items()})


def _first_best(offsets: np.ndarray, scores: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Per group, the first item with the highest score (NaN = unrated never wins)."""
    masked = np.where(np.isnan(scores), -np.inf, scores)
    sizes = np.diff(offsets)
    nonempty = sizes > 0
    best = np.full(len(sizes), -1, dtype=np.int64)
    if not nonempty.any():
        return best
    top = np.full(len(sizes), -np.inf)
    top[nonempty] = np.maximum.reduceat(masked, offsets[:-1][nonempty])
    is_top = (masked == top[group_of]) & ~np.isnan(scores)
    pos = np.where(is_top, np.arange(len(scores)), np.iinfo(np.int64).max)
    first = np.minimum.reduceat(pos, offsets[:-1][nonempty])
    best[nonempty] = np.where(first == np.iinfo(np.int64).max, -1, first)
    return best


def pairs_best_vs_random(
    offsets: np.ndarray, scores: np.ndarray, texts: pa.Array, u: np.ndarray
) -> GroupPairs:
    """v1, UltraFeedback's binarization as the recipe cites it (argilla's): per group, chosen =
    the best-scored item, rejected = drawn uniformly among the items scored **strictly lower**.

    Several items sharing the best score: the first of them in the dataset's order is chosen (a
    fixed choice, so the seed only draws the rejected), and the others are never drawn, being
    not lower. An item whose text equals the chosen text is not drawn either. So no selected
    pair can tie and the kept count does not depend on the seed: a group with at least one
    lower-scored item gives exactly one pair, the rest of its rated candidates are
    ``not_best_vs_random``; a group whose rated items all share one score gives none
    (``all_scores_equal``; ``chosen_equals_rejected`` if its only lower items copy the chosen
    text). ``u`` holds one uniform [0, 1) draw per group (drawn by the caller, so the draws do
    not depend on which groups are rated).
    """
    sizes = np.diff(offsets)
    group_of = np.repeat(np.arange(len(sizes)), sizes)
    rated = ~np.isnan(scores)

    def counts(mask: np.ndarray) -> np.ndarray:  # items per group where ``mask``
        return np.bincount(group_of[mask], minlength=len(sizes))

    n_rated = counts(rated)
    all_cands = sizes * (sizes - 1) // 2
    rated_cands = n_rated * (n_rated - 1) // 2
    best = _first_best(offsets, scores, group_of)
    has_best = best[group_of] >= 0
    best_item = np.where(has_best, best[group_of], 0)
    lower = rated & has_best & (scores < np.where(has_best, scores[best_item], np.inf))
    copies = np.zeros(len(scores), dtype=bool)
    if lower.any():
        idx = np.flatnonzero(lower)
        copies[idx] = same_text(texts, best_item[idx], idx)
    eligible = lower & ~copies
    n_eligible = counts(eligible)
    live = n_eligible >= 1
    # the k-th eligible item of each live group, k = floor(u * n_eligible)
    k = np.floor(u * np.maximum(n_eligible, 1)).astype(np.int64)
    rank = np.cumsum(eligible) - 1
    start_rank = np.concatenate([[0], np.cumsum(eligible)])[offsets[:-1]]
    local = rank - start_rank[group_of]
    pick = eligible & live[group_of] & (local == k[group_of])
    other = np.full(len(sizes), -1, dtype=np.int64)
    other[group_of[pick]] = np.flatnonzero(pick)
    g = np.flatnonzero(live)
    dead = (n_rated >= 2) & ~live
    only_copies = dead & (counts(lower) > 0)
    dropped = {
        UNRATED: int((all_cands - rated_cands)[sizes >= 2].sum()),
        SAME_TEXT: int(rated_cands[only_copies].sum()),
        ALL_SCORES_EQUAL: int(rated_cands[dead & ~only_copies].sum()),
        NOT_SELECTED: int((rated_cands[live] - 1).sum()),
    }
    return GroupPairs(best[g], other[g], g, dropped)


def pair_groups(
    offsets: np.ndarray,
    scores: np.ndarray,
    texts: pa.Array,
    *,
    pairing: str,
    seed: int,
    draws: np.ndarray | None = None,
) -> GroupPairs:
    """Pair the items (``scores``/``texts`` in group order) of each group of CSR ``offsets``; seeded.

    ``draws``: one uniform [0, 1) draw per group for best-vs-random, used instead of drawing
    from ``seed``. A source that pairs a file batch by batch draws once for the whole file
    and passes each batch its slice, so the pairs do not depend on where the batches are cut.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; valid: {', '.join(PAIRINGS)}")
    n_groups = len(offsets) - 1
    if draws is not None and len(draws) != n_groups:
        raise ValueError(f"draws: need one per group, got {len(draws)} for {n_groups} groups")
    if pairing == ALL_PAIRS:
        return pairs_all(offsets, scores, texts)
    u = np.random.default_rng(seed).random(n_groups) if draws is None else draws
    return pairs_best_vs_random(offsets, scores, texts, u)


def pairing_rules(pairing: str) -> tuple[str, ...]:
    """The rules a pairing removes candidates by (what a source reports, zeros included)."""
    if pairing == ALL_PAIRS:
        return (UNRATED, SAME_TEXT, EQUAL_SCORES, NOT_SELECTED)
    return (UNRATED, SAME_TEXT, ALL_SCORES_EQUAL, NOT_SELECTED)


# ---------------------------------------------------------------- caps


def cap_per_group(groups: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Boolean mask keeping at most ``cap`` rows per group value, a seeded random choice.

    Rows of one group compete by a random key drawn per row, so which rows survive is
    fixed by the seed and independent of the order groups appear in.
    """
    if cap < 1:
        raise ValueError(f"per-prompt cap must be >= 1, got {cap}")
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=bool)
    key = np.random.default_rng(seed).random(n)
    order = np.lexsort((key, groups))
    sorted_groups = groups[order]
    new_group = np.concatenate([[True], sorted_groups[1:] != sorted_groups[:-1]])
    starts = np.flatnonzero(new_group)
    run_start = np.repeat(starts, np.diff(np.append(starts, n)))
    rank = np.arange(n) - run_start
    keep = np.zeros(n, dtype=bool)
    keep[order] = rank < cap
    return keep


def group_codes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Dense int codes of a string column in order of first appearance (equal strings, equal codes)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.cast(pa.large_string()).combine_chunks()
    return pc.dictionary_encode(values).indices.to_numpy(zero_copy_only=False).astype(np.int64)
