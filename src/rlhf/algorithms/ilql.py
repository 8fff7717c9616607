"""Implicit Language Q-Learning (ILQL, Snell et al. 2022): offline RL from logged responses and rewards.

`train(cfg, run, out)` reads as numbered steps: read (prompt, response, reward) rows -- or a preference
file whose responses a reward model scores -- tokenize once into fixed batches, then a loop that fits
two Q heads and a V head on the LM's last hidden states (TD targets from V, expectile regression of V
toward the Polyak-averaged target Qs, the conservative CQL term) together with the LM's own
behaviour-cloning loss, in the offline trainers' shared loop (`rlhf.train_loop`: Accelerate, clipping,
warm-up/decay, checkpoints and resume).

Generation (`generate`) steers the trained LM's logits by beta * (Q - V) at each step (`rl_math.
ilql_steered_logits`, top-k over the perturbed logits) through `rollout.sample_steered`. The LM is
saved with `save_pretrained` (plain transformers, unsteered) and the heads beside it in `ilql_heads.pt`.
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf import parallel
from rlhf.config import ConfigError, RunConfig, help_field, validate_all
from rlhf.errors import UserError
from rlhf.train_loop import (
    CHECKPOINT_DIR,
    LOG_DIR,
    LoopConfig,
    TrainResult,
    make_accelerator,
    save_final,
    train_loop,
)

HEADS_FILE = "ilql_heads.pt"


@dataclass
class ILQLConfig:
    """ILQL: offline RL on logged (prompt, response, reward) data."""

    model: str = help_field("world", "Initial LM: causal LM directory; 'world' = the world model.")
    data: str = help_field(
        "", "JSONL/Parquet/datasets with prompt, response and a reward (number, or list per token); "
        "or a preference file when `reward` names a reward model."
    )  # fmt: skip
    reward: str = help_field(
        "", "Reward-model directory (or module:function): score every response of a preference file."
    )
    reward_field: str = help_field("reward", "The field holding the reward in `data`.")
    gamma: float = help_field(0.99, "Discount of the token-level MDP.")
    tau: float = help_field(0.7, "Expectile of V's regression toward Q (0.5 = mean; -> 1 = max).")
    cql_scale: float = help_field(0.01, "Weight of the conservative (CQL) term.")
    n_step: int = help_field(
        0,
        "TD horizon: 0 = the Monte-Carlo return of the response; 1 = the paper's one-step backup (needs "
        "many more steps for an end-of-response reward to reach the first tokens).",
    )
    bc_scale: float = help_field(1.0, "Weight of the LM's behaviour-cloning (cross-entropy) loss.")
    target_update: float = help_field(
        0.01, "Polyak rate: target Q <- rate * Q + (1 - rate) * target, each step."
    )
    beta: float = help_field(
        4.0, "Generation: strength of the steering beta * (Q - V) (saved with the heads)."
    )
    top_k: int = help_field(20, "Generation: sample among the k best steered tokens (0 = all).")
    epochs: float = help_field(3.0, "Passes over the data.")
    max_steps: int = help_field(0, "Stop after this many optimiser steps (0 = given by epochs).")
    batch_size: int = help_field(32, "Responses per batch per process.")
    lr: float = help_field(1e-4, "Peak learning rate (the world model; ~1e-5 suits larger LMs).")
    lr_schedule: str = help_field("cosine", "LR decay after warm-up: cosine, linear or constant.")
    warmup_ratio: float = help_field(0.05, "Share of steps for linear warm-up.")
    max_grad_norm: float = help_field(1.0, "Gradient clipping norm (0 = off).")
    max_length: int = help_field(
        256, "Maximum prompt + response tokens (the prompt is cut from the left first)."
    )
    save_every: int = help_field(100, "Write a resumable checkpoint every N steps (0 = only at the end).")
    trainable_layers: int = help_field(
        0,
        "LM blocks trained with the heads: 0 = heads only (the LM stays the logged policy), N = top N, -1 = all.",
    )
    on_error: str = help_field(
        "stop", "Bad data rows: 'stop' at the first, or 'skip' them with a report file."
    )
    stop_after_steps: int = help_field(
        0, "Stop after this many steps as if interrupted, keeping the checkpoint (0 = off); a time box."
    )

    def validate(self) -> None:
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(
                f"ilql.lr_schedule must be one of cosine, linear, constant; got {self.lr_schedule!r}"
            )
        if self.on_error not in ("stop", "skip"):
            raise ConfigError(f"ilql.on_error must be stop or skip; got {self.on_error!r}")
        if self.n_step < 0:
            raise ConfigError(f"ilql.n_step must be 0 (Monte-Carlo) or a horizon >= 1; got {self.n_step}")
        if not 0 < self.tau < 1:
            raise ConfigError(f"ilql.tau must be in (0, 1); got {self.tau}")
        if not 0 <= self.gamma <= 1 or not 0 < self.target_update <= 1:
            raise ConfigError("ilql.gamma must be in [0, 1] and ilql.target_update in (0, 1]")
        for key in ("batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ilql.{key} must be at least 1; got {getattr(self, key)}")
        if self.lr <= 0 or self.epochs <= 0:
            raise ConfigError("ilql.lr and ilql.epochs must be positive")


# ----------------------------------------------------------------------------- model


def _mlp(hidden: int, out: int) -> nn.Sequential:
    """Two layers, the last initialised at zero: Q = V = 0 at the start, so the steering beta * (Q - V)
    begins as no steering rather than as random noise on the logits."""
    mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class ILQLHeads(nn.Module):
    """Two Q heads (D -> vocabulary), their Polyak-averaged targets, and a V head (D -> 1)."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.q1, self.q2, self.v = _mlp(hidden, vocab), _mlp(hidden, vocab), _mlp(hidden, 1)
        self.target_q1 = copy.deepcopy(self.q1).requires_grad_(False)
        self.target_q2 = copy.deepcopy(self.q2).requires_grad_(False)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """hidden (..., D) -> q1, q2, min of the targets (..., V) and v (...,)."""
        hidden = hidden.to(self.v[0].weight.dtype)
        target_q = torch.min(self.target_q1(hidden), self.target_q2(hidden)).detach()
        return self.q1(hidden), self.q2(hidden), target_q, self.v(hidden).squeeze(-1)

    @torch.no_grad()
    def start_at(self, value: float) -> None:
        """Start every Q and V at `value`, the data's mean return: one-step backups move information one
        token per round, so heads that start at 0 would call every unfinished answer better than any
        finished one until the returns had flowed back to the first token."""
        for head in (self.q1, self.q2, self.target_q1, self.target_q2, self.v):
            head[-1].bias.fill_(value)

    @torch.no_grad()
    def update_targets(self, rate: float) -> None:
        for online, target in ((self.q1, self.target_q1), (self.q2, self.target_q2)):
            for p, tp in zip(online.parameters(), target.parameters(), strict=True):
                tp.lerp_(p, rate)


