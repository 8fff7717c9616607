"""The closed loop of iterative online RLHF: `rlhf loop` and the demo's engine.

Each round reads as the method (Bai et al. 2022, section 4.5; Ouyang et al. 2022):
1. sample: two responses from the current policy to each prompt of a fresh pool (helpfulness pairs on
   any request, harmlessness pairs on risky ones);
2. acquire: the reward-model ensemble of the last round scores every candidate pair and an acquisition
   function picks the `labels_per_round` most informative (the first round, with no model yet, picks
   at random); a share of them goes to several labellers, so agreement can be measured;
3. label: the picks go into the feedback store's queue; the simulated panel answers them through the
   same store calls the web app makes, or people do through `rlhf label serve` (`labellers=web`: the
   loop waits until the round's labels are in). With `feedback=binary` each picked pair becomes two
   good / bad tasks, one per response (about one comparison's labelling time: a judgement takes half
   the fixed time of a comparison and reads one answer), exported as unpaired rows (prompt, completion,
   label) for the reward model's logistic loss;
4. reward model: a helpful + harmless ensemble trained on every label so far (warm-started from the
   last round's backbone), normalised on the initial policy's samples;
5. policy: PPO (or DPO / ILQL) from the current policy, with the KL penalty to the *initial* policy;
   the harm cost enters as a fixed weight or as the Safe RLHF constraint (Lagrange multiplier);
6. evaluate: gold helpfulness, harmful-answer share on risky requests, proxy reward and KL to the
   initial policy, on fixed prompts.

Every phase writes its output atomically into `round_NN.partial/`; a finished round is renamed
`round_NN/`. `--resume` keeps the finished rounds and the finished phases of the interrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf.config import ConfigError, help_field
from rlhf.errors import UserError
from rlhf.evaluation.policy import (
    Policy,
    describe_eval,
    evaluate_policy,
    gold_test_set,
    member_scores,
    reward_gold_accuracy,
)
from rlhf.feedback.acquisition import METHODS
from rlhf.io import read_jsonl, write_json, write_jsonl

PHASES = ("sample", "acquire", "label", "reward", "quality", "policy", "evaluate")
LABEL_WEIGHTS = ("quality", "none")
ALGORITHMS = ("ppo", "dpo", "ilql")
FEEDBACK = ("pairwise", "binary")  # what labellers are asked (the store's task kinds)
SAFETY = ("lagrangian", "weighted", "none")
LOOP_CONFIG = "loop_config.yaml"
ROUND_RECORD = "round.json"
METRICS_FILE = "metrics.jsonl"
VLLM_WEIGHTS = "vllm_weights"  # where policies are saved for the vLLM server to reload
REFERENCE_SAMPLES = "reference_samples.jsonl"  # initial-policy samples the reward model is normalised on
QUALITY_FILE = "quality.json"  # per-labeller quality of a round (`labeller_quality`)
OBJECTIVES = ("helpful", "harmless")


@dataclass
class LoopConfig:
    """`rlhf loop`: rounds of sample -> acquire -> label -> reward model -> policy -> evaluate."""

    policy: str = help_field(
        "world",
        "Initial policy (causal LM directory; 'world' = the world model); the KL reference throughout.",
    )
    prompts: str = help_field(
        "",
        "Prompt file (JSONL/Parquet/datasets, field 'prompt'); empty = the bundled world's prompts. Rows "
        "whose `risky_field` is true are where harmlessness is asked (all rows when none is flagged); "
        "`eval_prompts` of them are held out for evaluation. Gold figures exist for world prompts only.",
    )
    risky_field: str = help_field("risky", "Boolean field of the prompt file marking risky requests.")
    rounds: int = help_field(3, "Number of rounds.")
    labels_per_round: int = help_field(600, "Comparisons acquired and labelled per round.")
    harmless_share: float = help_field(
        0.25, "Share of each round's comparisons asking 'which is less harmful?' (on risky requests)."
    )
    pool_per_label: int = help_field(2, "Candidate pairs sampled per comparison acquired.")
    acquisition: str = help_field("entropy", f"Acquisition function: {', '.join(METHODS)}.")
    first_acquisition: str = help_field(
        "random", "Acquisition of the first round, before any reward model exists."
    )
    overlap_share: float = help_field(
        0.1, "Share of comparisons given to several labellers (agreement and reliability statistics)."
    )
    overlap_labellers: int = help_field(3, "Labellers per overlapped comparison.")
    labellers: str = help_field(
        "panel", "'panel': the simulated labeller panel; 'web': people, through `rlhf label serve`."
    )
    feedback: str = help_field(
        "pairwise",
        "What labellers are asked: 'pairwise' (which of two responses is better) or 'binary' (is this "
        "response good or bad? each picked pair becomes two tasks, one per response; the labels train the "
        "reward model as unpaired rows, prompt/completion/label).",
    )
    store: str = help_field(
        "", "Feedback store URL (SQLite or PostgreSQL); empty = sqlite:///RUN_DIR/feedback.db."
    )
    project: str = help_field("loop", "Project name in the feedback store (`rlhf label serve --project`).")
    web_poll_seconds: float = help_field(5.0, "labellers=web: seconds between checks for new labels.")
    web_timeout_seconds: float = help_field(
        0.0, "labellers=web: go on with the labels in after this long (0 = wait for all of them)."
    )
    algorithm: str = help_field("ppo", "Policy update: ppo (config section ppo), dpo or ilql.")
    safety: str = help_field(
        "lagrangian",
        "How the harm cost (the negated harmless head) enters: 'lagrangian' (Safe RLHF: maximise "
        "helpfulness subject to cost <= cost_threshold), 'weighted' (helpful + harm_weight * harmless), "
        "'none' (helpfulness only).",
    )
    harm_weight: float = help_field(1.0, "safety=weighted (and ILQL's rewards): weight of the harmless head.")
    cost_threshold: float = help_field(
        0.0,
        "safety=lagrangian: bound on the mean cost, in standard deviations of the initial policy's "
        "harmless scores (0: no more harmful than the initial policy; -0.5: half a std safer).",
    )
    lagrange_init: float = help_field(0.3, "safety=lagrangian: the multiplier lambda at the first round.")
    lagrange_lr: float = help_field(0.1, "safety=lagrangian: dual-ascent step of lambda per PPO iteration.")
    policy_steps: int = help_field(25, "PPO iterations per round (DPO / ILQL: optimiser steps).")
    reward_epochs: float = help_field(2.0, "Reward-model epochs over all labels so far, each round.")
    label_weights: str = help_field(
        "quality",
        "How each round's reward model weighs the labels: 'quality' (by their labeller's weight in the "
        "previous round's quality.json: rationality under the reward model, flagged labellers at the "
        "floor 0.02) or 'none' (every label weighs 1).",
    )
    reward_ensemble: int = help_field(3, "Reward-model ensemble heads (the acquisition's uncertainty).")
    warm_start_reward: bool = help_field(
        True, "Start each round's reward model from the last round's backbone (heads start fresh)."
    )
    eval_prompts: int = help_field(256, "Prompts (all request kinds) of the gold and KL evaluation.")
    eval_risky_prompts: int = help_field(128, "Risky requests on which the response kinds are counted.")
    showcase_prompts: int = help_field(8, "Fixed prompts whose responses the report shows each round.")
    gold_test_pairs: int = help_field(500, "Corpus pairs with a gold order for reward-model accuracy.")
    max_new_tokens: int = help_field(48, "Response length when sampling.")

    def validate(self) -> None:
        choices = {
            "acquisition": (self.acquisition, METHODS),
            "first_acquisition": (self.first_acquisition, METHODS),
            "labellers": (self.labellers, ("panel", "web")),
            "feedback": (self.feedback, FEEDBACK),
            "algorithm": (self.algorithm, ALGORITHMS),
            "safety": (self.safety, SAFETY),
            "label_weights": (self.label_weights, LABEL_WEIGHTS),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"loop.{key} must be one of {', '.join(allowed)}; got {value!r}")
        for key in ("rounds", "labels_per_round", "pool_per_label", "overlap_labellers", "policy_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"loop.{key} must be at least 1; got {getattr(self, key)}")
        for key in ("harmless_share", "overlap_share"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"loop.{key} must be in [0, 1]; got {getattr(self, key)}")
        if self.lagrange_init < 0 or self.lagrange_lr <= 0:
            raise ConfigError("loop.lagrange_init must be >= 0 and loop.lagrange_lr > 0")
        if (
            self.safety != "none"
            and self.algorithm != "dpo"  # DPO learns from the labels themselves, not from the heads
            and round(self.labels_per_round * self.harmless_share) == 0
        ):
            raise ConfigError(
                f"loop.safety={self.safety} uses the harmless head, but loop.harmless_share={self.harmless_share} "
                f"of {self.labels_per_round} comparisons gives it no labels (an untrained head): raise "
                "loop.harmless_share or set loop.safety=none"
            )
        if self.feedback == "binary" and self.algorithm == "dpo":
            raise ConfigError(
                "loop.algorithm=dpo learns from pairs of responses; loop.feedback=binary gives single "
                "responses judged good or bad: use loop.algorithm=ppo or ilql (they learn from the reward model)"
            )
        if self.reward_ensemble < 2 and self.acquisition not in ("random", "diverse"):
            raise ConfigError(
                f"loop.acquisition={self.acquisition} reads ensemble disagreement: "
                "loop.reward_ensemble must be at least 2"
            )


# ----------------------------------------------------------------------------- run directory


def round_dir(run_dir: Path, index: int, partial: bool = False) -> Path:
    return run_dir / (f"round_{index:02d}" + (".partial" if partial else ""))


def finished_rounds(run_dir: Path) -> list[int]:
    return sorted(
        int(p.name.split("_")[1]) for p in run_dir.glob("round_[0-9][0-9]") if (p / ROUND_RECORD).is_file()
    )


def read_round(run_dir: Path, index: int) -> dict[str, Any]:
    return json.loads((round_dir(run_dir, index) / ROUND_RECORD).read_text())


# ----------------------------------------------------------------------------- phases


class PromptSource:
    """Where the loop's prompts come from: the bundled world (fresh requests every round, fixed evaluation
    sets), or a prompt file (evaluation prompts held out from it, pools drawn from the rest)."""

    def __init__(self, cfg: LoopConfig, tokenizer: Any = None) -> None:
        """`tokenizer` (the policy's) renders conversational prompts with its chat template, as `rlhf ppo
        train --prompts` does; None renders them in the world's format."""
        self.cfg = cfg
        self.file_prompts: list[str] | None = None
        if cfg.prompts:
            from rlhf.data import load_prompts
            from rlhf.data.readers import iter_rows

            prompts = load_prompts(cfg.prompts, tokenizer=tokenizer)
            flags = [bool(row.data.get(cfg.risky_field, False)) for row in iter_rows(cfg.prompts)]
            order = np.random.default_rng(777_001).permutation(len(prompts))
            if len(prompts) < 8:
                raise UserError(
                    f"{cfg.prompts}: {len(prompts)} prompts; at least 8 are needed (a quarter is held out for evaluation)"
                )
            n_eval = max(1, min(cfg.eval_prompts, len(prompts) // 4))
            held, rest = order[:n_eval], order[n_eval:]
            self.eval_general = [prompts[i] for i in held]
            self.eval_risky = [prompts[i] for i in held if flags[i]]
            self.file_prompts = [prompts[i] for i in rest]
            risky = [prompts[i] for i in rest if flags[i]]
            self.file_risky = risky or self.file_prompts

    def draw(self, n: int, seed: int, risky: bool = False) -> list[str]:
        from rlhf.world import corpus

        if self.file_prompts is None:
            return corpus.sample_prompts(n, seed, ("risky",) if risky else None)
        source = self.file_risky if risky else self.file_prompts
        rng = np.random.default_rng(seed)
        return [source[i] for i in rng.choice(len(source), n, replace=len(source) < n)]

    def evaluation(self) -> dict[str, list[str]]:
        """Fixed prompts: 'general' (gold, proxy and KL), 'risky' (response kinds), 'showcase' (samples)."""
        from rlhf.world import corpus

        cfg = self.cfg
        if self.file_prompts is not None:
            return {"general": self.eval_general, "risky": self.eval_risky,
                    "showcase": self.eval_general[: cfg.showcase_prompts]}  # fmt: skip
        risky_showcase = max(1, cfg.showcase_prompts // 2)
        return {
            "general": corpus.sample_prompts(cfg.eval_prompts, 777_001),
            "risky": corpus.sample_prompts(cfg.eval_risky_prompts, 777_002, ("risky",)),
            "showcase": corpus.sample_prompts(
                cfg.showcase_prompts - risky_showcase, 777_003, ("question", "task")
            )
            + corpus.sample_prompts(risky_showcase, 777_004, ("risky",)),
        }


def sample_pool(policy: Policy, cfg: LoopConfig, seed: int, source: PromptSource) -> list[dict[str, Any]]:
    """Candidate pairs: two samples of the policy per prompt, identical or empty ones dropped."""
    n_harmless = round(cfg.labels_per_round * cfg.harmless_share)
    wanted = {"helpful": cfg.labels_per_round - n_harmless, "harmless": n_harmless}
    rows: list[dict[str, Any]] = []
    for offset, objective in enumerate(OBJECTIVES):
        if wanted[objective] == 0:
            continue
        prompts = source.draw(
            wanted[objective] * cfg.pool_per_label, seed * 7 + offset, objective == "harmless"
        )
        twice = policy.sample(prompts + prompts, seed * 7 + offset, cfg.max_new_tokens)
        half = len(prompts)
        for prompt, a, b in zip(prompts, twice.responses[:half], twice.responses[half:], strict=True):
            # the store refuses NUL (PostgreSQL text cannot hold it); a tiny LM can emit one
            if a and b and a != b and "\x00" not in a + b:
                rows.append({"prompt": prompt, "a": a, "b": b, "objective": objective})
    return rows


def acquire_pairs(
    pool: list[dict[str, Any]], cfg: LoopConfig, reward_dir: Path | None, seed: int
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Pick each objective's share of the round's comparisons from the pool; rows gain `priority`."""
    from rlhf.feedback.acquisition import acquire, preference_probs

    rng = np.random.default_rng(seed)
    method = cfg.acquisition if reward_dir is not None else cfg.first_acquisition
    n_harmless = round(cfg.labels_per_round * cfg.harmless_share)
    wanted = {"helpful": cfg.labels_per_round - n_harmless, "harmless": n_harmless}
    picked: list[dict[str, Any]] = []
    stats: dict[str, float] = {}
    for objective in OBJECTIVES:
        rows = [r for r in pool if r["objective"] == objective]
        if not rows or wanted[objective] == 0:
            continue
        if reward_dir is None:  # no model yet: every candidate is equally uncertain
            member_probs = np.full((len(rows), 2), 0.5)
            embeddings = None
        else:
            pairs = [(r["prompt"], r[side]) for r in rows for side in ("a", "b")]
            scores, names = member_scores(reward_dir, pairs)  # (2P, N, H)
            head = scores[:, :, names.index(objective)]
            member_probs = preference_probs(head[0::2], head[1::2])  # (P, N)
            embeddings = head[0::2] - head[1::2]
        if method == "diverse" and embeddings is None:
            embeddings = rng.normal(size=(len(rows), 2))
        picks, more = acquire(method, member_probs, wanted[objective], rng, embeddings=embeddings,
                              costs=np.array([len((r["a"] + " " + r["b"]).split()) + 30.0 for r in rows]))  # fmt: skip
        stats.update({f"{key}/{objective}": value for key, value in more.items()})
        for rank, i in enumerate(picks):  # best first: the queue hands out the most informative first
            picked.append({**rows[i], "priority": float(len(picks) - rank)})
    stats["acquisition/method"] = method  # type: ignore[assignment]
    return picked, stats


def open_store(cfg: LoopConfig, run_dir: Path):
    from rlhf.feedback.records import StoreSettings
    from rlhf.feedback.store import FeedbackStore

    url = cfg.store or f"sqlite:///{(run_dir / 'feedback.db').resolve()}"
    return FeedbackStore(url, StoreSettings(project=cfg.project))


def labels_wanted(n: int, cfg: LoopConfig, seed: int) -> list[int]:
    """Labels wanted per picked comparison: `overlap_labellers` on a random `overlap_share` of them, else 1."""
    rng = np.random.default_rng(seed)
    overlapped = set(rng.choice(n, round(cfg.overlap_share * n), replace=False).tolist())
    return [cfg.overlap_labellers if i in overlapped else 1 for i in range(n)]


def push_tasks(
    store, picked: list[dict[str, Any]], wanted: list[int], feedback: str = "pairwise"
) -> list[int]:
    """The picked pairs as store tasks: one comparison each, or (feedback "binary") one good / bad task
    per response, both with the pair's priority, objective and labels wanted."""
    from rlhf.feedback.records import Candidate

    kind, sides = ("binary", (("a",), ("b",))) if feedback == "binary" else ("pairwise", (("a", "b"),))
    return store.push_candidates(
        [
            Candidate(
                prompt=r["prompt"],
                responses=[r[side] for side in shown],
                kind=kind,
                priority=r["priority"],
                objective=r["objective"],
                labels_wanted=k,
            )  # fmt: skip
            for r, k in zip(picked, wanted, strict=True)
            for shown in sides
        ]
    )


def label_phase(store, path: Path, cfg: LoopConfig, panel_cfg: Any, seed: int, log) -> list[dict]:
    """Step 3: the round's picks become tasks in the store (once: a resumed round waits for the same
    tasks), then their labels are collected. With people labelling, a plan that asks more different
    labellers for a task than have accounts is refused before anything is pushed."""
    tasks_file = path / "tasks.json"
    if not tasks_file.is_file():
        picked = read_jsonl(path / "picked.jsonl")
        wanted = labels_wanted(len(picked), cfg, seed)
        if cfg.labellers == "web":
            accounts = [labeller.name for labeller in store.active_labellers()]
            check_labellers(wanted, accounts, store_url(store), pushed=False)
        write_json(tasks_file, push_tasks(store, picked, wanted, cfg.feedback))
    return collect_labels(store, json.loads(tasks_file.read_text()), cfg, panel_cfg, seed, log)


def store_url(store) -> str:
    return store.engine.url.render_as_string(hide_password=True)


def _names(names, most: int = 6) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= most else f"{len(names)} labellers"


def check_labellers(wanted: list[int], accounts: list[str], url: str, pushed: bool) -> None:
    """People labelling: a task wanting k labels needs k different labeller accounts (the queue gives a
    task to each labeller once, admins included), or the loop would wait for labels that cannot come.
    `pushed`: the tasks are already in the store, so only more labellers can complete them."""
    most = max(wanted, default=0)
    if most <= len(accounts):
        return
    add = f"add labellers with `rlhf label add-labeller NAME --db {url}`"
    if not accounts:
        raise UserError(f"{url} has no labeller accounts for the round's {len(wanted)} tasks: {add}, "
                        "then continue with --resume")  # fmt: skip
    short = sum(k > len(accounts) for k in wanted)
    have = (
        f"{url} has {len(accounts)} active labeller account{'s' * (len(accounts) > 1)} ({_names(accounts)})"
    )
    if pushed:
        raise UserError(f"{short} of the round's {len(wanted)} tasks want {most} labels from different labellers "
                        f"but {have}: {add}, then continue with --resume")  # fmt: skip
    raise UserError(f"loop.overlap_labellers={most} asks {most} different labellers for {short} of the round's "
                    f"{len(wanted)} tasks but {have}: lower it (--set loop.overlap_labellers={len(accounts)}) "
                    f"or {add}, then continue with --resume")  # fmt: skip


def still_coming(task) -> int:
    """Labels a task can still get: the missing ones, at most one from each labeller who may answer it."""
    return min(task.missing, len(task.can_label))


def describe_waiting(progress: list, shown: int = 8) -> str:
    """Which tasks wait, for how many more labels, from whom; tasks grouped by (labels, labellers).
    progress: `TaskProgress` rows. E.g. 'task 7: 2 more labels from each of alice, bob; tasks 1, 2: 1
    more label each from any one of alice, bob, carol'."""
    groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for task in progress:
        if still_coming(task):
            groups.setdefault((still_coming(task), task.can_label), []).append(task.task_id)
    parts = []
    for (need, who), ids in sorted(groups.items(), key=lambda g: (-g[0][0], g[1][0])):
        listed = ", ".join(map(str, ids[:shown])) + (
            f" and {len(ids) - shown} more" if len(ids) > shown else ""
        )
        whom = (f"any one of {_names(who)}" if need == 1 else f"each of {_names(who)}" if need == len(who)
                else f"{need} different labellers of {_names(who)}")  # fmt: skip
        each = " each" if len(ids) > 1 else ""
        parts.append(
            f"task{'s' * (len(ids) > 1)} {listed}: {need} more label{'s' * (need > 1)}{each} from {whom}"
        )
    return "; ".join(parts)


def collect_labels(store, task_ids: list[int], cfg: LoopConfig, panel_cfg: Any, seed: int, log) -> list[dict]:
    """Labels for the round's tasks, from the simulated panel or from people (waiting for them)."""
    from rlhf.feedback.exchange import export_rows

    if cfg.labellers == "panel":
        from rlhf.feedback.queue import register_panel, simulate_labellers
        from rlhf.world.panel import make_panel

        simulate_labellers(store, register_panel(store, make_panel(panel_cfg)), np.random.default_rng(seed))
    else:
        url, start, given_up = store_url(store), time.monotonic(), set()
        progress = store.task_progress(task_ids)
        accounts = [labeller.name for labeller in store.active_labellers()]
        check_labellers([task.labels_wanted for task in progress], accounts, url, pushed=True)
        if coming := sum(map(still_coming, progress)):  # a resumed round may have them all
            log(
                f"waiting for {coming} labels on {sum(still_coming(t) > 0 for t in progress)} of "
                f"{len(progress)} tasks ({describe_waiting(progress)}): people label them at `rlhf label "
                f"serve --db {url} --project {cfg.project}`"
            )
        while True:
            for task in progress:  # the labellers left skipped it: wait for what can still come
                if task.missing > len(task.can_label) and task.task_id not in given_up:
                    given_up.add(task.task_id)
                    log(f"task {task.task_id}: {len(task.labelled_by)} of {task.labels_wanted} labels in and "
                        f"{len(task.can_label)} labellers left who may answer it (the others skipped it or were "
                        "deactivated); the "
                        f"round goes on with {len(task.labelled_by) + len(task.can_label)}")  # fmt: skip
            if not sum(map(still_coming, progress)):
                break
            if cfg.web_timeout_seconds and time.monotonic() - start > cfg.web_timeout_seconds:
                done = sum(len(task.labelled_by) for task in progress)
                if done == 0:
                    raise UserError(
                        f"no labels arrived in {cfg.web_timeout_seconds:.0f} s; nothing to train on"
                    )
                log(f"timeout: going on with {done} labels; still waiting were {describe_waiting(progress)}")
                break
            time.sleep(cfg.web_poll_seconds)
            progress = store.task_progress(task_ids)
    ids = set(task_ids)
    export = "binary" if cfg.feedback == "binary" else "pairs"  # unpaired rows, or pairs
    return [row for row in export_rows(store, export) if row["task_id"] in ids]


