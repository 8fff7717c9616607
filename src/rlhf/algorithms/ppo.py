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
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf.config import ConfigError, RunConfig, help_field
from rlhf.errors import UserError, check_finite


@dataclass
class PPOConfig:
    """PPO fine-tuning of a causal LM policy."""

    policy: str = help_field(
        "world", "Initial policy: causal LM directory or cached id; 'world' = the world model."
    )
    reward: str = help_field(
        "", "Reward: a reward-model directory, or module:function taking (prompts, responses)."
    )
    reward_weights: dict[str, float] = help_field(
        {}, "Weights of the reward model's heads, e.g. {helpful: 1, harmless: 1}; empty = first head."
    )
    normalize_rewards: bool = help_field(
        False, "Use the reward model's stored normalisation (rlhf reward normalize)."
    )
    prompts: str = help_field(
        "", "Prompt file (JSONL/Parquet/datasets, field 'prompt'); empty = the world's prompts."
    )
    n_world_prompts: int = help_field(1024, "How many world prompts to draw when no prompt file is given.")
    steps: int = help_field(40, "PPO iterations (each: one rollout batch, then ppo_epochs of updates).")
    batch_size: int = help_field(32, "Prompts per rollout.")
    mini_batch_size: int = help_field(16, "Responses per gradient step.")
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
    cliprange: float = help_field(0.2, "PPO ratio clip.")
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
    log_every: int = help_field(1, "Log metrics every N iterations.")
    trainable_layers: int = help_field(
        -1, "Train only the top N transformer blocks of the policy (-1 = all)."
    )
    lora_r: int = help_field(
        0,
        "Train LoRA adapters of this rank instead of the policy (0 = off); the reference is then the same weights with adapters off.",
    )
    lora_alpha: float = help_field(16.0, "LoRA alpha.")
    save_every: int = help_field(10, "Write a resumable checkpoint every N iterations (0 = only at the end).")
    stop_after_steps: int = help_field(
        0, "Stop after this many iterations as if interrupted, keeping the checkpoint (0 = off)."
    )

    def validate(self) -> None:
        if self.advantage not in ("gae", "rloo", "grpo"):
            raise ConfigError(f"ppo.advantage must be gae, rloo or grpo; got {self.advantage!r}")
        if self.advantage != "gae" and self.samples_per_prompt < 2:
            raise ConfigError(
                f"ppo.advantage={self.advantage} needs ppo.samples_per_prompt >= 2 (a group to compare within)"
            )
        if self.batch_size % max(1, self.samples_per_prompt):
            raise ConfigError(
                f"ppo.batch_size ({self.batch_size}) must be a multiple of ppo.samples_per_prompt ({self.samples_per_prompt})"
            )
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"ppo.kl_estimator must be k1 or k3; got {self.kl_estimator!r}")
        if self.batch_size % self.mini_batch_size:
            raise ConfigError(
                f"ppo.batch_size ({self.batch_size}) must be a multiple of ppo.mini_batch_size ({self.mini_batch_size})"
            )
        for key in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ppo.{key} must be at least 1")
        if self.temperature <= 0:
            raise ConfigError("ppo.temperature must be > 0 (log-probs use the sampling temperature)")


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


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


