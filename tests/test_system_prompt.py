"""The chat template's default system prompt: kept (``template``, default) or left out (``none``),
the same way in training, in the saved model and in every scorer."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import build_tiny_model_dir, build_tiny_tokenizer
from train_helpers import tiny_config, toy_pairs, write_mixture

from rmcore.encoding import encode_conversations, render_conversation
from rmcore.model import load_reward_model
from rmcore.scoring import score_conversations
from rmcore.train import train_reward_model

# SmolLM2-135M-Instruct's template (ChatML; BOS <|im_start|> is also the turn opener), as its GGUF ships it.
CHATML_DEFAULT_SYSTEM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
)
# Llama-3 style: a document BOS before the first turn, and a default system turn.
DOC_BOS_DEFAULT_SYSTEM = (
    "{{ bos_token }}{% if messages[0]['role'] != 'system' %}<|system|>\ndefault rules{{ eos_token }}\n{% endif %}"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
)
CONV = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def _chatml_tokenizer():
    tok = build_tiny_tokenizer("llama", chat_template=True)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"  # pad == eos, as SmolLM2
    tok.chat_template = CHATML_DEFAULT_SYSTEM
    return tok


def test_chatml_default_system_prompt_is_kept_or_left_out_without_a_stray_bos():
    tok = _chatml_tokenizer()
    kept, _ = render_conversation(tok, CONV, "template")
    none, _ = render_conversation(tok, CONV, "none")
    assert kept == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>"
    )  # the newline after the final <|im_end|> is not rendered: the reward is read at <|im_end|>
    assert none == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>"
    # A conversation with its own system message renders the same either way.
    own = [{"role": "system", "content": "be brief"}, *CONV]
    assert render_conversation(tok, own, "none") == render_conversation(tok, own, "template")
    ids = encode_conversations(tok, [CONV], max_length=512, system_prompt="none")[0]
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids.count(ids[0]) == 2  # two turns, no doubled BOS
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")  # the reward is read at the answer's end token


def test_a_document_bos_before_the_default_system_turn_is_kept():
    tok = build_tiny_tokenizer("llama", chat_template=True)
    tok.chat_template = DOC_BOS_DEFAULT_SYSTEM
    assert render_conversation(tok, CONV, "template")[0].startswith("<s><|system|>\ndefault rules</s>\n")
    assert render_conversation(tok, CONV, "none")[0] == "<s><|user|>\nhi</s>\n<|assistant|>\nhello</s>"


def test_the_choice_is_trained_saved_and_used_by_the_scorer(tmp_path: Path):
    model_dir = build_tiny_model_dir(tmp_path / "tiny", arch="llama")
    tok = _chatml_tokenizer()
    tok.save_pretrained(model_dir)  # the tiny Llama now ships SmolLM2's template
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(8))
    result = train_reward_model(
        tiny_config(model_dir, system_prompt="none", max_steps=1, eval_fraction=0.0),
        mixture_path=mixture,
        output_dir=tmp_path / "out",
    )
    model = load_reward_model(result.model_dir)
    assert model.system_prompt == "none"
    pad = model.tokenizer.pad_token_id
    assert pad != model.tokenizer.eos_token_id  # a dedicated pad token, not <|im_end|>
    convs = [CONV, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bye"}]]
    scored = score_conversations(model, convs)
    model.system_prompt = "template"
    with_default = score_conversations(model, convs)
    assert scored.tolist() != pytest.approx(with_default.tolist())  # the rendering reaches the scorer
