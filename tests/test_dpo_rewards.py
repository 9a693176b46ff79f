"""DPO implicit rewards: which tokens score, log-probs against a plain forward, the length rules
by hand, the reference form, and RewardBench through `rmflow eval --dpo` on a tiny causal LM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rmcore.evaluate.dpo import (
    DpoScorer,
    answer_logps,
    answer_tokens,
    dpo_rewards,
    load_causal_lm,
    reduce_logps,
)

CONV = [{"role": "user", "content": "tell me a little"}, {"role": "assistant", "content": "look and see"}]


def _tiny_lm(path: Path, seed: int = 0) -> Path:
    from tiny import _tiny_config, build_tiny_tokenizer
    from transformers import AutoModelForCausalLM

    tokenizer = build_tiny_tokenizer("llama", chat_template=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config("llama", tokenizer, hidden=32))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory):
    folder = _tiny_lm(tmp_path_factory.mktemp("dpo") / "policy")
    model, tokenizer = load_causal_lm(str(folder))
    return folder, model, tokenizer


def test_the_answer_and_its_end_of_turn_are_the_scored_tokens(lm) -> None:
    _, _, tok = lm
    ids, first = answer_tokens(tok, CONV, max_length=512)
    # <s><|user|>\ntell me a little</s>\n<|assistant|>\nlook and see</s>: only the last turn's content + </s>
    assert tok.convert_ids_to_tokens(ids[first:]) == ["look", "and", "see", "</s>"]
    assert tok.convert_ids_to_tokens(ids[first - 1 : first]) == ["<|assistant|>"]
    # left truncation keeps the answer
    short, short_first = answer_tokens(tok, CONV, max_length=6)
    assert len(short) == 6 and short[short_first:] == ids[first:]
    with pytest.raises(ValueError, match="ending with a non-empty assistant turn"):
        answer_tokens(tok, CONV[:1], max_length=512)


def test_log_probs_equal_a_plain_forward_of_each_conversation_alone(lm) -> None:
    _, model, tok = lm
    convs = [CONV, [CONV[0], {"role": "assistant", "content": "keep asking many questions"}]]
    encoded = [answer_tokens(tok, c, max_length=512) for c in convs]
    batched = answer_logps(model, encoded, batch_size=2, pad_id=tok.pad_token_id)  # padded together
    for (ids, first), got in zip(encoded, batched):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        logp = torch.log_softmax(logits.double(), dim=-1)
        expected = [logp[t - 1, ids[t]].item() for t in range(first, len(ids))]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        assert len(got) == len(ids) - first


def test_length_rules_by_hand() -> None:
    logps = np.array([-1.0, -2.0, -2.0])
    assert reduce_logps(logps, "sum") == -5.0
    assert reduce_logps(logps, "avg") == pytest.approx(-5 / 3)
    assert reduce_logps(logps, "norm") == -3.0  # -sqrt(1 + 4 + 4)
    with pytest.raises(ValueError, match="length rule"):
        DpoScorer(None, None, length_rule="max")  # type: ignore[arg-type]


def test_with_a_reference_the_reward_is_beta_times_the_log_ratio(lm, tmp_path: Path) -> None:
    _, model, tok = lm
    same = dpo_rewards(DpoScorer(model, tok, model), [CONV])
    assert same["reward"].tolist() == [0.0]  # the policy is its own reference: no preference
    other, _ = load_causal_lm(str(_tiny_lm(tmp_path / "ref", seed=1)))
    encoded = [answer_tokens(tok, CONV, max_length=512)]
    p = answer_logps(model, encoded, batch_size=1, pad_id=tok.pad_token_id)[0].sum()
    r = answer_logps(other, encoded, batch_size=1, pad_id=tok.pad_token_id)[0].sum()
    got = dpo_rewards(DpoScorer(model, tok, other, beta=0.1), [CONV])
    assert got["reward"][0] == pytest.approx(0.1 * (p - r), abs=1e-9) and p != r
    assert set(got) == {"reward"}  # the length rules are reference-free forms only


@pytest.mark.slow  # RewardBench's sample through the CLI on a tiny LM (~10-30 s)
def test_rmflow_eval_dpo_scores_rewardbench_reference_free(lm, tmp_path: Path, capsys) -> None:
    from rmcore.data.sample_rewardbench import write_rewardbench_sample
    from rmcore.evaluate.rewardbench_data import conversations, load_rewardbench
    from rmflow.cli import main

    folder, model, tok = lm
    bench = write_rewardbench_sample(tmp_path / "data", per_subset=1)
    assert main(["eval", "--dpo", str(folder), "--rewardbench", str(bench), "--out", str(tmp_path / "out"),
                 "--length-rule", "sum", "--no-plots", "--fp32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dpo"]["length_rule"] == "sum" and set(result["dpo"]["overall_by_length_rule"]) == {"sum", "avg", "norm"}
    assert result["overall"] == result["dpo"]["overall_by_length_rule"]["sum"]
    assert result["scoring"]["kind"] == "dpo" and result["rows_scored"] == 23
    # the first row's chosen score is the sum of its answer's token log-probs
    frame = load_rewardbench(str(bench)).frame
    ids_first = answer_tokens(tok, conversations(frame, "chosen")[0], max_length=2048)
    expected = answer_logps(model, [ids_first], batch_size=1, pad_id=tok.pad_token_id)[0].sum()
    import pyarrow.parquet as pq

    scores = pq.read_table(result["scores"]).to_pandas()
    row = scores[scores["id"] == frame["id"].iloc[0]]
    assert row["score_chosen"].iloc[0] == pytest.approx(expected, abs=1e-4)
    assert main(["eval", str(folder), "--dpo", str(folder), "--rewardbench", str(bench)]) != 0
    assert "a reward model folder (MODEL_DIR) or a policy (--dpo POLICY), not both" in capsys.readouterr().err
