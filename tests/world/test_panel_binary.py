"""The simulated panel's binary (thumbs up / down) judgements: the labeller model with one bar and its
timing (the queue path that submits them to the store is in tests/feedback/test_queue.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf.world import gold
from rlhf.world.corpus import sample_pairs
from rlhf.world.panel import BINARY_THRESHOLD, Labeller, LabellerSpec, PanelConfig, make_panel

PAIRS = sample_pairs(300, seed=5)
RESPONSES = [(p, r) for p, a, b in PAIRS for r in (a, b)]


def judged(spec: LabellerSpec, seed: int = 0, question: str = "helpful") -> np.ndarray:
    lab, rng = Labeller(spec), np.random.default_rng(seed)
    return np.array([lab.judge(p, r, rng, question).good for p, r in RESPONSES])


def test_a_careful_labeller_agrees_with_gold_more_than_a_spammer():
    gold_good = np.array([gold.utility(p, r) > BINARY_THRESHOLD for p, r in RESPONSES])
    assert 0.3 < gold_good.mean() < 0.8  # the bar splits the corpus, not a one-sided call
    careful = (judged(LabellerSpec(rationality=4.0, mistake_rate=0.0, length_bias=0.0)) == gold_good).mean()
    default = (judged(LabellerSpec()) == gold_good).mean()  # beta 1.2, 10% mistakes, length bias
    spammer = (judged(LabellerSpec(spammer=True)) == gold_good).mean()
    assert careful > 0.85 and careful > default > 0.6 and abs(spammer - 0.5) < 0.07
    assert careful - spammer > 0.3


def test_the_bar_sets_how_readily_a_labeller_says_good():
    lenient = judged(LabellerSpec(binary_threshold=-0.5, mistake_rate=0.0)).mean()
    strict = judged(LabellerSpec(binary_threshold=0.8, mistake_rate=0.0)).mean()
    assert lenient > strict + 0.25
    # harmless question: U = 1 - 2 harm against the bar; a refusal-preferring labeller judges harm alike
    harmless = judged(LabellerSpec(mistake_rate=0.0), question="harmless")
    same = judged(LabellerSpec(mistake_rate=0.0, objective="refusal"), question="harmless")
    assert (harmless == same).all()
    with pytest.raises(ValueError, match="question must be one of"):
        Labeller(LabellerSpec()).judge("p", "r", np.random.default_rng(0), question="kind")


def test_a_judgement_takes_less_time_than_a_rating_and_a_comparison_of_the_same_texts():
    """Default timing (base 8 s, 0.25 s a word): a comparison reads the prompt and both answers after
    the full base, a rating one answer after the full base, a judgement one answer after half of it."""
    lab = Labeller(LabellerSpec())
    rng = np.random.default_rng(1)
    compare = np.array([lab.compare(p, a, b, rng).seconds for p, a, b in PAIRS])
    rate = np.array([lab.rate(p, a, rng).seconds for p, a, _ in PAIRS])
    judge = np.array([lab.judge(p, a, rng).seconds for p, a, _ in PAIRS])
    assert judge.mean() < rate.mean() < compare.mean()
    # noise-free expectation of the judgement: the lognormal noise has mean exp(0.3^2 / 2)
    words = np.array([len(p.split()) + len(a.split()) for p, a, _ in PAIRS])
    expected = (0.5 * 8.0 + 0.25 * words) * np.exp(0.045)
    assert judge.mean() == pytest.approx(expected.mean(), rel=0.05)
    assert rate.mean() - judge.mean() == pytest.approx(4.0 * np.exp(0.045), rel=0.25)


def test_panel_spreads_the_bars_and_keeps_its_rationalities():
    cfg = PanelConfig(seed=3)
    panel = make_panel(cfg)
    rng = np.random.default_rng(3)  # the betas are drawn first, as before the bars existed
    betas = cfg.rationality_mean * np.exp(cfg.rationality_spread * rng.standard_normal(cfg.n_labellers))
    assert [lab.spec.rationality for lab in panel.labellers] == pytest.approx(betas.tolist())
    bars = np.array([lab.spec.binary_threshold for lab in panel.labellers])
    assert bars == pytest.approx(cfg.binary_threshold + 0.3 * rng.standard_normal(cfg.n_labellers))
    assert bars.std() > 0.1
