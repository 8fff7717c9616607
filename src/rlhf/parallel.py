"""Data parallelism and sharding of a trained model under `accelerate launch`.

Accelerate prepares the model as the launch config says: DDP (gradients all-reduced in backward) by
default, FSDP2 (parameters, gradients and optimiser state sharded; `torch.distributed.fsdp.fully_shard`)
under an FSDP config on GPUs. On CPUs Accelerate turns an FSDP config into plain data parallelism, so
`prepare` applies torch's `fully_shard` itself there (every transformer block, then the root: what
Accelerate does on GPUs) and the same command shards on both.

Under a DeepSpeed config (ZeRO-2: gradients and optimiser state split; ZeRO-3: parameters too) the
model and its optimiser go to `accelerator.prepare` together and come back as DeepSpeed's engine and
optimiser: the engine's backward also clips and steps (`gradient_clipping`, `gradient_accumulation_steps`
and the micro batch are written into DeepSpeed's config from the trainer's own settings). The Accelerator
must be made with `make_accelerator` (see there), or on CPUs every process runs alone.

Around that: the parameters a process holds (`parameter_counts`), all of them gathered for the many
small forwards of generation (`gathered`), full state dicts on the main process for saving and
resuming (`full_state_dict`, `load_full_state`), so a checkpoint loads in plain transformers whatever the
config, and a whole model built from such a state on the main process to save (`whole`), which no process
keeps between saves. Docs: docs/parallel.md.
"""

from __future__ import annotations

import copy
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rlhf.errors import UserError

# Our modules return views (logits[:, a:b], values.squeeze(-1)) that no caller changes in place.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")


