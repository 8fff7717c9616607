"""The metrics logger writes one JSON object per logged step, readable back."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.errors import NonFiniteError, check_finite
from rlhf.metrics import MetricsLogger, progress, read_metrics


def test_jsonl_lines_read_back(tmp_path):
    with MetricsLogger(tmp_path / "logs", tensorboard=False) as logger:
        logger.log({"loss/policy": 0.5, "objective/kl": torch.tensor(0.25)}, step=1)
        logger.log({"loss/policy": 0.25, "count": 3, "bad": float("nan")}, step=2)
    rows = read_metrics(tmp_path / "logs")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss/policy"] == 0.5 and rows[0]["objective/kl"] == 0.25
    assert rows[1]["count"] == 3
    assert rows[1]["bad"] is None  # NaN cannot be JSON; it is kept as null
    assert all("time" in r for r in rows)


def test_logger_appends_across_instances(tmp_path):
    for step in range(3):
        with MetricsLogger(tmp_path, tensorboard=False) as logger:
            logger.log({"x": step}, step)
    assert [r["x"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2]


def test_progress_iterates_everything():
    assert list(progress(range(5), enabled=False)) == [0, 1, 2, 3, 4]


def test_check_finite():
    assert check_finite(1.5, "loss") == 1.5
    with pytest.raises(NonFiniteError, match="loss is nan at step 7"):
        check_finite(math.nan, "loss", step=7)
    with pytest.raises(NonFiniteError, match="reward is inf"):
        check_finite(math.inf, "reward")


def test_missing_tensorboard_is_said_once_with_how_to_install(tmp_path, monkeypatch):
    import sys
    import warnings

    import rlhf.metrics

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    monkeypatch.setattr(rlhf.metrics, "_tensorboard_missing_noted", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count our own once-only, not Python's
        for run in ("a", "b"):
            with MetricsLogger(tmp_path / run) as logger:  # tensorboard=True, the default
                logger.log({"x": 1.0}, step=0)
        with MetricsLogger(tmp_path / "c", tensorboard=False):
            pass
    notes = [str(w.message) for w in caught]
    assert len(notes) == 1 and "pip install -e '.[tensorboard]'" in notes[0], notes
    assert [row["x"] for row in read_metrics(tmp_path / "b")] == [1.0]  # metrics.jsonl still written


def test_memory_stats_follow_the_process_peak():
    """On CPU only the resident-set peak, in MiB. The peak is a high-water mark that earlier tests (or
    the parent process) may have set: allocate enough to pass it by 256 MiB, and it rises by that much."""
    import os

    from rlhf.metrics import memory_stats

    before = memory_stats("cpu")
    assert set(before) == {"memory/peak_rss_mib"}
    with open("/proc/self/statm") as statm:  # the resident pages now
        current_mib = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    extra_mib = max(0.0, before["memory/peak_rss_mib"] - current_mib) + 256
    block = torch.ones(int(extra_mib * 2**20 / 4))  # float32, every page written
    rise = memory_stats("cpu")["memory/peak_rss_mib"] - before["memory/peak_rss_mib"]
    assert 200 < rise < 400, rise  # about 256 MiB: MiB, not kB or bytes
    del block
