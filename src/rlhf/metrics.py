"""The one metrics logger every trainer uses, and progress bars with rate and ETA.

Each run writes `metrics.jsonl` (one JSON object per logged step: `{"step": 3, "time": 1.2, "loss/lm": 2.5}`)
and, when the `tensorboard` package is installed, TensorBoard events beside it (a missing package is said
once, with how to install it). Stats are one flat dict with slash keys, logged in one place per iteration.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

METRICS_FILE = "metrics.jsonl"


def _scalar(value: Any) -> float | int | str | None:
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, str)):
        return value
    value = float(value)
    # JSON has no NaN/inf; null keeps the line valid and the gap visible in plots.
    return value if math.isfinite(value) else None


class MetricsLogger:
    """Append metrics to `<log_dir>/metrics.jsonl`, and to TensorBoard when it is installed and wanted."""

    def __init__(self, log_dir: str | Path, tensorboard: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / METRICS_FILE
        self._file = self.path.open("a", encoding="utf-8")
        self._start = time.monotonic()
        self._writer = _tensorboard_writer(self.log_dir) if tensorboard else None

    def log(self, stats: Mapping[str, Any], step: int) -> None:
        row: dict[str, Any] = {"step": int(step), "time": round(time.monotonic() - self._start, 3)}
        row.update({key: _scalar(value) for key, value in stats.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, global_step=step)

    def log_histogram(self, name: str, values: Any, step: int, bins: int = 20) -> None:
        """A histogram as one JSONL line (`{"step", "histogram/<name>": {"edges", "counts"}}`) and in TensorBoard."""
        import numpy as np

        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        counts, edges = np.histogram(values, bins=bins)
        row = {
            "step": int(step),
            f"histogram/{name}": {"edges": edges.round(6).tolist(), "counts": counts.tolist()},
        }
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            self._writer.add_histogram(name, values, global_step=step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_tensorboard_missing_noted = False  # the "not installed" note is given once per process


def _tensorboard_writer(log_dir: Path) -> Any:
    global _tensorboard_missing_noted
    try:
        import tensorboard  # noqa: F401  (torch's SummaryWriter needs the package)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        # run.tensorboard defaults to true, so a user expects events: say why there are none
        if not _tensorboard_missing_noted:
            _tensorboard_missing_noted = True
            warnings.warn(
                "run.tensorboard is on but the tensorboard package is not installed, so only metrics.jsonl "
                "is written; install it with pip install -e '.[tensorboard]' (or pip install tensorboard), "
                "or --set run.tensorboard=false to silence this",
                stacklevel=3,
            )
        return None
    return SummaryWriter(log_dir=str(log_dir))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl file (or the one inside a log directory) back into a list of dicts."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def memory_stats(device: Any) -> dict[str, float]:
    """This process's peak memory so far, as metrics: `memory/peak_rss_mib` (resident set of the process,
    MiB, from getrusage) always, and on a CUDA `device` `memory/peak_allocated_gib` and
    `memory/peak_reserved_gib` (torch's caching allocator: tensors held, and memory taken from the
    driver, GiB). Each process reports its own; trainers log the main process's."""
    import resource

    import torch

    stats = {"memory/peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        stats["memory/peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        stats["memory/peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return stats


def progress(
    iterable: Iterable[T] | None = None,
    total: int | None = None,
    desc: str = "",
    enabled: bool = True,
    unit: str = "it",
) -> Iterator[T] | tqdm:
    """A progress bar showing count, rate and ETA; `enabled=False` returns a silent one."""
    return tqdm(
        iterable, total=total, desc=desc, disable=not enabled, unit=unit, dynamic_ncols=True, mininterval=0.5
    )
