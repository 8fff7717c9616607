"""Simulated labellers: a panel whose answers are noisy, biased readings of the gold utility.

Each labeller follows the model the literature fits to human preference data:

- **Bradley-Terry** choice on the gold utility U (``gold.utility``) with inverse temperature
  ``rationality`` (beta): ``P(a > b) = sigmoid(beta * (U_a - U_b) + position_bias + length_bias *
  (log(1 + words_a) - log(1 + words_b)))`` (Bradley & Terry 1952; the "Boltzmann-rational" labeller).
- **mistakes**: with probability ``mistake_rate`` the answer is uniformly random -- Christiano et al.
  (2017) fit their reward model assuming a 10% chance of a random answer.
- **position bias**: a logit bonus for the answer shown first (left).
- **length bias**: a logit bonus per unit of log length ratio; the default 1.4 makes a labeller pick
  the longer of two equal-utility answers, one 1.5x the other, 63% of the time: sigmoid(1.4 *
  log(31/21)) -- near the ~64% length preference of human preference data (Singhal et al. 2023,
  "A Long Way to Go"; see docs/world.md).
- **ties**: when the perceived difference ``logit_without_position_bias / beta`` (the utility difference
  plus the length bias in utility units) is below ``tie_threshold``, the labeller says "tie" (None).
- **objectives**: "gold" (the panel's guideline), "refusal" (the refusal guideline: prefers bare
  refusals on risky requests), "length" (U = 3 log(1 + words): judges by length alone);
  **spammers** answer uniformly at random and fast, as in crowdsourcing (Snow et al. 2008).
- **questions**: "helpful" ("which response is better?", the gold utility above) or "harmless" ("which
  response is less harmful?", as in the separate helpfulness and harmlessness data of Bai et al. 2022 and
  Safe RLHF, Dai et al. 2023): U = -HARMLESS_SCALE * gold.harm. The scale, 1.7, is the median gold
  utility gap between a helpful and a rude answer on corpus text, so that "harmful vs safe" is as clear
  a call as "helpful vs rude". Rationality, mistakes, position bias, ties and spammers are unchanged;
  the length bias is not applied (it is a helpfulness heuristic -- a longer answer looks more thorough,
  not safer). "gold" and "refusal" labellers judge harm alike (their guidelines differ in how to trade
  helpfulness for safety, not in what is harmful); "length" labellers still answer by length. A
  harmlessness rating (7 = harmless) uses U = 1 - 2 * harm, so it spans the Likert scale as U does.

Rankings use Plackett-Luce (Gumbel-max sampling) on the same scores; ratings use an ordered logit on
U. A **binary** judgement (thumbs up / down on one response, `Labeller.judge`) is that ordered logit with
one cut at the labeller's own bar ``binary_threshold`` (spread across the panel, so some labellers say
"good" more readily than others): good when ``beta * (U - threshold) + length bonus + Logistic(0,
1/sqrt 2) > 0``, i.e. ``P(good) = sigmoid(sqrt(2) * beta * (U - threshold))`` without the length bonus
(one perception, half a comparison's noise variance, as for ratings), with the same mistakes and
spammers. Its time is one response read and no weighing of two: ``BINARY_BASE_SHARE * base_seconds +
seconds_per_word * words`` (prompt and response), half the fixed part of a comparison or rating. Agreement statistics are pure functions on a (labellers, pairs) array of choices, where 0 = left,
1 = right and -1 = tie. The default panel is calibrated so that a labeller agrees with the majority of
the others on about 70% of pairs (InstructGPT, Ouyang et al. 2022: 72.6% inter-labeller agreement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rlhf.errors import ConfigError
from rlhf.feedback.records import QUESTIONS  # "which response is better?" / "less harmful?"
from rlhf.world import gold
from rlhf.world.corpus import sample_pairs

OBJECTIVES = ("gold", "length", "refusal")
# utility per unit of gold harm for the harmless question: the median helpful-vs-rude utility gap on
# corpus text (1.7 over 5 answers to each of the 408 benign requests; mean 1.73), so a harmful-vs-safe
# pair (harm 1 vs 0) is as clear to a labeller as a helpful-vs-rude one
HARMLESS_SCALE = 1.7
LENGTH_UTILITY_SCALE = 3.0  # utility per unit of log(1 + words) for the "length" objective
TIE = -1  # code for a tie in choice arrays
RATING_CUTS = (-0.9, -0.45, 0.0, 0.35, 0.65, 0.9)  # utility thresholds between Likert points 1..7
STRENGTH_CUTS = (0.6, 0.75, 0.9)  # P(chosen) above which strength is 2, 3, 4
# A thumbs up or down is one glance-and-click decision, with no second answer to hold in mind and
# weigh: half the fixed time of a comparison (the reading time per word is the same).
BINARY_BASE_SHARE = 0.5
# The default bar for "good": the middle of the neutral Likert band, between the cuts 0.0 and 0.35.
BINARY_THRESHOLD = 0.175


@dataclass
class LabellerSpec:
    name: str = field(default="labeller", metadata={"help": "name shown in reports"})
    rationality: float = field(
        default=1.2, metadata={"help": "Bradley-Terry inverse temperature beta on utility"}
    )
    mistake_rate: float = field(default=0.1, metadata={"help": "probability of a uniformly random answer"})
    position_bias: float = field(default=0.1, metadata={"help": "logit bonus for the first (left) answer"})
    length_bias: float = field(default=1.4, metadata={"help": "logit bonus per unit of log(1+words) ratio"})
    tie_threshold: float = field(
        default=0.05, metadata={"help": "tie when |perceived utility difference| is below this"}
    )
    objective: str = field(default="gold", metadata={"help": "gold | length | refusal"})
    guideline: str = field(default="constructive", metadata={"help": "gold guideline for objective 'gold'"})
    spammer: bool = field(default=False, metadata={"help": "answers uniformly at random"})
    seconds_per_word: float = field(default=0.25, metadata={"help": "reading time per word (~240 words/min)"})
    base_seconds: float = field(default=8.0, metadata={"help": "time per task besides reading"})
    binary_threshold: float = field(
        default=BINARY_THRESHOLD, metadata={"help": "utility above which a binary judgement is 'good'"}
    )

    @property
    def kind(self) -> str:
        return "spammer" if self.spammer else self.objective


@dataclass
class PanelConfig:
    seed: int = field(default=0, metadata={"help": "seed of the panel's composition (rationalities)"})
    n_labellers: int = field(default=11, metadata={"help": "panel size, the special labellers included"})
    n_spammers: int = field(default=1, metadata={"help": "labellers answering at random"})
    n_length_biased: int = field(default=1, metadata={"help": "labellers preferring the longer answer"})
    n_refusal_preferring: int = field(
        default=1, metadata={"help": "labellers judging by the refusal guideline"}
    )
    rationality_mean: float = field(
        default=1.2, metadata={"help": "median beta (calibrated: ~70% agreement)"}
    )
    rationality_spread: float = field(default=0.4, metadata={"help": "std of log beta across labellers"})
    mistake_rate: float = field(default=0.1, metadata={"help": "random-answer rate (Christiano et al. 2017)"})
    position_bias: float = field(default=0.1, metadata={"help": "logit bonus for the left answer"})
    length_bias: float = field(default=1.4, metadata={"help": "logit bonus per unit log length ratio"})
    tie_threshold: float = field(
        default=0.05, metadata={"help": "tie when |perceived utility difference| is below this"}
    )
    guideline: str = field(
        default="constructive", metadata={"help": "gold guideline: constructive | refusal"}
    )
    seconds_per_word: float = field(default=0.25, metadata={"help": "reading time per word"})
    base_seconds: float = field(default=8.0, metadata={"help": "time per task besides reading"})
    binary_threshold: float = field(
        default=BINARY_THRESHOLD, metadata={"help": "mean utility bar of a 'good' binary judgement"}
    )
    binary_threshold_spread: float = field(
        default=0.3, metadata={"help": "std of the labellers' bars (some say 'good' more readily)"}
    )
    labellers: list[LabellerSpec] = field(
        default_factory=list, metadata={"help": "explicit labellers; when given, replace the generated panel"}
    )

    def validate(self) -> None:
        special = self.n_spammers + self.n_length_biased + self.n_refusal_preferring
        if not self.labellers and (self.n_labellers < 1 or special > self.n_labellers):
            raise ConfigError(
                f"panel: n_labellers={self.n_labellers} must be >= 1 and >= the {special} special ones"
            )
        if self.guideline not in gold.GUIDELINES:
            raise ConfigError(f"panel.guideline must be one of {gold.GUIDELINES}, got {self.guideline!r}")
        if not 0.0 <= self.mistake_rate <= 1.0:
            raise ConfigError(f"panel.mistake_rate must be in [0, 1], got {self.mistake_rate}")
        for s in self.labellers:
            if s.objective not in OBJECTIVES:
                raise ConfigError(
                    f"labeller {s.name}: objective must be one of {OBJECTIVES}, got {s.objective!r}"
                )


@dataclass(frozen=True)
class Comparison:
    choice: int | None  # 0 = a (left), 1 = b (right), None = tie
    strength: int  # 1 slightly, 2 better, 3 much better, 4 definitely better; 0 for a tie
    seconds: float
    labeller: str = ""


@dataclass(frozen=True)
class Ranking:
    order: tuple[int, ...]  # indices into the responses, best first
    seconds: float
    labeller: str = ""


@dataclass(frozen=True)
class Rating:
    score: int  # Likert 1 (very bad) .. 7 (very good)
    seconds: float
    labeller: str = ""


@dataclass(frozen=True)
class Judgement:
    good: bool  # a binary thumbs up (True) or down (False)
    seconds: float
    labeller: str = ""


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def _check_question(question: str) -> None:
    if question not in QUESTIONS:
        raise ValueError(f"question must be one of {QUESTIONS}, got {question!r}")


class Labeller:
    """One simulated labeller. Every method draws a fixed number of random numbers from `rng`, so a
    labeller's answers depend only on the seed and the questions asked, not on earlier branches."""

    def __init__(self, spec: LabellerSpec):
        self.spec = spec

    def utility(self, prompt: str, response: str, question: str = "helpful") -> float:
        s = self.spec
        if s.objective == "length":
            # scaled so that doubling the length (+0.69) outweighs helpful over rude (~1.8 utility);
            # a labeller who judges by length does so whatever the question
            return LENGTH_UTILITY_SCALE * gold.log_length(response)
        if question == "harmless":  # "gold" and "refusal" labellers agree on what is harmful
            return -HARMLESS_SCALE * gold.harm(prompt, response)
        guideline = "refusal" if s.objective == "refusal" else s.guideline
        return gold.utility(prompt, response, guideline)

    def _length_bias(self, question: str) -> float:
        """The length bias applies to the helpful question only: a longer answer looks more thorough,
        not less harmful."""
        return self.spec.length_bias if question == "helpful" else 0.0

    def _perceived_difference(self, prompt: str, a: str, b: str, question: str = "helpful") -> float:
        """U_a - U_b plus the length bias expressed in utility units (length_bias / beta per log ratio):
        a longer answer looks better, so equal-utility answers of different length are rarely tied.
        The position bias is left out: it sways the click, not the judgement of a tie."""
        s = self.spec
        dl = gold.log_length(a) - gold.log_length(b)
        du = self.utility(prompt, a, question) - self.utility(prompt, b, question)
        return du + self._length_bias(question) * dl / max(s.rationality, 1e-9)

    def _seconds(
        self,
        prompt: str,
        texts: list[str],
        rng: np.random.Generator,
        per_item: float = 0.0,
        base_share: float = 1.0,
    ) -> float:
        s = self.spec
        words = len(prompt.split()) + sum(len(t.split()) for t in texts)
        scale = 0.3 if s.spammer else 1.0  # spammers click without reading
        noise = rng.lognormal(0.0, 0.3)  # reading times are right-skewed
        fixed = base_share * s.base_seconds + per_item * len(texts)
        return float(scale * (fixed + s.seconds_per_word * words) * noise)

    def compare(
        self, prompt: str, a: str, b: str, rng: np.random.Generator, question: str = "helpful"
    ) -> Comparison:
        """Which of a (left) and b (right) answers `question` better ("helpful": which is better;
        "harmless": which is less harmful). Both questions make the same random draws."""
        _check_question(question)
        s = self.spec
        u_mistake, u_choice, u_strength = rng.random(3)
        seconds = self._seconds(prompt, [a, b], rng)
        if s.spammer or u_mistake < s.mistake_rate:
            choice = int(u_choice < 0.5)
            return Comparison(choice, 1 + int(u_strength * 4), seconds, s.name)
        perceived = self._perceived_difference(prompt, a, b, question)
        if abs(perceived) < s.tie_threshold:
            return Comparison(None, 0, seconds, s.name)
        p_a = _sigmoid(s.rationality * perceived + s.position_bias)
        choice = 0 if u_choice < p_a else 1
        p_chosen = p_a if choice == 0 else 1.0 - p_a
        return Comparison(choice, 1 + int(np.searchsorted(STRENGTH_CUTS, p_chosen)), seconds, s.name)

    def rank(
        self, prompt: str, responses: list[str], rng: np.random.Generator, question: str = "helpful"
    ) -> Ranking:
        """Plackett-Luce: sort scores plus Gumbel noise (Gumbel-max trick), best (or least harmful) first."""
        _check_question(question)
        s = self.spec
        k = len(responses)
        u_mistake = rng.random()
        gumbel = rng.gumbel(size=k)
        random_order = rng.permutation(k)
        seconds = self._seconds(prompt, responses, rng, per_item=2.0)
        if s.spammer or u_mistake < s.mistake_rate:
            return Ranking(tuple(int(i) for i in random_order), seconds, s.name)
        length_bias = self._length_bias(question)
        scores = np.array(
            [
                s.rationality * self.utility(prompt, r, question) + length_bias * gold.log_length(r)
                for r in responses
            ]
        )  # (K,)
        scores[0] += s.position_bias
        order = np.argsort(-(scores + gumbel), kind="stable")
        return Ranking(tuple(int(i) for i in order), seconds, s.name)

    def rate(self, prompt: str, response: str, rng: np.random.Generator, question: str = "helpful") -> Rating:
        """Ordered logit: latent beta*U + length bonus + logistic noise, cut at beta * RATING_CUTS (1..7).
        For "harmless" (7 = harmless) U = 1 - 2 * harm spans the cuts: a harmless answer rates like a
        complete helpful one (U = 1 -> 7), a fully harmful one like a rude one (U = -1 -> 1); no length
        bonus. (Comparisons only see differences, so there the scale alone matters: HARMLESS_SCALE.)"""
        _check_question(question)
        s = self.spec
        u_mistake, u_random = rng.random(2)
        # Thurstone: a comparison's noise is the difference of two perceptions, so one perception has
        # half its variance -- logistic scale 1/sqrt(2) for scale-1 Bradley-Terry comparisons
        noise = rng.logistic(scale=math.sqrt(0.5))
        seconds = self._seconds(prompt, [response], rng)
        if s.spammer or u_mistake < s.mistake_rate:
            return Rating(1 + int(u_random * 7), seconds, s.name)
        # the length bonus is relative to a 20-word answer, so typical answers are not shifted
        if question == "harmless" and s.objective != "length":
            utility = 1.0 - 2.0 * gold.harm(prompt, response)
        else:
            utility = self.utility(prompt, response, question)
        latent = (
            s.rationality * utility
            + self._length_bias(question) * (gold.log_length(response) - math.log(21.0))
            + noise
        )
        score = 1 + int(np.sum(latent > s.rationality * np.asarray(RATING_CUTS)))
        return Rating(score, seconds, s.name)

    def judge(
        self, prompt: str, response: str, rng: np.random.Generator, question: str = "helpful"
    ) -> Judgement:
        """Thumbs up or down: is the response good ("helpful") or harmless enough ("harmless")? The
        rating model with one cut at this labeller's bar (module docstring): good when beta * (U -
        binary_threshold) + length bonus + Logistic(0, 1/sqrt 2) > 0; for "harmless" U = 1 - 2 * harm
        as for ratings. Time: BINARY_BASE_SHARE of the fixed time plus reading."""
        _check_question(question)
        s = self.spec
        u_mistake, u_random = rng.random(2)
        noise = rng.logistic(scale=math.sqrt(0.5))
        seconds = self._seconds(prompt, [response], rng, base_share=BINARY_BASE_SHARE)
        if s.spammer or u_mistake < s.mistake_rate:
            return Judgement(bool(u_random < 0.5), seconds, s.name)
        if question == "harmless" and s.objective != "length":
            utility = 1.0 - 2.0 * gold.harm(prompt, response)
        else:
            utility = self.utility(prompt, response, question)
        latent = (
            s.rationality * (utility - s.binary_threshold)
            + self._length_bias(question) * (gold.log_length(response) - math.log(21.0))
            + noise
        )
        return Judgement(bool(latent > 0), seconds, s.name)


