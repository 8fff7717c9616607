"""`rlhf demo`: the whole pipeline on the bundled world in a few minutes, what the README runs first.

It builds the world when it is not cached, runs a short closed loop (simulated panel, active acquisition,
a helpful + harmless reward-model ensemble, PPO under the Safe RLHF constraint), trains a small sweep of
policies for the helpful-harmless frontier, and writes `report.html` and `summary.json`. The budget it
is sized for: at most 10 minutes and 4 GiB on 2 CPU cores (docs/tutorial.md gives the figures).
"""

from __future__ import annotations

import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# The demo's budget, as config overrides a user can see (`rlhf config show --set ...`) and change with
# --set; everything else is the library's defaults.
DEMO_SETTINGS = ("loop.rounds=3", "ppo.kl_coef=0.15")
DEMO_FRONTIER = ("frontier.harm_weights=[0.0,3.0]", "frontier.steps=20")
SUMMARY_FILE = "summary.json"


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and any children it waited for), in MiB."""
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
    return (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        * scale
    )


def summarise(rounds: list[dict[str, Any]], started: float) -> dict[str, Any]:
    first, last = rounds[0]["eval"], rounds[-1]["eval"]

    def change(key: str) -> dict[str, float | None]:  # gold figures exist on world prompts only
        return {"before": first.get(key), "after": last.get(key)}

    return {
        "gold_helpfulness": change("gold_helpfulness"),
        "harmful_share": change("harmful_share"),
        "gold_utility": change("gold_utility"),
        "constructive_share": {
            "before": first.get("risky_kind_shares", {}).get("constructive"),
            "after": last.get("risky_kind_shares", {}).get("constructive"),
        },
        "kl_to_initial": last["kl"],
        "labels_used": rounds[-1]["labels_total"],
        "rounds": len(rounds) - 1,
        "wall_seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_demo(
    out: str | Path,
    config: str | None = None,
    sets: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    frontier: bool = True,
    active_results: str | Path | None = None,
    show_progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Loop, frontier sweep, report; returns the summary written to `<out>/summary.json`."""
    from rlhf.config_root import load_root_config
    from rlhf.evaluation.frontier import run_frontier
    from rlhf.evaluation.report import FRONTIER_FILE, write_report
    from rlhf.io import write_json
    from rlhf.loop import LOOP_CONFIG, round_dir, run_loop

    started = time.monotonic()
    root = load_root_config(config, [*DEMO_SETTINGS, *DEMO_FRONTIER, *sets])
    out = Path(out).expanduser()
    if not resume and (out / SUMMARY_FILE).is_file() and (out / LOOP_CONFIG).is_file():
        log(f"replacing the finished demo in {out}")  # only a directory an earlier demo completed
        shutil.rmtree(out)
    result = run_loop(root, out, resume=resume, show_progress=show_progress, log=log)
    last = result.rounds[-1]["round"]
    if frontier and not (out / FRONTIER_FILE).is_file():
        log("frontier: policies between helpful and harmless, against the last round's reward model")
        run_frontier(root, root.frontier, round_dir(out, last) / "reward_model", out, show_progress, log)
    report = write_report(out, active_results)
    summary = {
        **summarise(result.rounds, started),
        "report": str(report),
        "settings": [*DEMO_SETTINGS, *sets],
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def format_summary(summary: dict[str, Any], out: Path) -> str:
    lines = [
        f"{title:22}{summary[key]['before']:.3f} -> {summary[key]['after']:.3f}"
        + (
            "   (initial policy -> after {} rounds)".format(summary["rounds"])
            if key == "gold_helpfulness"
            else ""
        )
        for key, title in (
            ("gold_helpfulness", "gold helpfulness"),
            ("harmful_share", "harmful share (risky)"),
        )
        if summary[key]["before"] is not None and summary[key]["after"] is not None
    ]
    return "\n".join([
        *lines,
        f"labels used {summary['labels_used']}, {summary['wall_seconds']:.0f} s, peak memory {summary['peak_rss_mb']:.0f} MiB",
        f"report:  {out / 'report.html'}",
        f"summary: {out / SUMMARY_FILE}",
    ])  # fmt: skip
