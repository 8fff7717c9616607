"""Kahneman-Tversky optimisation (KTO, Ethayarajh et al. 2024) of a policy on binary feedback.

Thumbs up/down on single responses (TRL's unpaired `prompt`/`completion`/`label` rows, docs/data.md)
instead of comparisons. `train(cfg, run, out)` reads as numbered steps and shares DPO's machinery
(`rlhf.algorithms.dpo`: setup, reference log-probs cached ONCE with the initial model, what trains, the
offline trainers' loop with its resume, NaN stop, metrics and atomic save); this module keeps only its
examples, its batches and its loss (`rlhf.losses.kto_loss`).

A batch of B examples is 2B rows: the B labelled (prompt, completion) sequences, then B MISMATCHED ones,
prompt i with completion i-1 (TRL's shift), whose policy/reference log-ratio estimates the KL reference
point z of the loss. The mismatched rows go through the policy without gradient (z is detached).
"""

from __future__ import annotations

import math
import random
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.algorithms.dpo import (
    OfflinePolicyConfig,
    fit_policy,
    held_out_stats,
    save_policy,
    sequence_logps,
    start_run,
)
from rlhf.config import ConfigError, RunConfig, help_field
from rlhf.errors import UserError
from rlhf.train_loop import TrainResult

# lambda_D n_D / (lambda_U n_U) outside this range draws a warning: the KTO paper's advice
ADVISED_RATIO = (1.0, 4.0 / 3.0)


@dataclass
class KTOConfig(OfflinePolicyConfig):
    """KTO fine-tuning of a causal LM policy on binary (desirable / undesirable) labels."""

    data: str = help_field(
        "", "Binary-label file (JSONL, Parquet or datasets folder): prompt/completion/label rows."
    )
    objective: str = help_field(
        "", "Train only on examples of this objective (e.g. helpful); empty = all examples."
    )
    use_weights: bool = help_field(True, "Use the data's per-example `weight` (e.g. labeller reliability).")
    epochs: float = help_field(2.0, "Passes over the training examples.")
    batch_size: int = help_field(
        32,
        "Examples per batch per process (at least 2: the KL estimate pairs each prompt with another's completion).",
    )
    beta: float = help_field(0.1, "KL strength beta. Larger stays closer to the reference.")
    desirable_weight: float = help_field(1.0, "lambda_D: weight of the desirable examples' losses.")
    undesirable_weight: float = help_field(
        1.0,
        "lambda_U: weight of the undesirable ones; keep lambda_D n_D / (lambda_U n_U) in [1, 4/3] (KTO paper).",
    )
    use_pairs: bool = help_field(
        True,
        "Also train on comparisons in the data, each as two binary examples (chosen desirable, rejected "
        "undesirable; ties left out), as TRL unpairs a preference dataset.",
    )

    def validate(self) -> None:
        self.validate_common("kto")
        if self.batch_size < 2:
            raise ConfigError(
                f"kto.batch_size must be at least 2 (the KL estimate needs another example's completion); "
                f"got {self.batch_size}"
            )
        if self.beta <= 0:
            raise ConfigError(f"kto.beta must be positive; got {self.beta}")
        if self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise ConfigError("kto.desirable_weight and kto.undesirable_weight must be positive")


# ----------------------------------------------------------------------------- examples and batches


def examples_of(data: Any, objective: str, use_pairs: bool, source: str) -> list:
    """The binary examples of `data`: its binary rows, then (with `use_pairs`) every strict comparison as
    two, chosen desirable and rejected undesirable (a response in several pairs counts once per label);
    only `objective`'s when one is named."""
    from rlhf.data import BinaryExample

    examples = list(data.binary)
    if use_pairs:
        seen = set()
        for pair in [*data.pairs, *(p for r in data.rankings for p in r.pairs())]:
            for completion, label in ((pair.chosen, True), (pair.rejected, False)):
                key = (pair.prompt, completion, label, pair.labeller_id, pair.objective)
                if pair.tie or key in seen:
                    continue
                seen.add(key)
                examples.append(
                    BinaryExample(pair.prompt, completion, label, pair.weight, pair.labeller_id,
                                  pair.objective, pair.source)
                )  # fmt: skip
    if not objective:
        return examples
    kept = [e for e in examples if (e.objective or "") == objective]
    if examples and not kept:
        found = sorted({e.objective or "(none)" for e in examples})
        raise UserError(
            f"{source}: no examples with objective {objective!r}; the data has {', '.join(found)}"
        )
    return kept


