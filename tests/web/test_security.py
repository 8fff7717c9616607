"""The labelling app against its own users (issue 18): who may answer which task, who sees gold answers,
and what an import accepts. Each test acts as the attacker and checks that a refusal leaves no trace.

Request-size limits, error-handler encoding and token revocation are in test_security_limits.py.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from rlhf.cli import main
from rlhf.errors import UserError
from rlhf.feedback.exchange import export_rows, import_file
from rlhf.feedback.models import GoldAnswer, Task
from rlhf.feedback.store import Candidate, LabelIn, StoreSettings
from rlhf.web import WebSettings, create_app
from tests.web.test_pages import field, make_client, sign_in

GOLD = [
    Candidate("User: capital of France?\nAssistant:", ["Paris.", "Rome."], gold_answer={"choice": 0},
              explanation="SECRET-PAIR: Paris is the capital."),
    Candidate("User: 2+2?\nAssistant:", ["5", "4", "22"], kind="ranking", gold_answer={"ranking": [1, 2, 0]},
              explanation="SECRET-RANK: 4 is right."),
    Candidate("User: say hi\nAssistant:", ["Hi!"], kind="rating", gold_answer={"rating": 6},
              explanation="SECRET-RATE: friendly."),
    Candidate("User: 3+3?\nAssistant:", ["7"], kind="binary", gold_answer={"label": False},
              explanation="SECRET-BINARY: 3+3 is 6."),
]  # fmt: skip
GOLD_OF = {"pairwise": GOLD[0], "binary": GOLD[3]}  # the world fixture's onboarding question, per kind


def ordinary(n: int, kind: str = "pairwise") -> list[Candidate]:
    if kind == "binary":
        return [
            Candidate(f"User: q{i}\nAssistant:", [f"answer {i}"], kind="binary", priority=i) for i in range(n)
        ]
    return [Candidate(f"User: q{i}\nAssistant:", [f"good {i}", f"bad {i}"], priority=i) for i in range(n)]


# the least answer to a task of each kind, without looking at it (an attacker's blind post)
BLIND = {"pairwise": {"strength": "tie"}, "binary": {"label": True}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_client(store) -> TestClient:
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db"))
    app.state.store = store
    return TestClient(app, raise_server_exceptions=False)


def places(store) -> dict[int, tuple[int, int]]:
    """Every task's (n_assigned, n_labels): a refused answer must not move them."""
    with store.read() as s:
        return {i: (a, n) for i, a, n in s.execute(select(Task.id, Task.n_assigned, Task.n_labels))}


def answer_for(task: dict, request_id: str) -> dict:
    """A valid answer to a task as the API shows it, whatever its kind."""
    ids = [r["id"] for r in task["responses"]]
    body = {"task_id": task["id"], "client_request_id": request_id}
    if task["kind"] == "pairwise":
        return {**body, "choice": ids[0], "strength": "better"}
    if task["kind"] == "ranking":
        return {**body, "ranking": ids}
    if task["kind"] == "binary":
        return {**body, "label": True, "reason": "fine"}
    return {**body, "rating": 4}


# ---------------------------------------------------------------------- finding 1: onboarding and assignment


def test_onboarding_cannot_be_skipped_by_posting_ordinary_task_ids(make_store):
    """A new labeller with gold questions waiting posts ties to every ordinary task id (before: 201 each,
    and the labels went into the export)."""
    store = make_store()
    store.push_candidates(GOLD)
    task_ids = store.push_candidates(ordinary(4))
    _, token = store.add_labeller("eve")
    before = places(store)
    with api_client(store) as client:
        for task_id in task_ids:
            body = {"task_id": task_id, "client_request_id": f"r{task_id}", "strength": "tie"}
            r = client.post("/api/labels", json=body, headers=auth(token))
            assert r.status_code == 409 and "onboarding" in r.json()["detail"], r.text
        # once she holds her first gold question, the other ids are still refused
        held = client.get("/api/tasks/next", headers=auth(token)).json()
        assert held["is_gold"]
        for task_id in task_ids:
            body = {"task_id": task_id, "client_request_id": f"s{task_id}", "strength": "tie"}
            assert client.post("/api/labels", json=body, headers=auth(token)).status_code == 409
    assert store.count_labels() == 0 and list(export_rows(store, "pairs")) == []
    assert {i: places(store)[i] for i in task_ids} == {i: before[i] for i in task_ids}  # no place taken


