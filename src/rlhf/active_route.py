"""The routed methods of `rlhf bench active` ('routed:NAME'): choose the query and the labeller together.

Each round the router
1. fits every labeller's answer model (`feedback.quality.fit_quality`: rationality on the reward model's
   utility, a length weight, a position bias) to the labels so far, each label scored by the reward
   model of the round in which it was asked (one that had not trained on it; the initial random batch,
   asked before any model, falls back to the current one) and the gold questions' known answers;
2. scores (query, labeller) pairs by labeller-aware BALD per expected second of that labeller
   (`feedback.routing`), the candidates being the unlabelled pool -- for 'routed:NAME' other than bald,
   the batch NAME picks -- plus the labelled queries whose answers disagree (repeats);
3. assigns the batch under the fairness floor and cap, and asks a share of the batch as gold questions
   (pairs whose answer is known, spread over the labellers in turn; quality evidence only, never
   training data; their labels and seconds counted like every other).
Only what a deployment observes is used: labellers' answers, times and the gold questions' known
answers. The panel's hidden rationalities appear only in `report()`.
"""

from __future__ import annotations

import numpy as np

from rlhf.feedback.acquisition import fit_time_model
from rlhf.feedback.quality import fit_quality
from rlhf.feedback.routing import answers_disagree, assign, fairness_bounds, info_per_second, labeller_bald

MIN_OWN_TIMES = 10  # a labeller's own time model once they have this many tasks; the panel's before


def gold_question_pool(n: int, seed: int) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    """`n` pairs with a strict gold order (the known answers a team would hold for gold questions), drawn
    apart from the candidate pool and the test set; (pairs, gold 0 = a better / 1 = b)."""
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import TIE, gold_choices

    pairs = sample_pairs(int(n * 1.3) + 10, 30_000 + seed)
    gold = gold_choices(pairs)
    keep = np.flatnonzero(gold != TIE)[:n]
    return [pairs[i] for i in keep], gold[keep]


def _log_length_diff(a: str, b: str) -> float:
    return float(np.log1p(len(a.split())) - np.log1p(len(b.split())))


