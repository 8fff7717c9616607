"""Binary (thumbs up/down) labels on the bundled world, for KTO and reward models from binary feedback:
a labeller of the simulated panel judges one response (`Labeller.judge`: the rating model with one cut
at the labeller's own bar, with the panel's rationality, mistakes, spammers and length bias, and the
binary answer's own, shorter time).

Run as `python -m rlhf.world.binary --out FILE [--n N] [--seed S] [--model DIR]` (scripts/kto_world.sh).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def binary_rows(cfg: Any, n: int, seed: int, model: str | None = None) -> list[dict[str, Any]]:
    """Up to `n` rows {prompt, completion, label, objective, labeller_id, seconds}: one sample of `model`
    per world prompt (a corpus response without a model), judged by a labeller of the panel drawn at
    random. A response the same labeller already judged is left out: asked twice, a noisy labeller may
    contradict itself, which the data readers refuse as a bad row."""
    from rlhf.world.export import _responses
    from rlhf.world.panel import make_panel

    rng = np.random.default_rng(seed)
    panel = make_panel(cfg.panel)
    rows, seen = [], set()
    for sample in _responses(cfg, n, seed, model):
        labeller = panel.labellers[int(rng.integers(len(panel.labellers)))]
        key = (sample["prompt"], sample["response"], labeller.spec.name)
        if key in seen:
            continue
        seen.add(key)
        answer = labeller.judge(sample["prompt"], sample["response"], rng)
        rows.append({"prompt": sample["prompt"], "completion": sample["response"], "label": answer.good,
                     "objective": "helpful", "labeller_id": labeller.spec.name, "seconds": answer.seconds})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    from rlhf.config_root import load_root_config
    from rlhf.io import write_jsonl

    parser = argparse.ArgumentParser(
        description="Write the world's binary labels (the simulated panel's) as JSONL."
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", default=None, help="Causal LM to sample ('world'); default: corpus responses."
    )
    args = parser.parse_args(argv)
    rows = binary_rows(load_root_config(), args.n, args.seed, args.model)
    write_jsonl(args.out, rows)
    up = sum(r["label"] for r in rows)
    print(f"wrote {len(rows)} binary rows to {args.out}: {up} thumbs up, {len(rows) - up} thumbs down")


if __name__ == "__main__":
    main()