def test_a_task_never_assigned_or_assigned_to_another_is_refused(make_store):
    """An onboarded labeller answers tasks the queue never gave her: refused (403), no place taken, and
    the labeller who holds the task can still answer it."""
    store = make_store()
    first, second, third = store.push_candidates(ordinary(3))  # handed out third, second, first
    _, eve = store.add_labeller("eve", onboarded=True)
    _, ann = store.add_labeller("ann", onboarded=True)
    with api_client(store) as client:
        ann_task = client.get("/api/tasks/next", headers=auth(ann)).json()
        assert ann_task["id"] == third
        before = places(store)
        for task_id in (third, second, first, 99_999):  # ann's, never assigned, never assigned, absent
            body = {"task_id": task_id, "client_request_id": f"e{task_id}", "strength": "tie"}
            r = client.post("/api/labels", json=body, headers=auth(eve))
            assert r.status_code == 403 and f"task {task_id} is not assigned to you" in r.json()["detail"]
        assert places(store) == before and store.count_labels() == 0
        mine = client.post("/api/labels", json=answer_for(ann_task, "a1"), headers=auth(ann))
        assert mine.status_code == 201
        # eve's own queue is untouched by her attempts: she is given the next task as usual
        assert client.get("/api/tasks/next", headers=auth(eve)).json()["id"] == second


def test_a_lapsed_reservation_cannot_be_answered(make_store):
    """A reservation that lapsed (and went to someone else) is no longer the labeller's to answer."""
    store = make_store(StoreSettings(assignment_seconds=0))
    (task_id,) = store.push_candidates(ordinary(1))
    eve, token = store.add_labeller("eve", onboarded=True)
    bob, _ = store.add_labeller("bob", onboarded=True)
    assert store.next_task(eve.id).id == task_id
    assert store.next_task(bob.id).id == task_id  # eve's reservation lapsed and went to bob
    with api_client(store) as client:
        body = {"task_id": task_id, "client_request_id": "late", "strength": "tie"}
        r = client.post("/api/labels", json=body, headers=auth(token))
    assert r.status_code == 403 and "not assigned to you" in r.json()["detail"]
    assert places(store)[task_id] == (1, 0) and store.count_labels() == 0  # bob's place only


# ---------------------------------------------------------------------- finding 2: gold answers


def test_gold_answers_cannot_be_harvested(make_store):
    """Posting an answer to every task id (ids are consecutive) reads no gold answer or explanation,
    neither for an onboarded labeller nor for a new one; a labeller sees a gold answer only for the gold
    question she was given, after answering it."""
    store = make_store()
    gold_ids = store.push_candidates(GOLD)
    store.push_candidates(ordinary(2))
    _, old_hand = store.add_labeller("old", onboarded=True)
    new, newbie = store.add_labeller("new")
    with api_client(store) as client:
        held = client.get("/api/tasks/next", headers=auth(newbie)).json()
        assert held["id"] == gold_ids[0] and "explanation" not in json.dumps(held)
        for token in (old_hand, newbie):
            for task_id in range(1, max(gold_ids) + 5):
                if token == newbie and task_id == held["id"]:
                    continue
                for body in ({"strength": "tie"}, {"ranking": [1, 2, 3]}, {"rating": 4}, {"label": False}):
                    body = {**body, "task_id": task_id, "client_request_id": f"h{task_id}"}
                    r = client.post("/api/labels", json=body, headers=auth(token))
                    assert r.status_code in (403, 409, 422), r.text
                    assert "SECRET" not in r.text and "expected" not in r.text
                r = client.get(f"/api/tasks/{task_id}", headers=auth(token))
                assert "SECRET" not in r.text
        assert store.count_labels() == 0
        # the gold question she was given: answered, then (and on a retry) its answer is shown
        r = client.post("/api/labels", json=answer_for(held, "g1"), headers=auth(newbie))
        assert r.status_code == 201 and r.json()["gold"]["explanation"].startswith("SECRET-PAIR")
        again = client.post("/api/labels", json=answer_for(held, "g1"), headers=auth(newbie))
        assert again.status_code == 200 and again.json()["gold"]["explanation"].startswith("SECRET-PAIR")
        # the next gold question is still secret until answered
        second = client.get("/api/tasks/next", headers=auth(newbie)).json()
        assert second["id"] == gold_ids[1] and "SECRET" not in json.dumps(second)
    assert store.get_labeller(new.id).onboarded is False


