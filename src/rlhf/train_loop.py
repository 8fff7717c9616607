"""The one training loop of the offline trainers (reward model, DPO, ILQL, and any later one).

Everything around the loss lives here, once: the Accelerator, `prepare`, warm-up/decay, gradient
accumulation, clipping, the stop on a non-finite loss, periodic evaluation and checkpoints, `--resume`,
the progress bar, metric logging (`rlhf.metrics`) and the atomic final save. An algorithm brings its
fixed batches, its optimiser and a loss function `(model, batch) -> (loss, stats)`; the batch order of
each epoch, the deal to processes and the checkpoint file are `rlhf.training`'s.

Steps are optimiser steps: `grad_accum` batches each. Evaluation runs every `eval_every` steps and at
the last step; a checkpoint is written with every evaluation and where `stop_after_steps` stops, so a
time-boxed run always resumes from where it stopped, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.errors import check_finite

CHECKPOINT_DIR = "checkpoint"
LOG_DIR = "logs"


@dataclass(frozen=True)
class LoopConfig:
    """How the loop trains, filled from the algorithm's config (each field means what it does there)."""

    epochs: float  # passes over the batches (unless max_steps)
    max_steps: int  # optimiser steps; 0 = given by epochs
    batch_size: int  # items per batch per process, for the throughput figure
    grad_accum: int = 1  # batches per optimiser step
    lr_schedule: str = "cosine"  # transformers.get_scheduler name: cosine, linear or constant
    warmup_ratio: float = 0.0  # share of the steps warming up linearly
    max_grad_norm: float = 1.0  # clipping norm of the accumulated gradient; 0 = off
    eval_every: int = 0  # evaluate and checkpoint every N steps; 0 = only at the end
    stop_after_steps: int = 0  # stop here as if interrupted, keeping the checkpoint; 0 = off
    seed: int = 0  # batch order per epoch; the loop's generator is seeded with seed + rank
    desc: str = "train"  # progress bar label
    loss_name: str = "loss"  # what a non-finite loss is called in the error
    rate_name: str = "time/pairs_per_s"  # the logged throughput: items per second, all processes
    show: tuple[tuple[str, str], ...] = ()  # (label, stats key) pairs shown on the progress bar
    log_every: int = 10  # training stats every N steps (and at the last)

    def total_steps(self, per_epoch: int) -> int:
        """Optimiser steps of the whole run, given this process's batches per epoch."""
        return self.max_steps or max(1, math.ceil(per_epoch * self.epochs / self.grad_accum))


@dataclass
class LoopResult:
    model: torch.nn.Module  # the trained model, out of Accelerate's wrappers (sharded: `parallel.whole`)
    step: int  # optimiser steps done, resumed ones included
    finished: bool  # False when stop_after_steps stopped the run early
    stats: dict[str, float]  # the last training batch's stats
    metrics: dict[str, Any]  # the last evaluation's (main process; {} elsewhere or without one)
    state: dict[str, Any] = field(default_factory=dict)  # what the checkpoint keeps: step and the algorithm's


@dataclass
class TrainResult:
    """What every offline `train` returns: where the output went, the steps done and the final metrics
    (`{"stopped_at_step": k}` after a time-boxed stop)."""

    out: Path
    steps: int
    metrics: dict[str, Any]


def make_accelerator(run: Any, grad_accum: int = 1, mixed_precision: str | None = None):
    """The Accelerator of an offline run: CPU when `run.device` says so (or no GPU is there), `grad_accum`
    batches per optimiser step; `mixed_precision=None` leaves it to `accelerate launch`'s config."""
    from rlhf import parallel

    kwargs = {} if mixed_precision is None else {"mixed_precision": mixed_precision}
    cpu = run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available())
    return parallel.make_accelerator(cpu, gradient_accumulation_steps=grad_accum, **kwargs)


