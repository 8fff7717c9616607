"""The labeller-reliability model: recovers known rationalities and biases; ranks the panel's spammers lowest."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.feedback.reliability import fit_reliability, flag_unreliable, label_weights


def simulate(betas, biases, n_items=150, n_labels=3000, seed=0):
    """Labels from the model itself: random pairs of items, random labellers."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(n_items)
    left, right = rng.integers(0, n_items, (2, n_labels))
    keep = left != right
    left, right = left[keep], right[keep]
    lab = rng.integers(0, len(betas), len(left))
    z = np.asarray(betas)[lab] * (u[left] - u[right]) + np.asarray(biases)[lab]
    chose_left = rng.random(len(left)) < 1 / (1 + np.exp(-z))
    return left, right, lab, chose_left, u


def test_recovers_rationality_order_and_position_bias():
    betas, biases = [3.0, 2.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 1.0]
    left, right, lab, y, u = simulate(betas, biases)
    fit, stats = fit_reliability(left, right, lab, y, len(u), len(betas))
    beta = fit["rationality"]
    assert stats["reliability/converged"] == 1.0
    assert beta[0] > beta[1] > beta[2] > beta[3] and abs(beta[3]) < 0.3
    assert fit["bias"][4] == pytest.approx(1.0, abs=0.3) and abs(fit["bias"][0]) < 0.3
    assert np.corrcoef(fit["scores"], u)[0, 1] > 0.9
    # positions unknown: the biases stay 0
    fit, _ = fit_reliability(left, right, lab, y, len(u), len(betas), fit_bias=False)
    assert np.all(fit["bias"] == 0.0)


def test_weights_and_flags_by_hand():
    rationality = np.array([2.0, 1.0, -0.5, 0.1])
    labeller = np.array([0, 1, 2, 3])
    w, _ = label_weights(rationality, labeller, min_weight=0.02)
    # raw max(beta, 0) = (2, 1, 0, 0.1), mean 0.775 -> (2.581, 1.290, floor 0.02, 0.129)
    assert w == pytest.approx([2 / 0.775, 1 / 0.775, 0.02, 0.1 / 0.775])
    flagged, stats = flag_unreliable(
        rationality, np.array([50, 50, 50, 5]), fraction=0.3
    )  # the default is 0.6
    # median of the judged (2, 1, -0.5) is 1: flag below 0.3; labeller 3 has too few labels to judge
    assert list(flagged) == [False, False, True, False] and stats["reliability/median_rationality"] == 1.0


def test_panel_spammers_rank_lowest():
    """30% spammers and 10% other-objective labellers; 400 corpus pairs, 3 labellers each."""
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import PanelConfig, make_panel

    panel = make_panel(PanelConfig(n_labellers=10, n_spammers=3, n_length_biased=1, n_refusal_preferring=0))
    pairs = sample_pairs(400, seed=1)
    rng = np.random.default_rng(0)
    items: dict[tuple[str, str], int] = {}
    rows = []
    for prompt, a, b in pairs:
        for j in rng.choice(len(panel), 3, replace=False):
            c = panel.labellers[j].compare(prompt, a, b, rng)
            if c.choice is None:
                continue
            ia = items.setdefault((prompt, a), len(items))
            ib = items.setdefault((prompt, b), len(items))
            rows.append((ia, ib, j, c.choice == 0))
    left, right, lab, y = (np.array(col) for col in zip(*rows, strict=True))
    fit, _ = fit_reliability(left, right, lab, y, len(items), len(panel))
    kinds = [labeller.spec.kind for labeller in panel.labellers]
    lowest = np.argsort(fit["rationality"])[:3]
    assert sorted(kinds[i] for i in lowest) == ["spammer"] * 3, (kinds, fit["rationality"])
    flagged, _ = flag_unreliable(fit["rationality"], fit["n_labels"])
    assert all(kinds[i] == "spammer" for i in np.flatnonzero(flagged))


def test_binary_labels_enter_as_comparisons_with_each_labellers_bar():
    """80 items, 6 labellers labelling all of them good / bad with P(good) = sigmoid(beta (u - t)): five
    careful (beta 2; bars t = 0, 0, -1 lenient, +1 strict, 0) and one answering at random (beta 0).
    Fitted as comparisons with a per-labeller threshold item, the random one is flagged, the careful
    ones are not, the lenient and strict bars come out in order, and u is recovered."""
    from rlhf.feedback.reliability import binary_as_comparisons, fit_reliability, flag_unreliable

    rng = np.random.default_rng(0)
    n_items, n_labellers = 80, 6
    u = rng.normal(size=n_items)
    beta = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 0.0])
    bar = np.array([0.0, 0.0, -1.0, 1.0, 0.0, 0.0])
    item, labeller = np.tile(np.arange(n_items), n_labellers), np.repeat(np.arange(n_labellers), n_items)
    good = rng.random(len(item)) < 1 / (1 + np.exp(-beta[labeller] * (u[item] - bar[labeller])))
    left, right, who, chose_left, n_all = binary_as_comparisons(item, labeller, good, n_items, n_labellers)
    assert n_all == 86 and right.tolist()[:1] == [80] and right.max() == 85 and chose_left.sum() == good.sum()
    fit, stats = fit_reliability(left, right, who, chose_left, n_all, n_labellers, fit_bias=False)
    assert stats["reliability/converged"] == 1.0
    flagged, _ = flag_unreliable(fit["rationality"], fit["n_labels"])
    assert flagged.tolist() == [False] * 5 + [True]
    assert fit["rationality"][5] < 0.3 < 2.0 < fit["rationality"][:5].min()
    thresholds = fit["scores"][n_items:]
    assert thresholds[2] < thresholds[0] < thresholds[3] and thresholds[2] < -0.5 and thresholds[3] > 0.4
    assert np.corrcoef(fit["scores"][:n_items], u)[0, 1] > 0.8
    with pytest.raises(ValueError, match="item indices"):
        binary_as_comparisons(np.array([80]), np.array([0]), np.array([True]), n_items, n_labellers)