@dataclass
class Rows:
    """Prompt + completion rows, contiguous and right-padded: what `dpo.sequence_logps` scores."""

    input_ids: torch.Tensor  # (N, L)
    attention_mask: torch.Tensor  # (N, L)
    response_mask: torch.Tensor  # (N, L - s)
    query_width: int  # s: the first column holding a completion token in some row


@dataclass
class KTOBatch(Rows):
    """B examples as 2B rows: the labelled sequences, then prompt i with completion i-1 (the KL rows)."""

    label: torch.Tensor = None  # (B,) bool: desirable
    weight: torch.Tensor = None  # (B,)
    ref_logps: torch.Tensor | None = None  # (2B,) cached reference sequence log-probs

    def __len__(self) -> int:
        return self.label.shape[0]

    def rows(self, start: int, stop: int) -> Rows:
        return Rows(self.input_ids[start:stop], self.attention_mask[start:stop],
                    self.response_mask[start:stop], self.query_width)  # fmt: skip


def make_batches(
    examples: list, tokenizer: Any, cfg: KTOConfig, max_length: int | None = None
) -> list[KTOBatch]:
    """Tokenize every example once (`rlhf.sequences`, as DPO: the prompt as the policy sees it, the
    completion as the tokens it would emit, EOS included); examples of similar length share a batch,
    and each batch gets its mismatched KL rows. Each row is cut to `max_length` (default cfg's)."""
    from rlhf.sequences import encode_row, fit_length, special_tokens
    from rlhf.training import collate_contiguous, group_by_length

    max_length = max_length or cfg.max_length
    bos = special_tokens(tokenizer).bos_id
    encoded, kept = [], []
    for example in examples:
        try:
            prompt, (completion,) = encode_row(
                tokenizer, example.prompt, [example.completion], example.source
            )
        except UserError:
            if cfg.on_error != "skip":
                raise
            continue
        encoded.append((prompt, completion))
        kept.append(example)
    if len(kept) < len(examples):
        warnings.warn(
            f"{len(examples) - len(kept)} of {len(examples)} examples have a completion no policy could "
            "emit; skipped",
            stacklevel=2,
        )
    order = group_by_length([len(p) + len(c) for p, c in encoded], cfg.batch_size)
    batches = []
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        prompts = [encoded[i][0] for i in idx]
        completions = [encoded[i][1] for i in idx]
        shifted = completions[-1:] + completions[:-1]  # row i: completion i-1 (TRL's KL dataset)
        rows = [
            fit_length(p, c, max_length, bos) for p, c in zip(prompts * 2, completions + shifted, strict=True)
        ]
        input_ids, attention_mask, response_mask, width = collate_contiguous(
            [p for p, _ in rows], [c for _, c in rows], tokenizer.pad_token_id
        )
        batches.append(
            KTOBatch(
                input_ids, attention_mask, response_mask, width,
                label=torch.tensor([kept[i].label for i in idx], dtype=torch.bool),
                weight=torch.tensor([kept[i].weight if cfg.use_weights else 1.0 for i in idx]),
            )
        )  # fmt: skip
    return batches


