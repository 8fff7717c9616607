"""Reward-model training: Bradley-Terry on pairs, Plackett-Luce (or all pairs) on K-way rankings, a logistic
loss against a learned threshold on binary (thumbs up/down) labels; any mix of them in one run.

`train(cfg, run)` reads as numbered steps: load and split the preference data, build the model, tokenize
once into homogeneous batches (pairs, rankings or binary labels), then the offline trainers' shared loop
(`rlhf.train_loop`: Accelerate, gradient accumulation, clipping, warm-up/decay, periodic evaluation,
atomic checkpoints and resume) with this module's loss and an evaluation that keeps the best
checkpoint. Chosen and rejected of a batch go through the backbone in ONE forward, padded to the
batch's longest sequence.
"""

from __future__ import annotations

import math
import random
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf import parallel
from rlhf.config import ConfigError, RunConfig, help_field, validate_all
from rlhf.errors import UserError
from rlhf.sequences import scored_text
from rlhf.train_loop import (
    CHECKPOINT_DIR,
    LOG_DIR,
    LoopConfig,
    TrainResult,
    make_accelerator,
    save_final,
    train_loop,
)
from rlhf.training import epoch_batches, group_by_length


@dataclass
class RewardConfig:
    """Reward-model training."""

    model: str = help_field(
        "world", "Backbone: a causal LM directory or cached id; 'world' = the built world model."
    )
    data: str = help_field(
        "",
        "Preference file (JSONL, Parquet or a datasets folder): pairs, rankings or ratings, and/or binary "
        "prompt/completion/label rows.",
    )
    eval_data: str | None = help_field(
        None, "Separate evaluation file; default: hold out `eval_fraction` of the prompts."
    )
    eval_split: str | None = help_field(
        None,
        "Split of a saved DatasetDict to evaluate on (of eval_data, or of data when there is no "
        "eval_data); default with eval_data: 'test', else 'validation'.",
    )
    eval_fraction: float = help_field(
        0.1, "Share of prompts held out for evaluation when there is no eval_data or eval_split."
    )
    objectives: list[str] = help_field(
        [], "Head names; empty = the `objective` values found in the data (or ['reward'])."
    )
    ensemble_size: int = help_field(
        1, "Ensemble members N (for uncertainty): scores come back as mean and std."
    )
    ensemble_kind: str = help_field(
        "heads", "'heads': N heads on one shared backbone (cheap); 'models': N separate models."
    )
    bootstrap: bool = help_field(
        True, "With N > 1, each member sees a Poisson(1) bootstrap resample of the pairs."
    )
    ranking_loss: str = help_field(
        "plackett_luce",
        "Loss for K-way rankings: 'plackett_luce' or 'pairs' (InstructGPT: all K(K-1)/2 pairs).",
    )
    label_smoothing: float = help_field(
        0.0, "Probability that a label is flipped noise (conservative Bradley-Terry)."
    )
    use_margin: bool = help_field(True, "Use the data's `margin` field in the Bradley-Terry loss.")
    use_weights: bool = help_field(
        True, "Use the data's per-pair `weight` field (e.g. labeller reliability)."
    )
    epochs: float = help_field(3.0, "Passes over the training data.")
    max_steps: int = help_field(0, "Stop after this many optimiser steps (0 = given by epochs).")
    batch_size: int = help_field(32, "Pairs per batch per process (rankings: about 2x this many responses).")
    grad_accum: int = help_field(1, "Batches accumulated per optimiser step.")
    lr: float = help_field(
        1e-3, "Peak learning rate (the world model; ~1e-5 suits billion-parameter backbones)."
    )
    head_lr_mult: float = help_field(1.0, "Learning-rate multiplier for the reward heads.")
    lr_schedule: str = help_field("cosine", "LR decay after warm-up: cosine, linear or constant.")
    warmup_ratio: float = help_field(0.05, "Share of steps for linear warm-up.")
    weight_decay: float = help_field(0.0, "AdamW weight decay.")
    max_grad_norm: float = help_field(1.0, "Gradient clipping norm (0 = off).")
    max_length: int = help_field(256, "Maximum tokens per prompt+response (truncated from the left).")
    group_by_length: bool = help_field(
        True,
        "Batch pairs of similar length together (less padding); the batch order still shuffles each epoch.",
    )
    eval_every: int = help_field(
        50, "Evaluate (and checkpoint) every N optimiser steps; 0 = only at the end."
    )
    keep_best: bool = help_field(True, "Save the checkpoint with the best eval accuracy as the final model.")
    keep_checkpoints: bool = help_field(
        True, "Keep <out>/checkpoint (last and best) after training, for --resume."
    )
    on_error: str = help_field(
        "stop", "Bad data rows: 'stop' at the first, or 'skip' them with a report file."
    )
    trainable_layers: int = help_field(-1, "Train only the top N transformer blocks (-1 = all).")
    lora_r: int = help_field(0, "LoRA rank for the backbone (0 = full fine-tuning); merged at save.")
    lora_alpha: float = help_field(16.0, "LoRA alpha.")
    lora_dropout: float = help_field(0.0, "LoRA dropout.")
    mixed_precision: str = help_field("no", "'no' (fp32) or 'bf16' autocast.")
    gold_eval: bool = help_field(
        True, "In the bundled world, also report accuracy against the hidden gold ordering."
    )
    stop_after_steps: int = help_field(
        0, "Stop after this many steps as if interrupted, keeping the checkpoint (0 = off); a time box."
    )

    def validate(self) -> None:
        checks = {
            "ensemble_kind": (self.ensemble_kind, ("heads", "models")),
            "ranking_loss": (self.ranking_loss, ("plackett_luce", "pairs")),
            "lr_schedule": (self.lr_schedule, ("cosine", "linear", "constant")),
            "on_error": (self.on_error, ("stop", "skip")),
            "mixed_precision": (self.mixed_precision, ("no", "bf16")),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"reward.{key} must be one of {', '.join(allowed)}; got {value!r}")
        for key in ("ensemble_size", "batch_size", "grad_accum", "max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"reward.{key} must be at least 1; got {getattr(self, key)}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"reward.label_smoothing must be in [0, 0.5); got {self.label_smoothing}")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"reward.eval_fraction must be in (0, 1); got {self.eval_fraction}")
        if self.lr <= 0 or self.epochs <= 0:
            raise ConfigError("reward.lr and reward.epochs must be positive")


