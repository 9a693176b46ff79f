"""Clean + pair throughput on generated rows in the real UltraFeedback schema (SPEC section 10).

Writes N rows (default 1,000,000; 4 completions each, with the hub's nested
``annotations.<aspect>.Rating`` strings, a few rows with 3 or 1 completions, "N/A"
and unparseable ratings) to Parquet, then cleans + pairs them twice in separate
fresh processes, same run: with rmflow's vectorised adapter and with a straightforward
row-by-row Python implementation of the same rules (below). Asserts both give the
same pairs (ids and counts), prints rows/s for both, the ratio (target >= 20x) and
each process's peak memory (max RSS; Arrow's pool peak for rmflow).

    .venv/bin/python bench/bench_clean.py --rows 100000          # quick
    .venv/bin/python bench/bench_clean.py                        # the recorded 1M run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
RATINGS = ("1", "2", "3", "4", "5", "N/A", "five")


# ---------------------------------------------------------------- data


def _pool(values: list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(idx))


def generate(n_rows: int, seed: int) -> pa.Table:
    """n rows in openbmb/UltraFeedback's schema, built column-wise (seconds for a million)."""
    from rmcore.data.sample_data import MODELS, _Gen

    rng = np.random.default_rng(seed)
    gen = _Gen(random.Random(seed))
    prompts = [gen.prompt() for _ in range(5000)]
    answers = [gen.answer(t, q) for t, _ in prompts[:2000] for q in (0, 1, 2, 3)]
    sizes = np.where(rng.random(n_rows) < 0.005, 3, 4)
    sizes[rng.random(n_rows) < 0.001] = 1
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    m = int(offsets[-1])

    def rating_col(na: float) -> np.ndarray:
        r = rng.integers(0, 5, m)
        r[rng.random(m) < na] = 5  # "N/A"
        r[rng.random(m) < 1e-6] = 6  # "five": not a number -> the row is quarantined
        return r

    one = np.arange(m + 1, dtype=np.int32)
    aspects = []
    for aspect in ASPECTS:
        fields = [
            _pool(list(RATINGS), rating_col(0.05 if aspect in ("honesty", "truthfulness") else 0.0)),
            _pool(
                ["The text follows the task.", "Partly correct.", "Clear and helpful."], rng.integers(0, 3, m)
            ),
        ]
        names = ["Rating", "Rationale"]
        if aspect in ("truthfulness", "helpfulness"):
            fields += [
                _pool(["Accurate.", "Minor issues."], rng.integers(0, 2, m)),
                pa.ListArray.from_arrays(pa.array(one), _pool(["1", "2", "3"], rng.integers(0, 3, m))),
            ]
            names += ["Rationale For Rating", "Type"]
        aspects.append(pa.StructArray.from_arrays(fields, names=names))
    annotations = pa.StructArray.from_arrays(aspects, names=list(ASPECTS))
    model = _pool(list(MODELS), rng.integers(0, len(MODELS), m))
    completions = pa.StructArray.from_arrays(
        [annotations, _pool(["Good.", "Could be clearer."], rng.integers(0, 2, m)),
         _pool(["You are a helpful assistant."], np.zeros(m, int)), pa.array(rng.integers(1, 11, m) / 2.0),
         model, pa.array(rng.integers(1, 11, m).astype(float)), _pool(["helpfulness", "honesty"], rng.integers(0, 2, m)),
         _pool(answers, rng.integers(0, len(answers), m))],
        names=["annotations", "critique", "custom_system_prompt", "fine-grained_score", "model", "overall_score",
               "principle", "response"],
    )  # fmt: skip
    one_each = pa.ListArray.from_arrays(
        pa.array(np.arange(n_rows + 1, dtype=np.int32)), _pool(["None"], np.zeros(n_rows, int))
    )
    return pa.table({
        "source": _pool(["evol_instruct", "sharegpt", "flan_v2_niv2"], rng.integers(0, 3, n_rows)),
        "instruction": _pool([p for _, p in prompts], rng.integers(0, len(prompts), n_rows)),
        "models": pa.ListArray.from_arrays(pa.array(offsets), model),
        "completions": pa.ListArray.from_arrays(pa.array(offsets), completions),
        "correct_answers": one_each,
        "incorrect_answers": one_each,
    })  # fmt: skip