def test_gold_answers_cannot_be_harvested_through_the_form(make_store):
    """The same attack through the HTML form (CSRF token and all): no gold result page, no explanation."""
    store = make_store()
    gold_ids = store.push_candidates(GOLD)
    _, token = store.add_labeller("eve")
    with make_client(store, raise_server_exceptions=False) as client:
        sign_in(client, token)
        page = client.get("/label").text
        assert int(field(page, "task_id")) == gold_ids[0]
        for task_id in gold_ids[1:]:
            data = {"csrf_token": field(page, "csrf_token"), "task_id": str(task_id), "kind": "pairwise",
                    "client_request_id": f"f{task_id}", "preference": "tie"}  # fmt: skip
            r = client.post("/label", data=data)
            assert r.status_code in (403, 409) and "SECRET" not in r.text
            r = client.post(
                "/skip", data={"csrf_token": data["csrf_token"], "task_id": str(task_id), "reason": "x"}
            )
            assert r.status_code == 404 and "SECRET" not in r.text
    assert store.count_labels() == 0


def test_forms_refuse_unassigned_and_pre_onboarding_tasks(make_store):
    store = make_store()
    store.push_candidates(GOLD[:1])
    task_ids = store.push_candidates(ordinary(2))
    _, newbie = store.add_labeller("new")
    with make_client(store, raise_server_exceptions=False) as client:
        sign_in(client, newbie)
        page = client.get("/label").text
        for task_id in task_ids:
            data = {"csrf_token": field(page, "csrf_token"), "task_id": str(task_id), "kind": "pairwise",
                    "client_request_id": f"f{task_id}", "preference": "tie"}  # fmt: skip
            r = client.post("/label", data=data)
            assert r.status_code == 409 and "onboarding" in r.text
    assert store.count_labels() == 0


# ---------------------------------------------------------------------- the role x route matrix


@pytest.fixture(params=["pairwise", "binary"])
def world(make_store, request):
    """ann and bob, both onboarded through a gold question, each holding one task and having labelled one;
    an admin; every task of one kind (the matrix runs once per kind). Returns (store, client, tokens,
    objects) with objects named own/other per labeller and objects["kind"] the tasks' kind."""
    store = make_store()
    store.push_candidates([GOLD_OF[request.param]])
    store.push_candidates(ordinary(6, request.param))
    tokens = {"admin": store.add_labeller("root", role="admin")[1]}
    objects: dict[str, int] = {}
    client = api_client(store)
    for name in ("ann", "bob"):
        tokens[name] = store.add_labeller(name)[1]
        h = auth(tokens[name])
        gold = client.get("/api/tasks/next", headers=h).json()
        assert client.post("/api/labels", json=answer_for(gold, f"{name}-g"), headers=h).status_code == 201
        objects[f"{name}_gold"] = gold["id"]
        done = client.get("/api/tasks/next", headers=h).json()
        label = client.post("/api/labels", json=answer_for(done, f"{name}-1"), headers=h).json()["label"]
        objects[f"{name}_done"], objects[f"{name}_label"] = done["id"], label["id"]
        objects[f"{name}_held"] = client.get("/api/tasks/next", headers=h).json()["id"]
    objects["free"] = max(objects.values()) + 1  # never assigned to anyone
    objects["kind"] = request.param
    with client:
        yield store, client, tokens, objects


