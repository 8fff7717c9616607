"""The offline trainers' shared loop (`rlhf.train_loop`) against plain torch: gradient accumulation, the
clipping of the accumulated gradient, the stop on a NaN loss, resume, logging, and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlhf.config import RunConfig
from rlhf.errors import NonFiniteError
from rlhf.metrics import read_metrics
from rlhf.models import parameter_counts
from rlhf.train_loop import LoopConfig, make_accelerator, train_loop
from rlhf.training import epoch_batches

RUN = RunConfig(seed=0, device="cpu", tensorboard=False, progress=False)


def toy_batches(n: int, size: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n regression batches of `size` rows: x (size, 4), y (size, 1)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 4, generator=g), torch.randn(size, 1, generator=g)) for _ in range(n)]


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 1)


def mse(model, batch):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"loss/mse": float(loss.detach())}


def run_loop(tmp_path, batches, loop: LoopConfig, model=None, optimizer=None, **kwargs):
    model = model if model is not None else toy_model()
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.5)
    accelerator = make_accelerator(RUN, loop.grad_accum)
    kwargs.setdefault("checkpoint", tmp_path / "checkpoint")
    kwargs.setdefault("log_dir", tmp_path / "logs")
    return train_loop(
        accelerator, model, optimizer, batches, kwargs.pop("loss_fn", mse), loop,
        tensorboard=False, show_progress=False, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.05])
def test_accumulating_k_batches_is_one_step_on_their_union(tmp_path, max_grad_norm):
    """2 accumulated batches of 3 rows = 1 batch of their 6 rows = one SGD step on the mean loss of the 6
    (computed here with plain torch). Without the division by k the step would be twice as long; with
    clipping at each batch instead of on the accumulated gradient (0.05 is far below its norm of ~1)
    it would point elsewhere."""
    batches = toy_batches(4, 3)
    first, second = epoch_batches(batches, 0, seed=0, rank=0, world=1)[:2]  # what the loop takes first
    union = (torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]))

    reference = toy_model()
    loss, _ = mse(reference, union)
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(reference.parameters(), max_grad_norm)
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.5 * p.grad

    common = dict(epochs=1, max_steps=1, lr_schedule="constant", max_grad_norm=max_grad_norm, seed=0)
    accumulated = run_loop(tmp_path / "k", batches, LoopConfig(batch_size=3, grad_accum=2, **common))
    whole = run_loop(tmp_path / "one", [union], LoopConfig(batch_size=6, grad_accum=1, **common))
    assert accumulated.step == whole.step == 1 and accumulated.finished
    for model in (accumulated.model, whole.model):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
    moved = sum(
        float((p - q).detach().abs().sum())
        for p, q in zip(reference.parameters(), toy_model().parameters(), strict=True)
    )
    assert moved > 1e-3  # the step did something


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    calls = []

    def poisoned(model, batch):
        calls.append(1)
        loss, stats = mse(model, batch)
        return (loss * float("nan") if len(calls) == 3 else loss), stats

    loop = LoopConfig(
        epochs=5,
        max_steps=5,
        batch_size=3,
        lr_schedule="constant",
        eval_every=1,
        log_every=1,
        loss_name="toy loss",
    )
    with pytest.raises(NonFiniteError, match="toy loss is nan at step 2; training stopped"):
        run_loop(tmp_path / "nan", toy_batches(4, 3), loop, loss_fn=poisoned)
    saved = torch.load(tmp_path / "nan" / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert saved["state"]["step"] == 2
    assert [row["step"] for row in read_metrics(tmp_path / "nan" / "logs")] == [1, 2]
    # the checkpoint holds the model after the 2 good steps, untouched by the NaN
    two = run_loop(tmp_path / "two", toy_batches(4, 3), LoopConfig(**{**loop.__dict__, "max_steps": 2}))
    for name, value in two.model.state_dict().items():
        torch.testing.assert_close(saved["model"][name], value)


def test_resume_continues_the_step_count_and_equals_an_uninterrupted_run(tmp_path):
    """AdamW with warm-up and cosine decay, and a loss that draws from the loop's generator: a run stopped
    at step 3 (not an evaluation step: the stop writes its own checkpoint) and resumed in fresh objects
    ends with the same weights, learning rates and evaluation state as one that never stopped."""
    batches = toy_batches(5, 4)

    def run(out, resume=False, stop=0):
        model = toy_model()
        generator = torch.Generator().manual_seed(7)

        def noisy(model, batch):  # a bootstrap-like weight per row, from the checkpointed generator
            x, y = batch
            weights = torch.rand(len(x), 1, generator=generator) * 2
            loss = (weights * (model(x) - y) ** 2).mean()
            return loss, {"loss/mse": float(loss.detach())}

        def evaluate(model, step, state):
            state["evaluations"] += 1
            return {
                "eval/weight_norm": float(model.weight.detach().norm()),
                "eval/weights": model.weight.detach().numpy(),
            }

        loop = LoopConfig(epochs=2, max_steps=6, batch_size=4, lr_schedule="cosine", warmup_ratio=0.34,
                          eval_every=2, stop_after_steps=stop, log_every=1)  # fmt: skip
        return run_loop(
            out, batches, loop, model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=0.1),
            loss_fn=noisy, evaluate=evaluate, generator=generator, state={"evaluations": 0}, resume=resume,
        )  # fmt: skip

    full = run(tmp_path / "full")
    stopped = run(tmp_path / "resumed", stop=3)
    assert (stopped.step, stopped.finished) == (3, False)
    resumed = run(tmp_path / "resumed", resume=True)
    assert (resumed.step, resumed.finished) == (full.step, full.finished) == (6, True)
    assert resumed.state["evaluations"] == full.state["evaluations"] == 3  # steps 2, 4, 6
    for p, q in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert set(resumed.metrics) == {"eval/weight_norm"}  # arrays go to histograms, not the metrics

    rows = {name: read_metrics(tmp_path / name / "logs") for name in ("full", "resumed")}
    train_rows = {name: [r for r in rs if "loss/mse" in r] for name, rs in rows.items()}
    assert [r["step"] for r in train_rows["resumed"]] == [1, 2, 3, 4, 5, 6]  # the count goes on
    for a, b in zip(train_rows["full"], train_rows["resumed"], strict=True):
        assert a["optim/lr"] == pytest.approx(b["optim/lr"]) and a["loss/mse"] == pytest.approx(b["loss/mse"])
        assert (
            a["parallel/local_parameters"] == a["parallel/parameters"] == 5
        )  # 4 weights + 1 bias, unsharded
        assert a["memory/peak_rss_mib"] > 0
    assert [r["step"] for r in rows["full"] if "histogram/eval/weights" in r] == [2, 4, 6]


def test_after_step_runs_once_per_optimiser_step(tmp_path):
    seen = []
    loop = LoopConfig(epochs=1, max_steps=3, batch_size=3, grad_accum=2)
    result = run_loop(tmp_path, toy_batches(6, 3), loop, after_step=lambda model: seen.append(model))
    assert result.step == 3 and len(seen) == 3 and all(m is result.model for m in seen)


def test_parameter_counts_of_sharded_parameters():
    """Unsharded: local = total, tied weights once. A DeepSpeed ZeRO-3 parameter holds its partition in
    `ds_tensor` and its full size in `ds_numel` (an empty placeholder tensor meanwhile)."""
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight  # tied: 40 parameters, not 80
    assert parameter_counts(model) == (40, 40)
    zero3 = nn.Linear(8, 8, bias=False)
    zero3.weight.data = torch.empty(0)
    zero3.weight.ds_numel, zero3.weight.ds_tensor = 64, torch.empty(32)
    assert parameter_counts(zero3) == (32, 64)


def _fsdp2_counts(rank: int, world: int, init_file: str, out: list) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
        fully_shard(model)
        out[rank] = parameter_counts(model)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_parameter_counts_under_fsdp2_two_processes(tmp_path):
    """FSDP2 (torch's fully_shard, gloo on CPU) on 2 processes: each holds its shard of every parameter,
    the two shards add up to the 44 parameters (4*6 + 6 + 6*2 + 2), and both report that total."""
    import torch.multiprocessing as mp

    manager = mp.Manager()
    out = manager.list([None, None])
    mp.spawn(_fsdp2_counts, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    (local0, total0), (local1, total1) = out
    assert total0 == total1 == 44
    assert local0 + local1 == 44 and 0 < local1 <= local0 < 44


def test_resume_refuses_a_checkpoint_of_the_other_layout(tmp_path):
    """A sharded run's checkpoint keys Adam's state by parameter name (full state dicts), a DDP run's by
    index: each resumes only as it ran, with a message rather than a KeyError deep in torch."""
    from rlhf.errors import UserError
    from rlhf.training import load_trainer_checkpoint, save_trainer_checkpoint

    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    by_name = {"state": {}, "param_groups": [{"lr": 0.5, "params": ["weight", "bias"]}]}
    save_trainer_checkpoint(tmp_path / "c", model.state_dict(), by_name, scheduler, torch.Generator(), {})
    with pytest.raises(UserError, match="written under FSDP2"):
        load_trainer_checkpoint(tmp_path / "c", model, optimizer, scheduler, torch.Generator())
