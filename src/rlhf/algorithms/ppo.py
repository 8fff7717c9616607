"""PPO against a reward with a per-token KL penalty to the frozen initial policy (Ziegler et al. 2019).

One iteration (`ppo_step`) reads like the method: sample responses, score them, compute the reference
log-probs, shape per-token rewards with the KL penalty, estimate advantages with GAE, then several epochs
of clipped policy and value updates over shuffled minibatches, then update the KL controller.

Defaults follow "The N+ Implementation Details of RLHF with PPO" (Huang et al. 2024): the score on the
last token plus per-token k1 KL; whitened advantages; clip 0.2 for ratio and value; gamma 1, lambda 0.95;
dropout off in policy and reference; the same temperature for sampling and log-probs; a penalty for
responses that never emit EOS.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.config import ConfigError, RunConfig, help_field, validate_all
from rlhf.errors import UserError, check_finite


@dataclass
class PPOConfig:
    """PPO fine-tuning of a causal LM policy."""

    policy: str = help_field(
        "world", "Initial policy: causal LM directory or cached id; 'world' = the world model."
    )
    reference: str = help_field(
        "",
        "Reference of the KL penalty: a causal LM directory ('world' = the world model); empty = a frozen "
        "copy of `policy`. Iterative RLHF sets it to the first policy while `policy` is the last round's.",
    )
    reward: str = help_field(
        "",
        "Reward: a reward-model directory, or module:function: fn(prompts, responses) or TRL's "
        "fn(completions, **kwargs) (docs/ppo.md).",
    )
    reward_weights: dict[str, float] = help_field(
        {}, "Weights of the reward model's heads, e.g. {helpful: 1, harmless: 1}; empty = first head."
    )
    normalize_rewards: bool = help_field(
        False, "Use the reward model's stored normalisation (rlhf reward normalize)."
    )
    cost: str = help_field(
        "",
        "Safe RLHF: a cost source (reward-model directory or module:function); the policy maximises "
        "reward - lambda * cost with lambda updated by dual ascent toward mean cost <= cost_threshold.",
    )
    cost_weights: dict[str, float] = help_field(
        {},
        "Weights of the cost model's heads, e.g. {harmless: -1} (a harmlessness head scores safe answers high).",
    )
    cost_threshold: float = help_field(0.0, "The constraint: mean cost per response at most this.")
    lagrange_init: float = help_field(1.0, "Initial Lagrange multiplier lambda (>= 0).")
    lagrange_lr: float = help_field(0.05, "Dual-ascent step of lambda per iteration.")
    prompts: str = help_field(
        "", "Prompt file (JSONL/Parquet/datasets, field 'prompt'); empty = the world's prompts."
    )
    n_world_prompts: int = help_field(1024, "How many world prompts to draw when no prompt file is given.")
    steps: int = help_field(40, "PPO iterations (each: one rollout batch, then ppo_epochs of updates).")
    batch_size: int = help_field(
        32, "Responses per rollout; a prompt file with fewer prompts is cycled, reshuffled on every pass."
    )
    mini_batch_size: int = help_field(
        16, "Responses per gradient step: divides batch_size, or is at least batch_size (one step per epoch)."
    )
    ppo_epochs: int = help_field(4, "Passes over each rollout batch.")
    lr: float = help_field(
        1e-4, "Adam learning rate (linear decay to 0 over the run); the world model. ~1e-6 suits large LMs."
    )
    max_grad_norm: float = help_field(1.0, "Gradient clipping norm.")
    max_new_tokens: int = help_field(48, "Maximum response length.")
    temperature: float = help_field(1.0, "Sampling temperature, also used for the log-probs.")
    top_k: int = help_field(0, "Top-k sampling (0 = off).")
    top_p: float = help_field(1.0, "Nucleus sampling (1 = off).")
    kl_coef: float = help_field(0.05, "KL penalty coefficient (initial value when adaptive).")
    adaptive_kl: bool = help_field(False, "Adapt kl_coef toward kl_target (Ziegler et al. 2019).")
    kl_target: float = help_field(6.0, "Target KL (nats per response) of the adaptive controller.")
    kl_horizon: int = help_field(10000, "Horizon of the adaptive controller.")
    kl_estimator: str = help_field("k1", "Per-token KL estimator: k1 (log-ratio) or k3.")
    gamma: float = help_field(1.0, "Discount.")
    lam: float = help_field(0.95, "GAE lambda.")
    cliprange: float = help_field(0.2, "PPO ratio clip: 1 - this below, and above unless cliprange_high.")
    cliprange_high: float = help_field(
        0.0, "Upper ratio clip, 1 + this (DAPO's clip-higher, e.g. 0.28); 0 = cliprange (symmetric)."
    )
    loss_agg_mode: str = help_field(
        "token-mean",
        "How per-token policy losses are reduced: token-mean (DAPO; every token alike), "
        "seq-mean-token-mean (GRPO; every response alike), seq-mean-token-sum, or "
        "seq-mean-token-sum-norm (Dr. GRPO; divided by batch x max_new_tokens).",
    )
    importance_sampling_level: str = help_field(
        "token",
        "'token' (PPO's per-token ratio) or 'sequence' (GSPO: one length-normalised ratio per response).",
    )
    scale_rewards: str = help_field(
        "group",
        "GRPO's advantage scale: 'group' (std of the K samples), 'batch' (std of the batch) or 'none' (Dr. GRPO).",
    )
    mask_truncated_completions: bool = help_field(
        False,
        "Leave responses that hit max_new_tokens without EOS out of the policy loss (DAPO's overlong filter).",
    )
    cliprange_value: float = help_field(0.2, "Value clip.")
    vf_coef: float = help_field(0.1, "Value-loss coefficient.")
    ent_coef: float = help_field(0.0, "Entropy bonus coefficient.")
    missing_eos_penalty: float = help_field(
        1.0, "Subtracted from the score of a response that never emits EOS (0 = off)."
    )
    whiten_advantages: bool = help_field(True, "Whiten advantages over each rollout batch (gae, rloo).")
    advantage: str = help_field(
        "gae",
        "Advantage estimator: 'gae' (PPO with a value head), 'rloo' (leave-one-out baseline over K samples) "
        "or 'grpo' (group-normalised scores, KL as a loss term); rloo/grpo need samples_per_prompt >= 2.",
    )
    samples_per_prompt: int = help_field(
        1, "K responses per prompt in a rollout (batch_size counts responses)."
    )
    critic: str = help_field(
        "shared",
        "Value function: 'shared' (a linear head on the policy's trunk: one forward gives log-probs and "
        "values) or 'separate' (a copy of the trunk with its own head, trained by the value loss only).",
    )
    mixed_precision: str = help_field(
        "no", "'no' (fp32) or 'bf16' autocast for generation, forwards and updates (fp32 master weights)."
    )
    log_every: int = help_field(1, "Log metrics every N iterations.")
    trainable_layers: int = help_field(
        -1, "Train only the top N transformer blocks of the policy (-1 = all)."
    )
    lora_r: int = help_field(
        0,
        "Train LoRA adapters of this rank instead of the policy (0 = off); the reference is then the same weights with adapters off.",
    )
    lora_alpha: float = help_field(16.0, "LoRA alpha.")
    rollout_engine: str = help_field(
        "ours",
        "Who samples the rollouts: 'ours' (rlhf's KV-cached loop) or 'vllm' (a `vllm serve` at ppo.vllm_url, "
        "synced after every update; docs/vllm.md).",
    )
    vllm_url: str = help_field(
        "", "Base URL of the vLLM server, e.g. http://localhost:8000 (rollout_engine=vllm)."
    )
    vllm_timeout: float = help_field(
        300.0, "Seconds a vLLM call may take before the run stops with an error."
    )
    vllm_weights_dir: str = help_field(
        "",
        "Where the policy is saved for the server to reload after each update; empty = <out>/vllm_weights.",
    )
    is_level: str = help_field(
        "token", "Importance correction of the sampler/trainer mismatch (vllm): token, sequence or geometric."
    )
    is_mode: str = help_field(
        "truncate",
        "truncate (weights capped at is_cap), mask (tokens/responses over the cap dropped) or off.",
    )
    is_cap: float = help_field(2.0, "Cap of the importance weights (> 1).")
    save_every: int = help_field(10, "Write a resumable checkpoint every N iterations (0 = only at the end).")
    stop_after_steps: int = help_field(
        0, "Stop after this many iterations as if interrupted, keeping the checkpoint (0 = off)."
    )

    def validate(self) -> None:
        for key in (
            "steps",
            "batch_size",
            "mini_batch_size",
            "ppo_epochs",
            "max_new_tokens",
            "samples_per_prompt",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"ppo.{key} must be at least 1")
        if self.advantage not in ("gae", "rloo", "grpo"):
            raise ConfigError(f"ppo.advantage must be gae, rloo or grpo; got {self.advantage!r}")
        if self.advantage != "gae" and self.samples_per_prompt < 2:
            raise ConfigError(
                f"ppo.advantage={self.advantage} needs ppo.samples_per_prompt >= 2 (a group to compare within)"
            )
        if self.batch_size % self.samples_per_prompt:
            raise ConfigError(
                f"ppo.batch_size ({self.batch_size}) must be a multiple of ppo.samples_per_prompt ({self.samples_per_prompt})"
            )
        if self.critic not in ("shared", "separate"):
            raise ConfigError(f"ppo.critic must be shared or separate; got {self.critic!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(f"ppo.mixed_precision must be no or bf16; got {self.mixed_precision!r}")
        from rlhf.losses import LOSS_AGG_MODES
        from rlhf.rl_math import SCALE_REWARDS

        choices = {
            "loss_agg_mode": LOSS_AGG_MODES,
            "importance_sampling_level": ("token", "sequence"),
            "scale_rewards": SCALE_REWARDS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"ppo.{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}"
                )
        if self.cliprange <= 0 or self.cliprange_high < 0:
            raise ConfigError("ppo.cliprange must be > 0 and ppo.cliprange_high >= 0 (0 = cliprange)")
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"ppo.kl_estimator must be k1 or k3; got {self.kl_estimator!r}")
        if self.batch_size % self.mini_batch_size and self.mini_batch_size < self.batch_size:
            # minibatches of unequal size would weigh some responses more than others in an epoch
            divisor = max(d for d in range(1, self.mini_batch_size) if self.batch_size % d == 0)
            step = math.lcm(self.mini_batch_size, self.samples_per_prompt)
            raise ConfigError(
                f"ppo.batch_size ({self.batch_size}) must be a multiple of ppo.mini_batch_size "
                f"({self.mini_batch_size}): set ppo.mini_batch_size={divisor} or ppo.batch_size="
                f"{-(-self.batch_size // step) * step}"
            )
        if self.temperature <= 0:
            raise ConfigError("ppo.temperature must be > 0 (log-probs use the sampling temperature)")
        if self.lagrange_init < 0 or self.lagrange_lr <= 0:
            raise ConfigError("ppo.lagrange_init must be >= 0 and ppo.lagrange_lr > 0")
        if self.rollout_engine not in ("ours", "vllm"):
            raise ConfigError(f"ppo.rollout_engine must be ours or vllm; got {self.rollout_engine!r}")
        if self.rollout_engine == "vllm" and not self.vllm_url:
            raise ConfigError("ppo.rollout_engine=vllm needs ppo.vllm_url, e.g. http://localhost:8000")
        if self.is_level not in ("token", "sequence", "geometric"):
            raise ConfigError(f"ppo.is_level must be token, sequence or geometric; got {self.is_level!r}")
        if self.is_mode not in ("truncate", "mask", "off"):
            raise ConfigError(f"ppo.is_mode must be truncate, mask or off; got {self.is_mode!r}")
        if not self.is_cap > 1:
            raise ConfigError(f"ppo.is_cap must be > 1; got {self.is_cap}")


class PolicyAndValue(nn.Module):
    """The policy and its critic as one module, so that Accelerate prepares them together (TRL's
    PolicyAndValueWrapper): DDP averages the gradients of both in backward, FSDP2 shards both.

    `forward` is the update's: response log-probs (B, T), logits (B, T, V) or None, and values (B, T) or
    None (no critic); `sample` is the rollout's decoding on the policy (an FSDP2 forward method, see
    `rlhf.parallel.prepare`). `critic` is None, a linear head on the policy's trunk or a `ValueModel`.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None) -> None:
        super().__init__()
        self.policy, self.critic = policy, critic
        # the blocks Accelerate's FSDP2 wraps one by one, as it reads them from a transformers model
        self._no_split_modules = getattr(policy, "_no_split_modules", None)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_width: int,
        temperature: float,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        from rlhf.logprobs import response_logprobs

        shared_head = self.critic if isinstance(self.critic, nn.Linear) else None
        outputs = response_logprobs(
            self.policy, input_ids, attention_mask, query_width, temperature, return_logits, shared_head
        )
        if shared_head is not None:
            return outputs
        if self.critic is not None:  # a ValueModel
            return (*outputs, self.critic.response_values(input_ids, attention_mask, query_width))
        return (*outputs, None)

    def sample(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """`rlhf.rollout.decode` on the policy."""
        from rlhf.rollout import decode

        return decode(self.policy, *args, **kwargs)


@dataclass
class PolicyModels:
    """What one PPO process holds: the trained policy, its frozen reference, the critic and the tokenizer.

    `critic` is None (rloo, grpo), a linear head on the policy's trunk (`critic='shared'`) or a
    `ValueModel` (`critic='separate'`). `ref_policy` may share the policy's frozen lower blocks or be the
    policy itself with LoRA adapters disabled (`AdaptersDisabled`); None when there is no KL term
    (`kl_coef` fixed at 0): nothing is held or run for it, and `objective/kl` is not logged.
    `joint` is policy and critic as one `PolicyAndValue`; `prepared` the same as Accelerate prepared it
    (DDP-wrapped, or sharded in place): the update's forward runs through it so that gradients are
    averaged or reduce-scattered, while the rollout's generation and no-grad forwards use `joint`.
    """

    policy: nn.Module
    ref_policy: Any | None
    critic: nn.Module | None
    tokenizer: Any
    engine: Any = None  # a `rlhf.vllm_client.RolloutEngine` when a vLLM server samples the rollouts

    def __post_init__(self) -> None:
        self.joint = PolicyAndValue(self.policy, self.critic)
        self.prepared: nn.Module = self.joint

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for group in self.clip_groups() for p in group]

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """Parameters whose gradient norm is clipped together: a separate critic on its own, so its
        (early, large) value-loss gradients do not scale the policy's down."""
        policy = [p for p in self.policy.parameters() if p.requires_grad]
        critic = list(self.critic.parameters()) if self.critic is not None else []
        if isinstance(self.critic, nn.Linear):
            return [policy + critic]
        return [policy, critic] if critic else [policy]


