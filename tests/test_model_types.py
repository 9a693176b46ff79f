"""The three model types through the training loop on a tiny model (CPU, fp32, seconds):
Bradley-Terry pairs, Plackett-Luce rankings, multi-objective regression on rated responses."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import tiny_config, write_mixture

from data_contracts import RATED_ATTRIBUTES, RATED_RESPONSES
from rmcore.config import ConfigError
from rmcore.encoding import encode_conversations
from rmcore.io import write_table
from rmcore.model import load_reward_model
from rmcore.train import ListSink, train_reward_model

ANSWERS = [  # (answer, score): best first; the tiny model can tell them apart by their words
    ("sure , happy to help , here is a good answer", 3.0),
    ("okay , thank you", 2.0),
    ("bad question", 1.0),
    ("no go away i hate this", 0.0),
]
TOPICS = ["time", "day", "people", "work", "question", "thing", "way", "answer"]


def _prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"please help with the {TOPICS[i % len(TOPICS)]} number {i}"}]


def _ranked_mixture(path: Path, prompts: int) -> Path:
    """All pairs of four ranked answers per prompt (6 pairs each); every 5th prompt held out."""
    pairs, scores, splits = [], [], []
    for i in range(prompts):
        p = _prompt(i)
        for (a, sa), (b, sb) in combinations(ANSWERS, 2):
            pairs.append(
                {
                    "chosen": p + [{"role": "assistant", "content": a}],
                    "rejected": p + [{"role": "assistant", "content": b}],
                }
            )
            scores.append((sa, sb))
            splits.append("validation" if i % 5 == 4 else "train")
    return write_mixture(path, pairs, splits=splits, scores=scores)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_listwise_groups_each_prompt_and_learns_the_ranking(tiny_bert, tmp_path):
    mixture = _ranked_mixture(tmp_path / "mixture.parquet", 20)  # 16 train prompts, 4 held out
    sink = ListSink()
    cfg = tiny_config(
        tiny_bert, model_type="listwise", epochs=12, global_batch=4, micro_batch=2, eval_fraction=0.0
    )
    result = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "out", sink=sink)
    # 16 prompts x 6 pairs regroup into 16 rankings of 4 responses; 4 held-out prompts x 6 pairs
    assert (result.data["train_groups"], result.data["train_responses"], result.data["eval_pairs"]) == (
        16,
        64,
        24,
    )
    assert result.steps == 12 * 4
    losses = sink.series("train/loss")
    assert losses[-1] < 0.5 * losses[0]
    assert {"train/top1", "train/accuracy"} <= set(sink.records[0][1])
    assert result.metrics["eval/accuracy"] >= 0.9
    before, after = _weights(tiny_bert), _weights(result.model_dir)
    unchanged = [
        k for k in before if k in after and torch.equal(before[k], after[k]) and "position_ids" not in k
    ]
    # every trained weight moved (mean pooling reads no pooler; frozen embeddings rows may not)
    assert not [k for k in unchanged if "embeddings" not in k and "pooler" not in k], unchanged


def test_listwise_on_unscored_pairs_is_bradley_terry_step_for_step(tiny_bert, mixture, tmp_path):
    """A pair without scores is a ranking of two, and PL on k = 2 is BT: the same batches, the same
    loss at every step, and the same gradient of a micro-batch."""
    from contextlib import nullcontext

    from rmcore.train.objectives import ListwiseObjective, PairObjective, train_items
    from rmcore.train.pairs import mixture_rows

    bt = train_reward_model(
        tiny_config(tiny_bert, max_steps=3, log_every=1),
        mixture_path=mixture,
        output_dir=tmp_path / "bt",
        sink=(bt_sink := ListSink()),
    )
    pl = train_reward_model(
        tiny_config(tiny_bert, max_steps=3, log_every=1, model_type="listwise"),
        mixture_path=mixture,
        output_dir=tmp_path / "pl",
        sink=(pl_sink := ListSink()),
    )
    assert pl.data["train_groups"] == bt.data["train_pairs"] == 32
    assert pl.seen_pairs == bt.seen_pairs
    assert pl_sink.series("train/loss") == pytest.approx(bt_sink.series("train/loss"), abs=1e-5)
    cfg = tiny_config(tiny_bert, model_type="listwise")
    model = load_reward_model(tiny_bert)
    rows, _ = mixture_rows(cfg, mixture)
    pad, cpu = model.tokenizer.pad_token_id, torch.device("cpu")
    objectives = (
        PairObjective(
            cfg, train_items(tiny_config(tiny_bert), model.tokenizer, rows), pad, cpu, packed=False
        ),
        ListwiseObjective(cfg, train_items(cfg, model.tokenizer, rows), pad, cpu, packed=False),
    )
    grads, losses = [], []
    for objective in objectives:
        model.zero_grad()
        out = objective.micro_loss(model, [0, 5, 9, 17], nullcontext())
        out.loss.backward()
        losses.append(float(out.loss))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-4)


def _rated(path: Path, prompts: int) -> Path:
    """Each prompt's four answers rated: helpfulness/correctness follow the rank, verbosity the
    words, coherence fixed, complexity left unrated (null: masked); every 5th prompt held out."""
    rows = []
    for i in range(prompts):
        for j, (answer, score) in enumerate(ANSWERS):
            rows.append(
                {
                    "response_id": f"r{i}-{j}",
                    "source": "helpsteer",
                    "prompt": _prompt(i),
                    "conversation": _prompt(i) + [{"role": "assistant", "content": answer}],
                    "helpfulness": score + 1.0 if score else 0.0,
                    "correctness": score,
                    "coherence": 3.0,
                    "complexity": None,
                    "verbosity": min(4.0, len(answer.split()) / 3),
                    "split": "validation" if i % 5 == 4 else "train",
                    "source_row": 4 * i + j,
                }
            )
    write_table(pa.Table.from_pylist(rows, schema=RATED_RESPONSES.schema), path, RATED_RESPONSES)
    return path


def test_regression_trains_five_outputs_and_exports_one_combined_reward(tiny_bert, tmp_path):
    mixture = _ranked_mixture(tmp_path / "mixture.parquet", 20)
    rated = _rated(tmp_path / "rated.parquet", 20)
    sink = ListSink()
    cfg = tiny_config(tiny_bert, model_type="regression", epochs=15, global_batch=8, micro_batch=8, lr=1e-2)
    result = train_reward_model(
        cfg, mixture_path=mixture, output_dir=tmp_path / "out", sink=sink, rated_path=rated
    )
    assert result.data["train_responses"] == 64 and result.data["eval_pairs"] == 24
    losses = sink.series("train/loss")
    assert losses[-1] < 0.3 * losses[0]
    attrs = result.regression["attributes"]
    assert attrs["complexity"]["n"] == 0 and np.isnan(attrs["complexity"]["spearman"])  # never rated
    assert attrs["helpfulness"]["n"] == 16 and attrs["helpfulness"]["spearman"] > 0.8
    assert result.metrics["eval/accuracy"] >= 0.9  # the combined reward ranks the held-out pairs
    saved = json.loads((result.model_dir / "rmflow_reward.json").read_text())
    assert saved["reward_head"]["weights"] == {
        "helpfulness": 0.5,
        "correctness": 0.5,
        "coherence": 0.0,
        "complexity": 0.0,
        "verbosity": 0.0,
    }
    # The exported model is a plain one-output reward model whose reward is 0.5 h + 0.5 c of the
    # attribute head kept beside it.
    model = load_reward_model(result.model_dir)
    assert model.hf.config.num_labels == 1
    head = load_file(str(result.model_dir / "attribute_head.safetensors"))
    convs = [_prompt(0) + [{"role": "assistant", "content": a}] for a, _ in ANSWERS]
    ids = encode_conversations(model.tokenizer, convs, max_length=64)
    with torch.no_grad():
        rewards = torch.stack(
            [model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in ids]
        )
        hidden = []
        for s in ids:
            out = model.hf.base_model(
                input_ids=torch.tensor([s]), attention_mask=torch.ones(1, len(s), dtype=torch.long)
            )
            hidden.append(out.last_hidden_state.mean(1)[0])  # mean pooling over a one-row batch
        attributes = torch.stack(hidden) @ head["weight"].T + head["bias"]
    torch.testing.assert_close(rewards, attributes[:, :2].mean(1), atol=1e-5, rtol=1e-5)
    assert rewards.argsort(descending=True).tolist() == [0, 1, 2, 3]


def test_regression_verbosity_debiasing_reports_the_length_correlation(tiny_bert, tmp_path):
    mixture = _ranked_mixture(tmp_path / "mixture.parquet", 20)
    rated = _rated(tmp_path / "rated.parquet", 20)
    cfg = tiny_config(
        tiny_bert, model_type="regression", epochs=8, global_batch=8, micro_batch=8, lr=1e-2,
        regression={"weights": {"helpfulness": 1.0}, "debias_verbosity": True},
    )  # fmt: skip
    result = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "out", rated_path=rated)
    debias = result.regression["debias"]
    assert debias["lambda"] >= 0.0
    assert abs(debias["train_spearman_after"]) <= abs(debias["train_spearman_before"])
    assert result.regression["weights"]["verbosity"] == pytest.approx(-debias["lambda"], abs=1e-6)
    assert "eval/reward_length_spearman_debiased" in result.metrics


def test_regression_in_bf16_scores_held_out_pairs_with_the_combined_reward(tiny_bert, tmp_path):
    """bf16 trains a bf16 working copy beside fp32 master weights: the copy combines the outputs too."""
    mixture = _ranked_mixture(tmp_path / "mixture.parquet", 10)
    rated = _rated(tmp_path / "rated.parquet", 10)
    cfg = tiny_config(tiny_bert, model_type="regression", max_steps=2, bf16=True, global_batch=8, micro_batch=8)
    result = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "out", rated_path=rated)
    assert result.precision["bf16"] is True
    assert result.metrics["eval/pairs"] == 12 and 0.0 <= result.metrics["eval/accuracy"] <= 1.0
    assert load_reward_model(result.model_dir).hf.config.num_labels == 1


def test_regression_needs_rated_responses_and_known_attributes(tiny_bert, mixture, tmp_path):
    with pytest.raises(ConfigError, match="rated_path"):
        train_reward_model(
            tiny_config(tiny_bert, model_type="regression"), mixture_path=mixture, output_dir=tmp_path
        )
    with pytest.raises(ConfigError, match="unknown attribute"):
        tiny_config(tiny_bert, model_type="regression", regression={"weights": {"harmlessness": 1.0}})
    assert len(RATED_ATTRIBUTES) == 5
