"""Routing with perfect knowledge: random or entropy pairs, labelled only by the gold-objective labellers,
or only by those of them with above-median (true) rationality -- what "ask the reliable labellers" could
at best buy. Not a method: the rationalities are the simulation's hidden ones.

    .venv/bin/python bench/active_experiments/route_oracle.py random,entropy
"""

import sys

import numpy as np

import rlhf.world.panel as P
from rlhf.active import ActiveConfig, Scorer, gold_test_set, run_one
from rlhf.world.report import resolve_world_model

seeds = 3
cfg = ActiveConfig(train="heads", seeds=seeds, max_labels=2000)
backbone = resolve_world_model("world", None, show_progress=False)
test = gold_test_set(1000)
scorer = Scorer(cfg, backbone)
orig = P.make_panel


def subset(keep):
    def mk(c):
        p = orig(c)
        labs = [l for l in p.labellers if keep(l, p)]
        for l in p.labellers:
            print(l.spec.name, l.spec.kind, round(l.spec.rationality, 2), keep(l, p), file=sys.stderr)
        return P.Panel(labs)

    return mk


def top(l, p):
    g = sorted([x.spec.rationality for x in p.labellers if x.spec.kind == "gold"])
    return l.spec.kind == "gold" and l.spec.rationality >= np.median(g)


for name, keep in [("goldonly", lambda l, p: l.spec.kind == "gold"), ("tophalf", top)]:
    P.make_panel = subset(keep)
    for method in sys.argv[1].split(","):
        curves = [run_one(method, s, cfg, scorer, test, log=lambda *a: None) for s in range(seeds)]
        m = np.mean([[row[1] for row in c] for c in curves], 0)
        print(name, method, " ".join(f"{n}:{a:.3f}" for (n, *_), a in zip(curves[0], m, strict=True)), flush=True)
