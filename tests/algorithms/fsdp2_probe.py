"""`accelerate launch ... -m tests.algorithms.fsdp2_probe OUT LOSS_FN -- RLHF_ARGS`: `python -m rlhf
RLHF_ARGS` in each process, which writes to OUT/probe_<rank>.json what it held and sent: the most bytes
of live parameters (the storage of every `nn.Parameter` reachable by the garbage collector, a DTensor's
local shard only) seen when a training batch's loss is computed, and the reduce-scatters issued
(FSDP2 reduce-scatters the gradients of each unit with `torch.distributed.reduce_scatter_single`).
LOSS_FN is the trainer's batch loss, `module:function`, wrapped to take the measurement."""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist


def live_parameter_bytes() -> int:
    """Bytes of the storages of every live parameter (shared storages once; meta tensors hold none)."""
    from torch.distributed.tensor import DTensor

    storages: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated `reduce_op` warns
        warnings.simplefilter("ignore")
        parameters = [obj for obj in gc.get_objects() if isinstance(obj, torch.nn.Parameter)]
    for p in parameters:
        if p.device.type != "meta":  # (the weightless copy `parallel.whole` builds from)
            storage = (p.to_local() if isinstance(p, DTensor) else p).untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(n for ptr, n in storages.items() if ptr)


def main() -> int:
    out, loss_spec, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: OUT LOSS_FN -- RLHF_ARGS"
    record = {"max_parameter_bytes": 0, "reduce_scatters": 0}
    module_name, name = loss_spec.split(":")
    module = importlib.import_module(module_name)
    loss_fn = getattr(module, name)

    def measured_loss(*a, **k):
        if torch.is_grad_enabled():  # a training batch, not an evaluation
            record["max_parameter_bytes"] = max(record["max_parameter_bytes"], live_parameter_bytes())
        return loss_fn(*a, **k)

    reduce_scatter = dist.reduce_scatter_single

    def counted_reduce_scatter(*a, **k):
        record["reduce_scatters"] += 1
        return reduce_scatter(*a, **k)

    setattr(module, name, measured_loss)
    dist.reduce_scatter_single = counted_reduce_scatter
    from rlhf.cli import main as rlhf_main

    if os.environ.get("PROBE_DUMP"):
        import faulthandler

        faulthandler.dump_traceback_later(int(os.environ["PROBE_DUMP"]), exit=True)

    code = rlhf_main(args)
    Path(out, f"probe_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main())
