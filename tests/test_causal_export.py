"""A trained causal reward model, exported and used outside the trainer.

A tiny model trained for 2 steps by ``rmcore.train.train_reward_model``, then scored on real
hh-rlhf conversations three ways, which must agree: ``rmcore.scoring.score_conversations`` on
the reloaded folder, ``transformers.pipeline("text-classification")`` on the folder itself
(given the chat-template text, tokenised exactly as rmflow tokenises it) and the MLflow pyfunc
logged to a SQLite store. And the reward is read where it should be: at the last real token,
whatever padding follows.

Two backbones: the tiny Llama of tests/tiny.py shipping pad == eos (training gives it a
dedicated pad token and resizes the embeddings; its template writes BOS itself and ends every
turn with EOS) and a tiny Qwen2 built here (byte-level BPE, ChatML template, no BOS,
``<|im_end|>`` as EOS and a pad token of its own, as Qwen2.5-Instruct ships).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import build_tiny_model_dir
from train_helpers import hh_pairs, tiny_config, toy_pairs, write_mixture

from rmcore.encoding import render_conversation
from rmcore.model import load_reward_model
from rmcore.scoring import encode_conversations, score_conversations
from rmcore.train import train_reward_model

MAX_LENGTH = 4096
"""Longer than every scored conversation: nothing is truncated, so every scorer sees the whole
text (rmflow cuts from the left, keeping BOS; the pipeline would cut from the right)."""

_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
)


def build_tiny_qwen2_dir(path: Path, *, seed: int = 0) -> Path:
    """A 2-layer ``Qwen2ForSequenceClassification`` folder with a byte-level BPE tokenizer
    (learnt here from the toy pairs' words: any text encodes, no [UNK]) and a ChatML template."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast, Qwen2Config

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [m["content"] for p in toy_pairs(40) for side in ("chosen", "rejected") for m in p[side]]
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=32768
    )
    tokenizer.chat_template = _CHATML
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=False,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


BACKBONES = {
    "llama-pad-eos": lambda path: build_tiny_model_dir(path, "llama", pad_equals_eos=True),
    "qwen2": build_tiny_qwen2_dir,
}