def _mine(text, me: str, other: str):
    """OWN_x / OTHER_x in a path or a body as the labeller's own object or the other's."""
    return text.replace("OWN", me).replace("OTHER", other) if isinstance(text, str) else text


# (who, method, path, body, expected status); {x} in a path is an object of the world fixture.
MATRIX = [
    # anonymous: every API route is 401
    *[("anon", m, p, b, 401) for m, p, b in [
        ("get", "/api/me", None), ("get", "/api/tasks/next", None), ("get", "/api/tasks/{ann_held}", None),
        ("post", "/api/tasks/{ann_held}/skip", {"reason": "x"}), ("post", "/api/labels", "ann_held"),
        ("get", "/api/labels", None), ("get", "/api/labels/{ann_label}", None), ("get", "/api/export", None),
        ("get", "/api/admin/dashboard", None), ("post", "/api/admin/tasks", []),
        ("post", "/api/admin/labellers", {"name": "x"})]],
    # a labeller, on her own and on the other's objects
    *[(me, m, _mine(p, me, other), _mine(b, me, other), status)
      for me, other in (("ann", "bob"), ("bob", "ann"))
      for m, p, b, status in [
          ("get", "/api/tasks/{OWN_held}", None, 200), ("get", "/api/tasks/{OWN_done}", None, 200),
          ("get", "/api/tasks/{OTHER_held}", None, 404), ("get", "/api/tasks/{OTHER_done}", None, 404),
          ("get", "/api/tasks/{OWN_gold}", None, 200), ("get", "/api/tasks/{free}", None, 404),
          ("post", "/api/tasks/{OTHER_held}/skip", {"reason": "x"}, 404),
          ("post", "/api/tasks/{free}/skip", {"reason": "x"}, 404),
          ("post", "/api/tasks/{OWN_done}/skip", {"reason": "x"}, 404),
          ("post", "/api/labels", "OTHER_held", 403), ("post", "/api/labels", "OTHER_done", 403),
          ("post", "/api/labels", "free", 403), ("post", "/api/labels", "OWN_done", 409),
          ("get", "/api/labels/{OWN_label}", None, 200), ("get", "/api/labels/{OTHER_label}", None, 404),
          ("get", "/api/export", None, 403), ("get", "/api/admin/dashboard", None, 403),
          ("post", "/api/admin/tasks", [], 403), ("post", "/api/admin/labellers", {"name": "x"}, 403),
          ("post", "/api/labels", "OWN_held", 201)]],
    # the admin labels like anyone else: not others' tasks
    *[("admin", m, p, b, status) for m, p, b, status in [
        ("get", "/api/tasks/{ann_held}", None, 404), ("post", "/api/labels", "ann_held", 403),
        ("post", "/api/labels", "free", 403), ("post", "/api/tasks/{ann_held}/skip", {"reason": "x"}, 404),
        ("get", "/api/labels/{ann_label}", None, 404), ("get", "/api/export", None, 200),
        ("get", "/api/admin/dashboard", None, 200), ("post", "/api/admin/tasks", [], 201)]],
]  # fmt: skip