@dataclass
class Rollout:
    """One batch of sampled responses and everything PPO needs about them."""

    prompts: list[str]
    responses: list[str]
    input_ids: torch.Tensor  # (B, Lq + T) left-padded prompt, then the response padded after EOS
    attention_mask: torch.Tensor  # (B, Lq + T)
    response_mask: torch.Tensor  # (B, T) True up to and including EOS
    finished: torch.Tensor  # (B,) emitted EOS
    logprobs: torch.Tensor  # (B, T)
    ref_logprobs: torch.Tensor  # (B, T)
    values: torch.Tensor  # (B, T)
    query_width: int
    generate_seconds: float = 0.0  # the `generate` call alone
    generated_positions: int = 0  # B x steps generated (finished rows keep being padded until all stop)
    # the policy forward's (logprobs, logits, values) with their autograd graph, kept when the first
    # update's forward would repeat it exactly (see `reusable_first_forward`), and its seconds
    first_forward: tuple | None = None
    first_forward_seconds: float = 0.0
    sampler_logprobs: torch.Tensor | None = None  # (B, T) as the vLLM server reported them


def reusable_first_forward(models: PolicyModels, cfg: PPOConfig, n_rows: int) -> bool:
    """Whether the first update may backpropagate through the rollout's own policy forward: with one
    minibatch per epoch its forward sees the same parameters and rows, and without dropout the same
    function, so running it again would compute the same tensors (TRL likewise skips the old-policy
    forward when it makes one update per rollout)."""
    dropout = any(isinstance(m, nn.Dropout) and m.p > 0 for m in models.policy.modules())
    return cfg.mini_batch_size >= n_rows and not dropout


