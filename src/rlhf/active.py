"""Active preference learning on the toy world: `rlhf bench active` and the reliability-weighting report.

One run (method, seed) reads as the loop it measures:
1. candidates: a fixed pool of world corpus pairs (``corpus.sample_pairs``) -- or, for a method named
   ``ranking:NAME``, of K-sets to rank (``corpus.sample_sets``) -- and a fixed gold test set of pairs;
2. a random start of `initial_labels` tasks (the same for every method of a seed and feedback type),
   labelled by the panel;
3. each round: fit a reward-model ensemble (M heads on one backbone, Poisson bootstrap) on the labels so
   far, measure its gold accuracy on the test set, score the unlabelled pool (member probabilities and
   pair embeddings), acquire a batch, have the panel label it; until `max_labels`.
Labels come from the default simulated panel: each task is answered by one labeller drawn at random,
as a queue worker would; ties stay in as ties. A method named ``routed:NAME`` chooses the labeller with
the query instead (`rlhf.active_route`: labeller quality from observable evidence, labeller-aware BALD
per second, fairness floor and cap, repeats, optional gold questions -- all counted as labels). A label is one task: one comparison, or one ranking of
K responses (Plackett-Luce loss), which takes the labeller longer -- so every curve also records the
labelling seconds it cost, and the summary gives the seconds each method needs to match random as well
as the labels. Curves are averaged over seeds with a 95% t-interval.

The reward model is trained in memory with the reward trainer's batching and loss (`make_pair_batches`,
`pair_loss`): the same Bradley-Terry maths, none of its checkpoint I/O, so a round costs its training.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.config import help_field
from rlhf.feedback.acquisition import METHODS, acquire, fit_time_model, preference_probs, set_preference_probs

RANKING_PREFIX = "ranking:"  # a method "ranking:bald" acquires K-sets by BALD and asks for rankings
ROUTED_PREFIX = "routed:"  # "routed:bald" chooses (query, labeller) pairs jointly (rlhf.active_route)
ROUTED_METHODS = ("random", "disagreement", "entropy", "bald")


def parse_method(name: str) -> tuple[str, str]:
    """'bald' -> ('pairs', 'bald'); 'ranking:bald' -> ('ranking', 'bald'); 'routed:bald' -> ('routed',
    'bald'): comparisons whose labellers are chosen with the queries."""
    for prefix, feedback in ((RANKING_PREFIX, "ranking"), (ROUTED_PREFIX, "routed")):
        if name.startswith(prefix):
            return feedback, name[len(prefix) :]
    return "pairs", name


@dataclass
class ActiveConfig:
    """`rlhf bench active`: random vs acquisition functions on the toy world."""

    model: str = help_field("world", "Reward-model backbone; 'world' = the built world model.")
    methods: list[str] = help_field(
        list(METHODS),
        "Acquisition functions to compare (random included); 'ranking:NAME' asks for K-way rankings of "
        "K-sets that NAME picks instead of comparisons of pairs.",
    )
    ranking_size: int = help_field(6, "Responses per ranking (K) for 'ranking:' methods.")
    seeds: int = help_field(5, "Seeds per method (pool, panel composition, initial batch, labels).")
    initial_labels: int = help_field(250, "Random pairs labelled before the first acquisition.")
    batch_labels: int = help_field(250, "Pairs acquired and labelled per round.")
    max_labels: int = help_field(2000, "Stop when this many pairs are labelled.")
    target_labels: int = help_field(2000, "Random's accuracy at this many labels is the bar to reach.")
    pool_size: int = help_field(6000, "Candidate pairs (world corpus pairs) per seed.")
    test_size: int = help_field(1000, "Held-out gold test pairs (fixed across seeds).")
    ensemble_size: int = help_field(4, "Ensemble heads M (the uncertainty the functions read).")
    train: str = help_field(
        "full",
        "'full': fine-tune backbone + heads each round (the reward trainer's loss); 'heads': frozen "
        "backbone, features cached once, only the M linear heads trained (minutes on a CPU).",
    )
    epochs: float = help_field(3.0, "Reward-model epochs over the labels, each round (fresh model).")
    batch_size: int = help_field(32, "Reward-model training batch size.")
    lr: float = help_field(1e-3, "Reward-model learning rate (AdamW, warm-up then cosine).")
    max_length: int = help_field(128, "Tokens per prompt+response.")
    panel_seed_offset: int = help_field(0, "Added to the seed for the panel's composition.")
    head_l2: float = help_field(1e-2, "'heads' training: L2 penalty on the standardised head weights.")
    labellers: int = help_field(11, "Panel size, the special labellers included.")
    spammers: int = help_field(1, "Panel labellers answering at random.")
    length_judges: int = help_field(1, "Panel labellers judging by length (another objective).")
    refusal_labellers: int = help_field(1, "Panel labellers judging by the refusal guideline.")
    gold_share: float = help_field(
        0.0,
        "'routed:' methods: share of each batch asked as gold questions (known answers, spread over the "
        "labellers; quality evidence only, counted as labels and seconds).",
    )
    route_floor: float = help_field(0.02, "'routed:' methods: least share of a batch each labeller gets.")
    route_cap: float = help_field(0.25, "'routed:' methods: largest share of a batch one labeller gets.")
    route_pessimism: float = help_field(
        1.0,
        "'routed:' methods: route on rationality minus this many Laplace sds (a lower bound: a labeller "
        "whose sharpness is not yet established, e.g. a fast spammer shrunk to the panel mean, is not trusted).",
    )
    route_crossfit: bool = help_field(
        True,
        "'routed:' methods: score each answer, for the quality fit, by a reward model trained on the other "
        "half of the labelled items (two-fold cross-fitting) instead of the model of the round it was asked.",
    )
    route_repeat_share: float = help_field(0.1, "'routed:' methods: largest share of a batch that repeats.")
    route_repeats: bool = help_field(
        True, "'routed:' methods: offer labelled queries whose answers disagree for another label."
    )

    def validate(self) -> None:
        from rlhf.errors import ConfigError

        unknown = sorted(m for m in self.methods if parse_method(m)[1] not in METHODS)
        if unknown:
            raise ConfigError(
                f"unknown acquisition methods {unknown}; choose from {', '.join(METHODS)}, each "
                f"optionally as {RANKING_PREFIX}NAME"
            )
        routed = sorted(m for m in self.methods if m.startswith(ROUTED_PREFIX))
        if any(parse_method(m)[1] not in ROUTED_METHODS for m in routed):
            raise ConfigError(
                f"routed methods {routed}: {ROUTED_PREFIX}NAME takes NAME from {', '.join(ROUTED_METHODS)}"
            )
        if not 0.0 <= self.gold_share < 1.0:
            raise ConfigError(f"active.gold_share must be in [0, 1); got {self.gold_share}")
        if not 0.0 <= self.route_floor <= self.route_cap <= 1.0:
            raise ConfigError(
                f"need 0 <= active.route_floor <= active.route_cap <= 1; got {self.route_floor}, {self.route_cap}"
            )
        if f"{RANKING_PREFIX}diverse" in self.methods:
            raise ConfigError("'diverse' spreads pairs over pair embeddings; it has no ranking: form")
        if self.ranking_size < 2:
            raise ConfigError(f"active.ranking_size must be at least 2; got {self.ranking_size}")
        if self.train not in ("full", "heads"):
            raise ConfigError(f"active.train must be 'full' or 'heads'; got {self.train!r}")
        if not 0 < self.initial_labels <= self.max_labels <= self.pool_size:
            raise ConfigError("need 0 < initial_labels <= max_labels <= pool_size")
        if self.seeds < 1 or self.batch_labels < 1 or self.ensemble_size < 1:
            raise ConfigError("seeds, batch_labels and ensemble_size must be at least 1")


# ----------------------------------------------------------------------------- the reward model


def fit_reward_ensemble(backbone: str, pairs: list, cfg: ActiveConfig, seed: int, rankings: list = ()):
    """A fresh M-head reward model trained on `pairs` (PreferencePair) and `rankings` (RankingExample,
    Plackett-Luce) for `cfg.epochs`; returns (model, tokenizer)."""
    from transformers import get_scheduler

    from rlhf.algorithms.reward import (
        RankingBatch,
        RewardConfig,
        bootstrap_weights,
        make_pair_batches,
        make_ranking_batches,
        pair_loss,
        ranking_loss,
    )
    from rlhf.reward_model import init_reward_model
    from rlhf.sequences import encode_scored_pairs

    torch.manual_seed(seed)
    model, tokenizer = init_reward_model(backbone, ["reward"], cfg.ensemble_size, seed=seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    rcfg = RewardConfig(ensemble_size=cfg.ensemble_size, batch_size=cfg.batch_size, max_length=cfg.max_length)
    tokenize = lambda prompts, responses: encode_scored_pairs(tokenizer, prompts, responses, cfg.max_length)  # noqa: E731
    order = np.random.default_rng(seed).permutation(len(pairs))
    batches = make_pair_batches([pairs[i] for i in order], tokenize, ["reward"], cfg.batch_size, rcfg)
    if rankings:
        order = np.random.default_rng([seed, 1]).permutation(len(rankings))
        per_batch = max(1, cfg.batch_size // cfg.ranking_size)  # about batch_size responses a step
        batches += make_ranking_batches([rankings[i] for i in order], tokenize, ["reward"], per_batch, rcfg)
    steps = max(1, math.ceil(len(batches) * cfg.epochs))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    scheduler = get_scheduler("cosine", optimizer, int(0.05 * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.train()
    for step in range(steps):
        if step % len(batches) == 0:
            epoch_order = rng.permutation(len(batches))
        batch = batches[epoch_order[step % len(batches)]]
        ranked = isinstance(batch, RankingBatch)
        size = len(batch.responses) if ranked else len(batch.chosen)
        boot = bootstrap_weights(cfg.ensemble_size, size, generator, cfg.ensemble_size > 1)
        loss, _ = (ranking_loss if ranked else pair_loss)(
            model, batch, tokenizer.pad_token_id, device, rcfg, boot
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval(), tokenizer


@torch.no_grad()
def score_and_embed(model, tokenizer, texts: list[str], max_length: int, batch: int = 128):
    """Member scores (T, M) and last hidden states (T, D) of joined prompt+response texts."""
    from rlhf.reward_model import pad_right
    from rlhf.sequences import encode_scored

    rows = encode_scored(tokenizer, texts, max_length)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    scores = np.zeros((len(rows), model.meta.ensemble_size), dtype=np.float32)
    hidden = np.zeros((len(rows), model.heads.shape[-1]), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        input_ids, mask = pad_right([rows[i] for i in idx], tokenizer.pad_token_id, model.heads.device)
        h = model.last_hidden(input_ids, mask).float()  # (B, D)
        scores[idx] = torch.einsum("bd,nd->bn", h, model.heads[:, 0].float()).cpu().numpy()
        hidden[idx] = h.cpu().numpy()
    return scores, hidden


def set_texts(sets: list[tuple[str, list[str]]]) -> tuple[list[str], np.ndarray]:
    """Unique joined texts of (prompt, [K responses]) sets and the (N, K) text index of each response."""
    from rlhf.data import join_prompt_response

    index: dict[str, int] = {}
    rows = [[index.setdefault(join_prompt_response(p, r), len(index)) for r in rs] for p, rs in sets]
    return list(index), np.array(rows, dtype=np.int64).reshape(len(sets), -1)


def pair_texts(pairs: list[tuple[str, str, str]]) -> tuple[list[str], np.ndarray]:
    """Unique joined texts of (prompt, a, b) pairs and the (P, 2) index of each pair's a and b."""
    return set_texts([(p, [a, b]) for p, a, b in pairs])


