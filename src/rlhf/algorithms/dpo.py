"""Direct preference optimisation (DPO, Rafailov et al. 2023) and its variants: cDPO, IPO.

`train(cfg, run, out)` reads as numbered steps: load and split the preference data (the reward model's
readers and validation), tokenize once into fixed batches, compute the reference log-probs ONCE with the
initial model (so no reference model is held during training), then the offline trainers' shared loop
(`rlhf.train_loop`: Accelerate, gradient accumulation, clipping, warm-up/decay, periodic evaluation,
atomic checkpoints and resume) with one forward per batch -- chosen and rejected together, padded to
the batch's longest.

KTO (`rlhf.algorithms.kto`) shares all but its examples, batches and loss: `OfflinePolicyConfig`,
`start_run`, `fit_policy`, `save_policy`, `sequence_logps`, `cache_reference_logps`.

Sequences are the prompt's tokens followed by the response's and EOS, exactly as the policy would
generate them after the prompt (`join_prompt_response` decides the separator), so what DPO makes more
likely is what sampling produces.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlhf import parallel
from rlhf.config import ConfigError, RunConfig, help_field, validate_all
from rlhf.errors import UserError
from rlhf.train_loop import (
    CHECKPOINT_DIR,
    LOG_DIR,
    LoopConfig,
    LoopResult,
    TrainResult,
    make_accelerator,
    save_final,
    train_loop,
)


@dataclass
class OfflinePolicyConfig:
    """What the offline policy trainers (DPO, KTO) set the same way: model, data, optimisation, what
    trains; each algorithm's config adds its loss's fields and overrides the help that differs."""

    model: str = help_field(
        "world", "Initial policy (and reference): causal LM directory; 'world' = the world model."
    )
    data: str = help_field(
        "", "Preference file (JSONL, Parquet or datasets folder): pairs, rankings or ratings."
    )
    eval_data: str | None = help_field(
        None, "Separate evaluation file; default: hold out eval_fraction of prompts."
    )
    eval_split: str | None = help_field(
        None,
        "Split of a saved DatasetDict to evaluate on (of eval_data, or of data when there is no "
        "eval_data); default with eval_data: 'test', else 'validation'.",
    )
    eval_fraction: float = help_field(
        0.1, "Share of prompts held out for evaluation when there is no eval_data or eval_split."
    )
    objective: str = help_field(
        "", "Train only on pairs of this objective (e.g. helpful); empty = all pairs."
    )
    use_weights: bool = help_field(True, "Use the data's per-pair `weight` (e.g. labeller reliability).")
    epochs: float = help_field(2.0, "Passes over the training pairs.")
    max_steps: int = help_field(0, "Stop after this many optimiser steps (0 = given by epochs).")
    batch_size: int = help_field(32, "Pairs per batch per process.")
    grad_accum: int = help_field(1, "Batches accumulated per optimiser step.")
    lr: float = help_field(1e-4, "Peak learning rate (the world model; ~5e-7 suits billion-parameter LMs).")
    lr_schedule: str = help_field("cosine", "LR decay after warm-up: cosine, linear or constant.")
    warmup_ratio: float = help_field(0.1, "Share of steps for linear warm-up.")
    max_grad_norm: float = help_field(1.0, "Gradient clipping norm (0 = off).")
    max_length: int = help_field(
        256, "Maximum prompt + response tokens (the prompt is cut from the left first)."
    )
    eval_every: int = help_field(50, "Evaluate and checkpoint every N optimiser steps; 0 = only at the end.")
    trainable_layers: int = help_field(-1, "Train only the top N transformer blocks (-1 = all).")
    lora_r: int = help_field(0, "Train LoRA adapters of this rank instead (0 = off); merged at save.")
    lora_alpha: float = help_field(16.0, "LoRA alpha.")
    mixed_precision: str = help_field("no", "'no' (fp32) or 'bf16' autocast.")
    on_error: str = help_field(
        "stop", "Bad data rows: 'stop' at the first, or 'skip' them with a report file."
    )
    stop_after_steps: int = help_field(
        0, "Stop after this many steps as if interrupted, keeping the checkpoint (0 = off); a time box."
    )

    def validate_common(self, section: str, choices: dict[str, tuple[Any, tuple]] | None = None) -> None:
        """The checks of the shared fields, and `choices` (key -> (value, allowed)); `section` ("dpo",
        "kto") starts each message."""
        checks = {
            "lr_schedule": (self.lr_schedule, ("cosine", "linear", "constant")),
            "on_error": (self.on_error, ("stop", "skip")),
            "mixed_precision": (self.mixed_precision, ("no", "bf16")),
            **(choices or {}),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"{section}.{key} must be one of {', '.join(allowed)}; got {value!r}")
        for key in ("batch_size", "grad_accum", "max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{section}.{key} must be at least 1; got {getattr(self, key)}")
        if self.max_length < 8:
            raise ConfigError(f"{section}.max_length must be at least 8 tokens; got {self.max_length}")
        if self.lr <= 0 or self.epochs <= 0:
            raise ConfigError(f"{section}.lr and {section}.epochs must be positive")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"{section}.eval_fraction must be in (0, 1); got {self.eval_fraction}")


@dataclass
class DPOConfig(OfflinePolicyConfig):
    """DPO fine-tuning of a causal LM policy on preference pairs."""

    beta: float = help_field(0.1, "KL strength beta (IPO: tau). Larger stays closer to the reference.")
    loss_type: str = help_field("sigmoid", "'sigmoid' (DPO; with label_smoothing > 0: cDPO) or 'ipo'.")
    ipo_logps: str = help_field(
        "mean",
        "IPO's log-ratios: 'mean' per response token (the form of the IPO paper's reported results, as "
        "TRL computes it) or 'sum' over tokens (then the loss and its target 1/(2 beta) scale with length).",
    )
    label_smoothing: float = help_field(0.0, "cDPO: probability that a label is flipped noise, in [0, 0.5).")

    def validate(self) -> None:
        self.validate_common(
            "dpo",
            {
                "loss_type": (self.loss_type, ("sigmoid", "ipo")),
                "ipo_logps": (self.ipo_logps, ("mean", "sum")),
            },
        )
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"dpo.label_smoothing must be in [0, 0.5); got {self.label_smoothing}")
        if self.beta <= 0:
            raise ConfigError("dpo.beta, dpo.lr and dpo.epochs must be positive")


# ----------------------------------------------------------------------------- batches


@dataclass
class DPOBatch:
    """B pairs as 2B rows (chosen then rejected), prompt + response contiguous and right-padded."""

    input_ids: torch.Tensor  # (2B, L)
    attention_mask: torch.Tensor  # (2B, L)
    response_mask: torch.Tensor  # (2B, L - s): each row's response tokens among columns s..
    query_width: int  # s: the first column holding a response token in some row
    weight: torch.Tensor  # (B,)
    tie: torch.Tensor  # (B,) bool
    ref_logps: torch.Tensor | None = None  # (2B,) cached reference sequence log-probs

    def __len__(self) -> int:
        return self.weight.shape[0]


def collate_pairs(rows: list[tuple[list[int], list[int], list[int]]], pad_id: int) -> tuple:
    """(prompt, chosen, rejected) token lists -> input_ids, attention_mask, response_mask and the first
    response column, for 2B rows (the chosen responses, then the rejected ones), each prompt + response
    contiguous and right-padded (`rlhf.training.collate_contiguous`): 16% of the benchmark's positions
    were padding with prompts and responses padded separately."""
    from rlhf.training import collate_contiguous

    prompts = [r[0] for r in rows] * 2
    return collate_contiguous(prompts, [r[1] for r in rows] + [r[2] for r in rows], pad_id)


def make_batches(
    pairs: list, tokenizer: Any, cfg: DPOConfig, max_length: int | None = None
) -> list[DPOBatch]:
    """Tokenize every pair once (`rlhf.sequences`: the prompt as the policy sees it, each response as the
    tokens it would emit after it, EOS included), cut to `max_length` (default `cfg.max_length`); pairs
    of similar length share a batch (less padding). A pair whose chosen and rejected tokens are the same
    after the cut teaches nothing: it is left out, with a warning that counts them."""
    import warnings

    from rlhf.sequences import encode_row, fit_length, special_tokens
    from rlhf.training import group_by_length

    max_length = max_length or cfg.max_length
    bos = special_tokens(tokenizer).bos_id
    rows, kept, same, bad = [], [], 0, 0
    for pair in pairs:
        try:
            prompt, (chosen, rejected) = encode_row(
                tokenizer, pair.prompt, [pair.chosen, pair.rejected], pair.source
            )
        except UserError:
            if cfg.on_error != "skip":
                raise
            bad += 1
            continue
        p_chosen, chosen = fit_length(prompt, chosen, max_length, bos)
        p_rejected, rejected = fit_length(prompt, rejected, max_length, bos)
        if chosen == rejected:
            same += 1
            continue
        # both sides condition on the same prompt: the shorter cut of the two
        prompt = p_chosen if len(p_chosen) <= len(p_rejected) else p_rejected
        rows.append((prompt, chosen, rejected))
        kept.append(pair)
    if bad:
        warnings.warn(
            f"{bad} of {len(pairs)} pairs have a response no policy could emit; skipped", stacklevel=2
        )
    if same:
        warnings.warn(
            f"{same} of {len(pairs)} pairs have the same chosen and rejected tokens once cut to "
            f"{max_length} tokens; they were left out (raise dpo.max_length if the model's context allows)",
            stacklevel=2,
        )
    pairs = kept
    order = group_by_length([len(p) + max(len(c), len(r)) for p, c, r in rows], cfg.batch_size)
    batches = []
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        input_ids, attention_mask, response_mask, width = collate_pairs(
            [rows[i] for i in idx], tokenizer.pad_token_id
        )
        batches.append(
            DPOBatch(
                input_ids,
                attention_mask,
                response_mask,
                width,
                weight=torch.tensor([pairs[i].weight if cfg.use_weights else 1.0 for i in idx]),
                tie=torch.tensor([pairs[i].tie for i in idx], dtype=torch.bool),
            )
        )
    return batches


def sequence_logps(model, batch: DPOBatch, device) -> torch.Tensor:
    """log pi(response | prompt) of every row of the batch in one forward; (2B,)."""
    from rlhf.logprobs import response_logprobs, sequence_logprob

    mask = batch.response_mask.to(device)
    logprobs, _ = response_logprobs(
        model, batch.input_ids.to(device), batch.attention_mask.to(device), batch.query_width
    )
    return sequence_logprob(logprobs.float(), mask)


@torch.no_grad()
def cache_reference_logps(model, batches: list[DPOBatch], device, rank: int = 0, world: int = 1) -> None:
    """Reference log-probs for every batch, computed once with the initial model: each process takes
    every world-th batch and the results are shared, so the cost is split, not repeated. The processes
    also agree on whether the model runs packed (`rlhf.logprobs`)."""
    from accelerate.utils import gather_object

    from rlhf.packing import set_packing_verdict

    was_training = model.training
    model.eval()
    mine = {i: sequence_logps(model, batches[i], device).cpu() for i in range(rank, len(batches), world)}
    verdict = getattr(model, "_rlhf_packing", None)
    everyone = gather_object([(mine, verdict)]) if world > 1 else [(mine, verdict)]
    for part, _ in everyone:
        for i, logps in part.items():
            batches[i].ref_logps = logps
    if world > 1:
        # A model's first packed forward is checked against a padded one: an extra forward on the one
        # process whose batch has padding enough, where DDP and FSDP2 need every process to run the same
        # forwards. So one verdict for all, found by any; none found (no batch packed): padded.
        verdicts = [v for _, v in everyone]
        set_packing_verdict(model, False not in verdicts and True in verdicts)
    model.train(was_training)


def batch_loss(model, batch: DPOBatch, device, cfg: DPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    from rlhf.losses import dpo_loss

    logps = sequence_logps(model, batch, device)  # (2B,)
    ref = batch.ref_logps.to(device)
    if cfg.loss_type == "ipo" and cfg.ipo_logps == "mean":  # per-token means, as the IPO authors report
        lengths = batch.response_mask.sum(dim=1).clamp(min=1).to(device)  # (2B,) response tokens
        logps, ref = logps / lengths, ref / lengths
    n = len(batch)
    return dpo_loss(
        logps[:n],
        logps[n:],
        ref[:n],
        ref[n:],
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        label_smoothing=cfg.label_smoothing,
        weights=batch.weight.to(device),
        tie=batch.tie.to(device),
    )


def evaluate(model, batches: list[DPOBatch], device, cfg: DPOConfig) -> dict[str, float]:
    """Held-out loss and implicit-reward accuracy and margin, weighted by batch size."""
    stats = held_out_stats(model, batches, lambda m, b: batch_loss(m, b, device, cfg))
    names = {"loss/dpo": "loss", "rewards/accuracy": "accuracy", "rewards/margin": "margin"}
    return {f"eval/{names.get(key, key)}": value for key, value in stats.items()}


@torch.no_grad()
def held_out_stats(model, batches: list, loss_fn) -> dict[str, float]:
    """The mean of each stat `loss_fn(model, batch)` returns over `batches` in eval mode, weighted by
    batch size; a non-finite value (a stat the batch has no items for) is left out of its mean."""
    if not batches:
        return {}
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        _, stats = loss_fn(model, batch)
        for key, value in stats.items():
            if math.isfinite(value):
                totals[key] = totals.get(key, 0.0) + value * len(batch)
                counts[key] = counts.get(key, 0) + len(batch)
    model.train(was_training)
    return {key: totals[key] / counts[key] for key in totals}


# ----------------------------------------------------------------------------- training


DPOResult = TrainResult  # the name this module's callers know


def train(
    cfg: DPOConfig,
    run: RunConfig,
    out: str | Path,
    resume: bool = False,
    world: Any = None,
    show_progress: bool = True,
) -> DPOResult:
    """Fine-tune `cfg.model` with DPO on `cfg.data` and save it to `out`; see the module docstring."""
    from rlhf.sequences import cap_length

    out = Path(out).expanduser()

    # 1. data: read, validate, keep the objective asked for, split by prompt
    setup = start_run(cfg, run, world, show_progress, "pairs, rankings or ratings")
    cfg, model, tokenizer = setup.cfg, setup.model, setup.tokenizer
    train_pairs, eval_pairs = (
        _pairs_of(d, cfg.objective, cfg.data) for d in (setup.train_data, setup.eval_data)
    )
    if not train_pairs:
        hint = " (its rows are binary labels: train with `rlhf kto train`)" if setup.train_data.binary else ""
        raise UserError(f"{cfg.data}: no training pairs left after the evaluation split{hint}")

    # 2. tokenize once into fixed batches
    rng = random.Random(run.seed)
    rng.shuffle(train_pairs)
    max_length = cap_length(cfg.max_length, model)  # never past the model's context length
    train_batches = make_batches(train_pairs, tokenizer, cfg, max_length)
    eval_batches = make_batches(eval_pairs, tokenizer, cfg, max_length) if eval_pairs else []
    if not train_batches:
        raise UserError(f"{cfg.data}: no training pairs differ once cut to {max_length} tokens")

    # 3. the reference log-probs once, what trains, and the shared loop: one forward of chosen + rejected
    #    per batch, accumulate, clip, step; evaluate and checkpoint every eval_every steps
    result = fit_policy(
        setup, run, out, train_batches, eval_batches, batch_loss, evaluate, resume, show_progress,
        desc="DPO", loss_name="DPO loss", rate_name="time/pairs_per_s", show=(("acc", "rewards/accuracy"),),
    )  # fmt: skip
    if not result.finished:  # time-boxed: the checkpoint holds the run, --resume continues it
        return TrainResult(out, result.step, {"stopped_at_step": result.step})

    # 4. the policy, LoRA merged, with its tokenizer: plain transformers, written atomically
    # the pairs trained and evaluated on: those left after encoding (identical once cut: left out)
    final = {**result.metrics, "steps": result.step, "train_pairs": sum(map(len, train_batches)),
             "eval_pairs": sum(map(len, eval_batches))}  # fmt: skip
    return save_policy(setup, result.model, out, {"run": asdict(run), "dpo": asdict(cfg)}, final)


# ----------------------------------------------------------------------------- shared with KTO


@dataclass
class PolicyRun:
    """An offline policy run once set up (`start_run`): the config naming the model by absolute path,
    the Accelerator, the policy (dropout off) and its tokenizer, and the data split by prompt."""

    cfg: Any
    accelerator: Any
    model: Any
    tokenizer: Any
    train_data: Any  # PreferenceData
    eval_data: Any  # PreferenceData
    eval_split: str | None  # the DatasetDict split evaluated on, reported in eval_metrics.json

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def n_procs(self) -> int:
        return self.accelerator.num_processes


def start_run(cfg: Any, run: RunConfig, world: Any, show_progress: bool, kinds: str) -> PolicyRun:
    """Validate the configs, make the Accelerator, load the policy and read the data (`kinds` names what
    the data may hold, for the error when there is none), held out by prompt or from eval_data."""
    from rlhf.data import load_train_eval
    from rlhf.models import absolute_model_path, disable_dropout, load_causal_lm
    from rlhf.world.report import resolve_world_model

    validate_all(cfg)  # what loading the config checks for the CLI, for callers of the API too
    validate_all(run)
    # the saved config names the models by absolute path: `rlhf eval` finds the initial model from anywhere
    cfg = replace(cfg, model=absolute_model_path(cfg.model))
    accelerator = make_accelerator(run, cfg.grad_accum)
    torch.manual_seed(run.seed)
    if not cfg.data:
        raise UserError(f"no training data: give --data FILE ({kinds})")
    model, tokenizer = load_causal_lm(
        resolve_world_model(cfg.model, world, show_progress and accelerator.is_main_process),
        device=str(accelerator.device),
        dtype=run.dtype,
    )
    disable_dropout(model)  # the log-ratios to the cached reference must be 0 while policy = reference
    _, train_data, eval_data, eval_split = load_train_eval(
        cfg.data, cfg.eval_data, cfg.eval_split, cfg.eval_fraction, run.seed, tokenizer=tokenizer,
        on_error=cfg.on_error,
    )  # fmt: skip
    return PolicyRun(cfg, accelerator, model, tokenizer, train_data, eval_data, eval_split)


def trainable_optimizer(model, cfg: Any, train_batches: list, seed: int, rank: int, n_procs: int):
    """Make all of the model, its top N blocks, or LoRA adapters trainable (LoRA is a zero-initialised
    update, so the policy still equals the reference it was cached from); AdamW over what trains."""
    from rlhf.models import add_lora, freeze_lower_layers
    from rlhf.training import epoch_batches

    if cfg.lora_r > 0:
        add_lora(model, cfg.lora_r, cfg.lora_alpha, 0.0)
    elif cfg.trainable_layers >= 0:
        freeze_lower_layers(model, cfg.trainable_layers)
    if not epoch_batches(train_batches, 0, seed, rank, n_procs):
        raise UserError(
            f"{cfg.data}: fewer training batches ({len(train_batches)}) than processes ({n_procs})"
        )
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)


def fit_policy(
    setup: PolicyRun,
    run: RunConfig,
    out: Path,
    train_batches: list,
    eval_batches: list,
    batch_loss,
    evaluate,
    resume: bool,
    show_progress: bool,
    **names: Any,
) -> LoopResult:
    """What DPO and KTO do alike once their batches are made: the reference log-probs of every batch
    ONCE with the initial model (`cache_reference_logps`), what trains (`trainable_optimizer`), then the
    shared loop with `batch_loss(model, batch, device, cfg)` and `evaluate(model, batches, device, cfg)`
    on the held-out batches; `names`: the loop's desc, loss_name, rate_name and show."""
    cfg, model, device = setup.cfg, setup.model, setup.accelerator.device
    with _autocast(cfg, device):
        cache_reference_logps(model, train_batches + eval_batches, device, setup.rank, setup.n_procs)
    optimizer = trainable_optimizer(model, cfg, train_batches, run.seed, setup.rank, setup.n_procs)

    def evaluate_held_out(model, step: int, state: dict) -> dict[str, float]:
        with _autocast(cfg, device):
            return evaluate(model, eval_batches, device, cfg)

    loop = LoopConfig(
        epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        lr_schedule=cfg.lr_schedule, warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        eval_every=cfg.eval_every, stop_after_steps=cfg.stop_after_steps, seed=run.seed, **names,
    )  # fmt: skip
    return train_loop(
        setup.accelerator, model, optimizer, train_batches, lambda m, b: batch_loss(m, b, device, cfg), loop,
        checkpoint=out / CHECKPOINT_DIR, log_dir=out / LOG_DIR, resume=resume, tensorboard=run.tensorboard,
        show_progress=show_progress, evaluate=evaluate_held_out, autocast=lambda: _autocast(cfg, device),
    )  # fmt: skip


