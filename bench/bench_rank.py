"""Bradley-Terry fitting speed: rmflow vs choix on the same simulated comparisons, same run.

1,000 items with strengths ~ N(0, 1), 1,000,000 comparisons of uniformly random pairs drawn
from the model (seeded). Reference: ``choix.ilsr_pairwise`` (its fastest pairwise ML solver;
``--with-choix-mm`` also times ``choix.mm_pairwise``, which takes minutes). Both get the same
win list; choix's list of (winner, loser) tuples is built before its clock starts, while
rmflow's time includes aggregating the raw index arrays into pair counts.

    .venv/bin/python bench/bench_rank.py [--items 1000] [--comparisons 1000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rmcore.ranking import counts_from_indices, counts_from_outcomes, fit_bradley_terry, outcomes_table
from rmcore.ranking.simulate import simulate_comparisons


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-choix-mm", action="store_true")
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="limit BLAS threads for both libraries (threadpoolctl)"
    )
    args = parser.parse_args()
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)
        print(f"BLAS threads limited to {args.blas_threads} for both rmflow and choix")

    import choix

    truth = np.random.default_rng(args.seed).normal(0.0, 1.0, args.items)
    truth -= truth.mean()
    a, b, outcome = simulate_comparisons(truth, args.comparisons, seed=args.seed + 1)
    items = tuple(f"model-{k:04d}" for k in range(args.items))
    winners = np.where(outcome == 0, a, b)
    losers = np.where(outcome == 0, b, a)
    win_list = list(zip(winners.tolist(), losers.tolist()))
    print(
        f"data: {args.items} items, {args.comparisons} comparisons simulated from the model (seed {args.seed})"
    )

    def ours_newton():
        return fit_bradley_terry(counts_from_indices(a, b, outcome, items), method="newton", prior="none")

    def ours_mm():
        return fit_bradley_terry(counts_from_indices(a, b, outcome, items), method="mm", prior="none")

    t_newton, r_newton = timed(ours_newton, repeats=3)
    t_mm, r_mm = timed(ours_mm)
    names = [items[k] for k in a], [items[k] for k in b]
    table = outcomes_table(*names, [names[0][k] if o == 0 else names[1][k] for k, o in enumerate(outcome)])
    t_table, r_table = timed(lambda: fit_bradley_terry(counts_from_outcomes(table), prior="none"))
    t_ilsr, choix_ilsr = timed(lambda: choix.ilsr_pairwise(args.items, win_list, alpha=0.0, tol=1e-8))

    def rmse(x):
        return float(np.sqrt(np.mean((x - truth) ** 2)))

    rows = [
        ("rmflow newton (index arrays -> counts -> fit + std errors)", t_newton, r_newton.strengths),
        ("rmflow mm     (index arrays -> counts -> fit + std errors)", t_mm, r_mm.strengths),
        ("rmflow newton (string table -> counts -> fit + std errors)", t_table, r_table.strengths),
        ("choix.ilsr_pairwise (list of (winner, loser))", t_ilsr, choix_ilsr),
    ]
    if args.with_choix_mm:
        t_cmm, choix_mm = timed(lambda: choix.mm_pairwise(args.items, win_list, alpha=0.0, tol=1e-8))
        rows.append(("choix.mm_pairwise (list of (winner, loser))", t_cmm, choix_mm))
    for label, seconds, strengths in rows:
        print(f"{label:62s} {seconds:8.3f} s   rmse vs truth {rmse(strengths):.5f}")
    print(
        f"newton iterations {r_newton.iterations}, converged {r_newton.converged}; mm iterations {r_mm.iterations}"
    )
    print(
        f"max |strength difference| rmflow newton vs choix ilsr: {np.abs(r_newton.strengths - choix_ilsr).max():.2e}"
    )
    print(
        f"max |strength difference| rmflow mm vs newton:         {np.abs(r_mm.strengths - r_newton.strengths).max():.2e}"
    )
    print(f"speed ratio choix ilsr / rmflow newton: {t_ilsr / t_newton:.1f}x (target >= 1)")
    print(f"speed ratio choix ilsr / rmflow newton from strings: {t_ilsr / t_table:.1f}x")
    if args.with_choix_mm:
        print(f"speed ratio choix mm / rmflow mm: {rows[-1][1] / t_mm:.1f}x")


if __name__ == "__main__":
    main()
