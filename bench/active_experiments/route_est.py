"""Routing with estimated reliability (Raykar et al. 2010 style, no overlap needed): each round, every
labeller's rationality is the slope of a 1-D Bradley-Terry fit of their labels on the current reward
model's score differences (MAP, prior N(1, 1)); the next batch goes only to the top half of the labellers
by that estimate ("map") or by a draw from its Laplace posterior ("thompson").

    .venv/bin/python bench/active_experiments/route_est.py random,entropy map,thompson 3
"""

import sys

import numpy as np
from scipy.optimize import minimize

from rlhf.active import ActiveConfig, Labels, Scorer, gold_test_set, pair_texts
from rlhf.feedback.acquisition import METHODS, acquire, preference_probs
from rlhf.world.corpus import sample_pairs
from rlhf.world.panel import PanelConfig, make_panel
from rlhf.world.report import resolve_world_model


def fit_beta(x, n_l, lab, prior=1.0, scale=1.0):
    """per-labeller slope of P(chosen)=sigmoid(beta_l * x), x = s_chosen - s_rejected; MAP + Laplace sd"""
    betas, sds = np.zeros(n_l), np.zeros(n_l)
    for lab_i in range(n_l):
        xl = x[lab == lab_i]

        def f(b):
            z = b[0] * xl
            nll = np.logaddexp(0, -z).sum() + 0.5 * ((b[0] - prior) / scale) ** 2
            g = (-xl / (1 + np.exp(z))).sum() + (b[0] - prior) / scale**2
            return nll, np.array([g])

        r = minimize(f, np.array([prior]), jac=True, method="L-BFGS-B")
        b = r.x[0]
        p = 1 / (1 + np.exp(-b * xl))
        betas[lab_i] = b
        sds[lab_i] = 1 / np.sqrt((xl**2 * p * (1 - p)).sum() + 1 / scale**2)
    return betas, sds


def run(method, seed, cfg, scorer, test, route, keep_frac=0.5):
    pool = sample_pairs(cfg.pool_size, 10_000 + seed)
    texts, ab = pair_texts(pool)
    panel = make_panel(PanelConfig(seed=seed))
    L = len(panel)
    label_rng = np.random.default_rng([seed, 1])
    pick_rng = np.random.default_rng([seed, 2, METHODS.index(method)])
    route_rng = np.random.default_rng([seed, 3])
    labelled = list(np.random.default_rng([seed, 0]).permutation(len(pool))[: cfg.initial_labels])
    labels = Labels()
    labidx = []
    allowed = np.arange(L)

    def label(indices):
        for i in indices:
            prompt, a, b = pool[i]
            j = int(label_rng.integers(L))
            if route is not None:
                j = int(allowed[route_rng.integers(len(allowed))])
            lab = panel.labellers[j]
            ans = lab.compare(prompt, a, b, label_rng)
            first, second = (ab[i, 0], ab[i, 1]) if ans.choice != 1 else (ab[i, 1], ab[i, 0])
            labels.rows.append((pool[i], ans.choice, lab.spec.name))
            labels.chosen.append(first)
            labels.rejected.append(second)
            labels.tie.append(ans.choice is None)
            labels.labeller.append(lab.spec.name)
            labels.seconds.append(ans.seconds)
            labidx.append(j)

    label(labelled)
    tp, tg = test
    tt, tab = pair_texts(tp)
    curve = []
    while True:
        n = len(labels.rows)
        scorer.fit(texts, labels, np.ones(n), seed * 100_003 + n)
        scores, hidden = scorer.score(texts)
        mean = scorer.score(tt)[0].mean(1)
        acc = float((np.where(mean[tab[:, 0]] > mean[tab[:, 1]], 0, 1) == tg).mean())
        curve.append([n, acc])
        if route is not None:
            s = scores.mean(1)
            c, r, t = labels.arrays()
            li = np.array(labidx)
            keep = ~t
            x = (s[c] - s[r])[keep]
            x = x / x.std()
            betas, sds = fit_beta(x, L, li[keep])
            if route == "thompson":
                draw = betas + sds * route_rng.standard_normal(L)
            else:
                draw = betas
            k = max(1, int(round(keep_frac * L)))
            allowed = np.argsort(-draw)[:k]
            if seed == 0:
                print(
                    n,
                    "kinds kept",
                    sorted(
                        panel.labellers[a].spec.kind + f"{panel.labellers[a].spec.rationality:.1f}"
                        for a in allowed
                    ),
                    file=sys.stderr,
                )
        if n >= cfg.max_labels:
            return curve
        rest = np.setdiff1d(np.arange(len(pool)), labelled)
        k = min(cfg.batch_labels, cfg.max_labels - n, len(rest))
        if method == "random":
            probs, emb, done = np.full((len(rest), 1), 0.5), None, None
        else:
            probs = preference_probs(scores[ab[rest, 0]], scores[ab[rest, 1]])
            emb = done = None
        picks, _ = acquire(method, probs, k, pick_rng)
        chosen = rest[picks]
        labelled.extend(chosen.tolist())
        label(chosen)


if __name__ == "__main__":
    seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    cfg = ActiveConfig(train="heads", seeds=seeds, max_labels=2000)
    backbone = resolve_world_model("world", None, show_progress=False)
    test = gold_test_set(1000)
    scorer = Scorer(cfg, backbone)
    for route in sys.argv[2].split(","):
        route = None if route == "none" else route
        for method in sys.argv[1].split(","):
            curves = [run(method, s, cfg, scorer, test, route) for s in range(seeds)]
            m = np.mean([[a for _, a in c] for c in curves], 0)
            print(route, method, " ".join(f"{n}:{a:.3f}" for (n, *_), a in zip(curves[0], m, strict=True)), flush=True)