@dataclass
class Panel:
    labellers: list[Labeller]

    def __len__(self) -> int:
        return len(self.labellers)

    @property
    def names(self) -> list[str]:
        return [lab.spec.name for lab in self.labellers]


def make_panel(cfg: PanelConfig) -> Panel:
    """Build the panel: `cfg.labellers` if given, otherwise gold labellers with log-normally spread
    rationality, then the length-biased, refusal-preferring and spammer labellers."""
    cfg.validate()
    if cfg.labellers:
        return Panel([Labeller(spec) for spec in cfg.labellers])
    rng = np.random.default_rng(cfg.seed)
    n_gold = cfg.n_labellers - cfg.n_spammers - cfg.n_length_biased - cfg.n_refusal_preferring
    kinds = ["gold"] * n_gold + ["length"] * cfg.n_length_biased + ["refusal"] * cfg.n_refusal_preferring
    kinds += ["spammer"] * cfg.n_spammers
    betas = cfg.rationality_mean * np.exp(cfg.rationality_spread * rng.standard_normal(len(kinds)))
    # drawn after the betas, so adding the bars left every earlier panel's rationalities as they were
    bars = cfg.binary_threshold + cfg.binary_threshold_spread * rng.standard_normal(len(kinds))
    specs = [
        LabellerSpec(
            name=f"labeller-{i + 1:02d}",
            rationality=float(beta),
            mistake_rate=cfg.mistake_rate,
            position_bias=cfg.position_bias,
            length_bias=cfg.length_bias,
            tie_threshold=cfg.tie_threshold,
            objective=kind if kind in OBJECTIVES else "gold",
            guideline=cfg.guideline,
            spammer=kind == "spammer",
            seconds_per_word=cfg.seconds_per_word,
            base_seconds=cfg.base_seconds,
            binary_threshold=float(bar),
        )
        for i, (kind, beta, bar) in enumerate(zip(kinds, betas, bars, strict=True))
    ]
    return Panel([Labeller(spec) for spec in specs])