def save_policy(setup: PolicyRun, trained, out: Path, configs: dict, final: dict) -> TrainResult:
    """The policy, LoRA merged, with its tokenizer: plain transformers, written atomically (under FSDP2
    built on the main process from the gathered state), with `configs` and the metrics `final`."""
    from rlhf.models import merged_copy, save_pretrained_atomic

    policy = parallel.whole(trained)
    if setup.eval_split is not None:
        final["eval_split"] = setup.eval_split
    save_final(
        setup.accelerator,
        lambda extra, carry: save_pretrained_atomic(
            out, merged_copy(policy.eval()), setup.tokenizer, extra_files=extra, carry=carry
        ),
        configs,
        final,
    )
    return TrainResult(out, final["steps"], final if setup.accelerator.is_main_process else {})


def _pairs_of(data: Any, objective: str, source: str) -> list:
    """Every comparison in `data` (rankings as their pairs), only `objective`'s when one is named."""
    pairs = [*data.pairs, *(p for r in data.rankings for p in r.pairs())]
    if not objective:
        return pairs
    kept = [p for p in pairs if (p.objective or "") == objective]
    if pairs and not kept:
        found = sorted({p.objective or "(none)" for p in pairs})
        raise UserError(f"{source}: no pairs with objective {objective!r}; the data has {', '.join(found)}")
    return kept


def _autocast(cfg: DPOConfig, device):
    # torch's autocast, not the Accelerator's: that one is fixed per process (see algorithms/ppo.py)
    return torch.autocast(
        torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16"
    )
