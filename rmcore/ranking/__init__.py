"""Classic Bradley-Terry ranking of items (models, reward-model versions) from pairwise outcomes.

Seed 002 / SPEC section 7. ``fit_bradley_terry`` is the entry point; ``outcomes_from_file``
reads arena battles, RewardBench model pairs, UltraFeedback completions or a generic
(item_a, item_b, winner) file; ``leaderboard`` renders a result as a table and markdown.
"""

from rmcore.ranking.counts import PairCounts, counts_from_indices, counts_from_outcomes
from rmcore.ranking.fit import fit_bradley_terry
from rmcore.ranking.priors import Prior, mle_exists
from rmcore.ranking.result import RankingResult
from rmcore.ranking.solvers import log_likelihood, score

__all__ = [
    "PairCounts",
    "Prior",
    "RankingResult",
    "counts_from_indices",
    "counts_from_outcomes",
    "fit_bradley_terry",
    "log_likelihood",
    "mle_exists",
    "score",
]