def fsdp2_requested() -> bool:
    """Whether the launch config asks for FSDP2 (`accelerate launch` exports its settings)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() not in ("1", "true", "yes"):
        return False
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise UserError(
            "the launch config asks for FSDP version 1; rlhf shards with FSDP2: set fsdp_version: 2 "
            "(configs/accelerate/fsdp2.yaml)"
        )
    return True


def deepspeed_requested() -> bool:
    """Whether the launch config is a DeepSpeed one (`accelerate launch` exports ACCELERATE_USE_DEEPSPEED)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(cpu: bool, **kwargs: Any) -> Any:
    """`Accelerator(cpu=cpu, **kwargs)`, for a run that wants the CPU (`cpu`) or its accelerator, made so
    that a DeepSpeed launch config runs as it says. Two things differ under one:

    - On a machine without GPUs, `cpu=True` would make Accelerate ignore DeepSpeed (plain DDP), and
      `cpu=False` alone makes every process rank 0 of a group of one: Accelerate finds no device backend,
      so it records no backend and one process, although DeepSpeed has started a gloo group of all of them
      (accelerate/state.py, `PartialState.__init__`). Naming the backend, gloo, makes it read the group.
    - Accelerate's DeepSpeed plugin tells transformers that ZeRO-3 is on even with `zero3_init_flag:
      false`, and `from_pretrained` would then load every model partitioned (a collective, so a model
      loaded by the main process alone would wait forever). rlhf loads whole models and partitions the
      trained one at `prepare`, so that is switched off.

    Raises UserError for `run.device=cpu` under DeepSpeed on a machine with GPUs."""
    from accelerate import Accelerator

    if not deepspeed_requested():
        return Accelerator(cpu=cpu, **kwargs)
    if cpu and torch.cuda.is_available():
        raise UserError("run.device=cpu under a DeepSpeed launch config: DeepSpeed runs on the GPUs it finds; "
                        "set run.device=auto, or launch with configs/accelerate/ddp.yaml")  # fmt: skip
    if cpu:
        from accelerate.utils import InitProcessGroupKwargs

        kwargs = {**kwargs, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    accelerator = Accelerator(cpu=False, **kwargs)
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    return accelerator


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def deepspeed_stage(accelerator: Any) -> int:
    """The ZeRO stage of a DeepSpeed run (0, 1, 2 or 3); 0 when not under DeepSpeed."""
    return int(accelerator.state.deepspeed_plugin.zero_stage) if is_deepspeed(accelerator) else 0


def shards(accelerator: Any) -> bool:
    """Whether `prepare` will shard with FSDP2: Accelerate does (GPUs), or the launch asks for FSDP2 and
    there are several processes. False under DeepSpeed (`is_deepspeed`)."""
    if is_deepspeed(accelerator):
        return False
    if deepspeed_requested():  # a programming error: the Accelerator was made otherwise
        raise UserError("the launch config asks for DeepSpeed but the Accelerator runs without it; "
                        "make it with rlhf.parallel.make_accelerator")  # fmt: skip
    return accelerator.is_fsdp2 or (accelerator.num_processes > 1 and fsdp2_requested())


def gathers_for_saving(accelerator: Any) -> bool:
    """Whether no process holds every parameter (FSDP2, ZeRO-3): the main process then evaluates and saves
    a whole copy, loaded from the full state gathered by all (`full_state_dict`)."""
    return shards(accelerator) or deepspeed_stage(accelerator) == 3


def end_processes() -> None:
    """Leave the process group of a multi-process launch (if any) before the interpreter exits, as
    Accelerate's `end_training` does: a group still alive while Python tears down its threads and modules
    at exit is how a finished, saved run can abort ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def blocks(module: nn.Module) -> list[nn.Module]:
    """The transformer blocks of every transformers model inside `module` (the classes each model names
    in `_no_split_modules`, as Accelerate's FSDP2 auto-wrap policy picks them)."""
    names = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or ())
    return [sub for sub in module.modules() if type(sub).__name__ in names]


def shard(module: nn.Module, units: Sequence[nn.Module] = (), reshard_root: bool | None = None) -> nn.Module:
    """torch's FSDP2 in place: each of `units` (value heads, kept in float32 over a trunk that may not
    be: an FSDP unit holds one dtype), each transformer block, then the root with what is left. Parameters become DTensors
    sharded over all processes on dim 0; each block is all-gathered for its forward and backward only.
    `reshard_root=True` frees the root's gathered parameters after every forward (a frozen model that
    never runs backward); None is torch's default (kept until backward)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    for unit in [*units, *blocks(module)]:
        if not isinstance(unit, FSDPModule):
            fully_shard(unit)
    return fully_shard(module, reshard_after_forward=reshard_root)


def prepare(
    accelerator: Any,
    module: nn.Module,
    make_optimizer: Callable[[], torch.optim.Optimizer],
    units: Sequence[nn.Module] = (),
    forward_methods: Sequence[str] = (),
    *,
    micro_batch: int = 1,
    grad_accum: int = 1,
    max_grad_norm: float = 0.0,
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """`module` prepared as the launch says, and the optimiser `make_optimizer()` builds over the
    parameters as prepared (sharded ones are new tensors). Returns (prepared module, optimiser); the
    unwrapped module stays `module` itself (DDP wraps it, FSDP2 changes it in place).

    `units` are sharded on their own under FSDP2 (see `shard`); `forward_methods` are methods of `module`
    that call its submodules directly (generation) and so must run FSDP2's forward hooks too.

    Under DeepSpeed the module and optimiser are prepared together into DeepSpeed's engine (returned as
    the module; `module` is its `.module`) and optimiser, with `micro_batch` (items per process per
    backward), `grad_accum` (backwards per step) and `max_grad_norm` (clipping of the global gradient
    norm; 0 = off) written into its config: the engine's backward (`accelerator.backward`) then clips and
    steps, and the optimiser's `step` and `zero_grad` do nothing."""
    if is_deepspeed(accelerator):
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = micro_batch
        config["gradient_accumulation_steps"] = grad_accum
        config["train_batch_size"] = micro_batch * grad_accum * accelerator.num_processes
        config["gradient_clipping"] = max_grad_norm
        if accelerator.gradient_accumulation_steps != grad_accum:
            raise UserError(f"the launch config's gradient_accumulation_steps "
                            f"({accelerator.gradient_accumulation_steps}) differs from the trainer's "
                            f"({grad_accum}): leave it out of the launch config")  # fmt: skip
        prepared, optimizer = accelerator.prepare(module, make_optimizer())
        _ENGINES[module] = weakref.ref(prepared)  # (the trainer holds the engine, the engine the module)
        return prepared, optimizer
    if shards(accelerator):  # what the module looked like, without its weights: `whole` rebuilds it
        _SKELETONS[module] = _meta_copy(module)
    if shards(accelerator) and not accelerator.is_fsdp2:  # on CPUs Accelerate would only replicate
        shard(module, units)
        prepared, optimizer = module, make_optimizer()
    elif accelerator.is_fsdp2:  # Accelerate shards the blocks and the root (GPUs)
        for unit in units:
            shard(unit)
        prepared, optimizer = accelerator.prepare(module, make_optimizer())
    else:  # DDP on several processes, the module itself on one
        prepared = accelerator.prepare(module)
        optimizer = make_optimizer()
    if is_sharded(module):
        from torch.distributed.fsdp import register_fsdp_forward_method

        for name in forward_methods:
            register_fsdp_forward_method(module, name)
    return prepared, optimizer


