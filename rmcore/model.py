"""The reward model: any HF checkpoint as a one-label sequence classifier, pad-safe, with pooling.

The weights are always a stock ``AutoModelForSequenceClassification`` layout (num_labels=1),
so a saved folder loads with ``transformers.pipeline("text-classification",
function_to_apply="none")``. Where the reward is read (pooling) follows the backbone:

- ``"last"``: last non-pad token (the transformers default for causal LMs);
- ``"cls"``: the stock encoder head (BERT: pooler over [CLS], then the classifier);
- ``"mean"``: the classifier applied to the attention-masked mean of the last hidden
  state (how sentence-transformers encoders such as all-MiniLM-L6-v2 were trained).

For "last" and "cls" the stock forward *is* the reward, so the pipeline reproduces it
exactly, given the text ``rmcore.encoding.render_conversation`` renders and, where the chat
template writes its own BOS, ``add_special_tokens=False`` (else the pipeline doubles the BOS). For "mean" the pooling is computed here, outside the stock forward, so the
pipeline does NOT reproduce mean-pooled rewards (it would read the BERT pooler); use
``load_reward_model`` + ``RewardModel`` for those (``rmflow_reward.json`` records the pooling).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import torch

import rmcore
from rmcore.io import write_json
from rmcore.train.packed_causal import packed_last_rewards
from rmcore.train.packed_encoder import packed_mean_rewards, reward_columns

log = logging.getLogger(__name__)

Pooling = Literal["last", "mean", "cls"]
REWARD_JSON = "rmflow_reward.json"
DEFAULT_PAD = "<|rmflow_pad|>"


class RewardModel(torch.nn.Module):
    """A scalar reward per sequence: ``forward(input_ids, attention_mask) -> float32 [batch]``.

    ``hf`` is the wrapped ``AutoModelForSequenceClassification``; ``norm_stats`` holds the
    eval-set reward mean/std recorded at save time (or None); ``truncation`` is the side
    long inputs are cut from ("left") or "drop".
    """

    def __init__(
        self,
        hf: torch.nn.Module,
        tokenizer: Any,
        *,
        pooling: Pooling,
        max_length: int,
        truncation: str = "left",
        system_prompt: str = "template",
        norm_stats: dict[str, float] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in ("last", "mean", "cls"):
            raise ValueError(f"pooling must be 'last', 'mean' or 'cls', got {pooling!r}")
        self.hf = hf
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.truncation = truncation
        self.system_prompt = system_prompt
        """How a chat template renders a conversation without a system message (rmcore.encoding)."""
        self.norm_stats = norm_stats
        self.trust_remote_code = trust_remote_code
        """Whether the backbone was loaded with custom (repository) code: recorded when saved."""
        self.packed = False
        """Run all length groups in one packed pass (rmcore.train.packed_encoder for "mean" pooling,
        rmcore.train.packed_causal for "last"); set by training."""
        self.combination: torch.Tensor | None = None
        """A multi-output head's reward: ``outputs @ combination`` (the regression model's declared
        weights; rmcore.train.regression). None: the outputs themselves ([batch, outputs])."""
        self.raw_outputs = False
        """Return a multi-output head's outputs, not their combination (the regression loss reads them)."""
        self.reward_head: dict[str, Any] | None = None
        """What the one-output head stands for when it is not a plain reward head (a regression
        model's folded attributes: rmcore.train.regression_eval); saved in rmflow_reward.json."""
        if pooling == "mean":
            _linear_head(hf)  # fail at load time, not at the first batch

    @property
    def config(self) -> Any:
        return self.hf.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._rewards(attention_mask, input_ids=input_ids)

    def grouped_rewards(self, groups: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """Rewards of several (input_ids, attention_mask) sub-batches of one micro-batch.

        With "mean" or "cls" pooling the token embeddings of all groups are looked up in one
        call, so backward builds the (vocab x hidden) embedding gradient once per micro-batch
        instead of once per group. "last" pooling needs the input ids inside the stock
        forward (to find the last non-pad token), so its groups run one by one. With
        ``packed`` set, all groups go through the backbone in one packed pass.
        """
        if self.packed and self.pooling == "last":
            return [self._combined(r) for r in packed_last_rewards(self.hf, groups)]
        if self.packed:
            return [self._combined(r) for r in packed_mean_rewards(self.hf, _linear_head(self.hf), groups)]
        if self.pooling == "last" or len(groups) == 1:
            return [self(ids, mask) for ids, mask in groups]
        flat = torch.cat([ids.reshape(-1) for ids, _ in groups])
        embeds = self.hf.get_input_embeddings()(flat).split([ids.numel() for ids, _ in groups])
        return [
            self._rewards(mask, inputs_embeds=e.view(*ids.shape, -1))
            for (ids, mask), e in zip(groups, embeds, strict=True)
        ]

    def _rewards(self, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            hidden = self.hf.base_model(attention_mask=attention_mask, **inputs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            rewards = _linear_head(self.hf)(pooled)
        else:
            rewards = self.hf(attention_mask=attention_mask, **inputs).logits
        return self._combined(reward_columns(rewards))

    def _combined(self, rewards: torch.Tensor) -> torch.Tensor:
        if rewards.dim() == 1 or self.raw_outputs or self.combination is None:
            return rewards
        return (rewards * self.combination.to(rewards)).sum(-1)  # not a matmul: autocast keeps it fp32

    def normalize(self, rewards: torch.Tensor) -> torch.Tensor:
        """Rewards standardised with the saved eval-set mean/std (identity when none saved)."""
        if not self.norm_stats:
            return rewards
        return (rewards - self.norm_stats["mean"]) / max(self.norm_stats["std"], 1e-8)

    def save(self, out_dir: str | Path, *, norm_stats: dict[str, float] | None = None) -> Path:
        """Write a plain HF folder: model.safetensors, config.json, tokenizer, rmflow_reward.json."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if norm_stats is not None:
            self.norm_stats = {k: float(v) for k, v in norm_stats.items()}
        self.hf.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        write_json(
            {
                "pooling": self.pooling,
                "max_length": self.max_length,
                "truncation": self.truncation,
                "system_prompt": self.system_prompt,
                "norm_stats": self.norm_stats,
                "trust_remote_code": self.trust_remote_code,
                "rmcore_version": rmcore.__version__,
                **({"reward_head": self.reward_head} if self.reward_head else {}),
            },
            out / REWARD_JSON,
        )
        return out


def _linear_head(hf: torch.nn.Module) -> torch.nn.Linear:
    """The classifier as one Linear(hidden -> 1): ``classifier`` (BERT-like) or ``score`` (causal)."""
    for name in ("classifier", "score"):
        head = getattr(hf, name, None)
        if isinstance(head, torch.nn.Linear):
            return head
    raise ValueError(
        f"mean pooling needs a single Linear head named 'classifier' or 'score'; "
        f"{type(hf).__name__} has none. Use pooling='cls' or 'last' for this model."
    )


def _is_causal(config: Any) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return True
    mt = config.model_type
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _sentence_transformers_pooling(folder: Path) -> str | None:
    """ "mean"/"cls" when the folder is a sentence-transformers model with a Pooling module."""
    modules = folder / "modules.json"
    if not modules.exists():
        return None
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("Pooling"):
            cfg_path = folder / module.get("path", "") / "config.json"
            if cfg_path.exists():
                cfg = json.loads(cfg_path.read_text())
                if cfg.get("pooling_mode_mean_tokens"):
                    return "mean"
                if cfg.get("pooling_mode_cls_token"):
                    return "cls"
    return None


def resolve_pooling(folder: Path | None, config: Any, saved: dict[str, Any]) -> Pooling:
    """Pooling "auto": rmflow_reward.json, else "last" for causal LMs, "mean" for
    sentence-transformers mean-pooling encoders, else "cls"."""
    if saved.get("pooling"):
        return saved["pooling"]
    if _is_causal(config):
        return "last"
    if folder is not None and _sentence_transformers_pooling(folder) == "mean":
        return "mean"
    return "cls"


def _head_labels(labels: tuple[str, ...] | None) -> dict[str, Any]:
    if not labels:
        return {"num_labels": 1}
    log.info("a new %d-output head (%s)", len(labels), ", ".join(labels))
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "ignore_mismatched_sizes": True,  # a checkpoint's one-output head is replaced, on purpose
    }


def ensure_pad_token(tokenizer: Any, hf: torch.nn.Module) -> bool:
    """Give the model a dedicated pad token when it has none or pad == eos; True if added.

    With pad == eos, end-of-turn tokens inside the text look like padding, so the reward
    can be read at the wrong place (SPEC section 4: chosen and rejected then score the same).
    """
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    added = False
    if pad is None or (eos is not None and pad == eos):
        tokenizer.add_special_tokens({"pad_token": DEFAULT_PAD})
        added = True
        log.info("added a dedicated pad token %r (id %d); was %r", DEFAULT_PAD, tokenizer.pad_token_id, pad)
    if len(tokenizer) > hf.get_input_embeddings().weight.shape[0]:
        hf.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    hf.config.pad_token_id = tokenizer.pad_token_id
    text_config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else None
    if text_config is not None and text_config is not hf.config:
        text_config.pad_token_id = tokenizer.pad_token_id
    return added


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(folder: Path) -> None:
    """Refuse a local model folder whose weights exist only in a pickle format.

    Loading ``pytorch_model.bin`` unpickles it, which can run any code the file's author
    chose; rmflow reads weights from ``*.safetensors`` only.
    """
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickled:
        raise FileNotFoundError(
            f"{folder}: no *.safetensors weights, only {', '.join(pickled)} (pickle format, refused: "
            "unpickling can run arbitrary code). Convert the weights to safetensors with a tool you "
            "trust, e.g. model.save_pretrained(dir, safe_serialization=True) on a machine you can risk."
        )


def load_reward_model(
    name_or_path: str | Path,
    *,
    pooling: str = "auto",
    max_length: int | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    labels: tuple[str, ...] | None = None,
) -> RewardModel:
    """Load any HF checkpoint (or a saved rmflow reward model) as a pad-safe ``RewardModel``.

    Safetensors only (a folder with only pickle weights is refused). ``trust_remote_code``
    (off unless a recipe sets it) lets a repository's own Python code run; the saved
    ``rmflow_reward.json`` records it, but loading never turns it on from that file.
    ``max_length`` defaults to the saved value, else min(tokenizer max, 512). ``labels`` gives the
    head one output per name (the regression model's attributes, ``model_type: regression``): a new
    head, whatever head the checkpoint has.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(name_or_path) if Path(name_or_path).exists() else None
    saved: dict[str, Any] = {}
    if folder is not None and (folder / REWARD_JSON).exists():
        saved = json.loads((folder / REWARD_JSON).read_text())
    if folder is not None:
        require_safetensors(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    hf = AutoModelForSequenceClassification.from_pretrained(
        str(name_or_path),
        use_safetensors=True,
        **_head_labels(labels),
        trust_remote_code=trust_remote_code,
        dtype=dtype or torch.float32,
    )
    ensure_pad_token(tokenizer, hf)
    chosen = resolve_pooling(folder, hf.config, saved) if pooling == "auto" else pooling
    if max_length is None:
        tok_max = getattr(tokenizer, "model_max_length", 512) or 512
        max_length = int(saved.get("max_length") or min(tok_max, 512))
    log.info("loaded %s: pooling=%s max_length=%d", name_or_path, chosen, max_length)
    model = RewardModel(
        hf,
        tokenizer,
        pooling=chosen,
        max_length=max_length,
        truncation=saved.get("truncation", "left"),
        system_prompt=saved.get("system_prompt", "template"),
        norm_stats=saved.get("norm_stats"),
        trust_remote_code=trust_remote_code,
    )
    model.reward_head = saved.get("reward_head")
    return model