class ILQLModel(nn.Module):
    """A causal LM with ILQL heads on its last hidden states; one forward gives both."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm
        self.heads = ILQLHeads(lm.config.hidden_size, lm.get_output_embeddings().weight.shape[0])

    def forward(self, input_ids, attention_mask, query_width: int) -> dict[str, torch.Tensor]:
        """Over the response columns (T = L - query_width): the LM's log-probs of the taken tokens (B, T),
        and the heads at the states that emit them (q1, q2, target_q (B, T, V); v (B, T))."""
        from rlhf.logprobs import accepts_logits_to_keep, gather_logprobs, position_ids_from_mask

        width = input_ids.shape[1] - query_width + 1  # positions that emit a response token, + 1
        keep = {"logits_to_keep": width} if accepts_logits_to_keep(self.lm) else {}
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_from_mask(attention_mask), use_cache=False,
                      output_hidden_states=True, **keep)  # fmt: skip
        actions = input_ids[:, query_width:]  # (B, T)
        q1, q2, target_q, v = self.heads(out.hidden_states[-1][:, query_width - 1 : -1])  # t - 1 emits t
        return {
            "logprobs": gather_logprobs(out.logits[:, -width:-1], actions),
            "q1": q1,
            "q2": q2,
            "target_q": target_q,
            "v": v,
        }


# ----------------------------------------------------------------------------- data


@dataclass
class ILQLBatch:
    input_ids: torch.Tensor  # (B, Lq + T)
    attention_mask: torch.Tensor  # (B, Lq + T)
    response_mask: torch.Tensor  # (B, T)
    rewards: torch.Tensor  # (B, T)
    query_width: int


def token_rewards(reward: float | tuple[float, ...], n_tokens: int, source: str) -> list[float]:
    """Per-token rewards for a response of n_tokens (EOS included): a response-level reward sits on the
    last token; a per-token list must give one number per response token before EOS."""
    if isinstance(reward, tuple):
        if len(reward) != n_tokens - 1:
            raise UserError(
                f"{source}: {len(reward)} per-token rewards for a response of {n_tokens - 1} tokens "
                "(this model's tokenizer; the EOS after them gets 0)"
            )
        return [*reward, 0.0]
    return [0.0] * (n_tokens - 1) + [float(reward)]


def make_batches(
    rows: list, tokenizer: Any, cfg: ILQLConfig, max_length: int | None = None
) -> list[ILQLBatch]:
    """Tokenize every row once (`rlhf.sequences`, as DPO does), cut to `max_length` (default
    `cfg.max_length`), in batches of similar length. A response cut at the limit keeps its return: the
    rewards of the tokens cut away are added to the last token kept (a response-level reward sits on
    EOS, the first token cut), with a warning that counts such rows."""
    import warnings

    from rlhf.sequences import encode_row, fit_length, special_tokens
    from rlhf.training import collate_sequences, group_by_length

    max_length = max_length or cfg.max_length
    bos = special_tokens(tokenizer).bos_id
    tokenized, bad, cut = [], 0, 0
    for row in rows:
        try:
            prompt, [response] = encode_row(tokenizer, row.prompt, [row.response], row.source)
        except UserError:
            if cfg.on_error != "skip":
                raise
            bad += 1
            continue
        rewards = token_rewards(row.reward, len(response), row.source)
        prompt, response = fit_length(prompt, response, max_length, bos)
        if len(response) < len(rewards):
            cut += 1
            rewards = [*rewards[: len(response) - 1], sum(rewards[len(response) - 1 :])]
        tokenized.append((prompt, response, rewards))
    if bad:
        warnings.warn(
            f"{bad} of {len(rows)} rows have a response no policy could emit; skipped", stacklevel=2
        )
    if cut:
        warnings.warn(
            f"{cut} of {len(rows)} responses were cut at {max_length} tokens (prompt + response); the "
            "rewards of the tokens cut away sit on the last token kept",
            stacklevel=2,
        )
    if not tokenized:
        raise UserError("no rows left to train on")
    order = group_by_length([len(p) + len(r) for p, r, _ in tokenized], cfg.batch_size)
    batches = []
    for start in range(0, len(order), cfg.batch_size):
        part = [tokenized[i] for i in order[start : start + cfg.batch_size]]
        input_ids, attention_mask, response_mask, width = collate_sequences(
            [p for p, _, _ in part], [r for _, r, _ in part], tokenizer.pad_token_id
        )
        rewards = torch.zeros(response_mask.shape)
        for i, (_, _, row_rewards) in enumerate(part):
            rewards[i, : len(row_rewards)] = torch.tensor(row_rewards)
        batches.append(ILQLBatch(input_ids, attention_mask, response_mask, rewards, width))
    return batches


def load_rows(cfg: ILQLConfig, tokenizer: Any, device: str) -> list:
    """The training rows: read as they are, or every distinct response of a preference file scored by
    `cfg.reward` (a reward model gives the rewards of the logged data: no gold needed)."""
    from rlhf.data import RewardedResponse, load_preferences, load_rewarded_responses

    if not cfg.data:
        raise UserError("no training data: give --data FILE (prompt, response, reward rows)")
    if not cfg.reward:
        return load_rewarded_responses(cfg.data, tokenizer, cfg.reward_field, cfg.on_error)
    from rlhf.rewards import load_reward_source

    data = load_preferences(cfg.data, tokenizer=tokenizer, on_error=cfg.on_error)
    seen: dict[tuple[str, str], str] = {}
    for pair in [*data.pairs, *(p for r in data.rankings for p in r.pairs())]:
        for response in (pair.chosen, pair.rejected):
            seen.setdefault((pair.prompt, response), pair.source)
    keys = list(seen)
    score = load_reward_source(cfg.reward, device=device, policy_tokenizer=tokenizer)
    scores = []
    for start in range(0, len(keys), 64):
        part = keys[start : start + 64]
        scores.extend(score([p for p, _ in part], [r for _, r in part]).tolist())
    return [RewardedResponse(p, r, s, seen[(p, r)]) for (p, r), s in zip(keys, scores, strict=True)]


# ----------------------------------------------------------------------------- training


def batch_loss(model, batch: ILQLBatch, device, cfg: ILQLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    from rlhf.losses import ilql_loss
    from rlhf.rl_math import masked_mean

    out = model(batch.input_ids.to(device), batch.attention_mask.to(device), batch.query_width)
    actions = batch.input_ids[:, batch.query_width :].to(device)
    mask = batch.response_mask.to(device)
    taken = actions.unsqueeze(-1)
    loss, stats = ilql_loss(
        out["q1"].gather(-1, taken).squeeze(-1),
        out["q2"].gather(-1, taken).squeeze(-1),
        out["target_q"].gather(-1, taken).squeeze(-1),
        out["v"],
        out["q1"],
        out["q2"],
        actions,
        batch.rewards.to(device),
        mask,
        cfg.gamma,
        cfg.tau,
        cfg.cql_scale,
        cfg.n_step,
    )
    bc = -masked_mean(out["logprobs"], mask)  # the LM keeps modelling the data (AWR/BC term)
    stats["loss/bc"] = float(bc.detach())
    return loss + cfg.bc_scale * bc, stats


ILQLResult = TrainResult  # the name this module's callers know


def train(
    cfg: ILQLConfig,
    run: RunConfig,
    out: str | Path,
    resume: bool = False,
    world: Any = None,
    show_progress: bool = True,
) -> ILQLResult:
    """Train ILQL heads (and the LM) on `cfg.data`; save to `out`. See the module docstring."""
    from rlhf.models import absolute_model_path, disable_dropout, freeze_lower_layers, load_causal_lm
    from rlhf.sequences import cap_length
    from rlhf.training import epoch_batches
    from rlhf.world.report import resolve_world_model

    validate_all(cfg)  # what loading the config checks for the CLI, for callers of the API too
    validate_all(run)
    # the saved config names the models by absolute path: `rlhf eval` finds the initial model from anywhere
    cfg = replace(cfg, model=absolute_model_path(cfg.model))
    out = Path(out).expanduser()
    accelerator = make_accelerator(run)
    rank, n_procs, is_main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device = accelerator.device
    torch.manual_seed(run.seed)

    # 1. the LM and its heads; the data, tokenized once into fixed batches
    lm, tokenizer = load_causal_lm(
        resolve_world_model(cfg.model, world, show_progress and is_main), device=str(device), dtype=run.dtype
    )
    disable_dropout(lm)  # the steered policy's ratio to the logged one is read without dropout
    if cfg.trainable_layers == 0:  # heads only: the LM's output stays the logged policy's
        lm.requires_grad_(False)
    elif cfg.trainable_layers > 0:
        freeze_lower_layers(lm, cfg.trainable_layers)
    model = ILQLModel(lm).to(device)
    rows = load_rows(cfg, tokenizer, str(device))
    random.Random(run.seed).shuffle(rows)
    batches = make_batches(rows, tokenizer, cfg, cap_length(cfg.max_length, lm))
    mean_return = float(sum(b.rewards.sum() for b in batches) / len(rows))
    if not resume:
        model.heads.start_at(mean_return)
    if not epoch_batches(batches, 0, run.seed, rank, n_procs):
        raise UserError(f"{cfg.data}: fewer batches ({len(batches)}) than processes ({n_procs})")
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0
    )

    # 2. the shared loop: TD, expectile and CQL losses plus behaviour cloning; after each step the
    #    target Qs move toward the online ones (Polyak); a checkpoint every save_every steps
    loop = LoopConfig(
        epochs=cfg.epochs, max_steps=cfg.max_steps, batch_size=cfg.batch_size, lr_schedule=cfg.lr_schedule,
        warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm, eval_every=cfg.save_every,
        stop_after_steps=cfg.stop_after_steps, seed=run.seed, desc="ILQL", loss_name="ILQL loss",
        rate_name="time/responses_per_s", show=(("q", "loss/q"), ("v", "loss/v")),
    )  # fmt: skip
    result = train_loop(
        accelerator, model, optimizer, batches, lambda m, b: batch_loss(m, b, device, cfg), loop,
        checkpoint=out / CHECKPOINT_DIR, log_dir=out / LOG_DIR, resume=resume, tensorboard=run.tensorboard,
        show_progress=show_progress, after_step=lambda m: m.heads.update_targets(cfg.target_update),
    )  # fmt: skip
    if not result.finished:
        return TrainResult(out, result.step, {"stopped_at_step": result.step})

    # 3. the LM (plain transformers) with the heads beside it, atomically
    metrics = {**result.stats, "steps": result.step, "responses": len(rows)} if is_main else {}
    final = parallel.whole(result.model)  # under FSDP2 built on the main process from the gathered state
    save_final(
        accelerator,
        lambda extra, carry: save_ilql(out, final, tokenizer, cfg, extra, carry),
        {"run": asdict(run), "ilql": asdict(cfg)},
    )
    return TrainResult(out, result.step, metrics)


def save_ilql(
    out: Path, model: ILQLModel, tokenizer: Any, cfg: ILQLConfig, extra_files: dict, carry: tuple[str, ...]
) -> None:
    """The LM with `save_pretrained` (plain transformers, unsteered) and the heads, with the generation
    defaults, beside it in `ilql_heads.pt`; atomically, with `extra_files` inside and `carry` kept."""
    from rlhf.models import save_pretrained_atomic

    heads = {"state": model.heads.state_dict(), "hidden": model.heads.v[0].in_features,
             "vocab": model.heads.q1[-1].out_features, "beta": cfg.beta, "top_k": cfg.top_k}  # fmt: skip
    files = {HEADS_FILE: lambda p: torch.save(heads, p), **extra_files}
    save_pretrained_atomic(out, model.lm, tokenizer, extra_files=files, carry=carry)


def load_ilql(path: str | Path, device: str = "auto", dtype: str = "auto") -> tuple[ILQLModel, Any, dict]:
    """(model with heads, tokenizer, saved generation defaults) from an `rlhf ilql train` directory."""
    from rlhf.models import load_causal_lm

    heads_file = Path(path).expanduser() / HEADS_FILE
    if not heads_file.is_file():
        raise UserError(f"{path} has no {HEADS_FILE}: not an `rlhf ilql train` output")
    lm, tokenizer = load_causal_lm(path, device=device, dtype=dtype)
    blob = torch.load(heads_file, weights_only=False)
    model = ILQLModel(lm)
    model.heads.load_state_dict(blob["state"])
    model.to(next(lm.parameters()).device).eval()
    return model, tokenizer, {"beta": blob["beta"], "top_k": blob["top_k"]}


def generate(
    model: ILQLModel,
    tokenizer: Any,
    prompts: list[str],
    beta: float,
    top_k: int = 20,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    seed: int | None = None,
):
    """Sample with the LM's logits steered by beta * (Q - V) (`rl_math.ilql_steered_logits`)."""
    from rlhf.rl_math import ilql_steered_logits
    from rlhf.rollout import SamplingConfig, sample_steered

    def steer(logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        _, _, target_q, v = model.heads(hidden)
        return ilql_steered_logits(logits, target_q, v.unsqueeze(-1), beta, top_k)

    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    return sample_steered(model.lm, tokenizer, prompts, cfg, steer, seed=seed)