@pytest.mark.parametrize("who,method,path,body,status", MATRIX)
def test_role_route_matrix(world, who, method, path, body, status):
    store, client, tokens, objects = world
    headers = auth(tokens[who]) if who != "anon" else {}
    if isinstance(body, str):  # a label answering that object
        body = {"task_id": objects[body], "client_request_id": f"m-{body}", **BLIND[objects["kind"]]}
    before = (places(store), store.count_labels())
    r = client.request(method, path.format(**objects), headers=headers, json=body)
    assert r.status_code == status, r.text
    if status >= 400:
        assert isinstance(r.json()["detail"], str)  # JSON with a readable detail, as documented
        assert (places(store), store.count_labels()) == before  # a refusal changes nothing
    if "/api/tasks/" in path and status == 200:
        assert "SECRET" not in r.text


def test_labels_list_holds_only_ones_own(world):
    _, client, tokens, objects = world
    for me in ("ann", "bob"):
        mine = client.get("/api/labels", headers=auth(tokens[me])).json()
        assert {x["id"] for x in mine} >= {objects[f"{me}_label"]}
        other = "bob" if me == "ann" else "ann"
        assert objects[f"{other}_label"] not in {x["id"] for x in mine}
        assert {x["task_id"] for x in mine} == {objects[f"{me}_gold"], objects[f"{me}_done"]}


def test_page_routes_by_role(world):
    store, _, tokens, objects = world
    with make_client(store, raise_server_exceptions=False) as client:
        assert client.get("/label").status_code == 303  # anonymous: to the sign-in page
        assert client.get("/admin").status_code == 303
        sign_in(client, tokens["ann"])
        page = client.get("/label").text
        assert int(field(page, "task_id")) == objects["ann_held"]
        csrf = field(page, "csrf_token")
        blind = {"preference": "tie"} if objects["kind"] == "pairwise" else {"label": "good", "reason": "x"}
        for key, status in (("bob_held", 403), ("free", 403), ("bob_done", 403), ("ann_done", 409)):
            data = {"csrf_token": csrf, "task_id": str(objects[key]), "kind": objects["kind"],
                    "client_request_id": f"p{key}", **blind}  # fmt: skip
            before = places(store)
            assert client.post("/label", data=data).status_code == status, key
            assert places(store) == before
            r = client.post("/skip", data={"csrf_token": csrf, "task_id": str(objects[key]), "reason": "x"})
            assert r.status_code == 404, key
        assert client.get("/admin").status_code == 403
        assert client.get("/admin/export/pairs").status_code == 403


# ---------------------------------------------------------------------- finding 3: malformed gold rows


def _corrupt(store, task_id: int, answer: dict) -> None:
    """Write a gold answer as an unchecked import of an older version did."""
    with store.transaction() as s:
        s.execute(update(GoldAnswer).where(GoldAnswer.task_id == task_id).values(answer=answer))