# prepared module -> a copy of it as it was before sharding, its parameters on the meta device (no storage)
_SKELETONS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _meta_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose parameters are on the meta device: its structure, classes and config
    (and buffers, which are small) at no parameter memory. Shared (tied) parameters stay shared."""
    memo = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for p in module.parameters()
    }
    return copy.deepcopy(module, memo)


def whole(module: nn.Module) -> nn.Module | None:
    """`module` whole, to save or evaluate on one process: itself when it is not sharded; under FSDP2 a
    copy built on the main process (on CPU) from the full state dict gathered for it, and None on the
    others. The copy's parameters are the gathered tensors themselves (`load_state_dict(assign=True)`
    into a weightless copy made by `prepare`), so building it costs no second copy of the weights, and it
    lives only as long as the caller keeps it. Every process must call it when sharded (a collective)."""
    if not is_sharded(module):
        return module
    import torch.distributed as dist

    state = full_state_dict(module)
    if dist.get_rank() != 0:
        return None
    model = copy.deepcopy(_SKELETONS[module])
    tied: dict[int, list[str]] = {}  # a tied parameter is two entries of the state dict: keep it one tensor
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), []).append(name)
    model.load_state_dict(state, assign=True)
    for first, *others in tied.values():
        for name in others:
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, model.get_parameter(first))
    return model


# DeepSpeed's engine of each module `prepare` gave it, for `gathered` and the checkpoints
_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def engine(module: nn.Module) -> Any | None:
    """DeepSpeed's engine of `module` (prepared by `prepare`), or None."""
    ref = _ENGINES.get(module)
    return ref() if ref is not None else None


def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside Accelerate's and DeepSpeed's wrappers (which step its parameter groups:
    a learning-rate schedule acts on it)."""
    while not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def zero3(module: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 has partitioned the parameters of `module`."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def parameter_counts(module: nn.Module) -> dict[str, float]:
    """`rlhf.models.parameter_counts` as the metrics every trainer logs: the parameters this process
    holds (its shards under FSDP2 or ZeRO-3, all of them otherwise) and the total."""
    from rlhf.models import parameter_counts as counts

    local, total = counts(module)
    return {"parallel/local_parameters": float(local), "parallel/parameters": float(total)}


@contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Every FSDP2 unit of `module` all-gathered once and kept so until the block ends, then resharded:
    decoding runs a forward per generated token, and gathering each block for each of them would move the
    whole model T times. Without sharding, nothing happens. Holds the full parameters for the duration,
    as generation needs them anyway.

    Under DeepSpeed ZeRO-3 likewise: every parameter gathered once (`GatheredParameters`), and the
    engine's fetch-and-release hooks removed until the block ends (TRL's `unwrap_model_for_generation`),
    so that the forwards inside are plain local ones (a process may decode fewer tokens than another)."""
    from torch.distributed.fsdp import FSDPModule

    if engine(module) is not None and zero3(module):
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        with unwrap_model_for_generation(engine(module)):
            yield
        return
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    for unit in units:
        if unit is not module:  # the root keeps its own setting (torch's: gathered until backward)
            unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            if unit is not module:  # (Accelerate's embedding/tail units, if any, start with False)
                unit.set_reshard_after_forward(True, recurse=False)


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of `module` on the main process, on CPU; an empty dict elsewhere
    when sharded. Every process must call it (FSDP2 and ZeRO-3 all-gather)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if zero3(module):
        return _zero3_state_dict(module)
    if engine(module) is not None:  # ZeRO-1/2: every process holds the whole, updated, parameters
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return get_model_state_dict(module, options=_options(cpu_offload=True))