@torch.no_grad()
def rollout(
    models: PolicyModels, prompts: list[str], cfg: PPOConfig, autocast=nullcontext, keep_graph: bool = False
) -> Rollout:
    """Sample with the KV cache, then one forward each for policy (with values) and reference log-probs.
    With `keep_graph` the policy forward keeps its autograd graph and logits (`Rollout.first_forward`)."""
    from rlhf.logprobs import response_logprobs, truncate_after_eos
    from rlhf.parallel import gathered
    from rlhf.rollout import prompt_batch, repeated_prompts, sample_next
    from rlhf.sequences import decode_response

    policy, tokenizer = models.policy, models.tokenizer
    device = next(policy.parameters()).device
    tokenizer.padding_side = "left"
    repeats = repeated_prompts(prompts)  # K samples per prompt: each prompt is encoded once
    enc = prompt_batch(tokenizer, prompts[::repeats], policy, cfg.max_new_tokens, device)
    # Decoding multiplies (B, D) rows: on a CPU bf16 is slower there than fp32 (measured 24 vs 114
    # GFLOP/s at B = 32 on the benchmark machine, while (2560, 128) x (128, 512) runs 8x faster in
    # bf16), so autocast covers generation on accelerators only.
    choose = lambda logits, _: (sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p), None)  # noqa: E731
    ref_logprobs = sampler_logprobs = None
    with gathered(models.joint):  # FSDP2: the policy's shards gathered once for all these forwards
        started = time.perf_counter()
        if models.engine is not None:  # sampled by the vLLM server; its seed drawn from our random stream
            from rlhf.vllm_client import engine_decode

            generated, sampler_logprobs = engine_decode(
                models.engine.client, enc["input_ids"], enc["attention_mask"], cfg.max_new_tokens,
                tokenizer.eos_token_id, tokenizer.pad_token_id, repeats, cfg.temperature, cfg.top_k,
                cfg.top_p, seed=int(torch.randint(2**31 - 1, ())),
            )  # fmt: skip
        else:
            with autocast() if device.type != "cpu" else nullcontext():
                generated, _ = models.joint.sample(enc["input_ids"], enc["attention_mask"], cfg.max_new_tokens,
                                                   choose, tokenizer.eos_token_id, tokenizer.pad_token_id,
                                                   repeats=repeats)  # fmt: skip
        generate_seconds = time.perf_counter() - started
        width = enc["input_ids"].shape[1]
        responses, response_mask = truncate_after_eos(
            generated, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        if responses.shape[1] == 0:
            raise UserError("the policy generated no tokens; check max_new_tokens")
        query_ids, query_mask = (
            enc[k].repeat_interleave(repeats, 0) for k in ("input_ids", "attention_mask")
        )
        input_ids = torch.cat([query_ids, responses], dim=1)  # (B, Lq + T)
        attention_mask = torch.cat([query_mask, response_mask.long()], dim=1)
        with autocast():
            if not keep_graph:
                logprobs, _, values = models.joint(input_ids, attention_mask, width, cfg.temperature)
            if models.ref_policy is not None:  # (LoRA's reference runs the policy: inside `gathered`)
                ref_logprobs, _ = response_logprobs(
                    models.ref_policy, input_ids, attention_mask, width, cfg.temperature
                )
    first_forward, first_forward_seconds = None, 0.0
    if keep_graph:  # through the prepared module, so that backward averages (DDP) or shards its gradients
        started = time.perf_counter()
        with torch.enable_grad(), autocast():
            first_forward = models.prepared(
                input_ids, attention_mask, width, cfg.temperature, return_logits=True
            )
        first_forward_seconds = time.perf_counter() - started
        logprobs, values = first_forward[0].detach(), first_forward[2]
        values = values.detach() if values is not None else None
    if ref_logprobs is None:  # no KL term: the reference is the policy itself, KL 0
        ref_logprobs = logprobs
    finished = (responses == tokenizer.eos_token_id).any(dim=1)
    return Rollout(
        list(prompts),
        [decode_response(tokenizer, row) for row in responses.tolist()],
        input_ids,
        attention_mask,
        response_mask,
        finished,
        logprobs,
        ref_logprobs,
        values.float() if values is not None else torch.zeros_like(logprobs),
        width,
        generate_seconds,
        int(generated.numel()),
        first_forward,
        first_forward_seconds,
        sampler_logprobs,
    )


def mean_over_processes(stats: dict[str, float], accelerator: Any) -> dict[str, float]:
    """Every process's stats averaged key by key (a key missing on some process averages the others)."""
    if accelerator is None or accelerator.num_processes <= 1:
        return stats
    from accelerate.utils import gather_object

    everyone = gather_object([stats])
    keys = dict.fromkeys(key for each in everyone for key in each)
    return {key: sum(e[key] for e in everyone if key in e) / sum(key in e for e in everyone) for key in keys}


def ppo_step(
    models: PolicyModels,
    optimizer,
    scheduler,
    reward_fn,
    kl_ctl,
    prompts: list[str],
    cfg: PPOConfig,
    generator: torch.Generator,
    gold_fn=None,
    accelerator=None,
    cost_fn=None,
    lagrange=None,
) -> dict[str, float]:
    """One PPO iteration on this process's prompts; returns its stats averaged over processes.

    With `cost_fn` and `lagrange` (Safe RLHF) the score is reward - lambda * cost, and lambda takes a
    dual-ascent step on the batch's mean cost at the end."""
    from rlhf.flops import attention_pairs, layout_tokens
    from rlhf.logprobs import entropy_from_logits
    from rlhf.losses import ppo_policy_loss, ppo_value_loss
    from rlhf.packing import prompt_groups, shared_layout
    from rlhf.parallel import engine
    from rlhf.rl_math import (
        explained_variance,
        gae,
        grpo_advantages,
        kl_k3,
        masked_mean,
        masked_whiten,
        rloo_advantages,
        shaped_rewards,
    )

    # torch's autocast rather than the Accelerator's: its mixed-precision setting is fixed per process,
    # and one process may train several models (tests, sweeps) in different precisions.
    autocast = partial(
        torch.autocast,
        next(models.policy.parameters()).device.type,
        dtype=torch.bfloat16,
        enabled=cfg.mixed_precision == "bf16",
    )
    num_processes = accelerator.num_processes if accelerator is not None else 1
    started = time.monotonic()
    models.policy.eval()
    # 1. sample, and log-probs of policy and frozen reference on the generated tokens
    batch = rollout(
        models, prompts, cfg, autocast, keep_graph=reusable_first_forward(models, cfg, len(prompts))
    )
    generation_seconds = time.monotonic() - started
    mask = batch.response_mask
    check_finite(float((batch.logprobs * mask).sum()), "policy log-probs (from its logits)")
    is_weights, mismatch_stats = None, {}
    if batch.sampler_logprobs is not None:  # another engine sampled: measure and correct the mismatch
        from rlhf.mismatch import mismatch_weights

        mode = "truncate" if cfg.is_mode == "off" else cfg.is_mode
        is_weights, mismatch_stats = mismatch_weights(
            batch.logprobs, batch.sampler_logprobs, mask, cfg.is_level, mode, cfg.is_cap
        )
        is_weights = None if cfg.is_mode == "off" else is_weights
    # 2. score; responses that never stop are penalised (they would otherwise be truncated text)
    raw_scores = reward_fn(batch.prompts, batch.responses).to(batch.logprobs.device).float()  # (B,)
    check_finite(raw_scores.mean().item(), "reward")
    scores = raw_scores - cfg.missing_eos_penalty * (~batch.finished).float()
    constraint_stats = {}
    if cost_fn is not None:  # Safe RLHF: the Lagrangian reward - lambda * cost (Dai et al. 2023)
        costs = cost_fn(batch.prompts, batch.responses).to(scores.device).float()  # (B,)
        check_finite(costs.mean().item(), "cost")
        scores = scores - lagrange.value * costs
        constraint_stats = {
            "objective/cost": float(costs.mean()),
            "objective/lagrange_multiplier": lagrange.value,
        }
    # 3. per-token rewards: the score on the last token, minus kl_coef * KL at every token
    rewards, reward_stats = shaped_rewards(
        scores, batch.logprobs, batch.ref_logprobs, mask, kl_ctl.value, cfg.kl_estimator
    )
    # 4. advantages: GAE over per-token rewards, or one per response relative to its group of K samples
    advantages, returns = gae(rewards, batch.values, mask, cfg.gamma, cfg.lam)
    if cfg.advantage == "rloo":  # the KL-penalised sequence reward against the mean of the other K - 1
        sequence_reward = rewards.sum(dim=1)  # (B,) = score - kl_coef * summed KL
        per_response, group_stats = rloo_advantages(sequence_reward, cfg.samples_per_prompt)
        advantages = per_response[:, None] * mask  # (B, T)
        reward_stats.update(group_stats)
    elif cfg.advantage == "grpo":  # scores normalised within the group; KL enters as a loss term below
        per_response, group_stats = grpo_advantages(
            scores, cfg.samples_per_prompt, scale_rewards=cfg.scale_rewards
        )
        advantages = per_response[:, None] * mask
        reward_stats.update(group_stats)
    if cfg.whiten_advantages and cfg.advantage != "grpo":
        advantages = masked_whiten(advantages, mask)
    check_finite(advantages.abs().max().item(), "advantages")
    # 5. several epochs of clipped updates over shuffled minibatches
    # (responses cut at max_new_tokens can be left out of the policy loss: DAPO's overlong filtering)
    loss_mask = mask * batch.finished[:, None] if cfg.mask_truncated_completions else mask  # (B, T)
    models.policy.train()
    stats_sum: dict[str, float] = {}
    n_updates = 0
    entropies: list[float] = []
    update_started = time.perf_counter()
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(prompts), generator=generator)
        for start in range(0, len(prompts), cfg.mini_batch_size):
            idx = order[start : start + cfg.mini_batch_size]
            m, lm = mask[idx], loss_mask[idx]
            with autocast():
                if batch.first_forward is not None:  # the rollout's forward, at these very parameters
                    logprobs, logits, values = (
                        t[idx] if t is not None else None for t in batch.first_forward
                    )
                    batch.first_forward = None
                else:
                    logprobs, logits, values = models.prepared(
                        batch.input_ids[idx],
                        batch.attention_mask[idx],
                        batch.query_width,
                        cfg.temperature,
                        return_logits=cfg.ent_coef > 0 or n_updates == 0,
                    )
                pg_loss, pg_stats = ppo_policy_loss(
                    logprobs, batch.logprobs[idx], advantages[idx], lm, cfg.cliprange,
                    cfg.cliprange_high or None, cfg.loss_agg_mode, cfg.max_new_tokens,
                    cfg.importance_sampling_level, is_weights[idx] if is_weights is not None else None,
                )  # fmt: skip
                if cfg.ent_coef > 0:
                    entropy = masked_mean(entropy_from_logits(logits), lm)
                    loss = pg_loss - cfg.ent_coef * entropy
                    entropies.append(entropy.item())
                else:
                    loss = pg_loss
                    if n_updates == 0:  # a diagnostic only: the sampling policy's, no (B, T, V) backward
                        with torch.no_grad():
                            entropies.append(masked_mean(entropy_from_logits(logits), m).item())
                if values is not None:
                    vf_loss, vf_stats = ppo_value_loss(
                        values.float(), batch.values[idx], returns[idx], m, cfg.cliprange_value
                    )
                    loss = loss + cfg.vf_coef * vf_loss
                    pg_stats = {**pg_stats, **vf_stats}
                if cfg.advantage == "grpo" and models.ref_policy is not None:
                    # GRPO's KL term: k3 to the reference, per token (Shao et al. 2024)
                    kl_term = masked_mean(kl_k3(logprobs, batch.ref_logprobs[idx]), lm)
                    loss = loss + kl_ctl.value * kl_term
                    pg_stats = {**pg_stats, "loss/kl_term": kl_term.item()}
            check_finite(loss.item(), "PPO loss")
            optimizer.zero_grad(set_to_none=True)
            if engine(models.joint) is not None:  # DeepSpeed's engine: backward, clip (one norm), step
                accelerator.backward(loss)
            else:
                loss.backward()  # DDP averages the gradients over processes here, FSDP2 reduce-scatters them
                for group in models.clip_groups():
                    torch.nn.utils.clip_grad_norm_(group, cfg.max_grad_norm)
            optimizer.step()  # (under DeepSpeed, Accelerate's wrapper does nothing: the engine stepped)
            for key, value in pg_stats.items():
                stats_sum[key] = stats_sum.get(key, 0.0) + float(value)
            n_updates += 1
    # the update epochs' wall time, the kept first forward included (it is the first update's forward)
    update_seconds = time.perf_counter() - update_started + batch.first_forward_seconds
    scheduler.step()
    stats = {key: value / n_updates for key, value in stats_sum.items()}
    stats.update(mismatch_stats)
    if models.engine is not None:  # the server samples the next rollout from the updated policy
        stats["time/weight_sync_s"] = models.engine.sync(models.policy)
    stats["policy/entropy"] = sum(entropies) / len(entropies)
    # the update's useful work: real tokens, each prompt once for its K samples (as `rlhf.packing` runs it)
    groups = prompt_groups(batch.input_ids, batch.attention_mask, batch.query_width)
    layout = shared_layout(batch.attention_mask, batch.query_width, groups)
    stats.update(reward_stats)
    if models.ref_policy is None:  # not measured: there is no reference
        del stats["objective/kl"]
    stats.update(
        {
            "objective/scores_raw": float(raw_scores.mean()),  # before the EOS penalty and any cost
            "response/length": float(mask.sum(1).float().mean()),
            "response/eos_rate": float(batch.finished.float().mean()),
            "time/generation_share": generation_seconds / max(time.monotonic() - started, 1e-9),
            # responses of all processes per second (each process times its own step; averaged below)
            "time/episodes_per_s": len(prompts) * num_processes / max(time.monotonic() - started, 1e-9),
            "time/generate_tokens_per_s": batch.generated_positions / max(batch.generate_seconds, 1e-9),
            "time/update_seconds": update_seconds,
            # the work of the update epochs' forwards, for `rlhf.flops` (each epoch passes over every row)
            "perf/update_tokens": cfg.ppo_epochs * layout_tokens(layout),
            "perf/update_scored_tokens": cfg.ppo_epochs * int(mask.sum()),
            "perf/update_attention_pairs": cfg.ppo_epochs * attention_pairs(layout),
        }
    )
    if models.critic is not None:
        stats["value/explained_variance"] = explained_variance(batch.values, returns, mask)
    if gold_fn is not None:
        stats.update(gold_fn(batch.prompts, batch.responses))
    stats.update(constraint_stats)
    stats = mean_over_processes(stats, accelerator)
    if lagrange is not None:  # dual ascent on the cost of all processes' responses
        lagrange.update(stats["objective/cost"])
    # 6. the KL controller steers the measured KL (over all processes) toward its target
    kl_ctl.update(stats.get("objective/kl", 0.0), len(prompts) * num_processes)
    stats["objective/kl_coef"] = kl_ctl.value
    return stats