# ---------------------------------------------------------------- labelling many pairs


def label_pairs(
    panel: Panel, pairs: list[tuple[str, str, str]], seed: int, question: str = "helpful"
) -> tuple[np.ndarray, np.ndarray]:
    """Every labeller compares every (prompt, a, b) pair, asked `question`. Labeller i draws from the
    stream ``default_rng([seed, i])``. Returns (choices, seconds), both (L, P); choices in {0, 1, TIE}."""
    choices = np.full((len(panel), len(pairs)), TIE, dtype=np.int64)  # (L, P)
    seconds = np.zeros((len(panel), len(pairs)))  # (L, P)
    for i, lab in enumerate(panel.labellers):
        rng = np.random.default_rng([seed, i])
        for j, (prompt, a, b) in enumerate(pairs):
            c = lab.compare(prompt, a, b, rng, question)
            choices[i, j] = TIE if c.choice is None else c.choice
            seconds[i, j] = c.seconds
    return choices, seconds


def gold_choices(
    pairs: list[tuple[str, str, str]], guideline: str = "constructive", question: str = "helpful"
) -> np.ndarray:
    """The gold answer per pair: 0 if U_a > U_b, 1 if U_b > U_a, TIE if equal (within 1e-9). (P,)
    For question "harmless" U = -harm: the less harmful answer wins (the guideline does not matter)."""
    _check_question(question)
    if question == "harmless":
        diff = np.array([gold.harm(p, b) - gold.harm(p, a) for p, a, b in pairs])
    else:
        diff = np.array([gold.utility(p, a, guideline) - gold.utility(p, b, guideline) for p, a, b in pairs])
    return np.where(np.abs(diff) < 1e-9, TIE, np.where(diff > 0, 0, 1))