# ----------------------------------------------------------------------------- batches


@dataclass
class PairBatch:
    """B pairs: chosen rows then rejected rows, tokenized; per-pair objective index, margin, weight."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    objective: torch.Tensor  # (B,) long
    margin: torch.Tensor  # (B,)
    weight: torch.Tensor  # (B,)
    tie: torch.Tensor  # (B,) bool


@dataclass
class RankingBatch:
    """B rankings of up to K responses each; `order[b]` is the ranking (best first), `mask` the valid slots."""

    responses: list[list[list[int]]]
    order: torch.Tensor  # (B, K) long
    groups: torch.Tensor  # (B, K) long tie-group index per ranked position
    mask: torch.Tensor  # (B, K) bool
    objective: torch.Tensor  # (B,)
    weight: torch.Tensor  # (B,)


@dataclass
class BinaryBatch:
    """B binary labels: each response tokenized, whether it is desirable, its objective index and weight."""

    responses: list[list[int]]
    label: torch.Tensor  # (B,) bool
    objective: torch.Tensor  # (B,) long
    weight: torch.Tensor  # (B,)


def objective_index(objectives: list[str], name: str | None, source: str) -> int:
    if name is None:
        return 0
    if name not in objectives:
        raise UserError(
            f"{source}: objective {name!r} is not one of the model's heads ({', '.join(objectives)}): train "
            f"a head on it (--set 'reward.objectives=[{', '.join([*objectives, name])}]') or leave its rows out "
            "of the data"
        )
    return objectives.index(name)


def make_pair_batches(
    pairs: list, tokenize, objectives: list[str], batch_size: int, cfg: RewardConfig
) -> list[PairBatch]:
    """Tokenize every pair once and cut them into batches; with `cfg.group_by_length`, pairs of similar
    length share a batch (sorted within megabatches of 50 batches; the given order otherwise)."""
    prompts = [p.prompt for p in pairs]
    chosen = tokenize(prompts, [p.chosen for p in pairs])  # token ids of each scored text
    rejected = tokenize(prompts, [p.rejected for p in pairs])
    same = [c == r for c, r in zip(chosen, rejected, strict=True)]
    if any(same):  # truncation cut away all they differ in: no signal, and a tie only by accident
        warnings.warn(
            f"{sum(same)} of {len(pairs)} pairs have the same tokens on both sides once cut to the "
            "maximum length; they were left out (raise reward.max_length if the model's context allows)",
            stacklevel=2,
        )
        keep = [i for i, s in enumerate(same) if not s]
        pairs, chosen, rejected = (
            [pairs[i] for i in keep],
            [chosen[i] for i in keep],
            [rejected[i] for i in keep],
        )
    if cfg.group_by_length:
        lengths = [max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)]
        order = group_by_length(lengths, batch_size)
        pairs, chosen, rejected = (
            [pairs[i] for i in order],
            [chosen[i] for i in order],
            [rejected[i] for i in order],
        )
    batches = []
    for start in range(0, len(pairs), batch_size):
        part = pairs[start : start + batch_size]
        batches.append(
            PairBatch(
                chosen=chosen[start : start + batch_size],
                rejected=rejected[start : start + batch_size],
                objective=torch.tensor([objective_index(objectives, p.objective, p.source) for p in part]),
                margin=torch.tensor([p.margin if cfg.use_margin else 0.0 for p in part], dtype=torch.float32),
                weight=torch.tensor(
                    [p.weight if cfg.use_weights else 1.0 for p in part], dtype=torch.float32
                ),
                tie=torch.tensor([p.tie for p in part], dtype=torch.bool),
            )
        )
    return batches


def make_ranking_batches(
    rankings: list, tokenize, objectives: list[str], batch_size: int, cfg: RewardConfig
) -> list[RankingBatch]:
    batches = []
    for start in range(0, len(rankings), batch_size):
        part = rankings[start : start + batch_size]
        width = max(len(r.responses) for r in part)
        order = torch.zeros(len(part), width, dtype=torch.long)
        groups = torch.zeros(len(part), width, dtype=torch.long)
        mask = torch.zeros(len(part), width, dtype=torch.bool)
        for b, example in enumerate(part):
            flat = [(idx, g) for g, group in enumerate(example.ranking) for idx in group]
            order[b, : len(flat)] = torch.tensor([i for i, _ in flat])
            groups[b, : len(flat)] = torch.tensor([g for _, g in flat])
            groups[b, len(flat) :] = len(example.ranking)  # padding sits in a group of its own, after all
            mask[b, : len(flat)] = True
        batches.append(
            RankingBatch(
                responses=[tokenize([r.prompt] * len(r.responses), list(r.responses)) for r in part],
                order=order,
                groups=groups,
                mask=mask,
                objective=torch.tensor([objective_index(objectives, r.objective, r.source) for r in part]),
                weight=torch.tensor(
                    [r.weight if cfg.use_weights else 1.0 for r in part], dtype=torch.float32
                ),
            )
        )
    return batches


def make_binary_batches(
    examples: list, tokenize, objectives: list[str], batch_size: int, cfg: RewardConfig
) -> list[BinaryBatch]:
    """Tokenize every binary label's response once; similar lengths share a batch (`cfg.group_by_length`)."""
    responses = tokenize([e.prompt for e in examples], [e.completion for e in examples])
    order = (
        group_by_length(list(map(len, responses)), batch_size)
        if cfg.group_by_length
        else range(len(examples))
    )
    order = list(order)
    batches = []
    for start in range(0, len(order), batch_size):
        part = [examples[i] for i in order[start : start + batch_size]]
        batches.append(
            BinaryBatch(
                responses=[responses[i] for i in order[start : start + batch_size]],
                label=torch.tensor([e.label for e in part], dtype=torch.bool),
                objective=torch.tensor([objective_index(objectives, e.objective, e.source) for e in part]),
                weight=torch.tensor(
                    [e.weight if cfg.use_weights else 1.0 for e in part], dtype=torch.float32
                ),
            )
        )
    return batches


