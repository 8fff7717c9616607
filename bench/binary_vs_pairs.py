"""Reward models from binary labels vs from comparisons, at equal labelling time (issue #21).

Usage: .venv/bin/python bench/binary_vs_pairs.py [--out bench/binary_vs_pairs] [--hours 0.5,1,2,4] [--seeds 0,1]

Two pools of labels on the bundled world's corpus responses, from the default simulated panel: comparisons
(`rlhf world export pairs --judge panel`, each with the labeller's seconds) and binary thumbs up/down
(`rlhf.world.binary`: the panel's own binary answer, `Labeller.judge`, with its seconds). For each budget of
labelling hours and each seed (the reward model's and the pools' draw), the first rows of each pool whose
seconds fit in the budget train a reward model with the default recipe (`rlhf reward train`, world
backbone); each model is scored against the hidden gold ordering on 2,000 new gold-ordered corpus pairs.
Writes OUT.json (every run) and OUT.png (gold accuracy against labelling hours, both curves).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from rlhf.algorithms.reward import RewardConfig, evaluate_file, train
from rlhf.config import RunConfig
from rlhf.config_root import load_root_config
from rlhf.io import iter_jsonl, write_jsonl
from rlhf.world.binary import binary_rows
from rlhf.world.export import export


def within(rows: list[dict], seconds: float) -> list[dict]:
    """The first rows whose labelling seconds add up to at most `seconds`."""
    kept, spent = [], 0.0
    for row in rows:
        spent += row["seconds"]
        if spent > seconds:
            break
        kept.append(row)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/binary_vs_pairs")
    parser.add_argument("--hours", default="0.5,1,2,4")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--pool", type=int, default=1600, help="labels of each kind drawn per seed")
    args = parser.parse_args()
    hours = [float(h) for h in args.hours.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load_root_config()
    run_cfg = RunConfig(device="cpu", tensorboard=False, progress=False)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export(cfg, "pairs", tmp / "gold_test.jsonl", 2000, seed=99, judge="gold")
        for seed in seeds:
            export(cfg, "pairs", tmp / "pairs_pool.jsonl", args.pool, seed=1000 + seed, judge="panel")
            pools = {
                "comparisons": [row for _, row in iter_jsonl(tmp / "pairs_pool.jsonl")],
                "binary": binary_rows(cfg, args.pool, seed=2000 + seed),
            }
            for kind, pool in pools.items():
                for h in hours:
                    rows = within(pool, h * 3600)
                    if len(rows) == len(pool):
                        raise SystemExit(
                            f"the {kind} pool ({len(pool)} rows) is spent before {h} hours: raise --pool"
                        )
                    data = tmp / f"{kind}_{seed}_{h}.jsonl"
                    write_jsonl(data, rows)
                    model = tmp / f"rm_{kind}_{seed}_{h}"
                    train(RewardConfig(data=str(data), gold_eval=False), replace(run_cfg, seed=seed), model,
                          world=cfg.world, show_progress=False)  # fmt: skip
                    gold = evaluate_file(str(model), str(tmp / "gold_test.jsonl"), device="cpu")
                    runs.append({"kind": kind, "seed": seed, "hours": h, "labels": len(rows),
                                 "gold_accuracy": gold["eval/accuracy"]})  # fmt: skip
                    print(json.dumps(runs[-1]), flush=True)
    summary = {
        kind: {h: statistics.mean(r["gold_accuracy"] for r in runs if r["kind"] == kind and r["hours"] == h)
               for h in hours}
        for kind in ("comparisons", "binary")
    }  # fmt: skip
    Path(args.out + ".json").write_text(json.dumps({"runs": runs, "mean_gold_accuracy": summary}, indent=2))
    plot(summary, runs, Path(args.out + ".png"))
    print(json.dumps(summary, indent=2))


def plot(summary: dict, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("comparisons", "o"), ("binary", "s")):
        hours = sorted(summary[kind])
        ax.plot(hours, [summary[kind][h] for h in hours], marker=marker, label=f"{kind} (mean of seeds)")
        mine = [r for r in runs if r["kind"] == kind]
        ax.scatter([r["hours"] for r in mine], [r["gold_accuracy"] for r in mine], marker=marker, alpha=0.3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelling hours (simulated panel)")
    ax.set_ylabel("gold accuracy on 2,000 new pairs")
    ax.set_title("Reward model: binary labels vs comparisons")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