def pair_accuracy(scores: np.ndarray, ab: np.ndarray, gold: np.ndarray) -> float:
    """Share of pairs whose order under `scores` (T,) matches `gold` (0: a better, 1: b); ab (P, 2)."""
    return float((np.where(scores[ab[:, 0]] > scores[ab[:, 1]], 0, 1) == gold).mean())


def gold_test_set(n: int, seed: int = 999_331) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    """`n` corpus pairs with a strict gold order and the gold answer per pair (0: a better, 1: b)."""
    from rlhf.world.corpus import sample_pairs
    from rlhf.world.panel import TIE, gold_choices

    pairs = sample_pairs(int(n * 1.3) + 10, seed)
    gold = gold_choices(pairs)
    keep = np.flatnonzero(gold != TIE)[:n]
    return [pairs[i] for i in keep], gold[keep]


# ----------------------------------------------------------------------------- frozen-backbone heads


def fit_linear_heads(
    features: np.ndarray,
    chosen: np.ndarray,
    rejected: np.ndarray,
    tie: np.ndarray,
    weight: np.ndarray,
    n_heads: int,
    seed: int,
    l2: float,
    rankings: np.ndarray | None = None,
) -> np.ndarray:
    """M Bradley-Terry linear heads on frozen features (the reward model with `trainable_layers=0`),
    each on its own Poisson(1) bootstrap of the labels, by full-batch L-BFGS on the reward trainer's
    loss. features (T, D) standardised; chosen, rejected (N,) text indices; rankings (R, K) text indices
    best first, fitted by the Plackett-Luce loss (added to the pairs' loss; weight 1); -> W (M, D)."""
    from rlhf.algorithms.reward import bootstrap_weights
    from rlhf.losses import bradley_terry_loss, plackett_luce_loss

    x = torch.from_numpy(features).float()
    diff_c, diff_r = x[torch.from_numpy(chosen)], x[torch.from_numpy(rejected)]  # (N, D)
    generator = torch.Generator().manual_seed(seed)
    boot = bootstrap_weights(n_heads, len(chosen), generator, n_heads > 1)  # (M, N)
    w = torch.from_numpy(weight).float()
    tie_t = torch.from_numpy(tie)
    ranked = torch.from_numpy(rankings) if rankings is not None and len(rankings) else None
    if ranked is not None:
        boot_ranked = bootstrap_weights(n_heads, len(ranked), generator, n_heads > 1)  # (M, R)
        in_order = torch.arange(ranked.shape[1]).expand_as(ranked)  # rows are already best first
    heads = torch.zeros(n_heads, x.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([heads], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = heads.new_zeros(())
        for m in range(n_heads):  # one weighted mean per member, as in the trainer's loss
            if len(chosen):
                part, _ = bradley_terry_loss(
                    diff_c @ heads[m], diff_r @ heads[m], weights=boot[m] * w, tie=tie_t
                )
                loss = loss + part
            if ranked is not None:
                part, _ = plackett_luce_loss((x @ heads[m])[ranked], in_order, weights=boot_ranked[m])
                loss = loss + part
        loss = loss + l2 * (heads**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return heads.detach().numpy()


# ----------------------------------------------------------------------------- one run


@dataclass
class Labels:
    """The labels so far. Comparisons: rows ((prompt, a, b), choice 0/1/None, labeller name) and, as text
    indices, chosen, rejected, tie. Rankings: ranking_rows ((prompt, responses), order best first,
    labeller name) and `rankings`, the text indices best first. Per task: labeller names and seconds."""

    rows: list = field(default_factory=list)
    chosen: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    tie: list = field(default_factory=list)
    labeller: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    ranking_rows: list = field(default_factory=list)
    rankings: list = field(default_factory=list)

    def arrays(self):
        return (np.array(self.chosen, dtype=np.int64), np.array(self.rejected, dtype=np.int64),
                np.array(self.tie, dtype=bool))  # fmt: skip

    def ranking_array(self) -> np.ndarray | None:
        return np.array(self.rankings, dtype=np.int64) if self.rankings else None

    def __len__(self) -> int:
        return len(self.rows) + len(self.ranking_rows)


def to_preference(prompt: str, a: str, b: str, choice: int | None, labeller: str, weight: float = 1.0):
    from rlhf.data import PreferencePair

    if choice is None:
        return PreferencePair(
            prompt=prompt, chosen=a, rejected=b, tie=True, labeller_id=labeller, weight=weight
        )
    chosen, rejected = (a, b) if choice == 0 else (b, a)
    return PreferencePair(
        prompt=prompt, chosen=chosen, rejected=rejected, labeller_id=labeller, weight=weight
    )


def to_ranking(prompt: str, responses: list[str], order: tuple[int, ...], labeller: str):
    from rlhf.data import RankingExample

    return RankingExample(
        prompt=prompt, responses=tuple(responses), ranking=tuple((i,) for i in order), labeller_id=labeller
    )


class Scorer:
    """Fits the round's reward model and returns member scores and hidden states of any texts.
    'heads' caches the frozen backbone's hidden states per text (shared across methods and rounds)."""

    def __init__(self, cfg: ActiveConfig, backbone: str):
        self.cfg, self.backbone, self.cache = cfg, backbone, {}
        self.model = self.tokenizer = self.heads = None
        if cfg.train == "heads":
            from rlhf.reward_model import init_reward_model

            self.frozen, self.tokenizer = init_reward_model(backbone, ["reward"], 1, seed=0)
            self.frozen.eval()

    def features(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            _, hidden = score_and_embed(self.frozen, self.tokenizer, missing, self.cfg.max_length)
            self.cache.update(zip(missing, hidden, strict=True))
        return np.stack([self.cache[t] for t in texts])

    def fit(self, texts: list[str], labels: Labels, weight: np.ndarray, seed: int) -> None:
        """Train on `labels` (`weight` per comparison; rankings weigh 1); `texts` are what the text
        indices point to."""
        if self.cfg.train == "full":
            prefs = [to_preference(*item, c, n, float(w)) for (item, c, n), w in
                     zip(labels.rows, weight, strict=True)]  # fmt: skip
            rankings = [to_ranking(*item, order, n) for item, order, n in labels.ranking_rows]
            self.model, self.tokenizer = fit_reward_ensemble(self.backbone, prefs, self.cfg, seed, rankings)
            return
        feats = self.features(texts)
        self.mu, self.sd = feats.mean(0), feats.std(0) + 1e-6  # standardised: one L2 strength fits all
        chosen, rejected, tie = labels.arrays()
        self.heads = fit_linear_heads((feats - self.mu) / self.sd, chosen, rejected, tie, weight,
                                      self.cfg.ensemble_size, seed, self.cfg.head_l2,
                                      labels.ranking_array())  # fmt: skip

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Member scores (T, M) and hidden states (T, D)."""
        if self.cfg.train == "full":
            return score_and_embed(self.model, self.tokenizer, texts, self.cfg.max_length)
        feats = self.features(texts)
        return ((feats - self.mu) / self.sd) @ self.heads.T, feats


def candidate_pool(feedback: str, cfg: ActiveConfig, seed: int) -> list[tuple[str, list[str]]]:
    """The seed's candidates as (prompt, responses): corpus pairs, or K-sets for rankings."""
    from rlhf.world.corpus import sample_pairs, sample_sets

    if feedback == "ranking":
        return sample_sets(cfg.pool_size, 10_000 + seed, cfg.ranking_size)
    return [(p, [a, b]) for p, a, b in sample_pairs(cfg.pool_size, 10_000 + seed)]


def crossfit_diffs(scorer: Scorer, texts, items, labels: Labels, router, seed: int) -> np.ndarray:
    """Per comparison label, in order, the ensemble-mean difference (left - right) under a reward model
    trained on the other half of the labelled items (two folds by item, so a repeat's other answers are
    not in its model either); the scorer ends refitted on every label, as it was (same seed)."""
    item = np.array([i for i in router.item if i >= 0], np.int64)  # the comparison labels' items, in order
    fold = item % 2
    out = np.zeros(len(item))
    for k in (0, 1):
        train = fold != k
        sub = Labels(
            rows=[r for r, t in zip(labels.rows, train, strict=True) if t],
            chosen=list(np.array(labels.chosen)[train]), rejected=list(np.array(labels.rejected)[train]),
            tie=list(np.array(labels.tie)[train]),
        )  # fmt: skip
        scorer.fit(texts, sub, np.ones(len(sub.rows)), seed + 1 + k)
        mean = scorer.score(texts)[0].mean(1)  # (T,)
        out[~train] = mean[items[item[~train], 0]] - mean[items[item[~train], 1]]
    scorer.fit(texts, labels, np.ones(len(labels.rows)), seed)
    return out


def run_one(
    method: str, seed: int, cfg: ActiveConfig, scorer: Scorer, test, log=print, report: dict | None = None
) -> list[list[float]]:
    """The learning curve [[labels, gold accuracy, labelling seconds so far], ...] of one method and seed
    (see the module docstring). Labels and seconds count every task asked: for 'routed:' methods also
    the gold questions and the repeats. A routed run writes its router's report into `report`."""
    from rlhf.active_route import Router
    from rlhf.world.panel import PanelConfig, make_panel

    feedback, acquisition = parse_method(method)
    # 1. pool and panel; the initial batch is the seed's, whatever the method
    pool = candidate_pool(feedback, cfg, seed)
    texts, items = set_texts(pool)  # items (N, K) text indices, K = 2 for pairs
    words = np.array([len(" ".join([p, *rs]).split()) for p, rs in pool], dtype=float)
    panel = make_panel(
        PanelConfig(seed=seed + cfg.panel_seed_offset, n_labellers=cfg.labellers, n_spammers=cfg.spammers,
                    n_length_biased=cfg.length_judges, n_refusal_preferring=cfg.refusal_labellers)
    )  # fmt: skip
    label_rng = np.random.default_rng([seed, 1])  # the panel's answers: same stream for every method
    pick_rng = np.random.default_rng(
        [seed, 2, METHODS.index(acquisition)] + ([1] if feedback == "ranking" else [])
        + ([2] if feedback == "routed" else [])
    )  # fmt: skip
    labelled = list(np.random.default_rng([seed, 0]).permutation(len(pool))[: cfg.initial_labels])
    labels = Labels()
    router = Router(panel, pool, words, cfg, seed) if feedback == "routed" else None
    gold_seconds = 0.0

    def label(indices, who=None, asked_diff=None) -> None:
        for task, i in enumerate(indices):
            prompt, responses = pool[i]
            drawn = int(label_rng.integers(len(panel)))  # drawn always, so the answer streams stay aligned
            lab_index = drawn if who is None else int(who[task])
            labeller = panel.labellers[lab_index]
            name = labeller.spec.name
            if feedback == "ranking":
                answer = labeller.rank(prompt, responses, label_rng)
                labels.ranking_rows.append((pool[i], answer.order, name))
                labels.rankings.append(tuple(int(items[i, j]) for j in answer.order))
            else:
                answer = labeller.compare(prompt, *responses, label_rng)
                first, second = items[i] if answer.choice != 1 else items[i, ::-1]
                labels.rows.append(((prompt, *responses), answer.choice, name))
                labels.chosen.append(first)
                labels.rejected.append(second)
                labels.tie.append(answer.choice is None)
            labels.labeller.append(name)
            labels.seconds.append(answer.seconds)
            if router is not None:
                diff = np.nan if asked_diff is None else float(asked_diff[i])
                router.record(int(i), lab_index, answer.choice, diff, answer.seconds)

    label(labelled)
    test_pairs, test_gold = test
    test_texts, test_ab = pair_texts(test_pairs)
    curve = []
    while True:
        # 2. fit, measure
        started = time.monotonic()
        n = len(labels) + (int(router.stats["gold_questions"]) if router else 0)
        scorer.fit(texts, labels, np.ones(len(labels.rows)), seed * 100_003 + n)
        accuracy = pair_accuracy(scorer.score(test_texts)[0].mean(1), test_ab, test_gold)
        curve.append([n, accuracy, float(np.sum(labels.seconds)) + gold_seconds])
        log(
            f"{method} seed {seed}: {n} labels, gold accuracy {accuracy:.3f} ({time.monotonic() - started:.1f} s)"
        )
        if n >= cfg.max_labels:
            if router is not None and report is not None:
                final = scorer.score(texts)[0]
                final_diff = (final[items[:, 0]] - final[items[:, 1]]).mean(1)  # (N,)
                held_out = crossfit_diffs(scorer, texts, items, labels, router, seed * 100_003 + n) if (
                    cfg.route_crossfit) else None  # fmt: skip
                router.fit(final_diff, held_out_diff=held_out)  # the last answers too
                report.update(router.report(final_diff, held_out))
            return curve
        # 3. score the unlabelled pool, acquire, label
        rest = np.setdiff1d(np.arange(len(pool)), labelled)
        k = min(cfg.batch_labels, cfg.max_labels - n, len(rest))
        if acquisition == "random" and router is None:  # needs no scores
            probs, emb, done = np.full((len(rest), 1), 0.5), None, None
        elif feedback == "ranking":
            probs, emb, done = set_preference_probs(scorer.score(texts)[0][items[rest]]), None, None
        else:
            scores, hidden = scorer.score(texts)
            probs = preference_probs(scores[items[rest, 0]], scores[items[rest, 1]])  # (R, M)
            emb = hidden[items[rest, 0]] - hidden[items[rest, 1]]  # (R, D)
            done = hidden[items[labelled, 0]] - hidden[items[labelled, 1]]
        if router is not None:
            member_diffs = scores[items[:, 0]] - scores[items[:, 1]]  # (N, M)
            held_out = crossfit_diffs(scorer, texts, items, labels, router, seed * 100_003 + n) if (
                cfg.route_crossfit) else None  # fmt: skip
            router.fit(member_diffs.mean(1), held_out_diff=held_out)
            n_gold = int(round(cfg.gold_share * k))
            gold_seconds += router.ask_gold(n_gold)
            fresh = rest
            if acquisition != "bald":  # the query method picks the questions, the router whom to ask
                picks, _ = acquire(acquisition, probs, k - n_gold, pick_rng)
                fresh = rest[picks]
            chosen, who, _ = router.choose(member_diffs, fresh, k - n_gold, pick_rng)
            seen = set(labelled)
            labelled.extend(int(i) for i in chosen if int(i) not in seen)  # a repeat is labelled already
            label(chosen, who, member_diffs.mean(1))
            continue
        coef, _ = fit_time_model(words[labelled], np.array(labels.seconds))
        costs = coef[0] + coef[1] * words[rest]
        picks, _ = acquire(
            acquisition, probs, k, pick_rng, embeddings=emb, costs=costs, labelled_embeddings=done
        )
        chosen = rest[picks]
        labelled.extend(chosen.tolist())
        label(chosen)


# ----------------------------------------------------------------------------- summary


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval over seeds (0 for a single seed)."""
    from scipy import stats

    values = np.asarray(values, float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def labels_to_reach(curve: list[list[float]], target: float) -> int | None:
    """Fewest labels from which the (seed-mean) curve stays at or above `target`; None if it ends below.
    "Stays" matters: an early lucky point of a noisy curve is not a saving."""
    found = None
    for labels, accuracy in curve:
        if accuracy >= target:
            found = int(labels) if found is None else found
        else:
            found = None
    return found


def summarise(curves: dict[str, list[list[list[float]]]], cfg: ActiveConfig) -> dict[str, Any]:
    """Seed-mean curves with 95% intervals, random's accuracy at `target_labels`, labels to match it.
    Curve rows are [labels, accuracy] or [labels, accuracy, labelling seconds so far]; with seconds,
    also random's seconds at the target and the seconds each method needs to match random's accuracy."""
    table = {}
    for method, runs in curves.items():
        labels = [row[0] for row in runs[0]]
        per_point = np.array([[run[j][1] for run in runs] for j in range(len(labels))])  # (points, seeds)
        timed = all(len(row) > 2 for run in runs for row in run)
        seconds = [float(np.mean([run[j][2] for run in runs])) for j in range(len(labels))] if timed else None
        table[method] = {"labels": labels, "stats": [mean_interval(v) for v in per_point], "seconds": seconds}
    random_curve = table.get("random")
    random_at = random_seconds = None
    if random_curve is not None:
        at = [j for j, n in enumerate(random_curve["labels"]) if n <= cfg.target_labels]
        if at:
            random_at = random_curve["stats"][at[-1]][0]
            if random_curve["seconds"] is not None:
                random_seconds = random_curve["seconds"][at[-1]]
    methods = {}
    for method, t in table.items():
        accuracy = [m for m, _ in t["stats"]]
        curve = [[n, m] for n, m in zip(t["labels"], accuracy, strict=True)]
        methods[method] = {
            "labels_to_match_random": labels_to_reach(curve, random_at) if random_at is not None else None,
            "curve": curve,
            "interval95": [h for _, h in t["stats"]],
        }
        if random_seconds is not None and t["seconds"] is not None:
            timed_curve = [[sec, m] for sec, m in zip(t["seconds"], accuracy, strict=True)]
            methods[method]["seconds"] = t["seconds"]
            methods[method]["seconds_to_match_random"] = labels_to_reach(timed_curve, random_at)
    result = {
        "random_labels": cfg.target_labels if random_at is not None else None,
        "random_accuracy": random_at,
        "methods": methods,
    }
    if random_seconds is not None:
        result["random_seconds"] = random_seconds
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against labels; beside it, against labelling hours when the curves carry seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = "random_seconds" in result
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(11.5 if timed else 6.4, 4.4), squeeze=False)
    for ax, unit in zip(axes[0], ["labels", "hours"] if timed else ["labels"], strict=True):
        for name, m in result["methods"].items():
            if unit == "hours" and "seconds" not in m:
                continue
            x = np.array([n for n, _ in m["curve"]]) if unit == "labels" else np.array(m["seconds"]) / 3600
            y = np.array([a for _, a in m["curve"]])
            h = np.array(m["interval95"])
            ax.plot(x, y, marker="o", ms=3, label=name, lw=2.2 if name == "random" else 1.4)
            ax.fill_between(x, y - h, y + h, alpha=0.15)
        if result["random_accuracy"] is not None:
            ax.axhline(result["random_accuracy"], color="grey", ls=":", lw=1)
        ax.set_xlabel("labels (tasks)" if unit == "labels" else "labelling hours (the panel's timing model)")
        ax.set_ylabel("reward-model gold accuracy (held-out pairs)")
        ax.legend(fontsize=8)
    fig.suptitle("Active preference learning on the toy world (mean, 95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench_active(cfg: ActiveConfig, out: str | Path, world: Any = None, log=print) -> dict[str, Any]:
    """Every method x seed; writes <out>.json (the summary with 95% intervals, the config, the per-seed
    curves, the machine) and <out>.png. `out` is a path without suffix (one is replaced)."""
    from rlhf.bench import machine
    from rlhf.world.report import resolve_world_model

    cfg.validate()
    backbone = resolve_world_model(cfg.model, world, show_progress=False)
    test = gold_test_set(cfg.test_size)
    started = time.monotonic()
    scorer = Scorer(cfg, backbone)
    reports: dict[str, list[dict]] = {m: [{} for _ in range(cfg.seeds)] for m in cfg.methods}
    curves = {m: [run_one(m, seed, cfg, scorer, test, log, reports[m][seed]) for seed in range(cfg.seeds)]
              for m in cfg.methods}  # fmt: skip
    result = summarise(curves, cfg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    full = {**result, "config": asdict(cfg), "per_seed": curves, "seconds": time.monotonic() - started,
            "machine": machine()}  # fmt: skip
    routed = {m: r for m, r in reports.items() if m.startswith(ROUTED_PREFIX)}
    if routed:
        full["routing"] = routed  # per seed: estimated vs hidden labeller quality, tasks, repeats, gold
    out.with_suffix(".json").write_text(json.dumps(full, indent=2))
    plot(result, out.with_suffix(".png"))
    return full


def results_record(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's `results/active.json` schema: random's bar, and per method the labels to match it and
    the seed-mean curve; with timed curves also random's seconds and each method's seconds to match."""
    record = {
        "random_labels": result["random_labels"],
        "random_accuracy": result["random_accuracy"],
        "methods": {
            name: {
                key: m[key]
                for key in ("labels_to_match_random", "curve", "seconds_to_match_random")
                if key in m
            }
            for name, m in result["methods"].items()
        },
    }
    if "random_seconds" in result:
        record["random_seconds"] = result["random_seconds"]
    return record