@pytest.fixture(scope="module", params=list(BACKBONES))
def trained(request, tmp_path_factory) -> Path:
    """The exported folder of a tiny causal reward model trained for 2 steps (pooling "auto")."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    base = BACKBONES[request.param](root / "base")
    mix = write_mixture(root / "mixture.parquet", toy_pairs(24))
    result = train_reward_model(
        tiny_config(base, max_steps=2, max_length=MAX_LENGTH), mixture_path=mix, output_dir=root / "out"
    )
    assert result.steps == 2
    return result.model_dir


@pytest.fixture(scope="module")
def conversations(shared_data) -> list[list[dict[str, str]]]:
    """Both sides of the first 5 real helpful-base pairs: 10 conversations of 2 to 8 turns."""
    return [
        pair[side] for pair in hh_pairs(shared_data, "helpful-base", n=5) for side in ("chosen", "rejected")
    ]


def test_the_export_is_a_last_token_model_with_a_pad_token_of_its_own(trained):
    model = load_reward_model(trained)
    tok = model.tokenizer
    assert model.pooling == "last"  # "auto" resolved from the causal architecture, saved with the model
    assert json.loads((trained / "rmflow_reward.json").read_text())["pooling"] == "last"
    assert tok.pad_token_id not in (None, tok.eos_token_id)
    # what the pipeline reads from the folder: the same pad id, and a row for it in the embeddings
    assert json.loads((trained / "config.json").read_text())["pad_token_id"] == tok.pad_token_id
    assert model.hf.get_input_embeddings().weight.shape[0] == len(tok)


def test_the_pipeline_gives_rmflows_rewards(trained, conversations):
    from transformers import pipeline

    model = load_reward_model(trained)
    expected = score_conversations(model, conversations)
    assert len(set(np.round(expected, 6))) == len(conversations)  # the comparison below is not vacuous
    ours = encode_conversations(model, conversations)
    assert max(map(len, ours)) < model.max_length  # untruncated: both scorers see the whole text

    pipe = pipeline("text-classification", model=str(trained), function_to_apply="none", device="cpu")
    texts = [render_conversation(pipe.tokenizer, c)[0] for c in conversations]
    # The pipeline calls its tokenizer with the text and the keyword arguments it is given. The
    # Llama template writes BOS itself and the tokenizer would add a second one, so the text goes
    # in with add_special_tokens=False: then the ids are rmflow's (Qwen2 adds nothing either way).
    assert pipe.tokenizer(texts, add_special_tokens=False)["input_ids"] == ours
    bos = pipe.tokenizer.bos_token_id
    assert pipe.tokenizer(texts[0])["input_ids"] == ([bos] if bos is not None else []) + ours[0]

    one_by_one = [out["score"] for out in pipe(texts, add_special_tokens=False)]
    np.testing.assert_allclose(one_by_one, expected, rtol=0, atol=1e-5)
    # all ten in one right-padded batch: the stock head finds each last real token by the pad id
    batched = [out["score"] for out in pipe(texts, add_special_tokens=False, batch_size=len(texts))]
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-5)


def test_the_mlflow_pyfunc_gives_the_same_rewards(trained, conversations, mlflow_uri):
    import mlflow

    import tracking
    from tracking.registry import log_reward_pyfunc

    expected = score_conversations(load_reward_model(trained), conversations)
    # an experiment of our own keeps the artifacts beside the test's DB (the default one: ./mlruns)
    with mlflow.start_run(experiment_id=tracking.ensure_experiment("causal-export")) as run:
        uri = log_reward_pyfunc(run.info.run_id, trained)
    loaded = mlflow.pyfunc.load_model(uri)
    rewards = loaded.predict([{"messages": c} for c in conversations])["reward"].to_numpy()
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-5)


def test_the_reward_is_read_at_the_last_real_token(trained, conversations):
    """Padding after the answer changes nothing, attended to or not (attention is causal and the
    head reads the last token that is not the pad id); the reward is the score head on the
    hidden state of that token. For the Llama it is the template's EOS closing the answer's
    turn, a token that was the pad id before training gave the model its own pad; for Qwen2 it
    is ``<|im_end|>`` (the newline ChatML writes after it is not rendered: rmcore.encoding)."""
    model = load_reward_model(trained).eval()
    tok, pad = model.tokenizer, model.tokenizer.pad_token_id
    encoded = encode_conversations(model, conversations)
    rewards, one_early = [], []
    with torch.no_grad():
        for ids in encoded:
            assert ids[-1] == tok.eos_token_id  # Llama: <s> ... </s>; Qwen2: ... <|im_end|>
            x = torch.tensor([ids])
            reward = model(x, torch.ones_like(x))
            padded = torch.tensor([ids + [pad] * 7])
            masked = (padded != pad).long()
            assert model(padded, masked).item() == pytest.approx(reward.item(), abs=1e-6)
            assert model(padded, torch.ones_like(padded)).item() == pytest.approx(reward.item(), abs=1e-6)
            hidden = model.hf.base_model(input_ids=x).last_hidden_state[0]
            head = model.hf.score
            assert head(hidden[-1]).item() == pytest.approx(reward.item(), abs=1e-6)
            rewards.append(reward.item())
            one_early.append(head(hidden[-2]).item())
        # the ten together, right-padded to the longest, as the scorer batches them
        width = max(map(len, encoded))
        batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded])
        together = model(batch, (batch != pad).long()).numpy()
    alone = score_conversations(model, conversations, batch_size=1)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(alone, rewards, rtol=0, atol=1e-5)
    # one token early (where the Llama's pad == eos would have had the head read) reads other values
    assert np.abs(np.subtract(one_early, rewards)).min() > 1e-4, (one_early, rewards)