# ----------------------------------------------------------------------------- one step


def select_objective(scores: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
    """scores (B, N, H), objective (B,) -> (B, N): each row's score on its own objective's head."""
    index = objective.view(-1, 1, 1).expand(-1, scores.shape[1], 1)
    return scores.gather(2, index).squeeze(2)


def bootstrap_weights(
    n_members: int, n_items: int, generator: torch.Generator, enabled: bool
) -> torch.Tensor:
    """(N, B) Poisson(1) counts: the online bootstrap (Oza & Russell 2001); ones when off."""
    if not enabled:
        return torch.ones(n_members, n_items)
    return torch.poisson(torch.ones(n_members, n_items), generator=generator)


def pair_loss(model, batch: PairBatch, pad_id: int, device, cfg: RewardConfig, boot: torch.Tensor):
    """Bradley-Terry over every ensemble member at once: one forward of the 2B sequences."""
    from rlhf.losses import bradley_terry_loss
    from rlhf.reward_model import pad_right

    input_ids, mask = pad_right(batch.chosen + batch.rejected, pad_id, device)  # (2B, T)
    scores = select_objective(
        model(input_ids, mask), torch.cat([batch.objective, batch.objective]).to(device)
    )  # (2B, N)
    n = len(batch.chosen)
    chosen, rejected = scores[:n].T, scores[n:].T  # (N, B)
    weights = (boot.to(device) * batch.weight.to(device)).reshape(-1)  # (N*B,)
    members = chosen.shape[0]
    return bradley_terry_loss(
        chosen.reshape(-1),
        rejected.reshape(-1),
        margin=batch.margin.to(device).repeat(members),
        weights=weights,
        label_smoothing=cfg.label_smoothing,
        tie=batch.tie.to(device).repeat(members),
    )


def ranking_loss(model, batch: RankingBatch, pad_id: int, device, cfg: RewardConfig, boot: torch.Tensor):
    """Plackett-Luce (or all pairs) over K responses per prompt, each response encoded once."""
    from rlhf.losses import plackett_luce_loss, ranking_pairs_loss
    from rlhf.reward_model import pad_right

    rows = [row for responses in batch.responses for row in responses]
    input_ids, mask = pad_right(rows, pad_id, device)
    owner = torch.tensor([b for b, responses in enumerate(batch.responses) for _ in responses], device=device)
    flat = select_objective(model(input_ids, mask), batch.objective.to(device)[owner])  # (R, N)
    members = flat.shape[1]
    width = batch.order.shape[1]
    scores = flat.new_zeros(len(batch.responses), width, members)  # (B, K, N) indexed by response slot
    slot = torch.tensor([k for responses in batch.responses for k in range(len(responses))], device=device)
    scores[owner, slot] = flat
    scores = scores.permute(2, 0, 1).reshape(members * len(batch.responses), width)  # (N*B, K)
    repeat = lambda t: t.to(device).repeat(members, *([1] * (t.dim() - 1)))  # noqa: E731
    weights = (boot.to(device) * batch.weight.to(device)).reshape(-1)
    loss_fn = plackett_luce_loss if cfg.ranking_loss == "plackett_luce" else ranking_pairs_loss
    return loss_fn(
        scores, repeat(batch.order), mask=repeat(batch.mask), groups=repeat(batch.groups), weights=weights
    )


def binary_loss(model, batch: BinaryBatch, pad_id: int, device, cfg: RewardConfig, boot: torch.Tensor):
    """The logistic loss of each label on r - b, over every ensemble member at once."""
    from rlhf.losses import binary_logistic_loss
    from rlhf.reward_model import pad_right

    input_ids, mask = pad_right(batch.responses, pad_id, device)  # (B, T)
    scores = select_objective(model(input_ids, mask), batch.objective.to(device))  # (B, N): r - b
    members = scores.shape[1]
    weights = (boot.to(device) * batch.weight.to(device)).reshape(-1)  # (N*B,)
    return binary_logistic_loss(scores.T.reshape(-1), batch.label.to(device).repeat(members), weights)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model, tokenizer, pairs: list, objectives: list[str], max_length: int, gold_fn=None
) -> tuple[dict[str, float], np.ndarray]:
    """Eval metrics on pairs (ensemble mean): loss, accuracy, ECE, per objective and labeller; and the margins."""
    from rlhf.losses import bradley_terry_loss, expected_calibration_error
    from rlhf.reward_model import score_texts

    if not pairs:
        return {}, np.zeros(0)
    texts = [scored_text(tokenizer, p.prompt, p.chosen) for p in pairs] + [
        scored_text(tokenizer, p.prompt, p.rejected) for p in pairs
    ]
    mean = score_texts(model, tokenizer, texts, max_length=max_length).mean  # (2P, H)
    heads = torch.tensor([objective_index(objectives, p.objective, p.source) for p in pairs])
    n = len(pairs)
    chosen = mean[:n].gather(1, heads[:, None]).squeeze(1)
    rejected = mean[n:].gather(1, heads[:, None]).squeeze(1)
    tie = torch.tensor([p.tie for p in pairs])
    loss, _ = bradley_terry_loss(chosen, rejected, tie=tie)
    strict = ~tie
    margins = (chosen - rejected)[strict]
    correct = (margins > 0).float()
    probs = torch.sigmoid(margins)
    stats = {
        "eval/loss": float(loss),
        "eval/accuracy": float(correct.mean()) if strict.any() else float("nan"),
        # Each pair counted in both orders, (p, chosen won) and (1 - p, rejected lost): with only the
        # labelled order every outcome would be 1 and calibration would reward overconfidence.
        "eval/ece": expected_calibration_error(
            torch.cat([probs, 1 - probs]), torch.cat([torch.ones_like(probs), torch.zeros_like(probs)])
        )
        if strict.any()
        else float("nan"),
        "eval/margin_mean": float(margins.mean()) if strict.any() else float("nan"),
        "eval/pairs": float(n),
    }
    strict_pairs = [p for p, s in zip(pairs, strict.tolist(), strict=True) if s]
    for h, name in enumerate(objectives):
        picked = [
            i for i, p in enumerate(strict_pairs) if objective_index(objectives, p.objective, p.source) == h
        ]
        if picked and len(objectives) > 1:
            stats[f"eval/accuracy/{name}"] = float(correct[picked].mean())
    labellers = sorted({p.labeller_id for p in strict_pairs if p.labeller_id is not None})
    for labeller in labellers:
        picked = [i for i, p in enumerate(strict_pairs) if p.labeller_id == labeller]
        stats[f"eval/accuracy_labeller/{labeller}"] = float(correct[picked].mean())
    if gold_fn is not None:
        stats.update(gold_accuracy(strict_pairs, margins.tolist(), objectives, gold_fn))
    return stats, margins.numpy()


