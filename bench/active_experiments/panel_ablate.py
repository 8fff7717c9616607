"""What limits random's curve: `rlhf bench active --train heads` random pairs with one panel setting changed.

    .venv/bin/python bench/active_experiments/panel_ablate.py default,nolen,nomistake,nospecial,rational5 3

Prints the seed-mean gold accuracy at each label count (3 seeds) for the default panel, no length bias,
no random mistakes, no special (spammer, length-judging, refusal) labellers, and rationality 5 for all.
Figures in docs/active.md ("What else we measured").
"""

import sys

import numpy as np

import rlhf.world.panel as P
from rlhf.active import ActiveConfig, Scorer, gold_test_set, run_one
from rlhf.world.report import resolve_world_model

variants = {
    "default": {},
    "nolen": {"length_bias": 0.0},
    "nomistake": {"mistake_rate": 0.0},
    "nospecial": {"n_spammers": 0, "n_length_biased": 0, "n_refusal_preferring": 0},
    "rational5": {"rationality_mean": 5.0},
}
names = sys.argv[1].split(",")
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cfg = ActiveConfig(train="heads", seeds=seeds, max_labels=2000)
backbone = resolve_world_model("world", None, show_progress=False)
test = gold_test_set(1000)
scorer = Scorer(cfg, backbone)
Orig = P.PanelConfig
for name in names:
    kw = variants[name]
    P.PanelConfig = lambda seed, _kw=kw: Orig(seed=seed, **_kw)
    curves = [run_one("random", s, cfg, scorer, test, log=lambda *a: None) for s in range(seeds)]
    m = np.mean([[row[1] for row in c] for c in curves], 0)
    print(name, " ".join(f"{n}:{a:.3f}" for (n, *_), a in zip(curves[0], m, strict=True)), flush=True)
P.PanelConfig = Orig
