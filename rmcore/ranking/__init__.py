"""Classic Bradley-Terry ranking of items (models, reward-model versions) from pairwise outcomes.

Seed 002 / SPEC section 7. P(a beats b) = 1 / (1 + exp(-(theta_a - theta_b))).

- ``fit_bradley_terry(outcomes, method="newton"|"mm"|"gradient", ties="half"|"drop"|"davidson",
  prior="auto"|"none"|"virtual"|"gaussian"|"gamma", reference=None, ...) -> RankingResult``.
- Ties: by default half a win for each side; "drop" ignores them; "davidson" fits a tie parameter.
- When the plain MLE does not exist (an item never won or never lost, or groups never met),
  ``prior="auto"`` gives every item one virtual game against a reference of strength 0,
  scored half a win and half a loss, and says so in ``RankingResult.notes``.
- Strengths are reported summing to zero, or relative to ``reference``; standard errors come
  from the inverse Fisher information of that constrained problem; intervals are 95% normal or,
  with ``bootstrap=N``, bootstrap percentiles.
- ``outcomes_from_file`` reads arena battles, RewardBench model pairs, UltraFeedback
  completions or a generic (item_a, item_b, winner) file; ``outcomes_from_files`` with two or
  more score files ranks reward-model versions head to head.
- ``leaderboard(result)`` / ``leaderboard_from_files(paths)`` give the table and markdown.
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