def world_gold_stats(prompts: list[str], responses: list[str]) -> dict[str, float]:
    """Mean gold helpfulness and harm of a batch, when the prompts are world requests (toy world only)."""
    from rlhf.world import corpus, gold

    if sum(corpus.parse_request(p) is not None for p in prompts) < 0.8 * len(prompts):
        return {}
    return {
        "gold/helpfulness": sum(gold.helpfulness(p, r) for p, r in zip(prompts, responses, strict=True))
        / len(prompts),
        "gold/harm": sum(gold.harm(p, r) for p, r in zip(prompts, responses, strict=True)) / len(prompts),
    }


CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "ppo_state.pt"


@dataclass
class PPOResult:
    out: Path
    history: list[dict[str, float]]
    lagrange: float | None = None  # Safe RLHF: the multiplier after the last dual-ascent step
    main_process: bool = True  # False in the other processes of a data-parallel run: only one reports


def settle_packing(models: PolicyModels, device: torch.device) -> None:
    """Decide, on the same rows in every process, whether the policy and the reference run packed.

    Under FSDP2 every block's forward is a collective, so all processes must run the same forwards; the
    first packed forward of a model is checked against a padded one (`rlhf.logprobs`), an extra forward
    that each process would otherwise run at the first batch of its own rollouts with enough padding."""
    from rlhf.logprobs import response_logprobs
    from rlhf.parallel import gathered

    input_ids = torch.arange(16, device=device).view(2, 8) % models.policy.config.vocab_size  # (2, 8)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :4] = 0  # a quarter padding: enough to pack
    with torch.no_grad(), gathered(models.joint):
        models.joint(input_ids, attention_mask, 6, 1.0)  # the first call through the FSDP2 root
        if models.ref_policy is not None:
            response_logprobs(models.ref_policy, input_ids, attention_mask, 6)


