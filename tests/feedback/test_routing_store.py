"""Labeller-aware routing in the store: a task's quality floor and a labeller's estimated quality
(migration 0004), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from rlhf.feedback.store import Candidate, InvalidInput, LabelIn


def task(i: int, floor: float | None, priority: float) -> Candidate:
    return Candidate(f"User: q{i}?\nAssistant:", [f"a{i}", f"b{i}"], priority=priority, min_quality=floor)


def test_floors_route_hard_tasks_to_reliable_labellers(make_store):
    store = make_store()
    careful = store.add_labeller("careful", onboarded=True)[0].id
    careless = store.add_labeller("careless", onboarded=True)[0].id
    newcomer = store.add_labeller("newcomer", onboarded=True)[0].id
    hard, easy = store.push_candidates([task(0, 0.8, 2.0), task(1, None, 1.0)])
    assert store.set_quality({careful: 1.1, careless: 0.3}) == 2
    assert {v.name: v.quality for v in store.labellers()} == {
        "careful": 1.1,
        "careless": 0.3,
        "newcomer": None,
    }
    # the careless labeller skips the higher-priority hard task; a labeller not yet estimated too
    assert store.next_task(careless).id == easy
    assert store.next_task(newcomer) is None  # the easy one is held by the careless labeller
    assert store.next_task(careful).id == hard
    # who may still answer, as the loop's waiting logic reads it: the floor counts there too
    progress = {p.task_id: p for p in store.task_progress([hard, easy])}
    assert progress[hard].can_label == ("careful",)
    assert progress[easy].can_label == ("careful", "careless", "newcomer")


def test_floor_exactly_reached_and_quality_forgotten(make_store):
    store = make_store()
    who = store.add_labeller("who", onboarded=True)[0].id
    (t,) = store.push_candidates([task(0, 0.5, 1.0)])
    store.set_quality({who: 0.5})  # quality == floor reaches it
    view = store.next_task(who)
    assert view.id == t
    store.submit_label(who, LabelIn(t, "r1", choice=view.responses[0].id, strength="better"))
    (t2,) = store.push_candidates([task(1, 0.5, 1.0)])
    store.set_quality({who: None})  # forgotten: back to tasks without a floor
    assert store.next_task(who) is None
    assert store.get_labeller(who).quality is None
    assert t2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high"])
def test_bad_floors_and_qualities_are_refused(make_store, bad):
    store = make_store()
    who = store.add_labeller("who", onboarded=True)[0].id
    with pytest.raises(InvalidInput, match="candidate 0: min_quality must be a finite number or null"):
        store.push_candidates([task(0, bad, 1.0)])
    with pytest.raises(InvalidInput, match=f"labeller {who}: quality must be a finite number or None"):
        store.set_quality({who: bad})
    assert store.labellers()[0].quality is None  # nothing written


def test_admin_dashboard_shows_quality(make_store):
    from rlhf.feedback.dashboard import dashboard

    store = make_store()
    who = store.add_labeller("who", onboarded=True)[0].id
    store.add_labeller("unrated", onboarded=True)
    store.set_quality({who: 0.75})
    rows = {r["name"]: r["quality"] for r in dashboard(store)["labellers"]}
    assert rows == {"who": 0.75, "unrated": None}