def _zero3_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with ZeRO-3's partitioned parameters gathered one at a time (so no process
    ever holds more than the largest one besides its own shards), copied onto the main process's CPU."""
    import deepspeed
    import torch.distributed as dist

    main = dist.get_rank() == 0
    gathered_params: dict[int, torch.Tensor] = {}
    for p in dict.fromkeys(module.parameters()):  # tied parameters once
        with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            if main:
                gathered_params[id(p)] = p.detach().cpu().clone()
    if not main:
        return {}
    params = {name: p for name, p in module.named_parameters(remove_duplicate=False)}
    state = module.state_dict()
    return {
        key: gathered_params[id(params[key])] if key in params else value.detach().cpu().clone()
        for key, value in state.items()
    }


def full_optimizer_state_dict(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser's full state keyed by parameter name (as `full_state_dict`: main process, collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(module, _unwrapped(optimizer), options=_options(cpu_offload=True))


def load_full_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optimizer_state: dict
) -> None:
    """Load full state dicts (from `full_state_dict` / `full_optimizer_state_dict`, in any process count's
    layout) into `module` and `optimizer`, each process keeping its own shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(module, model_state, options=_options())
    set_optimizer_state_dict(module, _unwrapped(optimizer), optimizer_state, options=_options())


def _unwrapped(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer holds the torch one


DEEPSPEED_DIR = "deepspeed"  # DeepSpeed's own checkpoint, inside rlhf's checkpoint directory


def deepspeed_staging(checkpoint: Any) -> Any:
    """Where `save_deepspeed_state` writes before the main process moves it into `checkpoint`'s new
    version (`rlhf.models.save_atomic` swaps the whole directory): beside it, hidden."""
    return checkpoint.parent / f".{checkpoint.name}.{DEEPSPEED_DIR}"


def save_deepspeed_state(module: nn.Module, directory: Any) -> dict[str, Any]:
    """Every process: DeepSpeed's checkpoint of the engine of `module` in `directory` (emptied first): each
    process writes its partition of the optimiser state (and under ZeRO-3 of the parameters). Returns
    what rlhf's checkpoint keeps in place of an optimiser state dict, for `load_deepspeed_state`."""
    import shutil

    import torch.distributed as dist

    if dist.get_rank() == 0:
        shutil.rmtree(directory, ignore_errors=True)
    dist.barrier()
    eng = engine(module)
    eng.save_checkpoint(str(directory), tag="state", save_latest=False)
    dist.barrier()
    return {"deepspeed": DEEPSPEED_DIR, "zero_stage": eng.zero_optimization_stage(),
            "processes": dist.get_world_size()}  # fmt: skip


def is_deepspeed_state(optimizer_state: dict) -> bool:
    """Whether a checkpoint's optimiser entry is `save_deepspeed_state`'s (the state lies beside it)."""
    return "deepspeed" in optimizer_state


def load_deepspeed_state(module: nn.Module, checkpoint: Any, optimizer_state: dict) -> None:
    """Load the DeepSpeed checkpoint inside `checkpoint` (written with `optimizer_state`, by
    `save_deepspeed_state`) into the engine of `module`: parameters and each process's optimiser
    partition. The same ZeRO stage and number of processes as the run that wrote it."""
    import torch.distributed as dist

    eng = engine(module)
    written = (optimizer_state["zero_stage"], optimizer_state["processes"])
    if written != (eng.zero_optimization_stage(), dist.get_world_size()):
        raise UserError(f"--resume: {checkpoint} was written under ZeRO-{written[0]} by {written[1]} processes, "
                        f"this run is ZeRO-{eng.zero_optimization_stage()} on {dist.get_world_size()}: "
                        "resume as it ran")  # fmt: skip
    path, _ = eng.load_checkpoint(str(checkpoint / optimizer_state["deepspeed"]), tag="state",
                                  load_optimizer_states=True, load_lr_scheduler_states=False)  # fmt: skip
    if path is None:
        raise UserError(f"--resume: no DeepSpeed state in {checkpoint / optimizer_state['deepspeed']}")
