"""Per-process memory of PPO under DDP, FSDP2 and DeepSpeed ZeRO (docs/parallel.md): a random-weight Llama of ~29M
parameters (8 blocks of 512, the world's tokenizer), 3 iterations of batch 8; each process prints the
bytes of the policy's parameters, gradients and Adam moments it holds after an iteration, its peak RSS
and the wall time (load and save included).

    accelerate launch --config_file configs/accelerate/ddp.yaml   --num_processes 2 bench/parallel_memory.py
    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2 bench/parallel_memory.py
    accelerate launch --config_file configs/accelerate/zero3.yaml --num_processes 2 bench/parallel_memory.py
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import torch


def brevity(prompts: list[str], responses: list[str]) -> list[float]:
    return [-len(r) / 50 for r in responses]


def random_llama(out: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlhf.world.report import resolve_world_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_world_model("world", None, False))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def main() -> None:
    from torch.distributed.tensor import DTensor

    from rlhf import parallel
    from rlhf.algorithms import ppo
    from rlhf.config import RunConfig

    held: dict[str, int] = {}
    step = ppo.ppo_step

    def measured_step(models, optimizer, *args, **kwargs):
        stats = step(models, optimizer, *args, **kwargs)
        # FSDP2: a DTensor's local shard; ZeRO-3: `ds_tensor`, this process's partition
        local = lambda t: t.to_local() if isinstance(t, DTensor) else getattr(t, "ds_tensor", t)  # noqa: E731
        params = list(models.joint.parameters())
        # Adam's state: under DeepSpeed on its flat fp32 partitions (the torch optimiser inside its own)
        state = parallel.torch_optimizer(optimizer).state.values()
        held["parameters"] = sum(local(p).nbytes for p in params)
        held["gradients"] = sum(local(p.grad).nbytes for p in params if p.grad is not None)
        # DeepSpeed's own: the fp32 master copy of this process's partition (what its Adam steps), and
        # ZeRO-3's gradient partition buffer (ZeRO-2 frees its gradient partitions at the step)
        zero_opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else None
        masters = getattr(zero_opt, "fp32_partitioned_groups_flat", None) or getattr(
            zero_opt, "single_partition_of_fp32_groups", []
        )
        held["master"] = sum(t.nbytes for t in masters)
        buffer = getattr(zero_opt, "grad_partitions_flat_buffer", None)
        held["gradients"] += buffer.nbytes if buffer is not None else 0
        held["adam"] = sum(
            local(v).nbytes for s in state for v in s.values() if torch.is_tensor(v) and v.dim()
        )
        return stats

    ppo.ppo_step = measured_step
    with tempfile.TemporaryDirectory() as tmp:
        random_llama(Path(tmp) / "policy")  # each process its own copy: the same seed, the same weights
        cfg = ppo.PPOConfig(policy=str(Path(tmp) / "policy"), reward="__main__:brevity", steps=3, batch_size=8,
                            mini_batch_size=8, ppo_epochs=2, max_new_tokens=16, save_every=0)  # fmt: skip
        started = time.perf_counter()
        result = ppo.train(cfg, RunConfig(device="cpu", progress=False, tensorboard=False), Path(tmp) / "out",
                           show_progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
    last = result.history[-1]
    mib = {key: round(value / 2**20) for key, value in held.items()}
    print(
        f"process {os.environ.get('RANK', '0')}: holds {last['parallel/local_parameters']:.0f} of "
        f"{last['parallel/parameters']:.0f} parameters; parameters + gradients + (DeepSpeed's fp32 master) + Adam {sum(mib.values())} MiB "
        f"{mib}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; {seconds:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
