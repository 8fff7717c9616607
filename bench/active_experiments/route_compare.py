"""Gold accuracy at equal labelling hours across `rlhf bench active` runs (e.g. a clean and a noisy panel).

Each seed's curve is interpolated linearly in labelling seconds (no extrapolation: hours beyond a seed's
last point are left out), then averaged over seeds with a 95% t-interval. Also: the hours each method
needs to reach a bar (the first run's random accuracy at its last point unless --bar), per seed curve.

    python bench/active_experiments/route_compare.py bench/active_route.json [more.json ...] \
        --hours 2,4,6,8,10 --out bench/active_route_compare.json
"""

import argparse
import json
from pathlib import Path

import numpy as np

from rlhf.active import labels_to_reach, mean_interval


def at_hours(run: list[list[float]], hours: float) -> float:
    seconds = np.array([row[2] for row in run])
    accuracy = np.array([row[1] for row in run])
    if hours * 3600 > seconds[-1] + 1e-6 or hours * 3600 < seconds[0] - 1e-6:
        return float("nan")
    return float(np.interp(hours * 3600, seconds, accuracy))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--hours", default="2,4,6,8,10")
    parser.add_argument("--bar", type=float, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    grid = [float(h) for h in args.hours.split(",")]
    out: dict = {"hours": grid, "runs": {}}
    first = json.loads(Path(args.runs[0]).read_text())
    bar = args.bar if args.bar is not None else first["random_accuracy"]
    out["bar"] = bar
    out["bar_hours_random"] = first.get("random_seconds", float("nan")) / 3600
    for path in args.runs:
        data = json.loads(Path(path).read_text())
        for method, runs in data["per_seed"].items():
            rows = []
            for h in grid:
                values = np.array([at_hours(run, h) for run in runs])
                values = values[np.isfinite(values)]
                mean, half = mean_interval(values) if len(values) else (float("nan"), 0.0)
                rows.append({"hours": h, "accuracy": mean, "interval95": half, "seeds": int(len(values))})
            mean_seconds = np.mean([[row[2] for row in run] for run in runs], axis=0)
            mean_accuracy = np.mean([[row[1] for row in run] for run in runs], axis=0)
            reach = labels_to_reach([[s, a] for s, a in zip(mean_seconds, mean_accuracy, strict=True)], bar)
            key = f"{Path(path).stem}/{method}"
            out["runs"][key] = {"at_hours": rows, "hours_to_bar": None if reach is None else reach / 3600}
            line = " ".join(f"{r['accuracy']:.3f}±{r['interval95']:.3f}({r['seeds']})" for r in rows)
            hours = "never" if reach is None else f"{reach / 3600:.1f} h"
            print(f"{key:45s} {line}  to bar {bar:.3f}: {hours}")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