# ---------------------------------------------------------------- the row-by-row reference

_NUMBER = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*")


def _score(completion: dict) -> float | None | str:
    """Mean of numeric ratings; None if none; "bad" if a rating is neither a number nor N/A."""
    values = []
    for aspect in ASPECTS:
        rating = ((completion.get("annotations") or {}).get(aspect) or {}).get("Rating")
        if rating is None or rating.strip() == "N/A":
            continue
        if not _NUMBER.fullmatch(rating):
            return "bad"
        values.append(float(rating))
    return sum(values) / len(values) if values else None


def _pair(
    source: str, instruction: str, good: dict, bad: dict, s_good: float, s_bad: float, row: int
) -> dict:
    from rmcore.data.pairing import pair_id

    prompt = [{"role": "user", "content": instruction}]
    chosen = prompt + [{"role": "assistant", "content": good["response"]}]
    rejected = prompt + [{"role": "assistant", "content": bad["response"]}]
    return {"pair_id": pair_id(source, chosen, rejected), "source": source, "prompt": prompt, "chosen": chosen,
            "rejected": rejected, "chosen_score": s_good, "rejected_score": s_bad, "split": "train", "source_row": row}  # fmt: skip


def reference_clean(path: str, pairing: str, seed: int) -> tuple[pa.Table, Counter, int]:
    """The same rules as rmcore.data.sources.ultrafeedback, one row at a time in plain Python."""
    from data_contracts.schemas import PAIRS

    pf = pq.ParquetFile(path)
    u = np.random.default_rng(seed).random(pf.metadata.num_rows).tolist()
    pairs, dropped, quarantined, i = [], Counter(), 0, 0
    done: list[pa.Table] = []  # pairs turned into Arrow every batch, so memory stays bounded
    for batch in pf.iter_batches(batch_size=20_000, use_threads=False):
        done.append(pa.Table.from_pylist(pairs, schema=PAIRS.full_schema))
        pairs = []
        for row in batch.to_pylist():
            n_row, i = i, i + 1
            comps, instruction = row["completions"], row["instruction"]
            if instruction is None or comps is None or any(c["response"] is None for c in comps):
                quarantined += 1
                continue
            scores = [_score(c) for c in comps]
            if "bad" in scores:
                quarantined += 1
                continue
            n = len(comps)
            if n < 2:
                dropped["fewer_than_two_completions"] += 1
                continue
            if pairing == "all-pairs":
                for a in range(n):
                    for b in range(a + 1, n):
                        sa, sb = scores[a], scores[b]
                        if sa is None or sb is None:
                            dropped["unrated_response"] += 1
                        elif comps[a]["response"] == comps[b]["response"]:
                            dropped["chosen_equals_rejected"] += 1
                        elif sa == sb:
                            dropped["equal_scores"] += 1
                        else:
                            hi, lo = (a, b) if sa > sb else (b, a)
                            pairs.append(
                                _pair(
                                    "ultrafeedback",
                                    instruction,
                                    comps[hi],
                                    comps[lo],
                                    scores[hi],
                                    scores[lo],
                                    n_row,
                                )
                            )
                continue
            rated = [k for k in range(n) if scores[k] is not None]
            p = len(rated)
            dropped["unrated_response"] += n * (n - 1) // 2 - p * (p - 1) // 2
            if p < 2:
                continue
            best = rated[0]
            for k in rated:
                if scores[k] > scores[best]:
                    best = k
            others = [k for k in rated if k != best]
            other = others[int(u[n_row] * (p - 1))]
            dropped["not_best_vs_random"] += p * (p - 1) // 2 - 1
            if comps[best]["response"] == comps[other]["response"]:
                dropped["chosen_equals_rejected"] += 1
            elif scores[best] == scores[other]:
                dropped["equal_scores"] += 1
            else:
                pairs.append(
                    _pair(
                        "ultrafeedback",
                        instruction,
                        comps[best],
                        comps[other],
                        scores[best],
                        scores[other],
                        n_row,
                    )
                )
    done.append(pa.Table.from_pylist(pairs, schema=PAIRS.full_schema))
    return pa.concat_tables(done), dropped, quarantined


