"""Binary (thumbs up/down) labels on the bundled world, for KTO and reward models from binary feedback.

STAND-IN, to be replaced: until the simulated panel answers a binary question itself (issue #21, the
labelling side adds it to `rlhf.world.panel`), a labeller's thumbs up here is its own 1-7 rating
(`Labeller.rate`: an ordered logit on the gold utility with the panel's rationality, mistakes, spammers
and length bias) at `THUMBS_UP` or above, and takes the rating's time. Swap `thumbs_up` for the panel's
binary answer when it lands; the rows keep their format.

Run as `python -m rlhf.world.binary --out FILE [--n N] [--seed S] [--model DIR]` (scripts/kto_world.sh).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

THUMBS_UP = 5  # ratings 5-7 ("good" and better) are a thumbs up, 1-4 a thumbs down


def thumbs_up(labeller: Any, prompt: str, response: str, rng: np.random.Generator) -> tuple[bool, float]:
    """(desirable?, seconds): the labeller's helpfulness rating of `response` is at least `THUMBS_UP`."""
    rating = labeller.rate(prompt, response, rng)
    return rating.score >= THUMBS_UP, rating.seconds


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
        label, seconds = thumbs_up(labeller, sample["prompt"], sample["response"], rng)
        rows.append({"prompt": sample["prompt"], "completion": sample["response"], "label": label,
                     "objective": "helpful", "labeller_id": labeller.spec.name, "seconds": seconds})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    from rlhf.config_root import load_root_config
    from rlhf.io import write_jsonl

    parser = argparse.ArgumentParser(description="Write the world's binary labels (stand-in panel) as JSONL.")
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