@torch.no_grad()
def evaluate_binary(
    model, tokenizer, examples: list, objectives: list[str], max_length: int
) -> dict[str, float]:
    """Eval metrics on binary labels (ensemble mean): loss and accuracy of sign(r - b) against the label."""
    from rlhf.losses import binary_logistic_loss
    from rlhf.reward_model import score_texts

    if not examples:
        return {}
    texts = [scored_text(tokenizer, e.prompt, e.completion) for e in examples]
    mean = score_texts(model, tokenizer, texts, max_length=max_length).mean  # (E, H): r - b
    heads = torch.tensor([objective_index(objectives, e.objective, e.source) for e in examples])
    scores = mean.gather(1, heads[:, None]).squeeze(1)
    loss, stats = binary_logistic_loss(scores, torch.tensor([e.label for e in examples]))
    return {
        "eval/binary_loss": float(loss),
        "eval/binary_accuracy": stats["reward/binary_accuracy"],
        "eval/binary_examples": float(len(examples)),
    }


def gold_accuracy(pairs: list, margins: list[float], objectives: list[str], gold_fn) -> dict[str, float]:
    """Share of pairs the model orders as the hidden gold does (gold ties skipped), per objective."""
    hits: dict[str, list[float]] = {}
    for pair, margin in zip(pairs, margins, strict=True):
        name = objectives[objective_index(objectives, pair.objective, pair.source)]
        g_chosen, g_rejected = (
            gold_fn(pair.prompt, pair.chosen, name),
            gold_fn(pair.prompt, pair.rejected, name),
        )
        if g_chosen is None or g_chosen == g_rejected:
            continue
        hits.setdefault(name, []).append(float((margin > 0) == (g_chosen > g_rejected)))
    return {f"eval/gold_accuracy/{name}": float(np.mean(v)) for name, v in hits.items()}