# ---------------------------------------------------------------- runs (each in a fresh process)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rmflow(data_dir: str, pairing: str, seed: int, out: mp.Queue) -> None:
    from rmcore.data.sources import CleanOptions, clean_source

    t, c = time.perf_counter(), time.process_time()
    result = clean_source("ultrafeedback", "train", CleanOptions(pairing=pairing, seed=seed), Path(data_dir))
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    out.put({"seconds": seconds, "cpu": cpu, "kept": result.kept, "dropped": result.dropped, "quarantined": result.quarantined,
             "ids": result.pairs["pair_id"].to_pylist(), "rss_mb": _peak_rss_mb(),
             "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20, "raw_rows": result.raw_rows})  # fmt: skip


def run_reference(path: str, pairing: str, seed: int, out: mp.Queue) -> None:
    t, c = time.perf_counter(), time.process_time()
    pairs, dropped, quarantined = reference_clean(path, pairing, seed)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    out.put({"seconds": seconds, "cpu": cpu, "kept": pairs.num_rows, "dropped": dict(dropped), "quarantined": quarantined,
             "ids": pairs["pair_id"].to_pylist(), "rss_mb": _peak_rss_mb()})  # fmt: skip


def in_fresh_process(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pairing", choices=("best-vs-random", "all-pairs"), default="best-vs-random")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-clean-") as tmp:
        t = time.perf_counter()
        path = Path(tmp) / "openbmb/UltraFeedback/data/train-00000-of-00001.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(generate(args.rows, args.seed), path, row_group_size=1000)
        print(f"generated {args.rows:,} rows in the UltraFeedback schema: {path.stat().st_size / 2**20:.0f} MiB Parquet "
              f"({time.perf_counter() - t:.1f} s)")  # fmt: skip
        fast = in_fresh_process(run_rmflow, tmp, args.pairing, args.seed)
        ref = in_fresh_process(run_reference, str(path), args.pairing, args.seed)
    assert fast["kept"] == ref["kept"], (fast["kept"], ref["kept"])
    assert fast["ids"] == ref["ids"], "same rules, same pairs: pair ids differ"
    assert fast["quarantined"] == ref["quarantined"]
    assert {k: v for k, v in fast["dropped"].items() if v} == {k: v for k, v in ref["dropped"].items() if v}
    print(
        f"pairing {args.pairing}: {fast['kept']:,} pairs, dropped {fast['dropped']}, quarantined {fast['quarantined']}"
    )
    print(f"{'':22}{'wall s':>9}{'rows/s (wall)':>15}{'CPU s':>9}{'rows/s (CPU)':>15}{'peak RSS MiB':>14}")
    for label, r in (("rmflow (vectorised)", fast), ("row-by-row reference", ref)):
        print(f"{label:22}{r['seconds']:9.2f}{args.rows / r['seconds']:15,.0f}{r['cpu']:9.2f}{args.rows / r['cpu']:15,.0f}"
              f"{r['rss_mb']:14,.0f}")  # fmt: skip
    print(f"rmflow Arrow pool peak {fast['arrow_peak_mb']:,.0f} MiB")
    print(f"ratio {ref['seconds'] / fast['seconds']:.1f}x wall-clock, {ref['cpu'] / fast['cpu']:.1f}x CPU time "
          f"(target >= 20x); outputs identical ({fast['kept']:,} pair ids)")  # fmt: skip


if __name__ == "__main__":
    main()