def train_loop(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list,
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
    loop: LoopConfig,
    *,
    checkpoint: Path,
    log_dir: Path,
    resume: bool = False,
    tensorboard: bool = True,
    show_progress: bool = True,
    evaluate: Callable[[torch.nn.Module, int, dict], Mapping[str, Any]] | None = None,
    after_step: Callable[[torch.nn.Module], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    generator: torch.Generator | None = None,
    state: dict[str, Any] | None = None,
) -> LoopResult:
    """Train `model` on `batches` with `loss_fn` and return the unwrapped model and where it stopped.

    `batches` must give every process at least one batch per epoch (`rlhf.training.epoch_batches`).
    `evaluate(model, step, state)` runs at each evaluation with the unwrapped model: on the main process,
    or under FSDP2 on every process with the sharded model (the same forwards on the same rows, so the
    same metrics everywhere; what it saves it gets whole from `parallel.whole`, a collective). It returns
    metrics to log (main process; a numpy array is logged as a histogram) and may record in `state`,
    which checkpoints keep. `after_step(model)` runs after each optimiser step (e.g. a Polyak update).
    `autocast()` wraps each forward and backward. `generator` (default: seeded with seed + rank) is
    checkpointed and restored on resume; a loss that draws random numbers should draw from it.

    Raises `NonFiniteError` on a NaN/inf loss (nothing of that step is saved), `UserError` on `--resume`
    without a checkpoint."""
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers import get_scheduler

    from rlhf import parallel
    from rlhf.metrics import MetricsLogger, memory_stats, progress
    from rlhf.training import epoch_batches, load_trainer_checkpoint, save_trainer_checkpoint

    rank, world, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process

    # 1. the schedule, Accelerate's wrappers, and the state to resume from
    per_epoch = len(epoch_batches(batches, 0, loop.seed, rank, world))
    if per_epoch == 0:
        raise ValueError(f"no batch for process {rank} of {world}: check the batches before the loop")
    total_steps = loop.total_steps(per_epoch)
    # Under the FSDP2 config every process holds a share of the parameters (rlhf.parallel), the main
    # process included: evaluation runs sharded everywhere, saves gather the state (`parallel.whole`).
    # Under ZeRO-3 the main process keeps a whole copy, loaded from the full state gathered, to evaluate
    # and save.
    sharded = parallel.shards(accelerator)
    zero3 = parallel.deepspeed_stage(accelerator) == 3
    whole = copy.deepcopy(model) if zero3 and is_main else None
    before = dict(model.named_parameters())  # sharding makes new parameters
    names = {id(p): name for name, p in before.items()}
    model, optimizer = parallel.prepare(accelerator, model, lambda: _over(optimizer, model, names),
                                        micro_batch=loop.batch_size, grad_accum=loop.grad_accum,
                                        max_grad_norm=loop.max_grad_norm)  # fmt: skip
    _release_replaced(before, model)
    if not isinstance(optimizer, AcceleratedOptimizer):  # it steps only when the accumulation is complete
        optimizer = accelerator.prepare_optimizer(optimizer)
    # The scheduler is stepped here, once per optimiser step: Accelerate's prepared scheduler steps once
    # per process on every call, so with N processes warm-up and decay ended after 1/N of the run.
    warmup = int(loop.warmup_ratio * total_steps)
    scheduler = get_scheduler(loop.lr_schedule, parallel.torch_optimizer(optimizer), warmup, total_steps)
    raw = accelerator.unwrap_model(model)
    if model is not raw and hasattr(raw, "_rlhf_packing"):
        # the packing verdict found before (DPO's reference pass), kept by the wrapper: checking it again
        # is an extra forward on one process only, which under DDP waits forever for the others
        model._rlhf_packing = raw._rlhf_packing
    generator = generator if generator is not None else torch.Generator().manual_seed(loop.seed + rank)
    state = {"step": 0, **(state or {})}
    if resume:
        state = load_trainer_checkpoint(checkpoint, raw, optimizer, scheduler, generator, sharded)
    logger = MetricsLogger(log_dir, tensorboard=tensorboard) if is_main else None
    sizes = parallel.parameter_counts(model)

    # 2. the loop: accumulate grad_accum batches, clip, step; log, evaluate and checkpoint on steps
    step = state["step"]
    micro = first_micro = step * loop.grad_accum
    stop_at = min(total_steps, loop.stop_after_steps) if loop.stop_after_steps > 0 else total_steps
    bar = progress(total=total_steps, desc=loop.desc, enabled=show_progress and is_main, unit="step")
    bar.update(step)
    started = time.monotonic()
    stats: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    epoch, order = -1, []
    while step < stop_at:
        if micro // per_epoch != epoch:  # each epoch's order once, not once per batch
            epoch = micro // per_epoch
            order = epoch_batches(batches, epoch, loop.seed, rank, world)
        batch = order[micro % per_epoch]
        model.train()
        with accelerator.accumulate(model), autocast():
            if sharded:  # reduce-scatter once per step, not per batch (Accelerate does so on GPUs only)
                raw.set_requires_gradient_sync(accelerator.sync_gradients)
            loss, stats = loss_fn(model, batch)
            loss_value = check_finite(loss.item(), loop.loss_name, step)
            # divided by grad_accum: the step sees the mean over its batches. DeepSpeed's engine clips and
            # steps here, at the last batch of a step (below, clip and step do nothing under it)
            accelerator.backward(loss)
            if accelerator.sync_gradients and loop.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), loop.max_grad_norm)
            optimizer.step()  # Accelerate's wrapper steps only when the accumulation is complete
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        if not accelerator.sync_gradients:
            continue
        if after_step is not None:
            after_step(raw)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", **{label: f"{stats[key]:.3f}" for label, key in loop.show})
        if logger is not None and (step % loop.log_every == 0 or step == total_steps):
            rate = (micro - first_micro) * loop.batch_size * world / (time.monotonic() - started)
            logger.log(
                {
                    **stats,
                    "optim/lr": scheduler.get_last_lr()[0],
                    loop.rate_name: rate,
                    **sizes,
                    **memory_stats(accelerator.device),
                },
                step,
            )
        evaluating = (loop.eval_every and step % loop.eval_every == 0) or step == total_steps
        if evaluating or step == stop_at:
            accelerator.wait_for_everyone()
            saved = _saved_state(sharded, raw, optimizer, checkpoint)  # FSDP2, DeepSpeed: every process
            state["step"] = step
            if whole is not None:
                whole.load_state_dict(saved[0])
            if evaluating and evaluate is not None and (sharded or is_main):
                metrics = dict(evaluate(whole if zero3 else raw, step, state))
                _log_evaluation(logger, metrics, step)
            if is_main:
                move_in = {parallel.DEEPSPEED_DIR: parallel.deepspeed_staging(checkpoint)}
                save_trainer_checkpoint(checkpoint, *saved, scheduler, generator, state,
                                        move_in=move_in if parallel.engine(raw) is not None else None)  # fmt: skip
            accelerator.wait_for_everyone()
    bar.close()
    if logger is not None:
        logger.close()
    final = whole if zero3 and is_main else raw  # (ZeRO-3: the others' partitions; main saves)
    return LoopResult(final, step, step >= total_steps, stats, metrics if is_main else {}, state)