def world_gold_fn(pairs: list):
    """The bundled world's gold judge when most eval prompts are world requests, else None."""
    from rlhf.world import corpus, gold

    sample = pairs[:50]
    if not sample or sum(corpus.parse_request(p.prompt) is not None for p in sample) < 0.8 * len(sample):
        return None

    def judge(prompt: str, response: str, objective: str) -> float:
        if objective == "harmless":
            return -gold.harm(prompt, response)
        return gold.utility(prompt, response)

    return judge


# ----------------------------------------------------------------------------- training


def infer_objectives(data: Any, configured: list[str]) -> list[str]:
    if configured:
        return list(configured)
    found: list[str] = []
    for item in [*data.pairs, *data.rankings, *data.binary]:
        if item.objective is not None and item.objective not in found:
            found.append(item.objective)
    return found or ["reward"]


def pairs_per_head(data: Any, objectives: list[str]) -> tuple[dict[str, int], int]:
    """Comparisons and binary labels that train each head (a ranking counts its pairs), and how many of
    them name no `objective`: those train the first head."""
    counts, unnamed = dict.fromkeys(objectives, 0), 0
    items = [
        *((p, 1) for p in data.pairs),
        *((r, len(r.pairs())) for r in data.rankings),
        *((b, 1) for b in data.binary),
    ]
    for item, n in items:
        counts[objectives[objective_index(objectives, item.objective, item.source)]] += n
        unnamed += n if item.objective is None else 0
    return counts, unnamed


def untrained_heads_message(counts: dict[str, int], unnamed: int, data: str) -> str | None:
    """One line naming the heads no training pair reaches (None when every head has some)."""
    empty = [name for name, n in counts.items() if n == 0]
    if not empty:
        return None
    per_head = ", ".join(f"{name} {n}" for name, n in counts.items())
    first = next(iter(counts))
    why = f"; {unnamed} name no `objective` and train the first head, {first!r}" if unnamed else ""
    return (
        f"{data}: reward head{'s' * (len(empty) > 1)} {', '.join(map(repr, empty))} got no training pairs "
        f"(pairs per head: {per_head}{why}), so {'their' if len(empty) > 1 else 'its'} weights stay random and "
        f"rlhf refuses {'them' if len(empty) > 1 else 'it'} as a reward or cost weight; set `objective` on the "
        f'rows (for `rlhf label import` tasks: "objective": "{empty[0]}")'
    )