def batch_loss(model, batch: KTOBatch, device, cfg: KTOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    from rlhf.losses import kto_loss

    n = len(batch)
    logps = sequence_logps(model, batch.rows(0, n), device)  # (B,)
    with torch.no_grad():  # the reference point z is detached: its rows need no graph
        kl_logps = sequence_logps(model, batch.rows(n, 2 * n), device)  # (B,)
    ref = batch.ref_logps.to(device)  # (2B,)
    return kto_loss(
        logps, ref[:n], batch.label.to(device), kl_logps, ref[n:], beta=cfg.beta,
        desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight,
        weights=batch.weight.to(device),
    )  # fmt: skip


def evaluate(model, batches: list[KTOBatch], device, cfg: KTOConfig) -> dict[str, float]:
    """Held-out loss, implicit rewards of desirable and undesirable examples, and z, weighted by batch size."""
    stats = held_out_stats(model, batches, lambda m, b: batch_loss(m, b, device, cfg))
    return {f"eval/{'loss' if key == 'loss/kto' else key}": value for key, value in stats.items()}


def class_balance(batches: list[KTOBatch], cfg: KTOConfig, prefix: str) -> dict[str, float]:
    """Desirable and undesirable counts of `batches` and lambda_D n_D / (lambda_U n_U)."""
    from rlhf.losses import kto_weight_ratio

    desirable = int(sum(int(b.label.sum()) for b in batches))
    undesirable = int(sum(len(b) for b in batches)) - desirable
    ratio = kto_weight_ratio(desirable, undesirable, cfg.desirable_weight, cfg.undesirable_weight)
    if not math.isfinite(ratio):  # one class: no ratio (and no Infinity in the JSON metrics)
        ratio = None
    return {
        f"{prefix}_desirable": desirable,
        f"{prefix}_undesirable": undesirable,
        f"{prefix}_weight_ratio": ratio,
    }


# ----------------------------------------------------------------------------- training


def train(
    cfg: KTOConfig,
    run: RunConfig,
    out: str | Path,
    resume: bool = False,
    world: Any = None,
    show_progress: bool = True,
) -> TrainResult:
    """Fine-tune `cfg.model` with KTO on `cfg.data` and save it to `out`; see the module docstring."""
    from rlhf.sequences import cap_length

    out = Path(out).expanduser()

    # 1. data: read, validate, split by prompt; binary rows (and comparisons, unpaired) as examples
    setup = start_run(cfg, run, world, show_progress, "binary prompt/completion/label rows")
    cfg, model, tokenizer = setup.cfg, setup.model, setup.tokenizer
    train_examples, eval_examples = (
        examples_of(d, cfg.objective, cfg.use_pairs, cfg.data) for d in (setup.train_data, setup.eval_data)
    )
    if not train_examples:
        pairs = "" if cfg.use_pairs else "; comparisons count only with kto.use_pairs=true"
        raise UserError(f"{cfg.data}: no binary examples in the training split{pairs}")

    # 2. tokenize once into fixed batches (with their KL rows); report the class balance
    max_length = cap_length(cfg.max_length, model)  # never past the model's context length
    random.Random(run.seed).shuffle(train_examples)
    train_batches = make_batches(train_examples, tokenizer, cfg, max_length)
    eval_batches = make_batches(eval_examples, tokenizer, cfg, max_length) if eval_examples else []
    if not train_batches:
        raise UserError(f"{cfg.data}: no training example has a completion a policy could emit")
    balance = class_balance(train_batches, cfg, "train") | class_balance(eval_batches, cfg, "eval")
    if 0 in (balance["train_desirable"], balance["train_undesirable"]):
        only = "desirable" if balance["train_undesirable"] == 0 else "undesirable"
        raise UserError(
            f"{cfg.data}: every training example is {only}; KTO learns from thumbs up and thumbs down "
            "against each other: add examples of the other kind (or comparisons, kto.use_pairs=true)"
        )
    _report_balance(balance, cfg, setup.accelerator.is_main_process)  # printed even without progress bars

    # 3. the reference log-probs of labelled and KL rows once, what trains, and the shared loop (DPO's):
    #    labelled rows with gradient, KL rows without; evaluate and checkpoint every eval_every steps
    result = fit_policy(
        setup, run, out, train_batches, eval_batches, batch_loss, evaluate, resume, show_progress,
        desc="KTO", loss_name="KTO loss", rate_name="time/examples_per_s", show=(("kl", "kl"),),
    )  # fmt: skip
    if not result.finished:  # time-boxed: the checkpoint holds the run, --resume continues it
        return TrainResult(out, result.step, {"stopped_at_step": result.step})

    # 4. the policy, LoRA merged, with its tokenizer: plain transformers, written atomically
    final = {**result.metrics, "steps": result.step, **balance}
    return save_policy(setup, result.model, out, {"run": asdict(run), "kto": asdict(cfg)}, final)


def _report_balance(balance: dict[str, float], cfg: KTOConfig, show: bool) -> None:
    """One line with the class balance; a warning when the weighted balance is outside the advice."""
    ratio = balance["train_weight_ratio"]  # both classes are there (train checked)
    if show:
        print(
            f"KTO: {balance['train_desirable']} desirable, {balance['train_undesirable']} undesirable training "
            f"examples ({balance['eval_desirable']} / {balance['eval_undesirable']} held out); "
            f"lambda_D n_D / (lambda_U n_U) = {ratio:.3g}",
            file=sys.stderr,
        )
    low, high = ADVISED_RATIO
    if not low <= ratio <= high:
        n_d, n_u = balance["train_desirable"], balance["train_undesirable"]
        advice = f"; e.g. kto.undesirable_weight={n_d * cfg.desirable_weight / n_u:.3g} brings it to 1"
        warnings.warn(
            f"{cfg.data}: lambda_D n_D / (lambda_U n_U) = {cfg.desirable_weight} * {n_d} / "
            f"({cfg.undesirable_weight} * {n_u}) = {ratio:.3g}, outside [1, 4/3] that the KTO paper "
            f"advises{advice}",
            stacklevel=3,
        )