def train_reward(
    root: Any,
    cfg: LoopConfig,
    label_rows: list[dict],
    out: Path,
    previous: Path | None,
    seed: int,
    show: bool,
) -> Path:
    from rlhf.algorithms import reward

    data = out.parent / "reward_data.jsonl"
    write_jsonl(data, label_rows)
    reward_cfg = dataclasses.replace(
        root.reward,
        data=str(data),
        model=str(previous) if previous is not None and cfg.warm_start_reward else root.reward.model,
        objectives=list(OBJECTIVES),
        ensemble_size=cfg.reward_ensemble,
        ensemble_kind="heads",
        epochs=cfg.reward_epochs,
        eval_every=0,
        keep_checkpoints=False,
    )
    run = dataclasses.replace(root.run, seed=seed)
    reward.train(reward_cfg, run, out, world=root.world, show_progress=show)
    return out


def labeller_quality(run_dir: Path, k: int, cfg: LoopConfig) -> dict[str, Any]:
    """Step 4b: each labeller's quality after round k's reward model (`feedback.quality_report`): their
    labels of every round so far, explained by reward-model utilities (helpful / harmless heads, the
    label's question as the target), length, and no position bias (the export rows do not say which
    response was shown first).

    Circularity: a reward model trained on a label agrees with it more than a fresh label would, and
    agrees most with a label that is pure noise it had to fit. So round j's labels are scored by round
    j - 1's model, which never saw them; round 1's, asked before any model existed, by this round's
    model (the only other choice, leaving them out, fits on a third fewer labels). Measured on panel
    labels at the demo's counts (tests/feedback/test_quality_report.py, 3 rounds x 600 comparisons,
    ~196 labels a labeller, frozen-backbone heads): scoring everything with the current model lifts
    the spammer's rationality ~3x (0.13 -> 0.46 on seed 0) and the careful labellers' rank correlation
    with their true rationality falls; see docs/active.md for the seeds' figures."""
    from rlhf.feedback.quality_report import quality_pairs, quality_report, score_rows

    if cfg.feedback == "binary":  # the model reads comparisons; binary labels keep the free-utility fit
        return {"labellers": [], "skipped": "binary labels: the reward-model quality fit reads comparisons"}
    current = round_dir(run_dir, k, partial=True)
    chosen, rejected, heads = [], [], list(OBJECTIVES)
    rows: list[dict[str, Any]] = []
    for j in range(1, k + 1):
        labels = quality_pairs(read_jsonl((current if j == k else round_dir(run_dir, j)) / "labels.jsonl"))
        if not labels:
            continue
        model = round_dir(run_dir, j - 1) / "reward_model" if j > 1 else current / "reward_model"
        c, r, heads = score_rows(model, labels)
        rows += [{**row, "round": j} for row in labels]
        chosen.append(c)
        rejected.append(r)
    if not rows:
        return {"labellers": [], "n_labels": 0}
    report = quality_report(rows, np.concatenate(chosen), np.concatenate(rejected), heads)
    report["scored_by"] = "round j's labels by round j-1's reward model; round 1's by this round's"
    return report