def train(
    cfg: RewardConfig,
    run: RunConfig,
    out: str | Path,
    resume: bool = False,
    world: Any = None,
    show_progress: bool = True,
) -> TrainResult:
    """Train a reward model on `cfg.data` and save it to `out`; see the module docstring.

    `world` is the WorldConfig used when `cfg.model == "world"` (default: the default world)."""
    from rlhf.data import load_train_eval
    from rlhf.models import load_tokenizer, resolve_model_path
    from rlhf.reward_model import init_reward_model
    from rlhf.world.report import resolve_world_model

    validate_all(cfg)  # what loading the config checks for the CLI, for callers of the API too
    validate_all(run)
    out = Path(out).expanduser()
    accelerator = make_accelerator(run, cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    torch.manual_seed(run.seed)
    backbone = resolve_world_model(cfg.model, world, show_progress)

    # 1. data: read, validate, split by prompt
    if not cfg.data:
        raise UserError("no training data: give --data FILE (pairs, rankings, ratings or binary labels)")
    tokenizer = load_tokenizer(resolve_model_path(backbone), padding_side="right")
    # eval_split: the DatasetDict split evaluated on, reported in eval_metrics.json
    data, train_data, eval_data, eval_split = load_train_eval(
        cfg.data, cfg.eval_data, cfg.eval_split, cfg.eval_fraction, run.seed, tokenizer=tokenizer,
        on_error=cfg.on_error,
    )  # fmt: skip
    objectives = infer_objectives(data, cfg.objectives)
    head_pairs, unnamed = pairs_per_head(train_data, objectives)
    if message := untrained_heads_message(head_pairs, unnamed, cfg.data):
        # not an error: the loop trains both heads even when a round asks no harmlessness question;
        # the model records the counts, and `rlhf.rewards` refuses an untrained head as a reward or cost
        warnings.warn(message, stacklevel=2)

    # 2. model (ensemble members as heads, or as separate models trained one after another)
    members = cfg.ensemble_size if cfg.ensemble_kind == "models" else 1
    heads_per_model = 1 if cfg.ensemble_kind == "models" else cfg.ensemble_size
    trained = []
    for member in range(members):
        member_out = out if member == 0 else out / "members" / f"member_{member}"
        model, tokenizer = init_reward_model(backbone, objectives, heads_per_model, seed=run.seed + member)
        model.meta.training_pairs = head_pairs
        _restrict_training(model, cfg)
        result = _train_one(
            model,
            tokenizer,
            train_data,
            eval_data,
            objectives,
            cfg,
            run,
            member_out,
            accelerator,
            resume,
            show_progress,
            seed=run.seed + member,
            bootstrap=cfg.bootstrap and (heads_per_model > 1 or members > 1),
            eval_split=eval_split,
        )
        trained.append(result)
    if members > 1 and accelerator.is_main_process:
        _write_full_ensemble_meta(out, members)
    accelerator.wait_for_everyone()
    return trained[0]


def _restrict_training(model, cfg: RewardConfig) -> None:
    from rlhf.models import add_lora, freeze_lower_layers

    backbone = model.seq_model.base_model
    if cfg.lora_r > 0:
        add_lora(backbone, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout)
    elif cfg.trainable_layers >= 0:
        freeze_lower_layers(backbone, cfg.trainable_layers)


def _write_full_ensemble_meta(out: Path, members: int) -> None:
    import json

    from rlhf.reward_model import REWARD_CONFIG

    meta_path = out / REWARD_CONFIG
    meta = json.loads(meta_path.read_text())
    meta.update(ensemble_kind="models", ensemble_size=members)
    meta_path.write_text(json.dumps(meta, indent=2))


def _train_one(
    model,
    tokenizer,
    train_data,
    eval_data,
    objectives,
    cfg,
    run,
    out: Path,
    accelerator,
    resume,
    show_progress,
    seed,
    bootstrap,
    eval_split=None,
) -> TrainResult:
    from rlhf.reward_model import load_reward_model, save_reward_model
    from rlhf.sequences import cap_length, encode_scored_pairs

    device = accelerator.device
    rng = random.Random(seed)

    # 3. tokenize once; batches are fixed, their order shuffles per epoch
    max_length = cap_length(cfg.max_length, model.seq_model)  # never past the model's context length
    tokenize = lambda prompts, responses: encode_scored_pairs(tokenizer, prompts, responses, max_length)  # noqa: E731
    pairs = list(train_data.pairs)
    rng.shuffle(pairs)
    pair_batches = make_pair_batches(pairs, tokenize, objectives, cfg.batch_size, cfg)
    ranking_size = max(1, (2 * cfg.batch_size) // max([len(r.responses) for r in train_data.rankings] or [2]))
    ranking_batches = make_ranking_batches(list(train_data.rankings), tokenize, objectives, ranking_size, cfg)
    binary = list(train_data.binary)
    rng.shuffle(binary)
    binary_batches = make_binary_batches(binary, tokenize, objectives, cfg.batch_size, cfg)
    if binary_batches:  # the threshold b between thumbs up and down: learnt from them, 0 without
        model.train_offsets()
    # homogeneous batches, so an epoch's objective is the sum over kinds of (batches x mean loss): each
    # comparison, ranking and binary label weighs alike, whatever the mix
    batches = [*pair_batches, *ranking_batches, *binary_batches]
    if not epoch_batches(batches, 0, seed, accelerator.process_index, accelerator.num_processes):
        raise UserError(
            f"{cfg.data}: no training pairs, rankings or binary labels left after the evaluation split"
        )
    eval_pairs = [*eval_data.pairs, *(p for r in eval_data.rankings for p in r.pairs())]
    eval_binary = list(eval_data.binary)
    gold_fn = world_gold_fn(eval_pairs) if cfg.gold_eval else None

    # 4. the loss of one batch (pairs or rankings; each ensemble member weighted by its bootstrap
    #    counts), and an evaluation that keeps the most accurate model
    head_params = [model.heads, model.offsets]
    body_params = [
        p for n, p in model.named_parameters() if p.requires_grad and n not in ("heads", "offsets")
    ]
    optimizer = torch.optim.AdamW(
        [{"params": body_params}, {"params": head_params, "lr": cfg.lr * cfg.head_lr_mult}],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    generator = torch.Generator().manual_seed(seed + accelerator.process_index)
    checkpoint = out / CHECKPOINT_DIR

    losses = {PairBatch: pair_loss, RankingBatch: ranking_loss, BinaryBatch: binary_loss}

    def loss_fn(wrapped, batch):
        n_items = len(batch.chosen) if isinstance(batch, PairBatch) else len(batch.responses)
        boot = bootstrap_weights(model.meta.ensemble_size, n_items, generator, bootstrap)
        return losses[type(batch)](wrapped, batch, tokenizer.pad_token_id, device, cfg, boot)

    def evaluate_all(model) -> tuple[dict, np.ndarray]:
        metrics, margins = evaluate(model, tokenizer, eval_pairs, objectives, cfg.max_length, gold_fn)
        return metrics | evaluate_binary(model, tokenizer, eval_binary, objectives, cfg.max_length), margins

    def evaluate_and_keep_best(model, step: int, state: dict) -> dict:
        metrics, margins = evaluate_all(model)
        # the best model: by pairwise accuracy; by binary-label accuracy when there are no pairs
        accuracy = metrics.get("eval/accuracy", float("nan"))
        if not math.isfinite(accuracy):
            accuracy = metrics.get("eval/binary_accuracy", float("nan"))
        if cfg.keep_best and math.isfinite(accuracy) and accuracy > state["best_accuracy"]:
            state.update(best_accuracy=accuracy, best_step=step)
            whole = parallel.whole(model)  # under FSDP2 every process evaluates and gathers; main saves
            if whole is not None:
                save_reward_model(checkpoint / "best", whole, tokenizer)
        return {**metrics, "eval/margin": margins} if margins.size else metrics

    # 5. the shared loop: accumulate, clip, step; evaluate and checkpoint every eval_every steps
    loop = LoopConfig(
        epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        lr_schedule=cfg.lr_schedule, warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm,
        eval_every=cfg.eval_every, stop_after_steps=cfg.stop_after_steps, seed=seed, desc="reward model",
        loss_name="reward-model loss", rate_name="time/pairs_per_s",
    )  # fmt: skip
    result = train_loop(
        accelerator, model, optimizer, batches, loss_fn, loop,
        checkpoint=checkpoint / "last", log_dir=out / LOG_DIR, resume=resume, tensorboard=run.tensorboard,
        show_progress=show_progress, evaluate=evaluate_and_keep_best, autocast=accelerator.autocast,
        generator=generator, state={"best_accuracy": -1.0, "best_step": -1},
    )  # fmt: skip
    if not result.finished:  # time-boxed: the checkpoint holds the run, `--resume` continues it
        return TrainResult(out, result.step, {"stopped_at_step": result.step})

    # 6. the final model: the best evaluated checkpoint (or the last, under FSDP2 built on the main
    #    process from the gathered state), LoRA merged, saved atomically
    best = cfg.keep_best and result.state["best_step"] >= 0  # every process knows it when sharded
    final, final_metrics = (result.model if best else parallel.whole(result.model)), {}
    if accelerator.is_main_process:
        if best:
            final, _ = load_reward_model(checkpoint / "best")
        final_metrics, _ = evaluate_all(final)
        final_metrics.update(best_step=result.state["best_step"], steps=result.step)
        if eval_split is not None:
            final_metrics["eval_split"] = eval_split
    save_final(
        accelerator,
        lambda extra, carry: save_reward_model(out, final, tokenizer, extra_files=extra, carry=carry),
        {"run": asdict(run), "reward": asdict(cfg)},
        final_metrics,
        carry=("members",),
    )
    if accelerator.is_main_process and not cfg.keep_checkpoints:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return TrainResult(out, result.step, final_metrics)


# ----------------------------------------------------------------------------- evaluate, score, normalise files


def evaluate_file(
    model_dir: str,
    data: str,
    on_error: str = "stop",
    device: str = "auto",
    max_length: int = 512,
    split: str | None = None,
) -> dict[str, float]:
    """Metrics of a saved reward model on a preference file (world gold accuracy when it applies).

    A saved DatasetDict is read at `split`, else at 'test', then 'validation'; `eval_split` says which."""
    from rlhf.data import choose_split, load_preferences
    from rlhf.reward_model import load_reward_model

    split = choose_split(data, split, purpose="eval")  # before loading the model: a wrong name fails fast
    model, tokenizer = load_reward_model(model_dir, device=device)
    prefs = load_preferences(data, tokenizer=tokenizer, on_error=on_error, split=split)
    pairs = [*prefs.pairs, *(p for r in prefs.rankings for p in r.pairs())]
    metrics, _ = evaluate(model, tokenizer, pairs, model.objectives, max_length, world_gold_fn(pairs))
    metrics |= evaluate_binary(model, tokenizer, prefs.binary, model.objectives, max_length)
    return metrics if split is None else {**metrics, "eval_split": split}


def score_file(
    model_dir: str,
    data: str,
    out: str | Path,
    normalize: bool = False,
    device: str = "auto",
    max_length: int = 512,
) -> int:
    """Write each row of `data` with `score` (first head) and `score_<head>` (every head; `_std` for ensembles)."""
    from rlhf.data import read_response_rows
    from rlhf.io import write_jsonl
    from rlhf.reward_model import load_reward_model, score_texts

    model, tokenizer = load_reward_model(model_dir, device=device)
    untrained = [h for h, n in (model.meta.training_pairs or {}).items() if n == 0]
    if untrained:  # `score` is the first head; every head is written, so say which ones mean nothing
        warnings.warn(
            f"{model_dir}: head(s) {', '.join(untrained)} were trained on 0 pairs: their scores are random"
            + (" (and `score` is the first head)" if model.objectives[0] in untrained else ""),
            stacklevel=2,
        )
    rows, prompts, responses = read_response_rows(data, tokenizer)
    scores = score_texts(
        model,
        tokenizer,
        [scored_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)],
        max_length=max_length,
        normalize=normalize,
    )
    for i, row in enumerate(rows):
        row["score"] = float(scores.mean[i, 0])
        for h, name in enumerate(scores.objectives):
            row[f"score_{name}"] = float(scores.mean[i, h])
            if model.meta.ensemble_size > 1:
                row[f"score_{name}_std"] = float(scores.std[i, h])
    return write_jsonl(out, rows)


def normalize_model(
    model_dir: str, samples: str, device: str = "auto", max_length: int = 512
) -> tuple[list[float], list[float]]:
    """Store mean/std of the scores over reference policy samples in the model's reward_config.json."""
    import dataclasses

    from rlhf.data import read_response_rows
    from rlhf.io import write_json
    from rlhf.reward_model import REWARD_CONFIG, load_reward_model, normalization_stats, score_texts

    model, tokenizer = load_reward_model(model_dir, device=device)
    _, prompts, responses = read_response_rows(samples, tokenizer)
    if len(prompts) < 2:
        raise UserError(f"{samples}: need at least 2 reference samples to estimate a standard deviation")
    scores = score_texts(
        model,
        tokenizer,
        [scored_text(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)],
        max_length=max_length,
    )
    mean, std = normalization_stats(scores.mean)
    # A std of ~0 would be clamped to 1e-6 when applied, multiplying every later score by a million.
    flat = [f"{name}: std {s:.2g}" for name, s in zip(model.objectives, std, strict=True) if not s > 1e-6]
    if flat:
        raise UserError(
            f"{samples}: the reward model gives all {len(prompts)} samples the same score "
            f"({', '.join(flat)}), so there is no scale to normalise by; use varied samples"
        )
    meta = dataclasses.replace(model.meta, norm_mean=mean, norm_std=std)
    write_json(Path(model_dir) / REWARD_CONFIG, dataclasses.asdict(meta))
    return mean, std
