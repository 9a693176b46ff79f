"""A built-in GENERATED hub mirror: every source, train and test splits, each in its real schema.

For the offline demo on a machine without real data. Rows are written where each
adapter looks for them (its first file pattern, ``*`` replaced by ``generated``), so the
whole pipeline runs unchanged. The preference signal is learnable but not length: a
good answer's three steps belong to the prompt's topic, a worse answer borrows steps
from other topics (same sentence frame, similar length). Safety rows (PKU) pair a
refusal with a compliant answer. A ``GENERATED.md`` marker sits at the mirror root
and every generated text starts from the same small vocabulary, so the data is
labelled as generated wherever it shows up (``is_generated``).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MARKER = "GENERATED.md"
SPLITS = ("train", "test")

TOPICS: dict[str, tuple[str, ...]] = {
    "sourdough bread": (
        "feed the starter the night before",
        "mix flour, water and salt into a rough dough",
        "fold the dough every thirty minutes",
        "shape a tight loaf on a floured counter",
        "proof it overnight in the fridge",
        "bake it in a preheated dutch oven",
    ),
    "a vegetable garden": (
        "pick a spot with six hours of sun",
        "loosen the soil and mix in compost",
        "sow seeds at the depth on the packet",
        "water deeply twice a week",
        "mulch around the seedlings",
        "pull weeds while they are small",
    ),
    "a flat bicycle tire": (
        "remove the wheel from the frame",
        "lever the tire off the rim",
        "find the hole by pumping the tube",
        "patch the tube or fit a new one",
        "check the tire for thorns",
        "inflate it to the pressure on the sidewall",
    ),
    "learning to swim": (
        "practice floating in shallow water",
        "blow bubbles to control your breathing",
        "kick from the hips with straight legs",
        "use a board to practice the kick",
        "add arm strokes one side at a time",
        "swim short widths before full lengths",
    ),
    "a job interview": (
        "research the company and its products",
        "prepare short stories about your past work",
        "practice answers out loud with a friend",
        "prepare two questions for the interviewer",
        "arrive ten minutes early",
        "send a thank-you note the same day",
    ),
    "saving money": (
        "write down every expense for a month",
        "set up an automatic transfer on payday",
        "cancel subscriptions you do not use",
        "cook at home more often",
        "build an emergency fund first",
        "compare prices before large purchases",
    ),
    "a houseplant with yellow leaves": (
        "check whether the soil stays soggy",
        "water only when the top inch is dry",
        "move it to brighter indirect light",
        "repot it if the roots circle the pot",
        "feed it a diluted fertilizer in spring",
        "trim the yellow leaves at the base",
    ),
    "a slow laptop": (
        "restart it to clear memory",
        "close programs that start at login",
        "free disk space by deleting old files",
        "install pending system updates",
        "scan for malware",
        "add more memory if it is upgradable",
    ),
    "training a puppy": (
        "reward good behavior right away",
        "keep sessions to five minutes",
        "teach sit before other commands",
        "take it outside after every meal",
        "use the same word for each command",
        "socialize it with calm dogs",
    ),
    "running a first 5k": (
        "start with run-walk intervals",
        "run three times a week",
        "buy shoes fitted at a running store",
        "increase distance by ten percent a week",
        "stretch after each run",
        "rest the day before the race",
    ),
    "painting a room": (
        "move furniture to the middle of the room",
        "fill holes with spackle and sand them",
        "tape the trim and cover the floor",
        "prime any dark or patched areas",
        "cut in the edges with a brush",
        "roll two thin coats of paint",
    ),
    "learning guitar chords": (
        "start with the open chords G, C and D",
        "press the strings just behind the fret",
        "switch slowly between two chords",
        "strum along with a simple song",
        "practice fifteen minutes every day",
        "tune the guitar before each session",
    ),
}
ASKS = (
    "How do I get started with {t}?",
    "What is the best way to deal with {t}?",
    "Can you give me some tips on {t}?",
    "I need help with {t}. What should I do?",
)
HARMS = (
    ("pick a lock to get into my neighbor's house", "breaking into a home"),
    ("make a fake ID", "forging documents"),
    ("get back at a coworker by ruining their car", "damaging property"),
    ("find someone's home address from their username", "stalking someone"),
    ("cheat on my exam without getting caught", "cheating"),
    ("buy prescription pills without a prescription", "getting drugs illegally"),
)
MODELS = ("gpt-4", "llama-2-13b-chat", "falcon-40b-instruct", "wizardlm-7b", "mpt-30b-chat", "ultralm-13b")


def is_generated(data_dir: str | Path) -> bool:
    """True when ``data_dir`` is a mirror written by this generator (it has the marker file)."""
    return (Path(data_dir) / MARKER).is_file()


class _Gen:
    """Prompts and answers of a known quality (0-3 on-topic steps out of 3)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.topics = list(TOPICS)

    def prompt(self) -> tuple[str, str]:
        topic = self.rng.choice(self.topics)
        days = self.rng.randint(1, 999)
        return topic, self.rng.choice(ASKS).format(t=topic) + f" I have been at it for {days} days."

    def answer(self, topic: str, quality: int) -> str:
        """Three steps, ``quality`` of them from the topic, the rest from other topics (same frame)."""
        r = self.rng.random
        own = TOPICS[topic]
        start = int(r() * 6)
        steps = []
        for i in range(3):
            if i < quality:
                steps.append(own[(start + 2 * i) % 6])
            else:  # a step of another topic: same frame, unrelated content
                other = self.topics[
                    (self.topics.index(topic) + 1 + int(r() * (len(self.topics) - 1))) % len(self.topics)
                ]
                steps.append(TOPICS[other][int(r() * 6)])
        if quality not in (0, 3):
            k = int(r() * 3)
            steps[0], steps[k] = steps[k], steps[0]
        return f"Here is what I would do. First, {steps[0]}. Next, {steps[1]}. Finally, {steps[2]}."

    def refusal(self, harm: str) -> str:
        tail = " Talking to someone you trust is a safer first step." if self.rng.random() < 0.5 else ""
        return f"I can't help with {harm}; it could hurt someone.{tail}"

    def compliance(self, act: str) -> str:
        tail = " Be quick and make sure nobody can trace it back to you." if self.rng.random() < 0.5 else ""
        return f"Sure, here is how to {act}. Do it at night.{tail}"


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _hh(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        topic, ask = g.prompt()
        head = (
            "\n\nHuman: Hi, can you help me with something?\n\nAssistant: Of course, what do you need?"
            if g.rng.random() < 0.3
            else ""
        )
        base = f"{head}\n\nHuman: {ask}\n\nAssistant: "
        rows.append(
            {"chosen": base + g.answer(topic, 3), "rejected": base + g.answer(topic, g.rng.choice((0, 1)))}
        )
    return rows


def _shp(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    post = 0
    while len(rows) < n:
        post += 1
        topic, ask = g.prompt()
        for _ in range(g.rng.randint(1, 3)):
            hi, lo = g.rng.randint(20, 400), 0
            lo = max(2, int(hi / g.rng.choice((1.5, 2.5, 4.0, 8.0))))
            good, bad = g.answer(topic, 3), g.answer(topic, g.rng.choice((0, 1)))
            a_wins = g.rng.random() < 0.5
            rows.append({
                "post_id": f"gen{post:06d}", "domain": "askgenerated_train", "upvote_ratio": 0.95, "history": ask,
                "c_root_id_A": f"ca{len(rows)}", "c_root_id_B": f"cb{len(rows)}",
                "created_at_utc_A": 1600000000, "created_at_utc_B": 1600000100,
                "score_A": hi if a_wins else lo, "score_B": lo if a_wins else hi,
                "human_ref_A": good if a_wins else bad, "human_ref_B": bad if a_wins else good,
                "labels": 1 if a_wins else 0, "seconds_difference": 100.0, "score_ratio": hi / lo,
            })  # fmt: skip
    return rows[:n]


def _uf_completion(g: _Gen, topic: str, quality: int) -> dict[str, Any]:
    def rating(aspect: str) -> dict[str, Any]:
        if aspect == "honesty" and g.rng.random() < 0.1:
            return {"Rating": "N/A", "Rationale": "Not applicable (generated)."}
        r = max(1, min(5, quality + 2 + g.rng.choice((-1, 0, 0, 1))))
        return {"Rating": str(r), "Rationale": "Generated rationale."}

    ann = {a: rating(a) for a in ("instruction_following", "honesty", "truthfulness", "helpfulness")}
    for a in ("truthfulness", "helpfulness"):
        ann[a] |= {
            "Type": ["1"],
            "Rationale For Rating": "Generated.",
        }
    return {
        "model": g.rng.choice(MODELS), "principle": "helpfulness", "custom_system_prompt": "You are a helpful assistant.",
        "response": g.answer(topic, quality), "critique": "Generated critique.", "overall_score": float(quality * 3),
        "fine-grained_score": float(quality + 2), "annotations": ann,
    }  # fmt: skip


def _ultrafeedback(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        topic, ask = g.prompt()
        comps = [_uf_completion(g, topic, q) for q in g.rng.sample((0, 1, 2, 3), 4)]
        rows.append({
            "source": "generated", "instruction": ask, "models": [c["model"] for c in comps], "completions": comps,
            "correct_answers": ["None"], "incorrect_answers": ["None"],
        })  # fmt: skip
    return rows


def _helpsteer(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        topic, ask = g.prompt()
        for q in g.rng.sample((0, 1, 2, 3), g.rng.randint(2, 4)):
            rows.append({
                "prompt": ask, "response": g.answer(topic, q), "helpfulness": min(4, q + g.rng.choice((0, 1))),
                "correctness": min(4, q + g.rng.choice((0, 0, 1))), "coherence": 4, "complexity": 1, "verbosity": 1,
            })  # fmt: skip
    return rows[:n]


def _capybara(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        topic, ask = g.prompt()
        user = [{"role": "user", "content": ask}]
        rc, rr = g.rng.choice((4, 5)), g.rng.choice((1, 2, 3, 4))
        rows.append({
            "source": "generated", "prompt": ask,
            "chosen": user + [{"role": "assistant", "content": g.answer(topic, 3)}],
            "rejected": user + [{"role": "assistant", "content": g.answer(topic, g.rng.choice((0, 1)))}],
            "rating_chosen": rc, "rating_rejected": min(rr, rc), "chosen_model": "gpt-4", "rejected_model": "generated",
        })  # fmt: skip
    return rows


def _orca(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        topic, ask = g.prompt()
        good, bad = g.answer(topic, 3), g.answer(topic, g.rng.choice((0, 1)))
        sc, sr = g.rng.choice((8.0, 9.0, 10.0)), g.rng.choice((3.0, 5.0, 8.0))
        tie = sc == sr
        rows.append({
            "system": "You are a helpful assistant.", "input": ask, "chosen": good, "rejected": bad,
            "generations": [good, bad], "order": ["chosen", "rejected"], "labelling_model": "generated",
            "labelling_prompt": [{"role": "user", "content": "Rate the answers."}], "raw_labelling_response": "generated",
            "rating": [sc, sr], "rationale": "Generated.", "status": "tie" if tie else "unchanged",
            "original_chosen": good, "original_rejected": bad, "chosen_score": sc, "in_gsm8k_train": False,
        })  # fmt: skip
    return rows


def _pku(g: _Gen, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        act, harm = g.rng.choice(HARMS)
        safe, unsafe = g.refusal(harm), g.compliance(act)
        safe_first = g.rng.random() < 0.5
        r0, r1 = (safe, unsafe) if safe_first else (unsafe, safe)
        sid = 0 if safe_first else 1
        rows.append({
            "prompt": f"How can I {act}?", "response_0": r0, "response_1": r1,
            "prompt_source": "generated", "response_0_source": "generated", "response_1_source": "generated",
            "is_response_0_safe": safe_first, "is_response_1_safe": not safe_first,
            "response_0_severity_level": 0 if safe_first else 2, "response_1_severity_level": 2 if safe_first else 0,
            "better_response_id": sid, "safer_response_id": sid,
        })  # fmt: skip
    return rows


_MAKERS: dict[str, Callable[[_Gen, int], list[dict[str, Any]]]] = {
    "hh-rlhf": _hh,
    "shp": _shp,
    "ultrafeedback": _ultrafeedback,
    "helpsteer": _helpsteer,
    "capybara": _capybara,
    "orca": _orca,
    "pku-saferlhf": _pku,
}


def _maker(name: str) -> Callable[[_Gen, int], list[dict[str, Any]]]:
    return _MAKERS[
        "hh-rlhf" if name.startswith("hh-rlhf/") else "pku-saferlhf" if name.startswith("pku") else name
    ]


def write_sample_mirror(out_dir: Path, *, rows_per_source: int = 2000, seed: int = 0) -> Path:
    """Write a GENERATED hub mirror for every source (train: ``rows_per_source`` rows, test: a quarter).

    Files land on each adapter's first file pattern (the push_to_hub Parquet layout for a
    split the hub does not have), so ``--data-dir out_dir`` reads them.
    Deterministic for a seed. Returns ``out_dir``.
    """
    from rmcore.data.sources.catalog import SOURCE_NAMES, get_adapter
    from rmcore.data.sources.mirror import mirror_patterns

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, name in enumerate(SOURCE_NAMES):
        adapter = get_adapter(name)
        for split in SPLITS:
            g = _Gen(random.Random(f"{seed}/{name}/{split}/{k}"))
            n = rows_per_source if split == "train" else max(rows_per_source // 4, 1)
            rel = mirror_patterns(adapter, split)[0].replace("*", "generated")
            _write(out_dir / adapter.hub_id / rel, _maker(name)(g, n))
            written.append(f"| {name} | {split} | {adapter.hub_id}/{rel} | {n} |")
    (out_dir / MARKER).write_text(
        "# GENERATED sample data - not real preference data\n\n"
        "Written by `rmcore.data.sample_data.write_sample_mirror` "
        f"(rows_per_source={rows_per_source}, seed={seed}) for the offline demo. Every row is synthetic: "
        "a good answer's steps match the prompt's topic, a worse answer borrows steps from other topics; "
        "safety rows pair a refusal with a compliant answer. Results on it say nothing about real data.\n\n"
        "| source | split | file | rows |\n|---|---|---|---|\n" + "\n".join(written) + "\n"
    )
    return out_dir
