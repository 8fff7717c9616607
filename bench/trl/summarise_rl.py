"""Median episodes/second per set-up over the rounds of compare_rl.sh, and ours / TRL.
Usage: python bench/trl/summarise_rl.py OUT_DIR  (writes OUT_DIR/summary.json and prints a table)."""

import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
ours: dict[str, list[float]] = {}
for path in sorted(out.glob("ours_*.json")):
    for run in json.loads(path.read_text())["runs"]:
        if run["precision"] == "fp32":
            ours.setdefault(run["variant"], []).append(run["episodes_per_second"])
trl = {
    name: [json.loads(p.read_text())["episodes_per_second"] for p in sorted(out.glob(f"trl_{name}_[0-9]*.json"))]
    for name in ("ppo", "rloo", "grpo", "grpo_beta")
}
pairs = {  # our set-up -> TRL's set-up doing the same work
    "ppo": "ppo",
    "rloo": "rloo",
    "grpo (KL term, reference)": ("grpo", "grpo_beta"),
    "grpo_nokl (no KL term, no reference)": ("grpo_nokl", "grpo"),
}
rows = {}
for label, pair in pairs.items():
    mine, theirs = (pair, pair) if isinstance(pair, str) else pair
    if ours.get(mine) and trl.get(theirs):
        a, b = statistics.median(ours[mine]), statistics.median(trl[theirs])
        rows[label] = {"ours": a, "ours_runs": ours[mine], "trl": b, "trl_runs": trl[theirs], "ratio": a / b}
        print(f"{label:40s} ours {a:6.1f}  TRL {b:6.1f}  {a / b:.2f}x   (ours {ours[mine]}, TRL {trl[theirs]})")
(out / "summary.json").write_text(json.dumps(rows, indent=2))