class Router:
    """Per-run state of a routed method: every answer with what was known when it was asked."""

    def __init__(self, panel, pool: list, words: np.ndarray, cfg, seed: int):
        self.panel, self.pool, self.words, self.cfg = panel, pool, words, cfg
        self.n_l = len(panel)
        self.dlen = np.array([_log_length_diff(a, b) for _, (a, b) in pool])  # (N,) log length, left - right
        # per answer: pool item (-1: gold question), labeller, choice (0/1/None), RM difference when asked
        self.item, self.who, self.choice, self.asked_diff, self.gold_sign = [], [], [], [], []
        self.gold_dlen, self.words_asked, self.seconds = [], [], []
        self.gold_pairs, self.gold_answers = gold_question_pool(2000, seed)
        self.gold_rng = np.random.default_rng([seed, 4])
        self.gold_next = 0
        self.quality = None
        self.predicted_diff = np.zeros(0)  # per answer at the last fit: the held-out (or ask-time) difference
        self.stats: dict[str, float] = {"repeats": 0.0, "gold_questions": 0.0}

    # ------------------------------------------------------------------ recording answers

    def record(self, item: int, who: int, choice: int | None, asked_diff: float, seconds: float) -> None:
        self.item.append(item)
        self.who.append(who)
        self.choice.append(choice)
        self.asked_diff.append(asked_diff)
        self.gold_sign.append(0.0)
        self.gold_dlen.append(0.0)
        self.words_asked.append(self.words[item])
        self.seconds.append(seconds)

    def ask_gold(self, count: int) -> float:
        """`count` gold questions to the labellers in turn (from a random start); returns their seconds."""
        start = int(self.gold_rng.integers(self.n_l))
        total = 0.0
        for j in range(count):
            who = (start + j) % self.n_l
            prompt, a, b = self.gold_pairs[self.gold_next % len(self.gold_pairs)]
            answer_known = self.gold_answers[self.gold_next % len(self.gold_pairs)]
            self.gold_next += 1
            answer = self.panel.labellers[who].compare(prompt, a, b, self.gold_rng)
            self.item.append(-1)
            self.who.append(who)
            self.choice.append(answer.choice)
            self.asked_diff.append(np.nan)
            self.gold_sign.append(1.0 if answer_known == 0 else -1.0)
            self.gold_dlen.append(_log_length_diff(a, b))
            self.words_asked.append(len(" ".join([prompt, a, b]).split()))
            self.seconds.append(answer.seconds)
            total += answer.seconds
        self.stats["gold_questions"] += count
        return total

    # ------------------------------------------------------------------ the quality model

    def fit(
        self, current_diff: np.ndarray, ask_time: bool = True, held_out_diff: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Fit every labeller's answer model (module docstring, step 1). current_diff (N,) the current
        ensemble-mean utility difference of each pool item, the fallback for answers asked before any
        model (and, with ask_time=False, for all: the circular variant, for measuring only).
        held_out_diff (A,): per pool answer in the order asked, the difference under a reward model that
        did not train on it (cross-fitting); used instead of the ask-time model's when given."""
        item = np.array(self.item, np.int64)
        choice = np.array([-1 if c is None else c for c in self.choice])
        keep = choice >= 0  # ties say nothing about which side
        asked = np.array(self.asked_diff, float)
        pooled = item >= 0
        if held_out_diff is not None:
            asked = asked.copy()
            asked[pooled] = held_out_diff
        self.predicted_diff = np.where(pooled & np.isfinite(asked), asked, current_diff[np.maximum(item, 0)])
        x0 = np.where(pooled, current_diff[np.maximum(item, 0)], 0.0)
        if ask_time:
            x0 = np.where(pooled & np.isfinite(asked), asked, x0)
        # a gold question's known answer stands for a clear utility difference: as large as the 90th
        # percentile of the pool answers' differences, with the known sign
        margin = float(np.quantile(np.abs(x0[pooled]), 0.9)) if pooled.any() else 1.0
        x0 = np.where(pooled, x0, np.array(self.gold_sign) * margin)
        x1 = np.where(pooled, self.dlen[np.maximum(item, 0)], np.array(self.gold_dlen))
        features = np.stack([x0, x1], axis=1)[keep]  # (n, 2): target utility, log length
        fit, _ = fit_quality(features, np.array(self.who)[keep], choice[keep] == 0, self.n_l)
        if ask_time:
            self.quality = fit
        return fit

    def labeller_seconds(self, rows: np.ndarray) -> np.ndarray:
        """Expected seconds (R, L) of each labeller on pool items `rows`: their own linear time model once
        they have MIN_OWN_TIMES tasks, the panel's before."""
        words, seconds, who = np.array(self.words_asked), np.array(self.seconds), np.array(self.who)
        panel_coef, _ = fit_time_model(words, seconds)
        out = np.empty((len(rows), self.n_l))
        for lab in range(self.n_l):
            mine = who == lab
            coef = (
                fit_time_model(words[mine], seconds[mine])[0] if mine.sum() >= MIN_OWN_TIMES else panel_coef
            )
            out[:, lab] = coef[0] + coef[1] * self.words[rows]
        return np.maximum(out, 1.0)  # no task is free

    # ------------------------------------------------------------------ choosing the batch

    def choose(
        self,
        member_diffs: np.ndarray,
        fresh: np.ndarray,
        batch: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """The batch: pool items (k,) and labellers (k,) (module docstring, steps 2-3). member_diffs (N, M)
        every pool item's member utility differences; fresh (F,) the unlabelled items the query method
        offers (all of them for routed:bald)."""
        q = self.quality
        # a lower bound (cfg.route_pessimism sds): a labeller with few answers is shrunk towards the panel
        # mean, and a fast one (a spammer clicks in a third of the time) would otherwise win on seconds;
        # an anti-correlated estimate is taken as noise
        rationality = np.maximum(q["rationality"] - self.cfg.route_pessimism * q["rationality_sd"], 0.0)
        # repeats: labelled items whose answers split, or whose one answer went against the model that had
        # not trained on it
        answered: dict[int, list[int]] = {}
        who_answered: dict[int, set[int]] = {}
        for i, w, c in zip(self.item, self.who, self.choice, strict=True):
            if i < 0:
                continue
            who_answered.setdefault(i, set()).add(w)
            answered.setdefault(i, [])
            if c is not None:
                answered[i].append(c)
        items = np.array(sorted(answered), np.int64)
        mean_diff = member_diffs.mean(1)
        asked_first = {}
        fitted = len(self.predicted_diff)  # gold questions asked since the fit come after these
        for i, d in zip(self.item[:fitted], self.predicted_diff, strict=True):  # held out where it could be
            asked_first.setdefault(i, d)
        predicted = (
            np.array([asked_first[i] if np.isfinite(asked_first[i]) else mean_diff[i] for i in items]) > 0
        )
        disagree = (
            answers_disagree([answered[i] for i in items], predicted) if len(items) else np.zeros(0, bool)
        )
        repeat = items[disagree] if self.cfg.route_repeats else np.zeros(0, np.int64)
        rows = np.concatenate([fresh, repeat])
        offsets = q["weights"][None, :, 1] * self.dlen[rows, None] + q["bias"][None, :]  # (R, L)
        info, _ = labeller_bald(member_diffs[rows], rationality, offsets)
        score, _ = info_per_second(info, self.labeller_seconds(rows))
        for r, i in enumerate(repeat, start=len(fresh)):
            score[r, list(who_answered[int(i)])] = -np.inf  # nobody answers the same question twice
        # at most route_repeat_share of the batch are repeats: the most informative ones
        most = int(round(self.cfg.route_repeat_share * batch))
        if len(repeat) > most:
            best = score[len(fresh) :].max(axis=1)
            drop = np.argsort(-best, kind="stable")[most:] + len(fresh)
            score[drop] = -np.inf
        floor, cap = fairness_bounds(batch, self.n_l, self.cfg.route_floor, self.cfg.route_cap)
        (picked, labellers), stats = assign(score, batch, floor, cap, rng)
        n_repeats = int((picked >= len(fresh)).sum())
        self.stats["repeats"] += n_repeats
        stats.update({"routing/repeat_candidates": float(len(repeat)), "routing/repeats": float(n_repeats)})
        return rows[picked], labellers, stats

    def report(self, current_diff: np.ndarray | None = None, held_out_diff: np.ndarray | None = None) -> dict:
        """Estimated vs hidden labeller quality (hidden truth for reporting only) and the task counts.
        `separation`: the share of (gold-objective, spammer or length judge) labeller pairs whose
        estimated rationalities are in the right order (1 = every careless labeller below every careful
        one). With current_diff (N,), the final model's differences, also the ask-time estimate (each
        answer scored by the model of its round) and the circular one (every answer scored by a model
        trained on it) with their separations, to measure what held-out scoring buys; with held_out_diff
        also the cross-fitted one."""
        who = np.array(self.who)
        kinds = [lab.spec.kind for lab in self.panel.labellers]

        def separation(estimate: np.ndarray) -> float | None:
            good = [estimate[i] for i, k in enumerate(kinds) if k == "gold"]
            bad = [estimate[i] for i, k in enumerate(kinds) if k in ("spammer", "length")]
            if not good or not bad:
                return None
            return float(np.mean([g > b for g in good for b in bad]))

        extra = {}
        if self.quality is not None:
            extra["separation"] = separation(self.quality["rationality"])
        if current_diff is not None:
            variants = (
                {"ask_time": None} if held_out_diff is None else {"ask_time": None, "crossfit": held_out_diff}
            )
            for name, held_out in variants.items():
                estimate = self.fit(current_diff, held_out_diff=held_out)["rationality"]
                extra[f"{name}_estimated_rationality"] = estimate.tolist()
                extra[f"{name}_separation"] = separation(estimate)
            circular = self.fit(current_diff, ask_time=False)
            extra["circular_estimated_rationality"] = circular["rationality"].tolist()
            extra["circular_separation"] = separation(circular["rationality"])
        return {
            "kind": [lab.spec.kind for lab in self.panel.labellers],
            "true_rationality": [lab.spec.rationality for lab in self.panel.labellers],
            "tasks": np.bincount(who, minlength=self.n_l).tolist(),
            "estimated_rationality": self.quality["rationality"].tolist() if self.quality else None,
            "estimated_length_weight": self.quality["weights"][:, 1].tolist() if self.quality else None,
            **extra,
            **self.stats,
        }