# ---------------------------------------------------------------- agreement statistics (pure)


def agreement_with_gold(choices: np.ndarray, gold_choice: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Per labeller, the share of pairs where its choice equals gold, over pairs where neither the
    labeller nor gold says tie. choices (L, P), gold_choice (P,) -> (L,); NaN if no such pair."""
    mask = (choices != TIE) & (gold_choice != TIE)[None, :]  # (L, P)
    n = mask.sum(axis=1)
    agree = ((choices == gold_choice[None, :]) & mask).sum(axis=1)
    per = np.where(n > 0, agree / np.maximum(n, 1), np.nan)
    return per, {
        "agreement/gold": float(np.nanmean(per)) if n.any() else float("nan"),
        "agreement/gold_n": float(n.mean()),
    }


def majority_agreement(choices: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Leave-one-out agreement: per labeller, the share of pairs where its choice equals the majority of
    the *other* labellers' non-tie votes. A pair counts for labeller i only if i did not say tie and the
    others' votes are not split evenly (ties among them are not votes). choices (L, P) -> (L,)."""
    n0 = (choices == 0).sum(axis=0)  # (P,)
    n1 = (choices == 1).sum(axis=0)
    others0 = n0[None, :] - (choices == 0)  # (L, P)
    others1 = n1[None, :] - (choices == 1)
    majority = np.where(others0 > others1, 0, 1)
    mask = (choices != TIE) & (others0 != others1)
    n = mask.sum(axis=1)
    per = np.where(n > 0, ((choices == majority) & mask).sum(axis=1) / np.maximum(n, 1), np.nan)
    return per, {"agreement/majority": float(np.nanmean(per)), "agreement/majority_n": float(n.mean())}


def pairwise_agreement(choices: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Agreement between every two labellers over pairs neither called a tie. (L, P) -> (L, L);
    the diagonal is 1. stats["agreement/pairwise"] is the mean over distinct labeller pairs."""
    valid = (choices != TIE).astype(float)  # (L, P)
    left = (choices == 0).astype(float)
    right = (choices == 1).astype(float)
    both = valid @ valid.T  # (L, L) pairs both answered
    same = left @ left.T + right @ right.T
    m = np.where(both > 0, same / np.maximum(both, 1), np.nan)
    off = m[~np.eye(len(m), dtype=bool)]
    return m, {"agreement/pairwise": float(np.nanmean(off)) if off.size else float("nan")}


def panel_report(
    panel: Panel,
    pairs: list[tuple[str, str, str]],
    seed: int,
    guideline: str = "constructive",
    question: str = "helpful",
) -> dict:
    """Overall and per-labeller agreement on `pairs`, each labelled by every labeller asked `question`.
    Agreement with gold uses `guideline` (or gold harm for "harmless") and skips ties (labeller's or
    gold's); majority agreement is leave-one-out."""
    choices, seconds = label_pairs(panel, pairs, seed, question)
    g = gold_choices(pairs, guideline, question)
    with_gold, gold_stats = agreement_with_gold(choices, g)
    with_majority, maj_stats = majority_agreement(choices)
    _, pair_stats = pairwise_agreement(choices)
    tie_rate = (choices == TIE).mean(axis=1)
    rows = [
        {
            "name": lab.spec.name,
            "kind": lab.spec.kind,
            "rationality": lab.spec.rationality,
            "agreement_with_gold": float(with_gold[i]),
            "majority_agreement": float(with_majority[i]),
            "tie_rate": float(tie_rate[i]),
            "mean_seconds": float(seconds[i].mean()) if len(pairs) else float("nan"),
        }
        for i, lab in enumerate(panel.labellers)
    ]
    return {
        "n_pairs": len(pairs),
        "n_labellers": len(panel),
        "agreement_with_gold": gold_stats["agreement/gold"],
        "majority_agreement": maj_stats["agreement/majority"],
        "pairwise_agreement": pair_stats["agreement/pairwise"],
        "gold_tie_rate": float((g == TIE).mean()) if len(pairs) else float("nan"),
        "tie_rate": float(tie_rate.mean()),
        "mean_seconds": float(seconds.mean()) if len(pairs) else float("nan"),
        "labellers": rows,
    }


def default_report(n_pairs: int = 1000, seed: int = 0) -> dict:
    """The default panel's report on `n_pairs` reference pairs (``corpus.sample_pairs(n_pairs, seed)``)."""
    return panel_report(make_panel(PanelConfig(seed=seed)), sample_pairs(n_pairs, seed), seed)
