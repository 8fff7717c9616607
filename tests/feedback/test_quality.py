"""The reward-model-explained labeller quality model (rlhf.feedback.quality)."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import spearmanr

from rlhf.feedback.quality import fit_quality, flag_off_target, objective_mixture, pair_features


def test_pair_features_by_hand():
    left = np.array([[1.0, 2.0], [0.5, -1.0]])  # heads (helpful, harmless)
    right = np.array([[0.0, 1.0], [1.5, 1.0]])
    x = pair_features(left, right, np.array([0, 1]), np.array([9, 0]), np.array([0, 9]))
    # row 0 asks helpful: target 1 - 0 = 1, other (harmless) 2 - 1 = 1, length log 10 - log 1
    # row 1 asks harmless: target -1 - 1 = -2, other 0.5 - 1.5 = -1, length log 1 - log 10
    np.testing.assert_allclose(x, [[1.0, 1.0, np.log(10)], [-2.0, -1.0, -np.log(10)]])
    assert pair_features(left, right, np.array([0, 0])).shape == (2, 2)  # no words: no length column


def test_objective_mixture_by_hand():
    # RMS of column 0: sqrt((1 + 1) / 2) = 1; column 1: sqrt((4 + 4) / 2) = 2
    x = np.array([[1.0, 2.0], [-1.0, -2.0]])
    w = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, -0.5]])
    # labeller 0: |1| * 1 : |1| * 2 -> 1/3, 2/3; labeller 1: all zero; labeller 2: 0 : 0.5 * 2 -> 0, 1
    np.testing.assert_allclose(objective_mixture(w, x), [[1 / 3, 2 / 3], [0, 0], [0, 1]])


def test_flag_off_target_by_hand():
    # target shares 0.8, 0.7, 0.3, 0.75 of judged labellers: median (0.7 + 0.75) / 2 = 0.725, bar
    # 0.6 * 0.725 = 0.435 -> only the 0.3 one; the last has 5 < 10 labels: not judged, share 0.1 or not
    mixture = np.array([[0.8, 0.2], [0.7, 0.3], [0.3, 0.7], [0.75, 0.25], [0.1, 0.9]])
    flagged, stats = flag_off_target(mixture, np.array([20, 20, 20, 20, 5]))
    assert flagged.tolist() == [False, False, True, False, False]
    assert stats["quality/median_target_share"] == pytest.approx(0.725)


def _simulate(rationality, length_weight, n_each, seed):
    """Labels drawn from the model itself: utility differences ~ N(0, 1), log-length differences ~
    N(0, 0.5^2), P(left) = sigmoid(beta_l * d + gamma_l * len)."""
    rng = np.random.default_rng(seed)
    n_l = len(rationality)
    labeller = np.repeat(np.arange(n_l), n_each)
    x = np.stack([rng.standard_normal(len(labeller)), 0.5 * rng.standard_normal(len(labeller))], 1)
    logit = np.asarray(rationality)[labeller] * x[:, 0] + np.asarray(length_weight)[labeller] * x[:, 1]
    chose_left = rng.random(len(labeller)) < 1 / (1 + np.exp(-logit))
    return x, labeller, chose_left


def test_gradient_matches_finite_differences():
    # the fit's optimum: the analytic gradient is zero there, so the returned weights are where the
    # objective is flat; checked through the fitted weights moving the loss only at second order
    x, labeller, chose_left = _simulate([1.0, 0.0, 2.0], [0.5, 0.0, 0.0], 80, 0)
    fit, stats = fit_quality(x, labeller, chose_left, 3, fit_bias=False)
    assert stats["quality/converged"] == 1.0

    def nll(w_flat):  # the data term plus the labellers' prior around the fitted panel mean
        w = w_flat.reshape(3, 2)
        z = (x * w[labeller]).sum(1)
        s = np.where(chose_left, 1.0, -1.0)
        rms = np.sqrt((x**2).mean(0))
        return np.logaddexp(0, -s * z).sum() + 0.5 * ((((w - fit["panel_mean"]) * rms) / 0.5) ** 2).sum()

    grad = approx_fprime(fit["weights"].ravel(), nll, 1e-6)
    assert np.abs(grad).max() < 1e-3


def test_recovers_known_labellers():
    # 6 careful labellers of known rationality, a spammer and a length judge, 300 labels each
    true = [0.5, 0.8, 1.1, 1.5, 2.0, 3.0, 0.0, 0.0]
    length = [0.3] * 6 + [0.0, 4.0]
    x, labeller, chose_left = _simulate(true, length, 300, 1)
    fit, _ = fit_quality(x, labeller, chose_left, 8)
    beta = fit["rationality"]
    assert set(np.argsort(beta)[:2]) == {6, 7}  # spammer and length judge lowest
    assert spearmanr(beta[:6], true[:6]).correlation == pytest.approx(1.0)
    assert fit["weights"][7, 1] > 2.5  # the length judge's weight on length (true 4, shrunk to the panel)
    assert np.all(np.abs(beta[:6] - true[:6]) < 3 * fit["rationality_sd"][:6] + 0.3)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="must agree"):
        fit_quality(np.zeros((3, 2)), np.zeros(2, int), np.zeros(3, bool), 1)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        fit_quality(np.zeros((2, 2)), np.array([0, 2]), np.zeros(2, bool), 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_world_panel_with_a_good_reward_model(seed):
    """The default panel answering 2,200 world pairs, one labeller each; the 'reward model' is the gold
    utility plus noise (sd 0.3): the spammer and the length judge come out lowest, and the gold
    labellers' estimates rank-correlate with their hidden rationalities."""
    from rlhf.world import gold
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import PanelConfig, make_panel

    panel = make_panel(PanelConfig(seed=seed))
    rng = np.random.default_rng(seed)
    rows = []
    for p, a, b in sample_pairs(2200, 10_000 + seed):
        j = int(rng.integers(len(panel)))
        answer = panel.labellers[j].compare(p, a, b, rng)
        if answer.choice is not None:
            rows.append(
                (
                    gold.utility(p, a),
                    gold.utility(p, b),
                    len(a.split()),
                    len(b.split()),
                    j,
                    answer.choice == 0,
                )
            )
    ua, ub, wa, wb, lab, left = (np.array(c) for c in zip(*rows, strict=True))
    noise = rng.normal(0, 0.3, size=(len(rows), 2))
    x = pair_features(
        (ua + noise[:, 0])[:, None], (ub + noise[:, 1])[:, None], np.zeros(len(rows), int), wa, wb
    )
    fit, _ = fit_quality(x, lab, left, len(panel))
    kinds = [labeller.spec.kind for labeller in panel.labellers]
    lowest = {kinds[i] for i in np.argsort(fit["rationality"])[:2]}
    assert lowest == {"spammer", "length"}
    careful = [i for i, k in enumerate(kinds) if k == "gold"]
    true = [panel.labellers[i].spec.rationality for i in careful]
    assert spearmanr(true, fit["rationality"][careful]).correlation > 0.5  # 0.67, 0.76, 0.60 measured
