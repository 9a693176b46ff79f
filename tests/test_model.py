"""Reward model loading: pad safety, pooling, save/load, the transformers pipeline."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import build_tiny_model_dir

from rmcore.encoding import collate_pairs, encode_conversation
from rmcore.model import load_reward_model
from rmcore.train.batching import pair_rewards

PROMPT = [{"role": "user", "content": "please help with my question"}]
CHOSEN = PROMPT + [{"role": "assistant", "content": "sure , here is a good answer"}]
REJECTED = PROMPT + [{"role": "assistant", "content": "no"}]


def _rewards(model, convs):
    ids = [encode_conversation(model.tokenizer, c, max_length=128) for c in convs]
    half = len(ids) // 2
    batch = collate_pairs(ids[:half], ids[half:], pad_id=model.tokenizer.pad_token_id)
    with torch.no_grad():
        return model(batch.input_ids, batch.attention_mask)


def test_pad_equal_to_eos_gets_a_dedicated_pad_token(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = build_tiny_model_dir(tmp_path / "m", "llama", pad_equals_eos=True)
    raw_tok = AutoTokenizer.from_pretrained(folder)
    assert raw_tok.pad_token_id == raw_tok.eos_token_id  # the unsafe setup
    model = load_reward_model(folder)
    tok = model.tokenizer
    assert tok.pad_token_id not in (tok.eos_token_id, None)
    assert model.config.pad_token_id == tok.pad_token_id == len(raw_tok)
    assert model.hf.get_input_embeddings().weight.shape[0] == len(raw_tok) + 1
    r_c, r_r = _rewards(model, [CHOSEN, REJECTED]).tolist()
    assert r_c != pytest.approx(r_r, abs=1e-6)

    # What pad == eos breaks: the template ends every turn with </s>, so "the first pad" of
    # both sequences is the end of the shared prompt; a reward read there (the classic
    # `argmax(ids == pad) - 1` idiom) is the same number for chosen and rejected.
    raw = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = [encode_conversation(raw_tok, c, max_length=128) for c in (CHOSEN, REJECTED)]
    first_pad = [s.index(raw_tok.pad_token_id) for s in ids]
    # <s> <|user|> please help with my question </s>: the first "pad" is index 7 in both.
    assert first_pad == [7, 7]
    with torch.no_grad():
        hidden = [
            raw.model(input_ids=torch.tensor([s])).last_hidden_state[0, i - 1] for s, i in zip(ids, first_pad)
        ]
    assert torch.allclose(raw.score(hidden[0]), raw.score(hidden[1]), atol=1e-6)  # same up to float noise


def test_no_pad_token_gets_one(tmp_path):
    folder = build_tiny_model_dir(tmp_path / "m", "llama")
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    model = load_reward_model(folder)
    assert model.tokenizer.pad_token == "<|rmflow_pad|>"
    assert model.config.pad_token_id == model.tokenizer.pad_token_id


def test_pooling_auto(tmp_path):
    assert load_reward_model(build_tiny_model_dir(tmp_path / "l", "llama")).pooling == "last"
    assert load_reward_model(build_tiny_model_dir(tmp_path / "b", "bert")).pooling == "cls"
    st = build_tiny_model_dir(tmp_path / "st", "bert", sentence_transformers_mean=True)
    assert load_reward_model(st).pooling == "mean"
    assert load_reward_model(st, pooling="cls").pooling == "cls"
    saved = build_tiny_model_dir(tmp_path / "s", "bert", sentence_transformers_mean=True, pooling="cls")
    assert load_reward_model(saved).pooling == "cls"  # rmflow_reward.json wins


def test_mean_pooling_ignores_padding_and_length_groups_change_nothing(tmp_path):
    model = load_reward_model(build_tiny_model_dir(tmp_path / "m", "bert", pooling="mean")).eval()
    alone = [_rewards(model, [c, c]).tolist()[0] for c in (CHOSEN, REJECTED)]
    together = _rewards(model, [CHOSEN, REJECTED]).tolist()
    assert together == pytest.approx(alone, abs=1e-5)
    ids = [
        encode_conversation(model.tokenizer, c, max_length=128) for c in (CHOSEN, REJECTED, REJECTED, CHOSEN)
    ]
    one = collate_pairs(ids[:2], ids[2:], pad_id=0, max_groups=1)
    grouped = collate_pairs(ids[:2], ids[2:], pad_id=0, max_groups=4)
    assert len(grouped.groups) > 1 or one.processed_tokens == grouped.processed_tokens
    with torch.no_grad():
        assert pair_rewards(model, grouped).tolist() == pytest.approx(
            pair_rewards(model, one).tolist(), abs=1e-5
        )


def test_save_and_reload_keep_rewards_and_norm_stats(tmp_path):
    model = load_reward_model(
        build_tiny_model_dir(tmp_path / "m", "llama", pad_equals_eos=True), max_length=96
    )
    before = _rewards(model, [CHOSEN, REJECTED])
    out = model.save(tmp_path / "out", norm_stats={"mean": 0.5, "std": 2.0})
    assert {"model.safetensors", "config.json", "tokenizer.json", "rmflow_reward.json"} <= {
        p.name for p in out.iterdir()
    }
    saved = json.loads((out / "rmflow_reward.json").read_text())
    assert (saved["pooling"], saved["max_length"], saved["truncation"]) == ("last", 96, "left")
    assert saved["norm_stats"] == {"mean": 0.5, "std": 2.0} and saved["rmcore_version"]
    again = load_reward_model(out)
    assert again.tokenizer.pad_token_id == model.tokenizer.pad_token_id  # no second pad added
    assert (again.max_length, again.norm_stats) == (96, {"mean": 0.5, "std": 2.0})
    assert torch.equal(_rewards(again, [CHOSEN, REJECTED]), before)
    assert again.normalize(torch.tensor([2.5])).item() == pytest.approx(1.0)


def _pipeline_scores(folder, texts):
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(folder), function_to_apply="none", device="cpu")
    return [out["score"] for out in pipe(texts)]


def test_pipeline_reproduces_last_pooling(tmp_path):
    model = load_reward_model(
        build_tiny_model_dir(tmp_path / "m", "llama", pad_equals_eos=True, chat_template=False)
    )
    out = model.save(tmp_path / "out")
    texts = ["Human: please help\n\nAssistant: sure , happy to help", "Human: hi\n\nAssistant: no"]
    ids = [model.tokenizer(t).input_ids for t in texts]
    with torch.no_grad():
        ours = model(*_padded(ids, model.tokenizer.pad_token_id)).tolist()
    assert _pipeline_scores(out, texts) == pytest.approx(ours, abs=1e-5)


def test_pipeline_does_not_reproduce_mean_pooling(tmp_path):
    """Documented in rmcore.model: the stock head reads the BERT pooler, not the masked mean."""
    model = load_reward_model(build_tiny_model_dir(tmp_path / "m", "bert", pooling="mean")).eval()
    out = model.save(tmp_path / "out")
    texts = ["human : please help assistant : sure", "human : hi assistant : no"]
    ids = [model.tokenizer(t).input_ids for t in texts]
    with torch.no_grad():
        ours = model(*_padded(ids, model.tokenizer.pad_token_id)).tolist()
        model.pooling = "cls"
        stock = model(*_padded(ids, model.tokenizer.pad_token_id)).tolist()
    piped = _pipeline_scores(out, texts)
    assert piped == pytest.approx(stock, abs=1e-5)
    assert all(abs(p - o) > 1e-4 for p, o in zip(piped, ours))


def _padded(ids, pad_id):
    width = max(map(len, ids))
    input_ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in ids])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
    return input_ids, mask


def test_grouped_rewards_look_up_embeddings_once_with_the_same_rewards_and_gradients(tmp_path):
    """Length groups share one embedding lookup (one vocab x hidden gradient per micro-batch),
    with rewards and gradients equal to running the groups one by one."""
    model = load_reward_model(build_tiny_model_dir(tmp_path / "m", "bert", pooling="mean")).eval()
    ids = [
        encode_conversation(model.tokenizer, c, max_length=128) for c in (CHOSEN, REJECTED, REJECTED, CHOSEN)
    ]
    ids[1] = ids[1][:3]  # very different lengths: the batch splits into groups
    batch = collate_pairs(ids[:2], ids[2:], pad_id=0, max_groups=4, group_overhead=0)
    assert len(batch.groups) > 1
    calls = []
    model.hf.get_input_embeddings().register_forward_hook(lambda *a: calls.append(1))
    shared = pair_rewards(model, batch)
    assert len(calls) == 1
    shared.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert "hf.bert.embeddings.word_embeddings.weight" in grads
    model.zero_grad()
    separate = torch.cat([model(g.input_ids, g.attention_mask) for g in batch.groups])
    separate = separate[torch.argsort(torch.cat([g.rows for g in batch.groups]))]
    assert len(calls) == 1 + len(batch.groups)
    assert shared.tolist() == pytest.approx(separate.tolist(), abs=1e-6)
    separate.sum().backward()
    for name, param in model.named_parameters():
        assert (param.grad is None) == (name not in grads), name
        if param.grad is not None:
            torch.testing.assert_close(grads[name], param.grad, atol=1e-6, rtol=1e-5, msg=name)