@pytest.mark.parametrize(
    "which,stored",
    [
        (2, {"choice": "RESPONSE"}),  # a rating gold with {"rating": 5, "choice": 0}, stored as a choice
        (2, {"rating": "five"}),
        (1, {"choice": "RESPONSE"}),  # a ranking gold with "choice": 1
        (1, {"ranking": [1, 2]}),
        (0, {"choice": 10**9}),
        (0, []),
        (3, {"label": "no"}),  # a binary gold that is not a boolean
        (3, {"rating": 2}),
    ],
)
def test_a_malformed_stored_gold_row_locks_no_one_out(make_store, which, stored, caplog):
    """One malformed gold row must neither 500 every answer nor hold new labellers forever: a labeller
    who holds it can answer it (ungraded, with a warning), and new labellers are not given it."""
    store = make_store()
    gold_ids = store.push_candidates(GOLD)
    (real,) = store.push_candidates(ordinary(1))
    holder, holder_token = store.add_labeller("holder")
    # holder is given gold questions up to the broken one before it breaks
    for task_id in gold_ids[:which]:
        task = store.next_task(holder.id)
        assert task.id == task_id
        ids = [r.id for r in task.responses]
        right = {"pairwise": {"choice": ids[0], "strength": "better"}, "ranking": {"ranking": ids},
                 "rating": {"rating": 6}}[task.kind]  # fmt: skip
        store.submit_label(holder.id, LabelIn(task.id, f"g{task_id}", **right))
    assert store.next_task(holder.id).id == gold_ids[which]
    bad = gold_ids[which]
    with store.read() as s:
        first_response = s.get(Task, bad).response_ids[0]
    _corrupt(store, bad, {k: first_response if v == "RESPONSE" else v for k, v in stored.items()}
             if isinstance(stored, dict) else stored)  # fmt: skip
    with api_client(store) as client, caplog.at_level("WARNING"):
        held = client.get("/api/tasks/next", headers=auth(holder_token)).json()
        assert held["id"] == bad
        r = client.post("/api/labels", json=answer_for(held, "broken"), headers=auth(holder_token))
        assert r.status_code == 201 and r.json()["gold"] is None, r.text
        assert f"gold task {bad}" in caplog.text
        # a new labeller is not given the broken question, and reaches ordinary tasks
        _, newbie = store.add_labeller("new")
        seen = []
        while (r := client.get("/api/tasks/next", headers=auth(newbie))).status_code == 200:
            task = r.json()
            seen.append(task["id"])
            reply = client.post("/api/labels", json=answer_for(task, f"n{task['id']}"), headers=auth(newbie))
            assert reply.status_code == 201, reply.text
        assert bad not in seen and real in seen
        assert (
            client.get(
                "/api/admin/dashboard", headers=auth(store.add_labeller("root", "admin")[1])
            ).status_code
            == 200
        )


# ---------------------------------------------------------------------- findings 3 and 8: imports

GOOD_ROW = {"prompt": "User: tea?\nAssistant:", "responses": ["A drink.", "Go away."]}
RANK = {"prompt": "User: rank\nAssistant:", "responses": ["x", "y", "z"], "kind": "ranking"}
RATE = {"prompt": "User: rate\nAssistant:", "responses": ["x"], "kind": "rating"}
THUMB = {"prompt": "User: thumb\nAssistant:", "responses": ["x"], "kind": "binary"}
BAD_ROWS = [
    ({**GOOD_ROW, "labels_wnated": 3}, "unknown field 'labels_wnated'; did you mean 'labels_wanted'?"),
    ({**GOOD_ROW, "priorty": 1}, "did you mean 'priority'?"),
    ({**GOOD_ROW, "responses": [{"txt": "a"}, "b"]}, "responses[0]: unknown field 'txt'; did you mean 'text'?"),
    ({**GOOD_ROW, "responses": [{"text": "a", "model": 5}, "b"]}, "responses[0].model must be text"),
    ({**GOOD_ROW, "gold": {"answer": {"choice": 0}, "explenation": "x"}}, "did you mean 'explanation'?"),
    ({**RATE, "gold": {"answer": {"rating": 5, "choice": 0}}}, "a rating gold answer is {'rating': ...} only"),
    ({**RANK, "gold": {"answer": {"choice": 1}}}, "a ranking gold answer is {'ranking': ...} only"),
    ({**RANK, "gold": {"answer": {"ranking": [0, 1, 2], "choice": "x"}}}, "field 'choice' does not apply"),
    ({**RANK, "gold": {"answer": {"ranking": 1}}}, "permutation of 0..2"),
    ({**RANK, "gold": {"answer": {"ranking": [0, 1, True]}}}, "permutation of 0..2"),
    ({**GOOD_ROW, "gold": {"answer": {"choice": "x"}}}, "gold 'choice' must be 0, 1 or null"),
    ({**GOOD_ROW, "gold": {"answer": {"ranking": [0, 1]}}}, "a pairwise gold answer is {'choice': ...} only"),
    ({**GOOD_ROW, "gold": {"answer": {}}}, "gold answer has no 'choice'"),
    ({**RATE, "gold": {"answer": {"rating": "5"}}}, "gold 'rating' must be an integer"),
    ({**RATE, "kind": "edit", "gold": {"answer": {"rating": 5}}}, "edit tasks cannot be gold"),
    ({**THUMB, "gold": {"answer": {"label": "yes"}}}, "gold 'label' must be true (good) or false (bad)"),
    ({**THUMB, "gold": {"answer": {"rating": 5}}}, "a binary gold answer is {'label': ...} only"),
    ({**THUMB, "responses": ["x", "y"]}, "a binary task needs 1 response, got 2"),
    ({**RATE, "gold": {"answer": {"label": True}}}, "'label' is for binary tasks"),
    ({**GOOD_ROW, "labels_wanted": True}, "labels_wanted must be an integer"),
    ({**GOOD_ROW, "labels_wanted": 2.0}, "labels_wanted must be an integer"),
    ({**GOOD_ROW, "priority": "high"}, "priority must be a finite number"),
    ({**GOOD_ROW, "priority": True}, "priority must be a finite number"),
    ({**GOOD_ROW, "kind": ["pairwise"]}, "kind ['pairwise']"),
    ({**GOOD_ROW, "objective": 5}, "objective must be non-empty text"),
    ({**GOOD_ROW, "prompt": "p\ud800"}, "lone UTF-16 surrogate"),
    ({**GOOD_ROW, "prompt": "User: other\nAssistant:", "gold": {"answer": {"choice": 0}, "explanation": 5}},
     "explanation must be non-empty text"),
    (GOOD_ROW, "line 3: the same task as line 1"),  # a repeated row
    ({**GOOD_ROW, "responses": GOOD_ROW["responses"][::-1]}, "line 3: the same task as line 1"),
]  # fmt: skip


