"""Data parallelism and sharding of a trained model under `accelerate launch`.

Accelerate prepares the model as the launch config says: DDP (gradients all-reduced in backward) by
default, FSDP2 (parameters, gradients and optimiser state sharded; `torch.distributed.fsdp.fully_shard`)
under an FSDP config on GPUs. On CPUs Accelerate turns an FSDP config into plain data parallelism, so
`prepare` applies torch's `fully_shard` itself there (every transformer block, then the root: what
Accelerate does on GPUs) and the same command shards on both.

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


def shards(accelerator: Any) -> bool:
    """Whether `prepare` will shard: Accelerate does (FSDP2 on GPUs), or the launch asks for FSDP2 and
    there are several processes. Raises UserError for a launch config rlhf does not run (DeepSpeed)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise UserError(
            "this trainer does not run under DeepSpeed; launch with configs/accelerate/fsdp2.yaml to shard"
        )
    return accelerator.is_fsdp2 or (accelerator.num_processes > 1 and fsdp2_requested())


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
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """`module` prepared as the launch says, and the optimiser `make_optimizer()` builds over the
    parameters as prepared (sharded ones are new tensors). Returns (prepared module, optimiser); the
    unwrapped module stays `module` itself (DDP wraps it, FSDP2 changes it in place).

    `units` are sharded on their own under FSDP2 (see `shard`); `forward_methods` are methods of `module`
    that call its submodules directly (generation) and so must run FSDP2's forward hooks too."""
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
    as generation needs them anyway."""
    from torch.distributed.fsdp import FSDPModule

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
    when sharded. Every process must call it (FSDP2 all-gathers)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_options(cpu_offload=True))


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
