"""Acquisition fills the store's queue; simulated labellers answer it through the store API."""

from __future__ import annotations

import numpy as np

from rlhf.feedback.acquisition import acquire, bald
from rlhf.feedback.exchange import export_rows
from rlhf.feedback.queue import (
    answer_task,
    candidates_from_batch,
    push_acquired,
    register_panel,
    simulate_labellers,
)
from rlhf.world.corpus import sample_pairs
from rlhf.world.panel import Labeller, LabellerSpec, Panel, PanelConfig, make_panel


def test_candidates_carry_priority_and_kind():
    items = [("p", "a", "b"), ("q", "c", "d"), ("r", "e", "f", "g")]
    c = candidates_from_batch(
        items, np.array([2, 0]), np.array([0.1, 0.2, 0.3]), kinds=["pairwise", "pairwise", "ranking"]
    )
    assert [(x.prompt, x.priority, x.kind, list(x.responses)) for x in c] == [
        ("r", 0.3, "ranking", ["e", "f", "g"]),
        ("p", 0.1, "pairwise", ["a", "b"]),
    ]


def test_acquired_batch_is_labelled_by_the_simulated_panel(make_store):
    store = make_store()
    pairs = sample_pairs(30, seed=3)
    rng = np.random.default_rng(0)
    probs = rng.random((30, 4))
    picks, _ = acquire("bald", probs, 12, rng)
    scores, _ = bald(probs)
    task_ids = push_acquired(store, pairs, picks, scores, labels_wanted=2)
    assert len(task_ids) == 12
    labellers = register_panel(
        store, make_panel(PanelConfig(n_labellers=4, n_spammers=0, n_length_biased=0, n_refusal_preferring=0))
    )
    # one labeller takes three tasks first: the queue hands out the highest BALD first
    first = next(iter(labellers))
    seen = []
    for _ in range(3):
        task = store.next_task(first)
        seen.append(task.prompt)
        store.submit_label(first, answer_task(task, labellers[first], rng))
    order = np.argsort(-scores[picks], kind="stable")
    assert seen == [pairs[picks[i]][0] for i in order[:3]]
    stats = simulate_labellers(store, labellers, rng)
    assert stats["queue/labels"] == 12 * 2 - 3 and stats["queue/labelling_seconds"] > 0
    rows = list(export_rows(store, "pairs"))
    assert len(rows) == 24 and {r["labeller_id"] for r in rows} <= {f"labeller-{i:02d}" for i in range(1, 5)}
    assert simulate_labellers(store, labellers, rng)["queue/labels"] == 0  # nothing left


def test_rankings_and_ratings_go_through_the_same_path(make_store):
    store = make_store()
    prompt, a, b = sample_pairs(1, seed=5)[0]
    _, c, _ = sample_pairs(1, seed=6)[0]
    items = [(prompt, a, b, c + " extra"), (prompt, a)]
    push_acquired(store, items, np.array([0, 1]), np.array([1.0, 0.5]), kinds=["ranking", "rating"])
    perfect = Labeller(LabellerSpec(name="perfect", rationality=50.0, mistake_rate=0.0))
    labellers = register_panel(store, Panel([perfect]))
    assert simulate_labellers(store, labellers, np.random.default_rng(0))["queue/labels"] == 2
    ranking = list(export_rows(store, "rankings"))
    ratings = list(export_rows(store, "ratings"))
    assert len(ranking) == 1 and sorted(ranking[0]["ranking"]) == [0, 1, 2]
    assert len(ratings) == 1 and 1 <= ratings[0]["rating"] <= 7


def test_simulated_labellers_answer_binary_tasks_through_the_store(make_store):
    from rlhf.feedback.exchange import export_rows
    from rlhf.feedback.queue import register_panel, simulate_labellers
    from rlhf.feedback.store import Candidate

    store = make_store()
    store.push_candidates(
        [
            Candidate(p, [r], kind="binary", labels_wanted=2, objective="helpful")
            for p, r in [(p, r) for p, a, b in sample_pairs(10, seed=5) for r in (a, b)]
        ]
    )
    panel = make_panel(PanelConfig(n_labellers=3, n_spammers=0, n_length_biased=0, n_refusal_preferring=0))
    stats = simulate_labellers(store, register_panel(store, panel), np.random.default_rng(0))
    assert stats["queue/labels"] == 40 and stats["queue/labelling_seconds"] > 0
    rows = list(export_rows(store, "binary"))
    assert len(rows) == 40 and {type(r["label"]) for r in rows} == {bool}
    assert {r["labeller_id"] for r in rows} <= set(panel.names) and all(
        r["objective"] == "helpful" for r in rows
    )
    assert 0.2 < np.mean([r["label"] for r in rows]) < 0.9