def write_lines(path, *rows) -> str:
    path.write_text("".join(("" if row is None else json.dumps(row)) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("row,message", BAD_ROWS)
def test_import_refuses_rows_that_do_not_fit_their_kind(make_store, tmp_path, row, message):
    """Line 1 is good, line 2 blank, line 3 bad: the error names the file's line 3 (not "candidate 1"),
    is one line, and nothing is imported."""
    store = make_store()
    path = write_lines(tmp_path / "tasks.jsonl", GOOD_ROW, None, row)
    with pytest.raises(UserError) as caught:
        import_file(store, path)
    text = str(caught.value)
    assert text.startswith(f"{path} line 3: ") and message in text and "\n" not in text, text
    assert places(store) == {}  # all or nothing


def test_import_cli_errors_are_one_line(capsys, tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    for rows, fragment in [
        ([GOOD_ROW, {**GOOD_ROW, "labels_wnated": 2}], "line 2: unknown field 'labels_wnated'"),
        ([{**RANK, "gold": {"answer": {"ranking": [0, 1, 2], "choice": "x"}}}], "line 1: a ranking gold"),
    ]:
        path = write_lines(tmp_path / "t.jsonl", *rows)
        code = main(["label", "import", path, "--db", db])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1 and fragment in err[0], err
    (tmp_path / "bytes.jsonl").write_bytes(json.dumps(GOOD_ROW).encode() + b'\n{"prompt": "\xff"}\n')
    code = main(["label", "import", str(tmp_path / "bytes.jsonl"), "--db", db])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "bytes.jsonl line 2: not valid UTF-8" in err[0], err
    path = write_lines(tmp_path / "twice.jsonl", GOOD_ROW)
    assert main(["label", "import", path, "--db", db]) == 0
    capsys.readouterr()
    assert main(["label", "import", path, "--db", db]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "twice.jsonl line 1: the same task is already in the store" in err[0], err
    assert main(["label", "import", path, "--allow-repeats", "--db", db]) == 0


def test_importing_a_file_twice_is_refused_unless_asked(make_store, tmp_path):
    store = make_store()
    path = write_lines(tmp_path / "t.jsonl", GOOD_ROW, {**GOOD_ROW, "objective": "harmless"}, RATE)
    assert import_file(store, path) == 3
    with pytest.raises(UserError, match=r"t.jsonl line 1: the same task is already in the store \(task 1\)"):
        import_file(store, path)
    assert import_file(store, write_lines(tmp_path / "other.jsonl", {**RATE, "objective": "x"})) == 1
    assert import_file(store, path, allow_repeats=True) == 3


def test_an_imported_ranking_gold_grades_its_own_ranking_right(make_store, tmp_path):
    """Before, a ranking gold that also carried "choice" was stored as a choice, so even the exact gold
    ranking was graded wrong; a clean ranking gold grades the exact ranking right, any other wrong."""
    store = make_store()
    import_file(
        store, write_lines(tmp_path / "g.jsonl", {**RANK, "gold": {"answer": {"ranking": [2, 0, 1]}}})
    )
    ann, _ = store.add_labeller("ann")
    task = store.next_task(ann.id)
    x, y, z = (r.id for r in task.responses)
    assert store.submit_label(ann.id, LabelIn(task.id, "a", ranking=[z, x, y])).gold.correct is True
    bob, _ = store.add_labeller("bob")
    assert store.next_task(bob.id).id == task.id
    assert store.submit_label(bob.id, LabelIn(task.id, "b", ranking=[x, y, z])).gold.correct is False


@pytest.mark.parametrize(
    "body,message",
    [
        ([{**GOOD_ROW, "labels_wnated": 3}], "did you mean 'labels_wanted'?"),
        ([{**RATE, "gold": {"answer": {"rating": 5, "choice": 0}}}], "a rating gold answer is {'rating': ...} only"),
        ([{**RANK, "gold": {"answer": {"choice": 1}}}], "a ranking gold answer is {'ranking': ...} only"),
        ([{**RANK, "gold": {"answer": {"ranking": [0, 1, 2], "choice": "x"}}}], "field 'choice' does not apply"),
        ([{**GOOD_ROW, "gold": {"answer": {"choice": 0}, "explenation": "x"}}], "did you mean 'explanation'?"),
        ([{**GOOD_ROW, "labels_wanted": True}], "valid integer"),
        ([{**GOOD_ROW, "priority": True}], "valid number"),
        ([GOOD_ROW, {**GOOD_ROW, "responses": GOOD_ROW["responses"][::-1]}], "candidate 1: the same task as candidate 0"),
    ],
)  # fmt: skip
def test_admin_api_import_is_checked_the_same_way(make_store, body, message):
    store = make_store()
    body = [
        {**row, "responses": [r if isinstance(r, dict) else {"text": r} for r in row["responses"]]}
        for row in body
    ]
    _, admin = store.add_labeller("root", role="admin")
    with api_client(store) as client:
        r = client.post("/api/admin/tasks", json=body, headers=auth(admin))
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert places(store) == {}  # all or nothing


def test_misspelt_fields_in_any_api_body_are_refused_with_a_suggestion(world):
    """Not only task imports: a label, a skip or a new account with a misspelt field is refused with the
    field it resembles (before, {"name": "x", "rol": "admin"} created a plain labeller)."""
    store, client, tokens, objects = world
    before = (places(store), store.count_labels(), len(store.active_labellers()))
    h = auth(tokens["ann"])
    body = {"task_id": objects["ann_held"], "client_request_id": "s", "choise": 1, "strength": "tie"}
    r = client.post("/api/labels", json=body, headers=h)
    assert r.status_code == 422 and "did you mean 'choice'?" in r.json()["detail"]
    r = client.post(f"/api/tasks/{objects['ann_held']}/skip", json={"reasn": "x"}, headers=h)
    assert r.status_code == 422 and "did you mean 'reason'?" in r.json()["detail"]
    r = client.post("/api/admin/labellers", json={"name": "x", "rol": "admin"}, headers=auth(tokens["admin"]))
    assert r.status_code == 422 and "did you mean 'role'?" in r.json()["detail"]
    assert (places(store), store.count_labels(), len(store.active_labellers())) == before
