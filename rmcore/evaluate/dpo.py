"""DPO implicit rewards: a chat LM (a DPO-trained policy) scored as a reward model (seed 000).

DPO's policy defines a reward ``beta * (log pi(y|x) - log pi_ref(y|x))``, summed over the
response tokens; RewardBench scores DPO models with it ("DPO" rows of its leaderboard).
Without a reference model RewardBench's ``run_dpo.py`` offers reference-free variants,
reducing the policy's per-token log-probabilities of the response by a length rule
(allenai/reward-bench, rewardbench/dpo.py ``get_batch_logps``; scripts/run_dpo.py):

- ``sum``: their sum, ``log pi(y|x)`` (longer answers lose log-probability);
- ``avg``: their mean per token (RewardBench's command-line default, and rmflow's);
- ``norm``: minus their L2 norm, ``-||log p_1..n||_2``.

With a reference model the reward is the log-ratio of the sums (RewardBench's form) times
``beta``; beta scales every reward alike, so it changes no accuracy.

The response is the final assistant turn: its content and the end-of-turn token the chat
template writes after it (RewardBench appends EOS to the answer), found in the rendered
conversation by character offsets, so the prompt, the template's role header and any system
turn are the condition ``x``, never scored. Conversations are rendered exactly as rmflow's
reward models see them (rmcore.encoding); left truncation keeps the answer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rmcore.encoding import SystemPrompt, render_conversation

log = logging.getLogger(__name__)

LengthRule = Literal["sum", "avg", "norm"]
LENGTH_RULES: tuple[LengthRule, ...] = ("sum", "avg", "norm")
DEFAULT_LENGTH_RULE: LengthRule = "avg"


@dataclass
class DpoScorer:
    """A policy (and optional reference) with their tokenizer, and how rewards are formed."""

    policy: Any
    tokenizer: Any
    reference: Any | None = None
    length_rule: LengthRule = DEFAULT_LENGTH_RULE
    beta: float = 1.0
    max_length: int = 1024
    batch_size: int = 8
    system_prompt: SystemPrompt = "template"

    def __post_init__(self) -> None:
        if self.length_rule not in LENGTH_RULES:
            raise ValueError(f"length rule must be one of {', '.join(LENGTH_RULES)}, got {self.length_rule!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


def load_causal_lm(path: str) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder (safetensors only, no remote code), fp32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmcore.model import require_safetensors

    require_safetensors(Path(path))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        path, torch_dtype=torch.float32, trust_remote_code=False, use_safetensors=True
    )
    return model.eval().requires_grad_(False), tokenizer


def answer_tokens(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, max_length: int, system_prompt: SystemPrompt = "template"
) -> tuple[list[int], int]:
    """Token ids of the rendered conversation and the index of the final answer's first token.

    Cut from the left to ``max_length`` (the answer is kept; an answer longer than the budget
    keeps its last tokens and is scored from its first kept token)."""
    if not messages or messages[-1]["role"] != "assistant" or not str(messages[-1]["content"]).strip():
        raise ValueError("a DPO reward needs a conversation ending with a non-empty assistant turn")
    text, templated = render_conversation(tokenizer, messages, system_prompt)
    answer = str(messages[-1]["content"])
    start = text.rfind(answer)
    if start < 0:
        start = text.rfind(answer.strip())
    if start < 0:
        raise ValueError("the chat template changed the final answer's text: cannot find which tokens score")
    enc = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    first = next((i for i, (a, b) in enumerate(offsets) if b > start and b > a), len(ids))
    if first == 0:
        raise ValueError("the answer starts the text: there is no prompt token to condition on")
    if len(ids) > max_length:
        cut = len(ids) - max_length
        ids, first = ids[cut:], max(first - cut, 1)
    return ids, first


def answer_logps(model: Any, encoded: Sequence[tuple[list[int], int]], *, batch_size: int, pad_id: int) -> list[np.ndarray]:
    """Per-token log-probabilities of each answer under ``model`` (fp32 log-softmax), in order."""
    order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")
    out: list[np.ndarray] = [np.zeros(0)] * len(encoded)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = [encoded[j] for j in order[i : i + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (ids, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            for row, (ids, first) in enumerate(chunk):
                # token t is predicted at position t - 1
                logp = torch.log_softmax(logits[row, first - 1 : len(ids) - 1].float(), dim=-1)
                target = torch.tensor(ids[first:], device=logp.device).unsqueeze(1)
                out[int(order[i + row])] = logp.gather(1, target).squeeze(1).cpu().double().numpy()
    return out


def reduce_logps(logps: np.ndarray, rule: LengthRule) -> float:
    """One answer's per-token log-probabilities reduced by a reference-free length rule."""
    if rule == "sum":
        return float(logps.sum())
    if rule == "avg":
        return float(logps.mean())
    if rule == "norm":
        return float(-np.linalg.norm(logps))
    raise ValueError(f"unknown length rule {rule!r}")


