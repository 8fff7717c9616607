"""`accelerate launch` of an rlhf command with a shipped config, on CPUs, for the multi-process tests."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
CPU_RUN = ["run.progress=false", "run.device=cpu", "run.tensorboard=false"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(
    config: str,
    rlhf_args: list[str],
    sets: list[str] = (),
    timeout: int = 300,
    module: tuple[str, ...] = ("rlhf",),
) -> str:
    """`accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes 2 -m rlhf
    RLHF_ARGS --set ...` (CPU_RUN and `sets`), as docs/parallel.md says to run it; returns its stdout
    (fails the test with the end of its stderr when it exits non-zero). `module`: what `-m` runs, with its
    own arguments before RLHF_ARGS (a probe that runs rlhf inside, e.g. tests/algorithms/fsdp2_probe.py)."""
    accelerate = Path(sys.executable).parent / "accelerate"
    done = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(CONFIGS / f"{config}.yaml"), "--num_processes", "2",
         "--main_process_port", str(free_port()), "-m", *module, *rlhf_args,
         *[arg for s in [*CPU_RUN, *sets] for arg in ("--set", s)]],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