@torch.no_grad()
def rollout(policy, value_head, ref_policy, tokenizer, prompts: list[str], cfg: PPOConfig) -> Rollout:
    """Sample with the KV cache, then one forward each for policy (with values) and reference log-probs."""
    from rlhf.logprobs import response_logprobs, truncate_after_eos

    device = next(policy.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    started = time.perf_counter()
    out = policy.generate(
        **enc,
        max_new_tokens=cfg.max_new_tokens,
        do_sample=True,
        temperature=cfg.temperature,
        top_k=cfg.top_k or None,
        top_p=cfg.top_p if cfg.top_p < 1 else None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generate_seconds = time.perf_counter() - started
    width = enc["input_ids"].shape[1]
    responses, response_mask = truncate_after_eos(
        out[:, width:], tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    if responses.shape[1] == 0:
        raise UserError("the policy generated no tokens; check max_new_tokens")
    input_ids = torch.cat([enc["input_ids"], responses], dim=1)  # (B, Lq + T)
    attention_mask = torch.cat([enc["attention_mask"], response_mask.long()], dim=1)
    if value_head is not None:
        logprobs, _, values = response_logprobs(
            policy, input_ids, attention_mask, width, cfg.temperature, value_head=value_head
        )
    else:  # critic-free estimators (rloo, grpo) need no values
        logprobs, _ = response_logprobs(policy, input_ids, attention_mask, width, cfg.temperature)
        values = torch.zeros_like(logprobs)
    ref_logprobs, _ = response_logprobs(ref_policy, input_ids, attention_mask, width, cfg.temperature)
    finished = (responses == tokenizer.eos_token_id).any(dim=1)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return Rollout(
        list(prompts),
        [t.strip() for t in texts],
        input_ids,
        attention_mask,
        response_mask,
        finished,
        logprobs,
        ref_logprobs,
        values,
        width,
        generate_seconds,
        int(out.shape[0] * (out.shape[1] - width)),
    )


def ppo_step(
    policy,
    value_head,
    ref_policy,
    tokenizer,
    optimizer,
    scheduler,
    reward_fn,
    kl_ctl,
    prompts: list[str],
    cfg: PPOConfig,
    generator: torch.Generator,
    gold_fn=None,
) -> dict[str, float]:
    """One PPO iteration; returns its stats (one flat dict with slash keys)."""
    from rlhf.logprobs import entropy_from_logits, response_logprobs
    from rlhf.losses import ppo_policy_loss, ppo_value_loss
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

    started = time.monotonic()
    policy.eval()
    # 1. sample, and log-probs of policy and frozen reference on the generated tokens
    batch = rollout(policy, value_head, ref_policy, tokenizer, prompts, cfg)
    generation_seconds = time.monotonic() - started
    mask = batch.response_mask
    check_finite(float((batch.logprobs * mask).sum()), "policy log-probs (from its logits)")
    # 2. score; responses that never stop are penalised (they would otherwise be truncated text)
    scores = reward_fn(batch.prompts, batch.responses).to(batch.logprobs.device).float()  # (B,)
    check_finite(scores.mean().item(), "reward")
    scores = scores - cfg.missing_eos_penalty * (~batch.finished).float()
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
        per_response, group_stats = grpo_advantages(scores, cfg.samples_per_prompt)
        advantages = per_response[:, None] * mask
        reward_stats.update(group_stats)
    if cfg.whiten_advantages and cfg.advantage != "grpo":
        advantages = masked_whiten(advantages, mask)
    check_finite(advantages.abs().max().item(), "advantages")
    # 5. several epochs of clipped updates over shuffled minibatches
    policy.train()
    stats_sum: dict[str, float] = {}
    n_updates = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(prompts), generator=generator)
        for start in range(0, len(prompts), cfg.mini_batch_size):
            idx = order[start : start + cfg.mini_batch_size]
            use_values = cfg.advantage == "gae"
            outputs = response_logprobs(
                policy,
                batch.input_ids[idx],
                batch.attention_mask[idx],
                batch.query_width,
                cfg.temperature,
                return_logits=True,
                value_head=value_head if use_values else None,
            )
            logprobs, logits = outputs[0], outputs[1]
            m = mask[idx]
            pg_loss, pg_stats = ppo_policy_loss(
                logprobs, batch.logprobs[idx], advantages[idx], m, cfg.cliprange
            )
            if cfg.ent_coef > 0:
                entropy = masked_mean(entropy_from_logits(logits), m)
                loss = pg_loss - cfg.ent_coef * entropy
            else:  # a diagnostic only: no backward through a (B, T, V) softmax
                with torch.no_grad():
                    entropy = masked_mean(entropy_from_logits(logits), m)
                loss = pg_loss
            if use_values:
                vf_loss, vf_stats = ppo_value_loss(
                    outputs[2], batch.values[idx], returns[idx], m, cfg.cliprange_value
                )
                loss = loss + cfg.vf_coef * vf_loss
                pg_stats = {**pg_stats, **vf_stats}
            if cfg.advantage == "grpo":  # GRPO's KL term: k3 to the reference, per token (Shao et al. 2024)
                kl_term = masked_mean(kl_k3(logprobs, batch.ref_logprobs[idx]), m)
                loss = loss + kl_ctl.value * kl_term
                pg_stats = {**pg_stats, "loss/kl_term": kl_term.item()}
            check_finite(loss.item(), "PPO loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], cfg.max_grad_norm
            )
            optimizer.step()
            for key, value in {**pg_stats, "policy/entropy": entropy.item()}.items():
                stats_sum[key] = stats_sum.get(key, 0.0) + float(value)
            n_updates += 1
    scheduler.step()
    # 6. the KL controller steers the measured KL toward its target
    kl_ctl.update(reward_stats["objective/kl"], len(prompts))
    stats = {key: value / n_updates for key, value in stats_sum.items()}
    stats.update(reward_stats)
    stats.update(
        {
            "objective/kl_coef": kl_ctl.value,
            "objective/scores_raw": float(
                scores.mean() + cfg.missing_eos_penalty * (~batch.finished).float().mean()
            ),
            "response/length": float(mask.sum(1).float().mean()),
            "response/eos_rate": float(batch.finished.float().mean()),
            "time/generation_share": generation_seconds / max(time.monotonic() - started, 1e-9),
            "time/generate_tokens_per_s": batch.generated_positions / max(batch.generate_seconds, 1e-9),
        }
    )
    if cfg.advantage == "gae":
        stats["value/explained_variance"] = explained_variance(batch.values, returns, mask)
    if gold_fn is not None:
        stats.update(gold_fn(batch.prompts, batch.responses))
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


def train(
    cfg: PPOConfig,
    run: RunConfig,
    out: str | Path,
    world: Any = None,
    show_progress: bool = True,
    resume: bool = False,
) -> PPOResult:
    """Fine-tune `cfg.policy` with PPO against `cfg.reward`; save the policy (and value head) to `out`."""
    from rlhf.data import load_prompts
    from rlhf.metrics import MetricsLogger, progress
    from rlhf.models import (
        AdaptersDisabled,
        add_lora,
        freeze_lower_layers,
        load_causal_lm,
        merged_copy,
        save_atomic,
        save_pretrained_atomic,
    )
    from rlhf.rewards import load_reward_source
    from rlhf.rl_math import AdaptiveKLController, FixedKLController
    from rlhf.world import corpus
    from rlhf.world.report import resolve_world_model

    out = Path(out).expanduser()
    torch.manual_seed(run.seed)
    rng = random.Random(run.seed)
    generator = torch.Generator().manual_seed(run.seed)

    # 1. models: the policy with a value head on its trunk, and a frozen copy as reference
    policy, tokenizer = load_causal_lm(
        resolve_world_model(cfg.policy, world, show_progress), device=run.device, dtype=run.dtype
    )
    disable_dropout(policy)
    if cfg.lora_r > 0:  # the reference is the same weights with the adapters off: no second copy
        add_lora(policy, cfg.lora_r, cfg.lora_alpha, 0.0)
        ref_policy = AdaptersDisabled(policy)
    else:
        ref_policy = copy.deepcopy(policy).eval().requires_grad_(False)
        if cfg.trainable_layers >= 0:
            freeze_lower_layers(policy, cfg.trainable_layers)
    hidden = policy.config.hidden_size
    value_head = nn.Linear(hidden, 1).to(next(policy.parameters()).device)
    nn.init.zeros_(value_head.weight)
    nn.init.zeros_(value_head.bias)
    reward_fn = load_reward_source(cfg.reward, cfg.reward_weights, cfg.normalize_rewards, device=run.device)

    # 2. prompts
    prompts = (
        load_prompts(cfg.prompts, tokenizer=tokenizer)
        if cfg.prompts
        else corpus.sample_prompts(cfg.n_world_prompts, run.seed)
    )
    if len(prompts) < cfg.batch_size // cfg.samples_per_prompt:
        raise UserError(
            f"{cfg.prompts or 'world prompts'}: {len(prompts)} prompts, fewer than ppo.batch_size={cfg.batch_size}"
        )

    # 3. optimiser, schedule, KL controller
    params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1 - i / cfg.steps))
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        if cfg.adaptive_kl
        else FixedKLController(cfg.kl_coef)
    )

    # 4. the loop (from the checkpoint with --resume: same prompts, same random streams)
    history: list[dict[str, float]] = []
    order: list[str] = []
    first_step = 0
    checkpoint = out / CHECKPOINT_DIR / STATE_FILE
    if resume:
        if not checkpoint.is_file():
            raise UserError(f"--resume: no checkpoint at {checkpoint}; start without --resume")
        blob = torch.load(checkpoint, weights_only=False)
        policy.load_state_dict(blob["policy"])
        value_head.load_state_dict(blob["value_head"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        kl_ctl.load_state_dict(blob["kl_controller"])
        torch.set_rng_state(blob["torch_rng"])
        generator.set_state(blob["generator"])
        rng.setstate(blob["python_rng"])
        order, history, first_step = blob["order"], blob["history"], blob["step"]
    logger = MetricsLogger(out / "logs", tensorboard=run.tensorboard)
    last_step = min(cfg.steps, cfg.stop_after_steps) if cfg.stop_after_steps > 0 else cfg.steps
    bar = progress(range(first_step, last_step), desc="PPO", enabled=show_progress, unit="iter")
    for step in bar:
        if len(order) < cfg.batch_size // cfg.samples_per_prompt:
            order = list(prompts)
            rng.shuffle(order)
        n_prompts = cfg.batch_size // cfg.samples_per_prompt
        batch_prompts, order = order[:n_prompts], order[n_prompts:]
        batch_prompts = [p for p in batch_prompts for _ in range(cfg.samples_per_prompt)]  # K consecutive
        stats = ppo_step(
            policy,
            value_head if cfg.advantage == "gae" else None,
            ref_policy,
            tokenizer,
            optimizer,
            scheduler,
            reward_fn,
            kl_ctl,
            batch_prompts,
            cfg,
            generator,
            world_gold_stats,
        )
        history.append(stats)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            logger.log(stats, step)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(score=f"{stats['objective/scores']:.3f}", kl=f"{stats['objective/kl']:.2f}")
        done = step + 1
        if (cfg.save_every and done % cfg.save_every == 0) or done == last_step:
            state = {
                "policy": policy.state_dict(),
                "value_head": value_head.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "kl_controller": kl_ctl.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "generator": generator.get_state(),
                "python_rng": rng.getstate(),
                "order": order,
                "history": history,
                "step": done,
            }
            save_atomic(out / CHECKPOINT_DIR, lambda tmp, state=state: torch.save(state, tmp / STATE_FILE))
    logger.close()
    if last_step < cfg.steps:  # time-boxed: the checkpoint holds the run, --resume continues it
        return PPOResult(out, history)

    # 5. save the policy (plain transformers) and the value head beside it, atomically
    def write_value_head(path: Path) -> None:
        torch.save(value_head.state_dict(), path)

    def write_config(path: Path) -> None:
        import yaml

        path.write_text(yaml.safe_dump({"run": asdict(run), "ppo": asdict(cfg)}, sort_keys=False))

    policy.eval()
    save_pretrained_atomic(
        out,
        merged_copy(policy),
        tokenizer,
        extra_files={"value_head.pt": write_value_head, "rlhf_config.yaml": write_config},
        carry=("logs", CHECKPOINT_DIR),
    )
    return PPOResult(out, history)