def _over(optimizer: torch.optim.Optimizer, model: torch.nn.Module, names: dict[int, str]):
    """`optimizer` itself when `model` still holds its parameters, else the same optimiser (class, groups,
    settings) over the parameters of the same names: FSDP2 replaces every parameter by its shard."""
    params = dict(model.named_parameters())
    groups = [
        {**group, "params": [params[names[id(p)]] for p in group["params"]]}
        for group in optimizer.param_groups
    ]
    same = all(
        p is q
        for new, old in zip(groups, optimizer.param_groups, strict=True)
        for p, q in zip(new["params"], old["params"], strict=True)
    )
    return optimizer if same else type(optimizer)(groups)


def _release_replaced(before: dict[str, torch.nn.Parameter], model: torch.nn.Module) -> None:
    """Empty the parameters sharding replaced: the algorithm's own optimiser (and its lists of parameters)
    still reference them, and would keep a whole copy of the model alive on every process."""
    kept = {id(p) for p in model.parameters()}
    for p in before.values():
        if id(p) not in kept:
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)


def _saved_state(
    sharded: bool, model: torch.nn.Module, optimizer: Any, checkpoint: Path
) -> tuple[dict, dict]:
    """(model, optimiser) state dicts for a checkpoint: full ones gathered on the main process (keyed by
    parameter name; a collective) when sharded, the process's own otherwise (main process only). Under
    DeepSpeed the full model state, and the optimiser's partitions written by every process beside
    `checkpoint` (`rlhf.parallel.save_deepspeed_state`), to be moved in by the main process."""
    from rlhf import parallel

    if parallel.engine(model) is not None:
        staging = parallel.deepspeed_staging(checkpoint)
        return parallel.full_state_dict(model), parallel.save_deepspeed_state(model, staging)
    if sharded:
        return parallel.full_state_dict(model), parallel.full_optimizer_state_dict(model, optimizer)
    return model.state_dict(), optimizer.state_dict()


def _log_evaluation(logger: Any, metrics: dict[str, Any], step: int) -> None:
    """Scalars as one line, then each array as a histogram line (`histogram/<name>`); arrays are
    taken out of `metrics`, which keeps only the scalars."""
    arrays = {key: metrics.pop(key) for key in list(metrics) if isinstance(metrics[key], np.ndarray)}
    if logger is None or not metrics:
        return
    logger.log(metrics, step)
    for name, values in arrays.items():
        logger.log_histogram(name, values, step)


def save_final(
    accelerator: Any,
    save: Callable[[dict[str, Callable[[Path], Any]], tuple[str, ...]], Any],
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    carry: tuple[str, ...] = (),
) -> None:
    """The final save, on the main process while the others wait: `save(extra_files, carry)` writes the
    model atomically (`rlhf.models.save_atomic`) with the resolved config (`rlhf_config.yaml`) and, when
    given, the final metrics (`eval_metrics.json`) inside, keeping the logs, checkpoints and `carry`."""
    import yaml

    if accelerator.is_main_process:
        extra: dict[str, Callable[[Path], Any]] = {
            "rlhf_config.yaml": lambda p: p.write_text(yaml.safe_dump(config, sort_keys=False))
        }
        if metrics is not None:
            extra["eval_metrics.json"] = lambda p: p.write_text(json.dumps(metrics, indent=2))
        save(extra, (LOG_DIR, CHECKPOINT_DIR, *carry))
    accelerator.wait_for_everyone()
