"""The labelling queue between acquisition and labellers: one code path for humans and the simulated panel.

`push_acquired` turns an acquired, scored batch into store `Candidate`s (priority = acquisition score, so
`next_task` hands out the most informative first; `kind` per candidate, e.g. from `feedback_type`).
`simulate_labellers` is a queue worker for simulated labellers: take the next task for a labeller id,
answer it with that labeller's model, submit the label through `FeedbackStore.submit_label` -- exactly
the calls the web app makes for a person, so reservations, idempotency and exports are exercised alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlhf.feedback.records import QUESTIONS, Candidate, LabelIn
from rlhf.feedback.store import FeedbackStore

# the panel's strengths 1..4 (slightly, better, much, definitely better) on the store's scale
PANEL_STRENGTH = {1: "slightly_better", 2: "better", 3: "much_better", 4: "much_better"}


def candidates_from_batch(
    items: Sequence[tuple[str, ...]],
    picks: np.ndarray,
    scores: np.ndarray,
    kinds: Sequence[str] | None = None,
    labels_wanted: int = 1,
    objective: str | None = None,
) -> list[Candidate]:
    """items: (prompt, response, ...) per candidate; picks (k,) indices into items; scores (N,) the
    acquisition scores (the task priority); kinds (N,) task kinds (default "pairwise")."""
    return [
        Candidate(
            prompt=items[i][0],
            responses=list(items[i][1:]),
            kind="pairwise" if kinds is None else kinds[i],
            priority=float(scores[i]),
            labels_wanted=labels_wanted,
            objective=objective,
        )
        for i in picks
    ]


def push_acquired(store: FeedbackStore, items, picks, scores, **kw) -> list[int]:
    """Fill the queue with an acquired batch; returns the task ids (see `candidates_from_batch`)."""
    return store.push_candidates(candidates_from_batch(items, picks, scores, **kw))


def register_panel(store: FeedbackStore, panel) -> dict[int, object]:
    """Add each simulated labeller to the store (onboarded: the panel has no onboarding to do), or find
    the one a previous run added; returns {store labeller id: panel Labeller}."""
    ids = {}
    for lab in panel.labellers:
        known = store.labeller_by_name(lab.spec.name)
        ids[known.id if known else store.add_labeller(lab.spec.name, onboarded=True)[0].id] = lab
    return ids


def answer_task(task, labeller, rng: np.random.Generator) -> LabelIn:
    """The simulated labeller's answer to a TaskView, responses shown in the task's order."""
    ids = [r.id for r in task.responses]
    texts = [r.text for r in task.responses]
    request_id = f"sim-{labeller.spec.name}-{task.id}"
    question = task.objective if task.objective in QUESTIONS else "helpful"
    if task.kind == "pairwise":
        c = labeller.compare(task.prompt, texts[0], texts[1], rng, question=question)
        if c.choice is None:
            return LabelIn(
                task.id, request_id, choice=None, strength="tie", seconds=c.seconds, displayed_order=ids
            )
        return LabelIn(task.id, request_id, choice=ids[c.choice], strength=PANEL_STRENGTH[c.strength],
                       seconds=c.seconds, displayed_order=ids)  # fmt: skip
    if task.kind == "ranking":
        r = labeller.rank(task.prompt, texts, rng, question=question)
        return LabelIn(
            task.id, request_id, ranking=[ids[i] for i in r.order], seconds=r.seconds, displayed_order=ids
        )
    if task.kind == "rating":
        r = labeller.rate(task.prompt, texts[0], rng, question=question)
        return LabelIn(task.id, request_id, rating=r.score, seconds=r.seconds, displayed_order=ids)
    if task.kind == "binary":
        j = labeller.judge(task.prompt, texts[0], rng, question=question)
        return LabelIn(task.id, request_id, label=j.good, seconds=j.seconds, displayed_order=ids)
    raise ValueError(f"simulated labellers do not answer {task.kind!r} tasks")


def simulate_labellers(
    store: FeedbackStore,
    labellers: dict[int, object],
    rng: np.random.Generator,
    max_labels: int | None = None,
) -> dict[str, float]:
    """Labellers take turns (in random order each sweep) asking for their next task and answering it,
    until the queue has nothing left for any of them or `max_labels` labels were submitted."""
    submitted, seconds, active = 0, 0.0, list(labellers)
    while active and (max_labels is None or submitted < max_labels):
        for labeller_id in rng.permutation(active):
            labeller_id = int(labeller_id)
            task = store.next_task(labeller_id)
            if task is None:
                active.remove(labeller_id)
                continue
            answer = answer_task(task, labellers[labeller_id], rng)
            store.submit_label(labeller_id, answer)
            submitted += 1
            seconds += answer.seconds or 0.0
            if max_labels is not None and submitted >= max_labels:
                break
    return {"queue/labels": float(submitted), "queue/labelling_seconds": seconds}
