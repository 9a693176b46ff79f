"""Tiny offline models and tokenizers for tests: built from a config in seconds, no hub.

``build_tiny_tokenizer`` makes a real fast tokenizer (WordPiece over ~300 common words,
single characters and ``##`` continuations, so any ASCII text tokenizes without [UNK]
storms). ``build_tiny_model_dir`` writes a plain HF folder (config + safetensors +
tokenizer) holding a 2-layer ``AutoModelForSequenceClassification`` with one label, which
``rmcore.model.load_reward_model`` loads.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Literal

Arch = Literal["bert", "llama"]

_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "if",
    "then",
    "else",
    "of",
    "to",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "from",
    "as",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "do",
    "does",
    "did",
    "not",
    "no",
    "yes",
    "i",
    "you",
    "he",
    "she",
    "it",
    "we",
    "they",
    "me",
    "him",
    "her",
    "us",
    "them",
    "my",
    "your",
    "his",
    "its",
    "our",
    "their",
    "this",
    "that",
    "these",
    "those",
    "what",
    "which",
    "who",
    "whom",
    "whose",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "can",
    "will",
    "just",
    "should",
    "now",
    "human",
    "assistant",
    "user",
    "system",
    "please",
    "thanks",
    "thank",
    "hello",
    "hi",
    "help",
    "want",
    "need",
    "know",
    "think",
    "make",
    "get",
    "go",
    "good",
    "bad",
    "best",
    "better",
    "well",
    "like",
    "love",
    "hate",
    "right",
    "wrong",
    "sure",
    "sorry",
    "okay",
    "ok",
    "way",
    "time",
    "day",
    "people",
    "person",
    "thing",
    "things",
    "something",
    "anything",
    "nothing",
    "really",
    "also",
    "about",
    "would",
    "could",
    "there",
    "here",
    "out",
    "up",
    "down",
    "over",
    "under",
    "again",
    "because",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "between",
    "one",
    "two",
    "three",
    "first",
    "last",
    "new",
    "old",
    "long",
    "short",
    "great",
    "little",
    "much",
    "many",
    "tell",
    "say",
    "said",
    "ask",
    "asked",
    "answer",
    "question",
    "work",
    "use",
    "find",
    "give",
    "take",
    "come",
    "see",
    "look",
    "feel",
    "try",
    "call",
    "let",
    "keep",
]

_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
)
_ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]


def _vocab(specials: list[str], *, lowercase: bool) -> dict[str, int]:
    chars = string.ascii_lowercase + string.digits + string.punctuation
    if not lowercase:
        chars += string.ascii_uppercase
    pieces = list(dict.fromkeys([*specials, *_WORDS, *chars, *(f"##{c}" for c in chars)]))
    return {tok: i for i, tok in enumerate(pieces)}


def build_tiny_tokenizer(arch: Arch = "bert", *, chat_template: bool = False, pad_equals_eos: bool = False):
    """A fast tokenizer built offline.

    ``bert``: lower-cased, ``[CLS] text [SEP]``, pad ``[PAD]``; ``llama``: cased, BOS ``<s>``
    prepended, EOS ``</s>``, pad ``<pad>`` unless ``pad_equals_eos`` (then pad is ``</s>``,
    the unsafe setup many causal checkpoints ship). ``chat_template`` adds a template that
    itself starts with the BOS token (so a naive encode would double it) and ends every
    turn with EOS.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    if arch == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(
            WordPiece(_vocab(specials, lowercase=True), unk_token="[UNK]", max_input_chars_per_word=100)
        )
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
        )
        tok.decoder = decoders.WordPiece()
        kwargs = {
            "unk_token": "[UNK]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
        eos = "[SEP]"
    elif arch == "llama":
        specials = ["<unk>", "<s>", "</s>"] + ([] if pad_equals_eos else ["<pad>"])
        tok = Tokenizer(
            WordPiece(_vocab(specials, lowercase=False), unk_token="<unk>", max_input_chars_per_word=100)
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
        tok.decoder = decoders.WordPiece()
        kwargs = {
            "unk_token": "<unk>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "</s>" if pad_equals_eos else "<pad>",
        }
        eos = "</s>"
    else:
        raise ValueError(f"arch must be 'bert' or 'llama', got {arch!r}")
    if chat_template and arch == "bert":
        kwargs["bos_token"] = "[CLS]"
        kwargs["eos_token"] = eos
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **kwargs)
    if chat_template:
        fast.add_special_tokens({"additional_special_tokens": _ROLE_TOKENS})
        fast.chat_template = _CHAT_TEMPLATE
    return fast


def _tiny_config(arch: Arch, tokenizer, *, hidden: int):
    from transformers import BertConfig, LlamaConfig

    vocab = len(tokenizer)
    common = {
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_size": hidden,
        "num_hidden_layers": 2,
    }
    if arch == "bert":
        return BertConfig(
            vocab_size=vocab,
            num_attention_heads=2,
            intermediate_size=2 * hidden,
            max_position_embeddings=512,
            **common,
        )
    return LlamaConfig(
        vocab_size=vocab,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **common,
    )


def build_tiny_model_dir(
    path: str | Path,
    arch: Arch = "bert",
    *,
    pad_equals_eos: bool = False,
    pooling: str | None = None,
    chat_template: bool | None = None,
    sentence_transformers_mean: bool = False,
    hidden: int = 32,
    seed: int = 0,
) -> Path:
    """Write a 2-layer HF sequence-classification folder (safetensors + tokenizer) to ``path``.

    ``pooling`` writes an ``rmflow_reward.json`` naming it (else "auto" decides from the
    architecture); ``sentence_transformers_mean`` adds the ``modules.json`` +
    ``1_Pooling/config.json`` a sentence-transformers encoder ships (mean pooling).
    ``chat_template`` defaults to True for llama, False for bert.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if chat_template is None:
        chat_template = arch == "llama"
    tokenizer = build_tiny_tokenizer(arch, chat_template=chat_template, pad_equals_eos=pad_equals_eos)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(_tiny_config(arch, tokenizer, hidden=hidden))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    if pooling is not None:
        (path / "rmflow_reward.json").write_text(json.dumps({"pooling": pooling}) + "\n")
    if sentence_transformers_mean:
        (path / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                ]
            )
        )
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": hidden,
                    "pooling_mode_cls_token": False,
                    "pooling_mode_mean_tokens": True,
                }
            )
        )
    return path
