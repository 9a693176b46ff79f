"""Classic Bradley-Terry ranking of items (models, reward-model versions) from pairwise outcomes.

Seed 002 / SPEC section 7. ``fit_bradley_terry`` is the entry point; ``outcomes_from_file``
reads arena battles, RewardBench model pairs, UltraFeedback completions or a generic
(item_a, item_b, winner) file; ``leaderboard`` renders a result as a table and markdown.
"""

from rmcore.ranking.counts import PairCounts, counts_from_indices, counts_from_outcomes
from rmcore.ranking.fit import fit_bradley_terry
from rmcore.ranking.outcomes import (
    head_to_head,
    margins_from_score_tables,
    outcomes_from_arena,
    outcomes_from_file,
    outcomes_from_files,
    outcomes_from_rewardbench,
    outcomes_from_ultrafeedback,
    outcomes_from_versions,
    outcomes_table,
)
from rmcore.ranking.priors import Prior, mle_exists
from rmcore.ranking.report import leaderboard, leaderboard_from_files, leaderboard_markdown, rank_files
from rmcore.ranking.result import RankingResult
from rmcore.ranking.solvers import log_likelihood, score

__all__ = [
    "PairCounts",
    "Prior",
    "RankingResult",
    "counts_from_indices",
    "counts_from_outcomes",
    "fit_bradley_terry",
    "head_to_head",
    "leaderboard",
    "leaderboard_from_files",
    "leaderboard_markdown",
    "log_likelihood",
    "margins_from_score_tables",
    "mle_exists",
    "outcomes_from_arena",
    "outcomes_from_file",
    "outcomes_from_files",
    "outcomes_from_rewardbench",
    "outcomes_from_ultrafeedback",
    "outcomes_from_versions",
    "outcomes_table",
    "rank_files",
    "score",
]
