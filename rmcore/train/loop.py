"""The training loop: one optimizer step at a time over seeded length-grouped global batches,
with progress, metrics, periodic evaluation and checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from rmcore.config import config_hash
from rmcore.progress import Progress
from rmcore.train import distributed as dist
from rmcore.train.batching import plan_global_batches, split_micro_batches
from rmcore.train.config import TrainConfig
from rmcore.train.evaluation import autocast_context, evaluate_pairs

log = logging.getLogger(__name__)


class Window:
    """Running sums of per-step metrics between two log points."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.real = self.processed = 0
        self.seconds = 0.0

    def add(self, metrics: dict[str, float], *, real: int, processed: int, seconds: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.real, self.processed, self.seconds = (
            self.real + real,
            self.processed + processed,
            self.seconds + seconds,
        )

    def peek(self) -> dict[str, float]:
        """Means and rates over the window so far (``flush`` without the reset)."""
        out = {f"train/{k}": v / max(self.steps, 1) for k, v in self.sums.items()}
        out["train/tokens_per_s"] = self.real / max(self.seconds, 1e-9)
        out["train/padding_efficiency"] = self.real / max(self.processed, 1)
        return out

    def flush(self) -> dict[str, float]:
        out = self.peek()
        self.__init__()
        return out


def schedule(config: TrainConfig, lengths: list[int]) -> Iterator[tuple[int, list[int]]]:
    """(step, pair indices of its global batch) for every step of every epoch."""
    step = 0
    for epoch in range(config.optim.epochs):
        plan = plan_global_batches(
            lengths,
            config.batching.global_batch,
            seed=config.seed,
            epoch=epoch,
            mega_batches=config.batching.mega_batches,
            group_by_length=config.batching.group_by_length,
        )
        for batch in plan:
            yield step, batch
            step += 1


class Loop:
    """The training loop's state; ``run`` is the loop, ``train_step`` one optimizer step."""

    def __init__(self, config, engine, objective, eval_pairs, sink, device, total, bf16) -> None:
        self.config, self.engine, self.sink, self.device = config, engine, sink, device
        self.objective = objective  # a rmcore.train.objectives objective: pairs, rankings or rated responses
        self.eval_pairs = eval_pairs
        self.pad_id = engine.model.tokenizer.pad_token_id
        self.total, self.bf16 = total, bf16
        self.hash = config_hash(config)
        self.lengths = objective.lengths
        self.totals, self.window, self.progress_window = Window(), Window(), Window()
        self.last_train: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.cpu_seconds = 0.0  # process CPU time of the steps (less sensitive to a shared CPU)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.seen_pairs: list[int] = []  # item indices (pairs, rankings, responses) this rank trained on
        self.data_stats = {**objective.stats, "eval_pairs": len(eval_pairs)}
        if objective.kind == "bt":
            train_pairs = objective.items
            self.data_stats |= {
                "sequences_truncated": train_pairs.truncated + eval_pairs.truncated,
                "pairs_dropped": train_pairs.dropped + eval_pairs.dropped,
            }
        else:
            self.data_stats |= {k: v for k, v in objective.items.stats.items() if k.endswith("dropped")}
        log.info(
            "training %d steps on %d %s items (%s)",
            total,
            len(objective.lengths),
            objective.kind,
            self.data_stats,
        )

    def run(self, start: int, ckpt_root: Path) -> None:
        cfg = self.config
        progress = Progress(
            "train", self.total, every_steps=cfg.logging.every, every_seconds=cfg.logging.progress_seconds,
            start=start, bar=None if dist.is_main() else False,
        )  # fmt: skip
        with progress:
            for step, batch in schedule(cfg, self.lengths):
                if step < start:
                    continue  # data position: replay the seeded plan up to the checkpoint
                if step >= self.total:
                    break
                self._step(step, batch, ckpt_root, progress)

    def _step(self, step: int, batch: list[int], ckpt_root: Path, progress: Progress) -> None:
        """One optimizer step, then what is due after it: progress, metrics, eval, checkpoint."""
        cfg = self.config
        self.train_step(batch)
        done = step + 1
        if dist.is_main():
            seen = self.progress_window.peek()
            rate = (seen["train/tokens_per_s"], "real tok/s")
            shown = {k: seen.get(f"train/{k}", float("nan")) for k in self.objective.shown}
            if progress.update(done, metrics=shown, rate=rate):
                self.progress_window = Window()
        if done % cfg.logging.every == 0 or done == self.total:
            self.last_train = self.window.flush()
            self.sink.log_metrics(self.last_train, done)
        if cfg.evaluation.every and done % cfg.evaluation.every == 0 and done != self.total:
            self.sink.log_metrics(self.evaluate()[0], done)
        if (cfg.checkpoints.every and done % cfg.checkpoints.every == 0) or done == self.total:
            self.last_checkpoint = self.engine.save(
                ckpt_root,
                done,
                {"config_hash": self.hash, "total_steps": self.total, "train_metrics": self.last_train},
            )

    def train_step(self, batch: list[int]) -> None:
        """One optimizer step over a global batch (gradient accumulation over micro-batches).

        With W ranks this rank runs its share of the micro-batches; loss weights make the
        rank-averaged gradient that of the global batch's mean loss; metric sums are all-reduced.
        """
        cfg = self.config
        t0, c0 = time.perf_counter(), time.process_time()
        lr = self.engine.lr()  # the rate this step uses
        sums: dict[str, float] = {}
        real = processed = 0
        micros = split_micro_batches(batch, self.lengths, cfg.batching.micro_batch)
        pad_to = getattr(self.engine, "micro_steps", None)
        for micro, is_real in dist.shard_micro_batches(micros, self.rank, self.world, pad_to=pad_to):
            share = len(micro) / len(batch) if is_real else 0.0  # of the global batch's mean loss
            autocast = autocast_context(self.device, self.bf16 and self.engine.autocast)
            out = self.objective.micro_loss(self.engine.module, micro, autocast)  # the forward runs under it
            self.engine.backward(out.loss * (share * self.world))  # ranks' gradients are averaged
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + v * share
            if is_real:
                real, processed = real + out.real, processed + out.processed
                self.seen_pairs += micro
        sums["grad_norm"] = self.engine.step()
        if self.world > 1:
            keys = sorted(k for k in sums if k != "grad_norm")  # the grad norm is already global
            *values, real, processed = dist.all_reduce_sum([sums[k] for k in keys] + [real, processed])
            sums |= dict(zip(keys, values))
            real, processed = int(real), int(processed)
        sums["lr"] = lr
        seconds = time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        self.window.add(sums, real=real, processed=processed, seconds=seconds)
        self.progress_window.add(sums, real=real, processed=processed, seconds=seconds)
        self.totals.add({}, real=real, processed=processed, seconds=seconds)

    def evaluate(self) -> tuple[dict[str, float], dict[str, float] | None]:
        return evaluate_pairs(
            self.engine.module,
            self.eval_pairs,
            pad_id=self.pad_id,
            batch=self.config.evaluation.batch,
            device=self.device,
            bf16=self.bf16 and self.engine.autocast,
            config=self.config,
        )