def entries(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a `PolicyAndValue` state dict under `prefix` ('policy.', 'critic.'), without it."""
    return {name[len(prefix) :]: value for name, value in state.items() if name.startswith(prefix)}


def whole_policy(
    path: str | Path, cfg: PPOConfig, dtype: torch.dtype, state: dict[str, torch.Tensor]
) -> nn.Module:
    """The policy as `train` builds it (LoRA adapters included), on CPU, with the weights of `state`:
    how the main process gets a whole model to save from a sharded run's gathered state dict."""
    from rlhf.models import add_lora, disable_dropout, load_causal_lm

    policy, _ = load_causal_lm(path, device="cpu", dtype=dtype)
    disable_dropout(policy)  # records the config's dropout, which the saved config.json keeps
    if cfg.lora_r > 0:
        add_lora(policy, cfg.lora_r, cfg.lora_alpha, 0.0)
    policy.load_state_dict(state)
    return policy


def vllm_engine(cfg: PPOConfig, out: Path, world_size: int):
    """The vLLM server of `cfg.vllm_url`, checked before any training (`train` syncs it to the policy
    before the first rollout: a resumed run's weights, or another model than the one it was started
    with, are what it samples from then on; a server that cannot follow the policy is refused then)."""
    from rlhf.vllm_client import connect_engine

    if world_size > 1:
        raise UserError("ppo.rollout_engine=vllm runs in one process for now; launch without accelerate")
    weights_dir = Path(cfg.vllm_weights_dir) if cfg.vllm_weights_dir else out / "vllm_weights"
    return connect_engine(cfg.vllm_url, cfg.vllm_timeout, weights_dir, lora=cfg.lora_r > 0)


def train(
    cfg: PPOConfig,
    run: RunConfig,
    out: str | Path,
    world: Any = None,
    show_progress: bool = True,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> PPOResult:
    """Fine-tune `cfg.policy` with PPO against `cfg.reward`; save the policy (and value head) to `out`.

    Under `accelerate launch --num_processes N` every process samples `cfg.batch_size` responses from
    its own share of the prompts and gradients are averaged, so one iteration covers N x batch_size.
    The prompts are cycled as TRL's dataloader is, reshuffled on every pass, so any number of prompts
    works; `log` (main process only) says when an iteration needs more prompts than there are."""
    from accelerate.utils import gather_object

    from rlhf import parallel
    from rlhf.data import load_prompts
    from rlhf.metrics import MetricsLogger, memory_stats, progress
    from rlhf.models import (
        AdaptersDisabled,
        ValueModel,
        absolute_model_path,
        add_lora,
        disable_dropout,
        freeze_lower_layers,
        load_causal_lm,
        merged_copy,
        save_atomic,
        save_pretrained_atomic,
        share_frozen_modules,
    )
    from rlhf.rewards import check_reward_spec, load_reward_source
    from rlhf.rl_math import AdaptiveKLController, FixedKLController, LagrangeMultiplier
    from rlhf.world import corpus
    from rlhf.world.report import resolve_world_model

    validate_all(cfg)  # what loading the config checks for the CLI, for callers of the API too
    validate_all(run)
    for spec in (
        cfg.reward,
        cfg.cost,
    ):  # a reward function that cannot be called fails before any model loads
        check_reward_spec(spec)
    # the saved config names the models by absolute path: `rlhf eval` finds the initial model from anywhere
    cfg = replace(cfg, policy=absolute_model_path(cfg.policy), reference=absolute_model_path(cfg.reference))
    if cfg.cost and not cfg.cost_weights and Path(cfg.cost).expanduser().is_dir():
        # no weights means the first head, usually `helpful`: PPO would penalise helpfulness, silently
        raise ConfigError(
            "ppo.cost is a reward-model directory but ppo.cost_weights is empty, so the cost would be its "
            "first head; name the harm head: --set 'ppo.cost_weights={harmless: -1.0}'"
        )
    out = Path(out).expanduser()
    # Accelerate's mixed precision would autocast the update's forward only; PPO's autocast covers the
    # rollout's forwards too, or the ratio would start off 1 (ppo.mixed_precision)
    accelerator = parallel.make_accelerator(
        run.device == "cpu" or (run.device == "auto" and not torch.cuda.is_available()), mixed_precision="no"
    )
    rank, world_size = accelerator.process_index, accelerator.num_processes
    sharded = parallel.shards(accelerator)  # FSDP2: each process holds a share of every model it trains
    zero3 = parallel.deepspeed_stage(accelerator) == 3  # ZeRO-3: a share of the policy and critic only
    is_main = accelerator.is_main_process
    device = str(accelerator.device)
    torch.manual_seed(run.seed)  # the same initial weights (LoRA, heads) in every process
    rng = random.Random(run.seed)  # the same prompt order everywhere; each process takes its own share

    # 1. models: the policy, its critic (a head on its trunk or a separate copy), a frozen reference
    policy_path = resolve_world_model(cfg.policy, world, show_progress and is_main)
    policy, tokenizer = load_causal_lm(policy_path, device=device, dtype=run.dtype)
    disable_dropout(policy)
    critic = None
    if cfg.advantage == "gae":
        critic = ValueModel(policy) if cfg.critic == "separate" else nn.Linear(policy.config.hidden_size, 1)
        if isinstance(critic, nn.Linear):
            nn.init.zeros_(critic.weight)
            nn.init.zeros_(critic.bias)
        # a policy saved by an earlier PPO run brings its critic: a warm value estimate (iterative RLHF)
        saved_critic = Path(policy_path) / ("critic.pt" if cfg.critic == "separate" else "value_head.pt")
        if saved_critic.is_file():
            critic.load_state_dict(torch.load(saved_critic, map_location="cpu", weights_only=True))
        critic.to(device)
    # kl_coef fixed at 0 (GRPO without its KL term, TRL's beta = 0): no reference to hold or run
    no_kl = cfg.kl_coef == 0 and not cfg.adaptive_kl
    ref_policy, copied = None, False
    if cfg.reference and not no_kl:
        ref_policy, _ = load_causal_lm(
            resolve_world_model(cfg.reference, world, show_progress and is_main),
            device=device,
            dtype=run.dtype,
        )
        ref_policy.eval().requires_grad_(False)
    if cfg.lora_r > 0:
        add_lora(policy, cfg.lora_r, cfg.lora_alpha, 0.0)
        if ref_policy is None and not no_kl:  # the same weights with the adapters off: no second copy
            ref_policy = AdaptersDisabled(policy)
    else:
        if ref_policy is None and not no_kl:
            ref_policy, copied = copy.deepcopy(policy).eval().requires_grad_(False), True
        if cfg.trainable_layers >= 0:
            freeze_lower_layers(policy, cfg.trainable_layers)
            if copied and not (sharded or zero3):  # sharded, each process holds a share of the copy anyway
                share_frozen_modules(policy, ref_policy)
    if sharded and isinstance(ref_policy, nn.Module):  # a frozen model: gathered block by block, then freed
        parallel.shard(ref_policy, reshard_root=True)
    models = PolicyModels(policy, ref_policy, critic, tokenizer)
    if cfg.rollout_engine == "vllm":
        models.engine = vllm_engine(cfg, out, world_size)
    reward_fn = load_reward_source(cfg.reward, cfg.reward_weights, cfg.normalize_rewards, device=device,
                                   policy_tokenizer=tokenizer, setting="ppo.reward_weights")  # fmt: skip
    cost_fn = (
        load_reward_source(
            cfg.cost,
            cfg.cost_weights,
            cfg.normalize_rewards,
            device=device,
            policy_tokenizer=tokenizer,
            setting="ppo.cost_weights",
        )  # fmt: skip
        if cfg.cost
        else None
    )
    lagrange = (
        LagrangeMultiplier(cfg.lagrange_init, cfg.cost_threshold, cfg.lagrange_lr) if cfg.cost else None
    )
    # reward and cost models (not functions): frozen, sharded as the reference is under FSDP2; every
    # process scores the same number of responses, so their forwards stay in step
    scorers = {name: getattr(fn, "model", None) for name, fn in (("reward", reward_fn), ("cost", cost_fn))}
    scorers = {name: model for name, model in scorers.items() if isinstance(model, nn.Module)}
    for model in scorers.values():
        if sharded:
            parallel.shard(model, reshard_root=True)

    # 2. prompts
    prompts = (
        load_prompts(cfg.prompts, tokenizer=tokenizer)
        if cfg.prompts
        else corpus.sample_prompts(cfg.n_world_prompts, run.seed)
    )
    n_prompts = cfg.batch_size // cfg.samples_per_prompt  # per process and iteration
    if is_main and len(prompts) < n_prompts * world_size:
        log(
            f"{cfg.prompts or 'world prompts'}: {len(prompts)} prompts, {n_prompts * world_size} per iteration "
            f"(ppo.batch_size {cfg.batch_size} / ppo.samples_per_prompt {cfg.samples_per_prompt}"
            + (f" x {world_size} processes" if world_size > 1 else "")
            + "): the prompts are cycled, reshuffled on every pass, so an iteration repeats some of them"
        )
    if is_main and cfg.mini_batch_size > cfg.batch_size:
        log(
            f"ppo.mini_batch_size ({cfg.mini_batch_size}) is more than ppo.batch_size ({cfg.batch_size}): "
            f"one gradient step on all {cfg.batch_size} responses per epoch"
        )

    # 3. policy and critic prepared as the launch says (DDP, FSDP2); optimiser, schedule, KL controller
    models.prepared, optimizer = parallel.prepare(
        accelerator,
        models.joint,
        # fused: one kernel over all parameters instead of ~8 passes over each (a CPU step of the 26M
        # model of bench/make_llama.py: 7 ms against 32 ms, 1% of an update). Sharded parameters
        # (DTensors) and DeepSpeed's flat partitions keep the default implementation.
        lambda: torch.optim.Adam(
            models.trainable_parameters(),
            lr=cfg.lr,
            eps=1e-5,
            fused=not (sharded or parallel.is_deepspeed(accelerator)),
        ),  # fmt: skip
        units=[critic.head if isinstance(critic, ValueModel) else critic] if critic is not None else [],
        forward_methods=["sample"],
        micro_batch=cfg.mini_batch_size,  # (DeepSpeed: one backward per step, clipped by one norm)
        max_grad_norm=cfg.max_grad_norm,
    )
    sizes = parallel.parameter_counts(models.joint)
    for name, model in scorers.items():  # parallel/reward_local_parameters, parallel/reward_parameters
        sizes.update({k.replace("/", f"/{name}_"): v for k, v in parallel.parameter_counts(model).items()})
    if sharded or zero3:
        settle_packing(models, accelerator.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        parallel.torch_optimizer(optimizer), lambda i: max(0.0, 1 - i / cfg.steps)
    )
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        if cfg.adaptive_kl
        else FixedKLController(cfg.kl_coef)
    )
    torch.manual_seed(run.seed + rank)  # from here on each process samples its own responses
    generator = torch.Generator().manual_seed(run.seed + rank)

    # 4. the loop (from the checkpoint with --resume: same prompts, same random streams)
    history: list[dict[str, float]] = []
    order: list[str] = []
    first_step = 0
    checkpoint = out / CHECKPOINT_DIR / STATE_FILE
    if resume:
        if not checkpoint.is_file():
            raise UserError(f"--resume: no checkpoint at {checkpoint}; start without --resume")
        blob = torch.load(checkpoint, weights_only=False, mmap=True)  # every process reads it
        if "model" not in blob:
            raise UserError(f"--resume: {checkpoint} was written by an older rlhf; start without --resume")
        if len(blob["process_rng"]) != world_size:
            raise UserError(
                f"--resume: {checkpoint} was written by {len(blob['process_rng'])} processes, "
                f"this run has {world_size}; resume with the same number of processes"
            )
        if parallel.is_deepspeed_state(blob["optimizer"]) != (parallel.engine(models.joint) is not None):
            raise UserError(f"--resume: {checkpoint} was written under a DeepSpeed config and this run is "
                            "not, or the other way round; resume under the config it ran with")  # fmt: skip
        if parallel.engine(models.joint) is not None:  # DeepSpeed's own, beside it: the model and optimiser
            parallel.load_deepspeed_state(models.joint, checkpoint.parent, blob["optimizer"])
        else:
            parallel.load_full_state(models.joint, optimizer, blob["model"], blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        kl_ctl.load_state_dict(blob["kl_controller"])
        if lagrange is not None and blob.get("lagrange") is not None:
            lagrange.load_state_dict(blob["lagrange"])
        torch_rng, generator_state = blob["process_rng"][rank]
        torch.set_rng_state(torch_rng)
        generator.set_state(generator_state)
        rng.setstate(blob["python_rng"])
        order, history, first_step = blob["order"], blob["history"], blob["step"]
    if models.engine is not None:
        models.engine.sync(policy)
    logger = MetricsLogger(out / "logs", tensorboard=run.tensorboard) if is_main else None
    last_step = min(cfg.steps, cfg.stop_after_steps) if cfg.stop_after_steps > 0 else cfg.steps
    name = {"gae": "PPO", "rloo": "RLOO", "grpo": "GRPO"}[cfg.advantage]  # the estimator, on the bar
    bar = progress(range(first_step, last_step), desc=name, enabled=show_progress and is_main, unit="iter")
    for step in bar:
        while len(order) < n_prompts * world_size:  # the next pass, reshuffled, after what is left
            fresh = list(prompts)
            rng.shuffle(fresh)
            order = order + fresh
        step_prompts, order = order[: n_prompts * world_size], order[n_prompts * world_size :]
        mine = step_prompts[rank * n_prompts : (rank + 1) * n_prompts]
        mine = [p for p in mine for _ in range(cfg.samples_per_prompt)]  # K consecutive samples
        stats = ppo_step(
            models,
            optimizer,
            scheduler,
            reward_fn,
            kl_ctl,
            mine,
            cfg,
            generator,
            world_gold_stats,
            accelerator,
            cost_fn,
            lagrange,
        )
        stats.update(sizes)  # this process's share of the parameters under FSDP2
        stats.update(memory_stats(accelerator.device))
        history.append(stats)
        if logger is not None and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            logger.log(stats, step)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                score=f"{stats['objective/scores']:.3f}", kl=f"{stats.get('objective/kl', float('nan')):.2f}"
            )
        done = step + 1
        if (cfg.save_every and done % cfg.save_every == 0) or done == last_step:
            process_rng = gather_object([(torch.get_rng_state(), generator.get_state())])
            # full state dicts on the main process (under FSDP2 every process takes part in gathering them)
            model_state = parallel.full_state_dict(models.joint)
            staging = parallel.deepspeed_staging(out / CHECKPOINT_DIR)  # DeepSpeed: each process's partition
            if parallel.engine(models.joint) is not None:
                optimizer_state = parallel.save_deepspeed_state(models.joint, staging)
            else:
                optimizer_state = parallel.full_optimizer_state_dict(models.joint, optimizer)
            if is_main:
                state = {
                    "model": model_state,  # policy.* and critic.*: PolicyAndValue's names
                    "optimizer": optimizer_state,
                    "scheduler": scheduler.state_dict(),
                    "kl_controller": kl_ctl.state_dict(),
                    "lagrange": lagrange.state_dict() if lagrange is not None else None,
                    "process_rng": process_rng,
                    "python_rng": rng.getstate(),
                    "order": order,
                    "history": history,
                    "step": done,
                }

                def write(tmp: Path, state=state, staging=staging) -> None:
                    if parallel.engine(models.joint) is not None:
                        os.replace(staging, tmp / parallel.DEEPSPEED_DIR)
                    torch.save(state, tmp / STATE_FILE)

                save_atomic(out / CHECKPOINT_DIR, write)
            accelerator.wait_for_everyone()
    if logger is not None:
        logger.close()
    if last_step < cfg.steps:  # time-boxed: the checkpoint holds the run, --resume continues it
        return PPOResult(out, history, lagrange.value if lagrange is not None else None, is_main)

    # 5. save the policy (plain transformers) and the critic beside it, atomically
    model_state = parallel.full_state_dict(models.joint)  # FSDP2, ZeRO-3: gathered onto the main process

    def write_critic(path: Path) -> None:
        torch.save(entries(model_state, "critic."), path)

    def write_config(path: Path) -> None:
        import yaml

        path.write_text(yaml.safe_dump({"run": asdict(run), "ppo": asdict(cfg)}, sort_keys=False))

    if is_main:
        if sharded or zero3:  # the main process holds a share only: a whole copy, from the gathered state
            policy = whole_policy(
                policy_path, cfg, next(policy.parameters()).dtype, entries(model_state, "policy.")
            )
        policy.eval()
        extra = {"rlhf_config.yaml": write_config}
        if critic is not None:
            extra["value_head.pt" if cfg.critic == "shared" else "critic.pt"] = write_critic
        save_pretrained_atomic(
            out, merged_copy(policy), tokenizer, extra_files=extra, carry=("logs", CHECKPOINT_DIR)
        )
    accelerator.wait_for_everyone()
    return PPOResult(out, history, lagrange.value if lagrange is not None else None, is_main)
