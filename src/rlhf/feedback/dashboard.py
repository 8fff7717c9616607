"""Figures for the admin dashboard: progress, labels per hour, per-labeller gold accuracy and agreement
with peers, agreement on binary (good / bad) tasks, and examples of tasks where labellers disagreed.

`peer_agreement` (of (task, labeller, answer) triples), `binary_agreement` and `labels_per_hour` are
pure; `dashboard` reads the store.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select

from rlhf.feedback.agreement import MISSING, nominal_agreement
from rlhf.feedback.models import Assignment, Label, Labeller, Response, Task, utcnow
from rlhf.feedback.store import FeedbackStore


def peer_agreement(answers: Iterable[tuple[Hashable, str, Hashable]]) -> dict[str, float]:
    """Per labeller: the mean, over their answers on tasks others also answered, of the share of the
    other labellers who gave the same answer (pairwise raw agreement, as InstructGPT reports it).

    Example: task 1 answered a:A, b:A, c:B -> a agrees with 1 of 2 others (0.5), b 0.5, c 0.0.
    Labellers with no shared task are left out.
    """
    by_task: dict[Hashable, list[tuple[str, Hashable]]] = defaultdict(list)
    for task, labeller, answer in answers:
        by_task[task].append((labeller, answer))
    shares: dict[str, list[float]] = defaultdict(list)
    for given in by_task.values():
        if len(given) < 2:
            continue
        for labeller, answer in given:
            others = [a for who, a in given if who != labeller]
            shares[labeller].append(sum(a == answer for a in others) / len(others))
    return {labeller: sum(s) / len(s) for labeller, s in shares.items()}


def binary_agreement(answers: Iterable[tuple[Hashable, str, bool]]) -> dict[str, Any] | None:
    """Agreement on binary tasks, as nominal data (`agreement.nominal_agreement`), from (task, labeller,
    label) triples: the number of tasks with 2 or more labels, percent agreement, Krippendorff's alpha and
    Fleiss' kappa, each None with `<name>_undefined` saying why when it cannot be computed. None when
    there is no binary label at all."""
    answers = list(answers)
    if not answers:
        return None
    tasks = sorted({task for task, _, _ in answers}, key=str)
    names = sorted({name for _, name, _ in answers})
    table = np.full((len(names), len(tasks)), MISSING, dtype=np.int64)  # (L, I)
    column, row = {t: i for i, t in enumerate(tasks)}, {n: i for i, n in enumerate(names)}
    for task, name, label in answers:
        table[row[name], column[task]] = int(bool(label))
    _, stats = nominal_agreement(table)
    out: dict[str, Any] = {"items": int(stats["nominal/items"])}
    for key, name in (
        ("percent", "percent/agreement"),
        ("alpha", "alpha/nominal"),
        ("fleiss", "fleiss/kappa"),
    ):
        value = float(stats[name])
        out[key] = None if math.isnan(value) else value
        out[f"{key}_undefined"] = stats.get(f"{key}/undefined")
    return out


# A rate is not extrapolated from a burst: below these, labels per hour shows as not yet measurable.
RATE_MIN_LABELS = 5
RATE_MIN_MINUTES = 5.0


def labels_per_hour(times: list[datetime]) -> float | None:
    """Labels per hour between the first and the last label, or None (not yet measurable) with fewer
    than RATE_MIN_LABELS labels or less than RATE_MIN_MINUTES between them: 3 labels in 13 seconds are
    not 830 an hour. Example: 6 labels over 30 minutes -> 6 / 0.5 h = 12.0.
    """
    if len(times) < RATE_MIN_LABELS:
        return None
    span_hours = (max(times) - min(times)).total_seconds() / 3600
    return len(times) / span_hours if span_hours * 60 >= RATE_MIN_MINUTES else None


def _answer_key(label: Label) -> Hashable:
    if label.tie:
        return "tie"
    if label.choice_response_id is not None:
        return label.choice_response_id
    if label.ranking is not None:
        return tuple(label.ranking)
    if label.label is not None:
        return "good" if label.label else "bad"
    return label.rating


def dashboard(store: FeedbackStore, disagreement_examples: int = 10) -> dict[str, Any]:
    now = utcnow()
    with store.read() as s:
        queue = Task.project_id == store.project_id
        tasks = dict(
            s.execute(
                select(Task.status, func.count()).where(queue, Task.is_gold.is_(False)).group_by(Task.status)
            ).all()
        )
        labels = s.execute(
            select(Label, Task.is_gold, Task.kind, Labeller.name)
            .join(Task, Task.id == Label.task_id)
            .join(Labeller, Labeller.id == Label.labeller_id)
            .where(queue)
        ).all()
        skips = dict(
            s.execute(
                select(Assignment.labeller_id, func.count())
                .where(Assignment.state == "skipped")
                .group_by(Assignment.labeller_id)
            ).all()
        )
        labellers = s.scalars(select(Labeller).order_by(Labeller.name)).all()
        real = [(label, kind, name) for label, gold, kind, name in labels if not gold]
        agreement = peer_agreement(
            (label.task_id, name, _answer_key(label))
            for label, kind, name in real
            if kind in ("pairwise", "ranking", "rating", "binary")
        )
        times = [label.created_at for label, _, _ in real]
        per_labeller = []
        for labeller in labellers:
            mine = [label for label, gold, _, name in labels if name == labeller.name]
            graded = [label.gold_correct for label in mine if label.gold_correct is not None]
            seconds = [label.seconds for label in mine if label.seconds is not None]
            per_labeller.append(
                {
                    "name": labeller.name,
                    "role": labeller.role,
                    "onboarded": labeller.onboarded,
                    "flagged": labeller.flagged,
                    "quality": labeller.quality,
                    "labels": sum(1 for _, gold, _, name in labels if name == labeller.name and not gold),
                    "skips": skips.get(labeller.id, 0),
                    "gold_answered": len(graded),
                    "gold_accuracy": sum(graded) / len(graded) if graded else None,
                    "agreement": agreement.get(labeller.name),
                    "median_seconds": statistics.median(seconds) if seconds else None,
                }
            )
        return {
            "tasks_total": sum(tasks.values()),
            "tasks_done": tasks.get("done", 0),
            "tasks_open": tasks.get("open", 0),
            "labels_total": len(real),
            "labels_last_hour": sum(1 for t in times if t >= now - timedelta(hours=1)),
            "labels_per_hour": labels_per_hour(times),  # None: too few labels or minutes to tell
            "labels_per_hour_needs": f"{RATE_MIN_LABELS} labels over {RATE_MIN_MINUTES:g} minutes",
            "labellers": per_labeller,
            "binary_agreement": binary_agreement(
                (label.task_id, name, label.label) for label, kind, name in real if kind == "binary"
            ),
            "disagreements": _disagreements(s, real, disagreement_examples),
        }


def _disagreements(s, real, limit: int) -> list[dict[str, Any]]:
    by_task: dict[int, list[tuple[Label, str]]] = defaultdict(list)
    for label, kind, name in real:
        if kind in ("pairwise", "ranking", "rating", "binary"):
            by_task[label.task_id].append((label, name))
    examples = []
    for task_id, given in sorted(by_task.items(), reverse=True):
        if len({_answer_key(label) for label, _ in given}) < 2:
            continue
        task = s.get(Task, task_id)
        texts = dict(
            s.execute(select(Response.id, Response.text).where(Response.id.in_(task.response_ids))).all()
        )
        examples.append(
            {
                "task_id": task_id,
                "kind": task.kind,
                "prompt": task.prompt.text,
                "answers": [
                    {"labeller": name, "answer": _describe(label, task, texts)} for label, name in given
                ],
            }
        )
        if len(examples) >= limit:
            break
    return examples


def _describe(label: Label, task: Task, texts: dict[int, str]) -> str:
    """An answer in words, with responses named by their position in the task (A, B, ...)."""
    letter = {rid: chr(ord("A") + i) for i, rid in enumerate(task.response_ids)}
    if label.tie:
        return "tie"
    if label.choice_response_id is not None:
        return f"{letter[label.choice_response_id]} {label.strength.replace('_', ' ')}"
    if label.ranking is not None:
        return " > ".join(letter[r] for r in label.ranking)
    if label.label is not None:
        return ("good" if label.label else "bad") + (f" ({label.reason})" if label.reason else "")
    return f"rating {label.rating}"
