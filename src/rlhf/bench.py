"""`rlhf bench ...`: throughput and memory of the real training code paths on fixed configurations.

Figures are printed and written as JSON with the configuration and the machine, so a reader can rerun
them. For comparisons between whole processes, wrap the command in `farm-bench` (docs/benchmarks.md).
"""

from __future__ import annotations

import os
import platform
import resource
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.errors import UserError
from rlhf.io import write_json


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_training_steps(
    model, optimizer, batches: list, warmup: int, bf16: bool, loss_of, after_step=None
) -> list[float]:
    """Seconds of each optimiser step after the first `warmup`: loss (bf16 autocast on request),
    backward, clip to 1.0, step, then `after_step`."""
    timings = []
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        if i >= warmup:
            timings.append(time.perf_counter() - started)
    return timings


def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """This CPU's fp32 matrix-multiply rate: `torch.mm` of two random (n, n) float32 matrices on all of
    torch's threads, GFLOP/s (2 n^3 FLOPs a product) of the median of `repeats` timed products after one
    untimed. n = 2048 is large enough for the BLAS kernel's peak and short enough (17 GFLOP) to repeat."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator) for _ in range(2))
    torch.mm(a, b)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        timings.append(time.perf_counter() - started)
    return 2 * n**3 / float(np.median(timings)) / 1e9


def _matmul_sizes(trunk: Any, exclude: set[int]) -> tuple[int, int, int]:
    """(weights of the matrix products every token goes through, attention width heads x head dim, layers)
    of a transformers model: its nn.Linear and GPT-2 Conv1D weights, less the modules in `exclude`."""
    from transformers.pytorch_utils import Conv1D

    weights = sum(m.weight.numel() for m in trunk.modules()
                  if isinstance(m, torch.nn.Linear | Conv1D) and id(m) not in exclude)  # fmt: skip
    config = trunk.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return weights, config.num_attention_heads * head_dim, config.num_hidden_layers


def update_flops(models: Any, stats: dict[str, float]) -> int:
    """FLOPs of one `ppo_step`'s update epochs (`rlhf.flops`): forwards and backwards of the policy (the LM
    head at scored positions only, as `response_logprobs` runs it) and of a separate critic's trunk, over
    the tokens `ppo_step` reports in its `perf/update_*` stats."""
    from rlhf.flops import forward_flops, training_flops
    from rlhf.models import ValueModel

    head = models.policy.get_output_embeddings()
    scored = head.weight.numel()
    shared = models.critic if isinstance(models.critic, torch.nn.Linear) else None
    if shared is not None:
        scored += shared.weight.numel()
    trunks = [(models.policy, {id(head)})]
    if isinstance(models.critic, ValueModel):
        trunks.append((models.critic.trunk, set()))
        scored += models.critic.head.weight.numel()
    total = 0
    for i, (trunk, exclude) in enumerate(trunks):
        weights, width, layers = _matmul_sizes(trunk, exclude)
        total += forward_flops(weights, scored if i == 0 else 0, width, layers, int(stats["perf/update_tokens"]),
                               int(stats["perf/update_scored_tokens"]),
                               int(stats["perf/update_attention_pairs"]))  # fmt: skip
    return training_flops(total)


def describe_model(name: str, model: Any) -> dict[str, Any]:
    """What a bench ran on: the name given (`world` or a path), the architecture and the size."""
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "seq_model"):  # a reward model: its trunk's config
        config = model.seq_model.config
    return {
        "model": str(name),
        "model_type": getattr(config, "model_type", "?"),
        "layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def bench_pairs(n: int, target_tokens: int, tokenizer: Any, seed: int = 0) -> list:
    """World pairs whose prompt+response is about `target_tokens` long: responses of one request are
    concatenated until long enough (the reference configuration has sequences of about 75 tokens)."""
    from rlhf.data import PreferencePair
    from rlhf.world import corpus

    rng = np.random.default_rng(seed)
    pairs = []
    for prompt, a, b in corpus.sample_pairs(n, seed):
        request = corpus.parse_request(prompt)
        texts = []
        for first in (a, b):
            text = first
            while True:
                kind = rng.choice(corpus.RESPONSE_KINDS[request.kind])
                longer = f"{text} {corpus.write_response(request, str(kind), rng)}"
                # Stop at whichever length is nearer the target, so the mean lands close to it.
                if len(tokenizer(f"{prompt} {longer}")["input_ids"]) - target_tokens > target_tokens - len(
                    tokenizer(f"{prompt} {text}")["input_ids"]
                ):
                    break
                text = longer
            texts.append(text)
        pairs.append(PreferencePair(prompt=prompt, chosen=texts[0], rejected=texts[1]))
    return pairs


def bench_reward(
    cfg: Any,
    out: str | Path,
    steps: int = 30,
    warmup: int = 5,
    batch_size: int = 32,
    bf16: bool = False,
    model: str = "world",
) -> dict[str, Any]:
    """Time the reward trainer's step (one forward of chosen+rejected, backward, AdamW) on world pairs,
    with a reward model on `model`'s trunk (`world`, or any causal LM directory; random weights do)."""
    from rlhf.algorithms.reward import RewardConfig, make_pair_batches, pair_loss
    from rlhf.reward_model import init_reward_model
    from rlhf.sequences import encode_scored_pairs
    from rlhf.world.report import resolve_world_model

    backbone = resolve_world_model(model, cfg.world, cfg.run.progress)
    reward_cfg = RewardConfig(batch_size=batch_size, max_length=128)
    torch.manual_seed(0)
    runs = []
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        rm, tokenizer = init_reward_model(backbone, ["reward"], 1, seed=0)
        pairs = bench_pairs(batch_size * (steps + warmup), 75, tokenizer)
        batches = make_pair_batches(
            pairs,
            partial(encode_scored_pairs, tokenizer, max_length=reward_cfg.max_length),
            ["reward"],
            batch_size,
            reward_cfg,
        )
        lengths = [len(row) for b in batches for row in b.chosen + b.rejected]
        optimizer = torch.optim.AdamW([p for p in rm.parameters() if p.requires_grad], lr=1e-4)
        boot = torch.ones(1, batch_size)
        rm.train()

        timings = time_training_steps(
            rm, optimizer, batches, warmup, precision == "bf16",
            lambda b: pair_loss(rm, b, tokenizer.pad_token_id, torch.device("cpu"), reward_cfg, boot)[0],  # noqa: B023 - called within this iteration
        )  # fmt: skip
        per_step = float(np.median(timings))
        runs.append(
            {
                "precision": precision,
                "pairs_per_second": batch_size / per_step,
                "seconds_per_step": per_step,
                "seconds_per_step_min_max": [float(np.min(timings)), float(np.max(timings))],
                "timed_steps": len(timings),
                "mean_tokens_per_sequence": float(np.mean(lengths)),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    figures = {
        "benchmark": "reward",
        "command": "rlhf bench reward" + ("" if model == "world" else f" --model {model}"),
        "configuration": {
            "backbone": describe_model(model, rm),
            "batch_pairs": batch_size,
            "max_length": reward_cfg.max_length,
            "target_tokens_per_sequence": 75,
            "optimizer": "AdamW, grad clip 1.0",
            "warmup_steps": warmup,
            "statistic": "median seconds per step over the timed steps",
        },
        "machine": machine(),
        "runs": runs,
    }
    write_json(out, figures)
    return figures


def bench_prompts(n: int, target_tokens: int, tokenizer: Any, seed: int = 0) -> list[str]:
    """World prompts of about `target_tokens` tokens: an earlier exchange, then the request; the `n`
    candidates nearest the target length, in corpus order."""
    from rlhf.world import corpus

    dialogues = corpus.generate_corpus(8 * n, seed)
    candidates = [
        f"{a.prompt} {a.response}\n{b.prompt}" for a, b in zip(dialogues[::2], dialogues[1::2], strict=False)
    ]
    lengths = [len(ids) for ids in tokenizer(candidates)["input_ids"]]
    nearest = sorted(range(len(candidates)), key=lambda i: abs(lengths[i] - target_tokens))[:n]
    return [candidates[i] for i in sorted(nearest)]


PPO_VARIANTS = {
    # the PPO reference set-up: 32 prompts, 4 epochs over 1 minibatch
    "ppo": {"advantage": "gae", "samples_per_prompt": 1, "ppo_epochs": 4},
    # TRL's RLOO / GRPO reference: 8 prompts x 4 samples, one update per rollout
    "rloo": {"advantage": "rloo", "samples_per_prompt": 4, "ppo_epochs": 1},
    "grpo": {"advantage": "grpo", "samples_per_prompt": 4, "ppo_epochs": 1},
    # GRPO without its KL term, as TRL's GRPOTrainer runs by default (beta = 0): no reference model
    "grpo_nokl": {"advantage": "grpo", "samples_per_prompt": 4, "ppo_epochs": 1, "kl_coef": 0.0},
}


def _time_ppo(
    world_dir: Any, variant: str, precision: str, critic: str, batch_size: int, iterations: int, warmup: int,
    reward_fn: Any, engine: Any = None,
) -> tuple[dict[str, Any], Any, Any, list[str]]:  # fmt: skip
    """Time `ppo_step` of one variant and precision, sampled by our loop or by `engine` (a
    `rlhf.vllm_client.RolloutEngine`, synced to the policy first and after every update); returns
    (figures, policy, tokenizer, prompts)."""
    import copy

    from accelerate import Accelerator

    from rlhf.algorithms.ppo import PolicyModels, PPOConfig, ppo_step
    from rlhf.models import ValueModel, disable_dropout, load_causal_lm
    from rlhf.rl_math import FixedKLController

    torch.manual_seed(0)
    policy, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
    disable_dropout(policy)
    setting = {"kl_coef": 0.05, **PPO_VARIANTS[variant]}
    ref_policy = copy.deepcopy(policy).eval().requires_grad_(False) if setting["kl_coef"] else None
    value = None
    if setting["advantage"] == "gae":
        hidden = policy.config.hidden_size
        value = ValueModel(policy) if critic == "separate" else torch.nn.Linear(hidden, 1)
    models = PolicyModels(policy, ref_policy, value, tokenizer, engine=engine)
    ppo_cfg = PPOConfig(
        batch_size=batch_size,
        mini_batch_size=batch_size,
        max_new_tokens=32,
        critic=critic,
        mixed_precision="bf16" if precision == "bf16" else "no",
        **setting,
    )
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.Adam(models.trainable_parameters(), lr=1e-5, eps=1e-5, fused=True)  # as train
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    n_prompts = batch_size // ppo_cfg.samples_per_prompt
    prompts = bench_prompts(n_prompts * (iterations + warmup), 44, tokenizer)
    generator = torch.Generator().manual_seed(0)
    if engine is not None:
        engine.sync(policy)
    rows = []
    for i in range(iterations + warmup):
        batch = [
            p for p in prompts[i * n_prompts : (i + 1) * n_prompts] for _ in range(ppo_cfg.samples_per_prompt)
        ]
        started = time.perf_counter()
        stats = ppo_step(models, optimizer, scheduler, reward_fn, FixedKLController(ppo_cfg.kl_coef), batch, ppo_cfg,
                         generator, accelerator=accelerator)  # fmt: skip
        seconds = time.perf_counter() - started
        if i >= warmup:
            rows.append((seconds, stats["time/generation_share"], stats["response/length"],
                         stats["time/generate_tokens_per_s"], stats["time/update_seconds"],
                         update_flops(models, stats), stats.get("time/weight_sync_s", 0.0)))  # fmt: skip
    per_iteration = float(np.median([r[0] for r in rows]))
    figures = {
        "variant": variant,
        "precision": precision,
        "rollout_engine": "ours" if engine is None else "vllm",
        "advantage": ppo_cfg.advantage,
        "value": {"gae": f"{critic} critic"}.get(ppo_cfg.advantage, "none (critic-free)"),
        "prompts_x_samples": f"{n_prompts} x {ppo_cfg.samples_per_prompt}",
        "ppo_epochs": ppo_cfg.ppo_epochs,
        "reference": "separate frozen copy" if ref_policy is not None else "none (kl_coef 0)",
        "episodes_per_second": batch_size / per_iteration,
        "seconds_per_iteration": per_iteration,
        "seconds_min_max": [float(min(r[0] for r in rows)), float(max(r[0] for r in rows))],
        "generation_share": float(np.median([r[1] for r in rows])),
        "mean_response_tokens": float(np.mean([r[2] for r in rows])),
        "rollout_generate_tokens_per_second": float(np.median([r[3] for r in rows])),
        # the update epochs alone (`rlhf.flops`: forwards + backwards of the real tokens)
        "update_seconds": float(np.median([r[4] for r in rows])),
        "update_share": float(np.median([r[4] / r[0] for r in rows])),
        "update_gflops": float(np.median([r[5] / r[4] / 1e9 for r in rows])),
        "weight_sync_seconds": float(np.median([r[6] for r in rows])),
        "peak_rss_mib": peak_rss_mib(),
    }
    return figures, policy, tokenizer, prompts


def bench_ppo(
    cfg: Any,
    out: str | Path,
    iterations: int = 6,
    warmup: int = 1,
    batch_size: int = 32,
    variants: tuple[str, ...] = ("ppo",),
    critic: str = "shared",
    bf16: bool = False,
    model: str = "world",
    vllm_url: str = "",
) -> dict[str, Any]:
    """Time the trainer's own `ppo_step` (rollout with a separate reference and reward model, updates)
    for each variant and precision, and plain `generate` on the same model and batch as the rollout's
    ceiling. `model`: the policy (`world`, or any causal LM directory; random weights do); the reward
    model is one of the same size on its trunk. `vllm_url`: each run is timed again with the rollouts
    sampled by that `vllm serve` (of the same architecture; synced to the policy, `weight_sync_seconds`
    of each iteration included in its time)."""
    import tempfile

    from rlhf.reward_model import init_reward_model, save_reward_model
    from rlhf.rewards import load_reward_source
    from rlhf.world.report import resolve_world_model

    unknown = sorted(set(variants) - set(PPO_VARIANTS))
    if unknown:
        raise UserError(f"unknown bench variants {unknown}; choose from {', '.join(PPO_VARIANTS)}")
    world_dir = resolve_world_model(model, cfg.world, cfg.run.progress)
    runs = []
    peak = matmul_peak_gflops()
    with tempfile.TemporaryDirectory() as tmp:  # a reward model of the same size as the policy
        rm, rm_tokenizer = init_reward_model(world_dir, ["reward"], 1, seed=0)
        save_reward_model(Path(tmp) / "rm", rm, rm_tokenizer)
        reward_fn = load_reward_source(str(Path(tmp) / "rm"), device="cpu")
        engines = [None]
        if vllm_url:
            from rlhf.vllm_client import connect_engine

            engines.append(
                connect_engine(vllm_url, cfg.ppo.vllm_timeout, Path(tmp) / "vllm", option="--vllm-url")
            )
        for variant in variants:
            for precision in ("fp32", "bf16") if bf16 else ("fp32",):
                for engine in engines:
                    figures, policy, tokenizer, prompts = _time_ppo(
                        world_dir,
                        variant,
                        precision,
                        critic,
                        batch_size,
                        iterations,
                        warmup,
                        reward_fn,
                        engine,
                    )
                    runs.append(figures)

    # The ceiling: plain generate, same model and batch, 64 new tokens forced.
    policy.eval()
    from rlhf.rollout import prompt_batch

    device = next(policy.parameters()).device
    enc = prompt_batch(tokenizer, prompts[:batch_size], policy, 64, device)  # as the rollout encodes them
    gen_times = []
    for _ in range(3):
        started = time.perf_counter()
        with torch.no_grad():
            policy.generate(
                **enc,
                max_new_tokens=64,
                min_new_tokens=64,
                do_sample=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        gen_times.append(time.perf_counter() - started)
    plain = batch_size * 64 / float(np.median(gen_times))
    # the peak again after the runs, and the higher of the two: other work on the machine while it was
    # measured would lower it and flatter the share
    peak = max(peak, matmul_peak_gflops())
    for run in runs:
        run["rollout_vs_generate"] = run["rollout_generate_tokens_per_second"] / plain
        run["matmul_peak_gflops"] = peak
        run["update_peak_share"] = run["update_gflops"] / peak
    figures = {
        "benchmark": "ppo",
        "command": "rlhf bench ppo"
        + ("" if model == "world" else f" --model {model}")
        + (f" --vllm-url {vllm_url}" if vllm_url else ""),
        "configuration": {
            "policy": describe_model(model, policy),
            "reference": "separate frozen copy",
            "reward_model": "same size, separate",
            "batch_responses": batch_size,
            "prompt_tokens": "about 44",
            "max_new_tokens": 32,
            "minibatches": 1,
            "update_flops": "rlhf.flops: 3 x (2 x matmul weights x real tokens + 2 x LM head x response "
            "tokens + 4 x heads x head dim x layers x causal query-key pairs) per epoch",
            "matmul_peak": "torch.mm of two fp32 2048 x 2048 matrices, all threads, median of 7, the "
            "higher of a measure before and one after the runs",
            "timed_iterations": iterations,
            "warmup_iterations": warmup,
            "statistic": "median seconds per iteration over the timed iterations",
        },
        "machine": machine(),
        "plain_generate_tokens_per_second": plain,
        "runs": runs,
    }
    write_json(out, figures)
    return figures


def bench_dpo(
    cfg: Any,
    out: str | Path,
    steps: int = 30,
    warmup: int = 5,
    batch_size: int = 32,
    bf16: bool = False,
    model: str = "world",
) -> dict[str, Any]:
    """Time the DPO trainer's step (one forward of chosen + rejected against cached reference log-probs,
    backward, clip, AdamW) on world pairs, and the one-off pass that caches the reference log-probs.
    `model`: the policy (`world`, or any causal LM directory; random weights do)."""
    from rlhf.algorithms.dpo import DPOConfig, batch_loss, cache_reference_logps, make_batches
    from rlhf.models import load_causal_lm
    from rlhf.world.report import resolve_world_model

    world_dir = resolve_world_model(model, cfg.world, cfg.run.progress)
    dpo_cfg = DPOConfig(batch_size=batch_size, max_length=128)
    runs = []
    for precision in ("fp32", "bf16") if bf16 else ("fp32",):
        torch.manual_seed(0)
        policy, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
        pairs = bench_pairs(batch_size * (steps + warmup), 75, tokenizer)
        batches = make_batches(pairs, tokenizer, dpo_cfg)
        tokens = [int(b.attention_mask.sum(1).max()) for b in batches]
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        started = time.perf_counter()
        with autocast:
            cache_reference_logps(policy, batches, "cpu")
        reference_seconds = time.perf_counter() - started
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
        policy.train()

        timings = time_training_steps(
            policy, optimizer, batches, warmup, precision == "bf16",
            lambda b: batch_loss(policy, b, "cpu", dpo_cfg)[0],  # noqa: B023 - called within this iteration
        )  # fmt: skip
        per_step = float(np.median(timings))
        n_pairs = sum(len(b) for b in batches)
        runs.append(
            {
                "precision": precision,
                "pairs_per_second": batch_size / per_step,
                "seconds_per_step": per_step,
                "seconds_per_step_min_max": [float(np.min(timings)), float(np.max(timings))],
                "timed_steps": len(timings),
                "reference_cache_pairs_per_second": n_pairs / reference_seconds,
                # one epoch over the data, the reference pass included
                "pairs_per_second_with_reference_pass": n_pairs
                / (reference_seconds + per_step * len(batches)),
                "mean_longest_sequence_per_batch": float(np.mean(tokens)),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    figures = {
        "benchmark": "dpo",
        "command": "rlhf bench dpo" + ("" if model == "world" else f" --model {model}"),
        "configuration": {
            "policy": describe_model(model, policy),
            "reference": "log-probs cached once with the initial model (no reference model during training)",
            "batch_pairs": batch_size,
            "max_length": dpo_cfg.max_length,
            "target_tokens_per_sequence": 75,
            "optimizer": "AdamW, grad clip 1.0",
            "warmup_steps": warmup,
            "statistic": "median seconds per step over the timed steps",
        },
        "machine": machine(),
        "runs": runs,
    }
    write_json(out, figures)
    return figures


def bench_ilql(
    cfg: Any, out: str | Path, steps: int = 30, warmup: int = 5, batch_size: int = 32, model: str = "world"
) -> dict[str, Any]:
    """Time the ILQL trainer's step (one forward of LM + heads, the losses, backward, AdamW, Polyak
    update) on world responses of about 70 tokens, heads only (the default) and with the whole LM."""
    from rlhf.algorithms.ilql import ILQLConfig, ILQLModel, batch_loss, make_batches
    from rlhf.data import RewardedResponse
    from rlhf.models import load_causal_lm
    from rlhf.world.report import resolve_world_model

    world_dir = resolve_world_model(model, cfg.world, cfg.run.progress)
    runs = []
    for trainable in (0, -1):
        torch.manual_seed(0)
        lm, tokenizer = load_causal_lm(world_dir, device="cpu", dtype="float32")
        ilql_cfg = ILQLConfig(batch_size=batch_size, max_length=128, trainable_layers=trainable)
        if trainable == 0:
            lm.requires_grad_(False)
        ilql = ILQLModel(lm)
        rng = np.random.default_rng(0)
        pairs = bench_pairs((batch_size * (steps + warmup) + 1) // 2, 70, tokenizer)
        rows = [RewardedResponse(p.prompt, text, float(rng.normal()), "bench")
                for p in pairs for text in (p.chosen, p.rejected)]  # fmt: skip
        batches = make_batches(rows, tokenizer, ilql_cfg)
        optimizer = torch.optim.AdamW([p for p in ilql.parameters() if p.requires_grad], lr=1e-5)
        timings = time_training_steps(
            ilql, optimizer, batches, warmup, False,
            lambda b: batch_loss(ilql, b, "cpu", ilql_cfg)[0],  # noqa: B023 - called within this iteration
            after_step=lambda: ilql.heads.update_targets(ilql_cfg.target_update),  # noqa: B023 - same
        )  # fmt: skip
        per_step = float(np.median(timings))
        runs.append(
            {
                "trained": "heads only (default)" if trainable == 0 else "heads and the whole LM",
                "responses_per_second": batch_size / per_step,
                "seconds_per_step": per_step,
                "seconds_per_step_min_max": [float(np.min(timings)), float(np.max(timings))],
                "timed_steps": len(timings),
                "mean_tokens_per_sequence": float(
                    np.mean([float(b.attention_mask.sum(1).float().mean()) for b in batches])
                ),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    figures = {
        "benchmark": "ilql",
        "command": "rlhf bench ilql" + ("" if model == "world" else f" --model {model}"),
        "configuration": {
            "policy": describe_model(model, lm),
            "heads": "two Q heads, two targets, V head",
            "batch_responses": batch_size,
            "max_length": 128,
            "target_tokens_per_sequence": 70,
            "optimizer": "AdamW, grad clip 1.0, Polyak update every step",
            "warmup_steps": warmup,
            "statistic": "median seconds per step over the timed steps",
        },
        "machine": machine(),
        "runs": runs,
    }
    write_json(out, figures)
    return figures