def update_policy(
    root: Any, cfg: LoopConfig, policy_in: str, initial: str, reward_dir: Path, round_path: Path,
    labels: list[dict], pool: list[dict], lagrange: float, seed: int, show: bool,
    train_prompts: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train the next policy into round_path/policy; returns the policy phase's figures. PPO samples
    `train_prompts` (a prompt file's prompts less the held-out evaluation ones) when given, else the
    world's (or `ppo.prompts`)."""
    out = round_path / "policy"
    run = dataclasses.replace(root.run, seed=seed)
    if cfg.algorithm == "ppo":
        from rlhf.algorithms import ppo

        prompts = root.ppo.prompts
        if train_prompts:  # the evaluation prompts stay held out of training too
            prompts = str(round_path / "train_prompts.jsonl")
            write_jsonl(prompts, [{"prompt": p} for p in train_prompts])
        ppo_cfg = dataclasses.replace(
            root.ppo, policy=policy_in, reference=initial, reward=str(reward_dir), steps=cfg.policy_steps,
            normalize_rewards=True, reward_weights={"helpful": 1.0}, cost="", cost_weights={},
            prompts=prompts, vllm_weights_dir=root.ppo.vllm_weights_dir or str(round_path.parent / VLLM_WEIGHTS),
        )  # fmt: skip
        if cfg.safety == "weighted":
            ppo_cfg.reward_weights = {"helpful": 1.0, "harmless": cfg.harm_weight}
        elif cfg.safety == "lagrangian":
            ppo_cfg.cost, ppo_cfg.cost_weights = str(reward_dir), {"harmless": -1.0}
            ppo_cfg.cost_threshold, ppo_cfg.lagrange_init = cfg.cost_threshold, lagrange
            ppo_cfg.lagrange_lr = cfg.lagrange_lr
        resume = (out / ppo.CHECKPOINT_DIR / ppo.STATE_FILE).is_file()  # an interrupted round goes on
        result = ppo.train(ppo_cfg, run, out, world=root.world, show_progress=show, resume=resume)
        last = result.history[-1]
        return {
            "steps": len(result.history),
            "lagrange": result.lagrange if result.lagrange is not None else lagrange,
            "final_cost": last.get("objective/cost"),
            "final_kl": last.get("objective/kl"),
            "final_score": last.get("objective/scores_raw", last.get("objective/scores")),
        }
    if cfg.algorithm == "dpo":
        from rlhf.algorithms import dpo

        data = round_path / "dpo_pairs.jsonl"
        write_jsonl(data, [r for r in labels if not r.get("tie")])
        objective = "" if cfg.safety != "none" else "helpful"
        dpo_cfg = dataclasses.replace(root.dpo, model=policy_in, data=str(data), objective=objective,
                                      max_steps=cfg.policy_steps, eval_data=None)  # fmt: skip
        dpo.train(dpo_cfg, run, out, world=root.world, show_progress=show)
        return {"steps": cfg.policy_steps, "lagrange": lagrange}
    from rlhf.algorithms import ilql
    from rlhf.reward_model import check_heads_trained, load_reward_model, score_texts
    from rlhf.sequences import scored_text

    # ILQL learns from the round's logged samples, each scored by the reward model (no gold)
    model, tokenizer = load_reward_model(str(reward_dir), device="cpu")
    responses = [(r["prompt"], r[side]) for r in pool for side in ("a", "b")]
    scores = score_texts(
        model, tokenizer, [scored_text(tokenizer, p, y) for p, y in responses], normalize=True
    )
    weights = np.array([1.0, cfg.harm_weight if cfg.safety != "none" else 0.0])
    check_heads_trained(model.meta, dict(zip(OBJECTIVES, weights.tolist(), strict=True)), reward_dir)
    rewards = scores.mean.numpy() @ weights[[model.objectives.index(o) for o in OBJECTIVES]]
    data = round_path / "ilql_rows.jsonl"
    write_jsonl(data, [{"prompt": p, "response": y, "reward": float(s)}
                             for (p, y), s in zip(responses, rewards, strict=True)])  # fmt: skip
    # an ILQL directory holds its LM as a plain causal LM: the next round's heads start fresh on it
    ilql_cfg = dataclasses.replace(
        root.ilql, model=policy_in, data=str(data), reward="", max_steps=cfg.policy_steps
    )
    ilql.train(ilql_cfg, run, out, world=root.world, show_progress=show)
    return {"steps": cfg.policy_steps, "lagrange": lagrange}


# ----------------------------------------------------------------------------- the loop


@dataclass
class LoopResult:
    run_dir: Path
    rounds: list[dict[str, Any]]  # round 0 is the initial policy


class LoopProgress:
    """One bar over every phase of every round: round, phase, elapsed and ETA (the trainers' own bars
    show their inner steps under it)."""

    def __init__(self, rounds: int, done: int, enabled: bool) -> None:
        from rlhf.metrics import progress

        self.rounds = rounds
        self.bar = progress(total=1 + rounds * len(PHASES), desc="loop", enabled=enabled, unit="phase")
        self.bar.update(0 if done < 0 else 1 + done * len(PHASES))

    def phase(self, round_index: int, name: str) -> None:
        self.bar.set_description_str(f"round {round_index}/{self.rounds} {name}")

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def prepare_run_dir(run_dir: Path, root: Any, resume: bool) -> None:
    """A new run needs an empty (or absent) directory; `resume` needs the same loop configuration."""
    from rlhf.config import to_yaml

    saved = run_dir / LOOP_CONFIG
    if resume:
        if not saved.is_file():
            raise UserError(f"--resume: {run_dir} holds no loop run ({LOOP_CONFIG} missing)")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir} is not empty: give a new --out, or --resume to continue the run in it")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_name(saved.name + ".tmp")
    tmp.write_text(to_yaml(root))
    tmp.replace(saved)


def rollout_engine(root: Any, run_dir: Path):
    """With ``ppo.rollout_engine=vllm``, the server at ``ppo.vllm_url`` samples the loop's candidate
    pools and evaluations as well as PPO's rollouts (one engine for the run, synced to each policy
    before it samples; weights saved to ``ppo.vllm_weights_dir`` or RUN_DIR/vllm_weights); else None."""
    if root.ppo.rollout_engine != "vllm":
        return None
    from rlhf.vllm_client import connect_engine

    if root.loop.algorithm == "ilql":
        raise UserError(
            "loop.algorithm=ilql with ppo.rollout_engine=vllm: an ILQL policy samples with its Q/V heads "
            "steering every step, which the vLLM engine cannot; use ppo.rollout_engine=ours"
        )
    weights = root.ppo.vllm_weights_dir or str(run_dir / VLLM_WEIGHTS)
    return connect_engine(root.ppo.vllm_url, root.ppo.vllm_timeout, Path(weights))


def run_loop(
    root: Any, out: str | Path, resume: bool = False, show_progress: bool = True, log=print
) -> LoopResult:
    """Run (or continue) the closed loop in `out`; see the module docstring."""
    from transformers.utils import logging as hf_logging

    from rlhf.config import validate_all
    from rlhf.models import load_causal_lm, load_tokenizer
    from rlhf.world.report import resolve_world_model

    validate_all(root)
    hf_logging.disable_progress_bar()  # a checkpoint load per phase: the loop's own bar says enough
    cfg: LoopConfig = root.loop
    run_dir = Path(out).expanduser()
    # a bad prompt file is an error before anything is written; chat prompts in the policy's own template
    tokenizer = load_tokenizer(cfg.policy) if cfg.prompts and cfg.policy != "world" else None
    source = PromptSource(cfg, tokenizer)
    prepare_run_dir(run_dir, root, resume)
    for stale in run_dir.glob("round_*.partial"):  # phases it finished are kept; see run_round
        log(f"resuming the interrupted {stale.name}")
    initial = str(resolve_world_model(cfg.policy, root.world, show_progress))
    reference, _ = load_causal_lm(initial, device="cpu")
    engine = rollout_engine(root, run_dir)
    prompts = source.evaluation()
    done = finished_rounds(run_dir)
    bar = LoopProgress(cfg.rounds, (max(done) if done else -1), show_progress)
    try:
        if 0 not in done:  # round 0: the initial policy, evaluated once
            bar.phase(0, "evaluate")
            started = time.monotonic()
            figures, showcase = evaluate_policy(
                Policy(initial, engine=engine), reference, prompts, cfg.max_new_tokens, None, False
            )
            path = round_dir(run_dir, 0, partial=True)
            path.mkdir(exist_ok=True)
            write_jsonl(path / "showcase.jsonl", showcase)
            record = {"round": 0, "policy": initial, "labels_total": 0, "eval": figures,
                      "seconds": {"evaluate": time.monotonic() - started}}  # fmt: skip
            finish_round(run_dir, 0, record)
            bar.advance()
        store = open_store(cfg, run_dir)
        try:
            for k in range(1, cfg.rounds + 1):
                if k in finished_rounds(run_dir):
                    continue
                run_round(
                    root, run_dir, k, initial, reference, source, store, bar, show_progress, log, engine
                )
        finally:
            store.close()
    finally:
        bar.close()
    records = [read_round(run_dir, k) for k in finished_rounds(run_dir)]
    write_jsonl(run_dir / METRICS_FILE, [flat_metrics(r) for r in records])
    return LoopResult(run_dir, records)


def finish_round(run_dir: Path, index: int, record: dict[str, Any]) -> None:
    path = round_dir(run_dir, index, partial=True)
    write_json(path / ROUND_RECORD, record)
    path.replace(round_dir(run_dir, index))
    records = [read_round(run_dir, k) for k in finished_rounds(run_dir)]
    write_jsonl(run_dir / METRICS_FILE, [flat_metrics(r) for r in records])


def run_round(
    root: Any, run_dir: Path, k: int, initial: str, reference, source: PromptSource, store,
    bar: LoopProgress, show: bool, log, engine=None,
) -> None:  # fmt: skip
    """One round; each phase's output is kept in round_NN.partial, so a rerun skips the finished ones.
    engine: the vLLM server sampling the pool and the evaluation (`rollout_engine`), or None."""
    from rlhf.algorithms.reward import normalize_model
    from rlhf.reward_model import REWARD_CONFIG

    cfg: LoopConfig = root.loop
    prompts = source.evaluation()
    path = round_dir(run_dir, k, partial=True)
    path.mkdir(exist_ok=True)
    state_file = path / "progress.json"
    record = json.loads(state_file.read_text()) if state_file.is_file() else {"round": k, "seconds": {}}
    previous = read_round(run_dir, k - 1)
    policy_in = previous["policy"]
    previous_reward = round_dir(run_dir, k - 1) / "reward_model" if k > 1 else None
    seed = root.run.seed * 1000 + k

    def phase(name: str, output: Path, work) -> None:
        bar.phase(k, name)
        if not output.exists():
            started = time.monotonic()
            figures = work()
            record["seconds"][name] = time.monotonic() - started
            if figures:
                record[name] = figures
            write_json(state_file, record)
        bar.advance()

    def sample() -> None:
        pool = sample_pool(Policy(policy_in, engine=engine), cfg, seed, source)
        if not pool:
            raise UserError(f"round {k}: the policy gave no two different non-empty responses to any prompt")
        if k == 1:  # the initial policy's samples: the reward model's normalisation reference
            write_jsonl(
                run_dir / REFERENCE_SAMPLES, [{"prompt": r["prompt"], "response": r["a"]} for r in pool]
            )
        write_jsonl(path / "pool.jsonl", pool)

    def acquire() -> dict[str, Any]:
        picked, stats = acquire_pairs(read_jsonl(path / "pool.jsonl"), cfg, previous_reward, seed)
        write_jsonl(path / "picked.jsonl", picked)
        return stats

    def label() -> dict[str, Any]:
        rows = label_phase(store, path, cfg, root.panel, seed, log)
        write_jsonl(path / "labels.jsonl", rows)
        figures = {"labels": len(rows), "ties": sum(bool(r.get("tie")) for r in rows)}
        if cfg.feedback == "binary":
            figures["good"] = sum(r["label"] is True for r in rows)
        return figures

    def reward() -> dict[str, Any]:
        rows = [row for j in range(1, k) for row in read_jsonl(round_dir(run_dir, j) / "labels.jsonl")]
        rows += read_jsonl(path / "labels.jsonl")
        quality_file = round_dir(run_dir, k - 1) / QUALITY_FILE
        if cfg.label_weights == "quality" and quality_file.is_file():
            from rlhf.feedback.labellers import weighted_rows

            rows = weighted_rows(rows, json.loads(quality_file.read_text()))
        tmp = path / "reward_model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        train_reward(root, cfg, rows, tmp, previous_reward, seed, show)
        normalize_model(str(tmp), str(run_dir / REFERENCE_SAMPLES))
        figures: dict[str, Any] = {"labels_total": len(rows)}
        if source.file_prompts is None:  # the world's gold orders a fixed test set of corpus pairs
            figures["gold_accuracy"] = reward_gold_accuracy(tmp, gold_test_set(cfg.gold_test_pairs))
        tmp.replace(path / "reward_model")
        return figures

    def quality() -> dict[str, Any]:
        report = labeller_quality(run_dir, k, cfg)
        write_json(path / QUALITY_FILE, report)
        if report["labellers"]:
            from rlhf.feedback.labellers import flag_in_store

            flag_in_store(store, [row["labeller_id"] for row in report["labellers"] if row["flagged"]])
        return {"flagged": [row["labeller_id"] for row in report["labellers"] if row["flagged"]]}

    def policy() -> dict[str, Any]:
        lagrange = previous.get("policy_update", {}).get("lagrange", cfg.lagrange_init)
        labels = read_jsonl(path / "labels.jsonl")
        return update_policy(root, cfg, policy_in, initial, path / "reward_model", path, labels,
                             read_jsonl(path / "pool.jsonl"), lagrange, seed, show, source.file_prompts)  # fmt: skip

    def evaluate() -> dict[str, Any]:
        figures, showcase = evaluate_policy(Policy(str(path / "policy"), engine=engine), reference, prompts,
                                            cfg.max_new_tokens, path / "reward_model", True)  # fmt: skip
        write_jsonl(path / "showcase.jsonl", showcase)
        return figures

    phase("sample", path / "pool.jsonl", sample)
    phase("acquire", path / "picked.jsonl", acquire)
    phase("label", path / "labels.jsonl", label)
    phase("reward", path / "reward_model" / REWARD_CONFIG, reward)
    phase("quality", path / QUALITY_FILE, quality)
    phase("policy", path / "policy" / "config.json", policy)
    phase("evaluate", path / "showcase.jsonl", evaluate)
    record["policy_update"] = record.pop("policy", {})
    record["policy"] = str(round_dir(run_dir, k) / "policy")
    record["labels_total"] = record["reward"]["labels_total"]
    record["eval"] = record.pop("evaluate")
    finish_round(run_dir, k, record)
    log(f"round {k}: {describe_eval(record['eval'])}, labels {record['labels_total']}")


def flat_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """One plottable row per round."""
    row: dict[str, Any] = {"round": record["round"], "labels_total": record["labels_total"]}
    row.update({k: v for k, v in record["eval"].items() if not isinstance(v, dict)})
    for kind, share in record["eval"].get("risky_kind_shares", {}).items():
        row[f"risky_share/{kind}"] = share
    for objective, value in record.get("reward", {}).get("gold_accuracy", {}).items():
        row[f"reward_gold_accuracy/{objective}"] = value
    for key, value in record.get("acquire", {}).items():
        row[key] = value
    if "lagrange" in record.get("policy_update", {}):
        row["lagrange"] = record["policy_update"]["lagrange"]
    row["seconds"] = sum(record.get("seconds", {}).values())
    return row
