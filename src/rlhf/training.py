"""What the offline trainers (reward model, DPO, ILQL) share: prompt+response token layout, batch order,
sharding and resumable checkpoints. How a prompt and a response become token ids is `rlhf.sequences`."""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from rlhf.errors import UserError


def group_by_length(lengths: list[int], batch_size: int, megabatch: int = 50) -> list[int]:
    """An order of the items in which each run of `batch_size` has similar lengths: items are sorted by
    length within consecutive megabatches of `megabatch` batches (the given order is kept between them,
    so a shuffled input stays shuffled at that scale). Padding to the batch's longest then wastes little:
    on the benchmark's pairs 19% of the tokens were padding without it."""
    size = batch_size * megabatch
    order: list[int] = []
    for start in range(0, len(lengths), size):
        chunk = range(start, min(start + size, len(lengths)))
        order.extend(sorted(chunk, key=lambda i: lengths[i]))
    return order


def epoch_batches(batches: list, epoch: int, seed: int, rank: int, world: int) -> list:
    """This process's batches for one epoch: shuffled with (seed, epoch), dealt round-robin to processes
    (an odd last batch is dropped so the processes stay in step)."""
    batches = list(batches)
    random.Random(seed * 1_000_003 + epoch).shuffle(batches)
    usable = len(batches) - len(batches) % world if len(batches) >= world else len(batches)
    return batches[:usable][rank::world]


def save_trainer_checkpoint(
    path: Path,
    model_state: dict,
    optimizer_state: dict,
    scheduler,
    generator,
    state: dict,
    move_in: dict[str, Path] | None = None,
) -> None:
    """Model state (raw, LoRA included), optimiser state, scheduler, RNG and step, written atomically: a
    kill mid-write keeps the previous checkpoint. `move_in` ({name: path}) moves already written entries
    (DeepSpeed's own checkpoint) into the new directory."""
    from rlhf.models import save_atomic

    def write(tmp: Path) -> None:
        for name, source in (move_in or {}).items():
            os.replace(source, tmp / name)
        torch.save(
            {
                "model": model_state,
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "state": dict(state),
            },
            tmp / "trainer_state.pt",
        )

    save_atomic(path, write)


def load_trainer_checkpoint(
    path: Path, model, optimizer, scheduler, generator, sharded: bool = False
) -> dict:
    """Restore what `save_trainer_checkpoint` wrote; `sharded`: full state dicts (`rlhf.parallel`) loaded
    into each process's shards."""
    if not (path / "trainer_state.pt").is_file():
        raise UserError(f"--resume: no checkpoint at {path}; start without --resume")
    blob = torch.load(path / "trainer_state.pt", weights_only=False)
    from rlhf import parallel

    if parallel.is_deepspeed_state(blob["optimizer"]) != (parallel.engine(model) is not None):
        written = "DeepSpeed" if parallel.is_deepspeed_state(blob["optimizer"]) else "DDP or FSDP2"
        raise UserError(f"--resume: {path} was written under {written}, this run is not; resume as it ran")
    if parallel.engine(model) is not None:
        parallel.load_deepspeed_state(model, path, blob["optimizer"])
        return _restore_rest(blob, scheduler, generator)
    groups = blob["optimizer"]["param_groups"]
    by_name = bool(groups and groups[0]["params"]) and isinstance(groups[0]["params"][0], str)  # FSDP2's
    if by_name != sharded:
        written, now = ("FSDP2", "DDP or 1 process") if by_name else ("DDP or 1 process", "FSDP2")
        raise UserError(f"--resume: {path} was written under {written}, this run is {now}; resume as it ran")
    if sharded:
        from rlhf.parallel import load_full_state

        load_full_state(model, optimizer, blob["model"], blob["optimizer"])
    else:
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
    return _restore_rest(blob, scheduler, generator)


def _restore_rest(blob: dict, scheduler, generator) -> dict:
    scheduler.load_state_dict(blob["scheduler"])
    generator.set_state(blob["generator"])
    torch.set_rng_state(blob["torch_rng"])
    return blob["state"]


def collate_sequences(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Prompt and response token lists -> input_ids (N, Lq + T) with prompts left-padded to Lq and
    responses right-padded to T (so every response starts at column Lq, as after generation),
    attention_mask (N, Lq + T), response_mask (N, T) bool, and Lq."""
    width, span = max(map(len, prompts)), max(map(len, responses))
    n = len(prompts)
    input_ids = torch.full((n, width + span), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width + span), dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        input_ids[i, width - len(prompt) : width] = torch.tensor(prompt)
        input_ids[i, width : width + len(response)] = torch.tensor(response)
        attention_mask[i, width - len(prompt) : width + len(response)] = 1
    return input_ids, attention_mask, attention_mask[:, width:].bool(), width


def collate_contiguous(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Prompt + response contiguous in each row, right-padded to the longest row: less padding than
    `collate_sequences` when prompt lengths vary. Returns input_ids and attention_mask (N, L), the first
    column s that holds a response token in some row (the shortest prompt's length), and response_mask
    (N, L - s) marking each row's response tokens among columns s.. (a longer prompt's tail is masked)."""
    start = min(map(len, prompts))
    width = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    n = len(prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.bool)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        end = len(prompt) + len(response)
        input_ids[i, :end] = torch.tensor(prompt + response)
        attention_mask[i, :end] = 1
        response_mask[i, len(prompt) : end] = True
    return input_ids, attention_mask, response_mask[:, start:], start