def dpo_rewards(scorer: DpoScorer, conversations: Sequence[Sequence[dict[str, str]]]) -> dict[str, np.ndarray]:
    """Rewards of each conversation's final answer: ``reward`` (the scorer's form) and, without a
    reference, the reward under every length rule (``sum``, ``avg``, ``norm``) from the same pass."""
    tok = scorer.tokenizer
    encoded = [
        answer_tokens(tok, c, max_length=scorer.max_length, system_prompt=scorer.system_prompt) for c in conversations
    ]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    policy = answer_logps(scorer.policy, encoded, batch_size=scorer.batch_size, pad_id=pad)
    if scorer.reference is not None:
        ref = answer_logps(scorer.reference, encoded, batch_size=scorer.batch_size, pad_id=pad)
        ratio = np.array([p.sum() - r.sum() for p, r in zip(policy, ref)], dtype=np.float64)
        return {"reward": scorer.beta * ratio}
    by_rule = {rule: np.array([reduce_logps(p, rule) for p in policy], dtype=np.float64) for rule in LENGTH_RULES}
    return {"reward": scorer.beta * by_rule[scorer.length_rule], **by_rule}


def evaluate_rewardbench_dpo(
    scorer: DpoScorer,
    rewardbench_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: Any = None,
    *,
    described: dict[str, Any] | None = None,
) -> dict:
    """RewardBench v1 with DPO implicit rewards, aggregated exactly as for a reward model;
    without a reference, the overall score under each length rule is reported beside."""
    from rmcore.evaluate.config import EvalConfig
    from rmcore.evaluate.rewardbench import (
        load_checked_rewardbench,
        scores_table,
        summarize_rewardbench,
        write_rewardbench_outputs,
    )
    from rmcore.evaluate.rewardbench_data import conversations

    config = config or EvalConfig()
    rows = load_checked_rewardbench(rewardbench_path, config)
    n = len(rows.frame)
    log.info("RewardBench (DPO implicit rewards, %s): scoring %d pairs from %s", form(scorer), n, rows.origin)
    start = time.perf_counter()
    rewards = dpo_rewards(scorer, conversations(rows.frame, "chosen") + conversations(rows.frame, "rejected"))
    seconds = time.perf_counter() - start
    c, r = rewards["reward"][:n], rewards["reward"][n:]
    summary = summarize_rewardbench(rows, c, r, config)
    by_rule = {
        rule: summarize_rewardbench(rows, rewards[rule][:n], rewards[rule][n:], config)["overall"]
        for rule in LENGTH_RULES
        if rule in rewards
    }
    summary.update(
        model_dir=str((described or {}).get("policy", "")),
        scoring={"kind": "dpo", "form": form(scorer), "seconds": seconds, "pairs_per_s": n / seconds if seconds else None,
                 "max_length": scorer.max_length, "batch_size": scorer.batch_size, "precision": "fp32",
                 "precision_reason": "DPO log-probabilities are computed in fp32"},
        dpo={**(described or {}), "length_rule": None if scorer.reference is not None else scorer.length_rule,
             "beta": scorer.beta, "overall_by_length_rule": by_rule},
    )
    write_rewardbench_outputs(summary, scores_table(rows.frame, c, r), Path(out_dir), config)
    log.info("RewardBench overall %s with DPO rewards (%s)", summary["overall"], form(scorer))
    return summary


def form(scorer: DpoScorer) -> str:
    """How the reward is formed, in words for logs and reports."""
    if scorer.reference is not None:
        return f"beta {scorer.beta:g} x (log pi - log pi_ref), summed over the answer"
    return f"reference-free, length rule {scorer.length_rule}"
