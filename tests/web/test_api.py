"""The JSON API with FastAPI's TestClient on a throwaway store: flow, idempotency, errors, security."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from rlhf.data import load_preferences
from rlhf.feedback.store import Candidate
from rlhf.web import WebSettings, create_app


@pytest.fixture
def env(make_store):
    """(store, client, tokens): an admin, two onboarded labellers and three pairwise tasks."""
    store = make_store()
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db", max_body_bytes=200_000))
    app.state.store = store
    store.push_candidates(
        [Candidate(f"User: q{i}\nAssistant:", [f"good {i}", f"bad {i}"], priority=i) for i in range(3)]
    )
    tokens = {
        "admin": store.add_labeller("root", role="admin")[1],
        "ann": store.add_labeller("ann", onboarded=True)[1],
        "bob": store.add_labeller("bob", onboarded=True)[1],
    }
    with TestClient(app) as client:
        yield store, client, tokens


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_openapi_lists_the_api(env):
    _, client, _ = env
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/tasks/next", "/api/labels", "/api/export", "/api/admin/tasks"):
        assert path in paths


def test_label_flow_and_idempotent_retry(env):
    store, client, tokens = env
    task = client.get("/api/tasks/next", headers=auth(tokens["ann"])).json()
    assert task["kind"] == "pairwise" and task["prompt"] == "User: q2\nAssistant:"  # highest priority
    good = task["responses"][0]["id"]
    body = {
        "task_id": task["id"],
        "client_request_id": "abc",
        "choice": good,
        "strength": "better",
        "seconds": 4.5,
    }
    first = client.post("/api/labels", json=body, headers=auth(tokens["ann"]))
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post("/api/labels", json=body, headers=auth(tokens["ann"]))
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["label"]["id"] == first.json()["label"]["id"]
    assert store.count_labels() == 1
    mine = client.get("/api/labels", headers=auth(tokens["ann"])).json()
    assert [x["task_id"] for x in mine] == [task["id"]] and mine[0]["seconds"] == 4.5
    conflict = client.post(
        "/api/labels", json={**body, "client_request_id": "other"}, headers=auth(tokens["ann"])
    )
    assert conflict.status_code == 409 and "already labelled" in conflict.json()["detail"]


def test_skip_and_empty_queue(env):
    _, client, tokens = env
    for _ in range(3):
        task = client.get("/api/tasks/next", headers=auth(tokens["bob"])).json()
        r = client.post(
            f"/api/tasks/{task['id']}/skip", json={"reason": "unsure"}, headers=auth(tokens["bob"])
        )
        assert r.status_code == 204
    assert client.get("/api/tasks/next", headers=auth(tokens["bob"])).status_code == 204
    r = client.post("/api/tasks/1/skip", json={"reason": ""}, headers=auth(tokens["bob"]))
    assert r.status_code == 422


@pytest.mark.parametrize(
    "mutate,fragment",
    [
        (lambda b, t: {**b, "task_id": "abc"}, "task_id"),
        (lambda b, t: {**b, "task_id": 2**40}, "task_id"),
        (lambda b, t: {**b, "strength": "amazing"}, "strength"),
        (lambda b, t: {**b, "choice": None, "strength": None, "ranking": [1, 1]}, "does not apply"),
        (lambda b, t: {**b, "choice": 10**6}, "preferred response"),
        (lambda b, t: {**b, "comment": "x" * 2001}, "comment"),
        (lambda b, t: {**b, "surprise": 1}, "surprise"),
        (lambda b, t: {**b, "client_request_id": ""}, "client_request_id"),
        (lambda b, t: {**b, "task_id": 99999}, "not assigned to you"),
    ],
)
def test_bad_input_is_a_clear_4xx(env, mutate, fragment):
    store, client, tokens = env
    task = client.get("/api/tasks/next", headers=auth(tokens["ann"])).json()
    body = {
        "task_id": task["id"],
        "client_request_id": "x",
        "choice": task["responses"][0]["id"],
        "strength": "better",
    }
    r = client.post("/api/labels", json=mutate(body, task), headers=auth(tokens["ann"]))
    assert 400 <= r.status_code < 500, r.text
    assert fragment in r.json()["detail"]
    assert store.count_labels() == 0


def test_malformed_requests(env):
    _, client, tokens = env
    h = auth(tokens["ann"])
    assert client.get("/api/tasks/notanumber", headers=h).status_code == 422
    assert client.get(f"/api/labels/{2**63}", headers=h).status_code == 422
    assert client.get("/api/labels/-1", headers=h).status_code == 422
    r = client.post("/api/labels", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post("/api/labels", content=b"x" * 300_000, headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert client.get("/api/export?kind=votes", headers=auth(tokens["admin"])).status_code == 422


def test_tokens_and_roles(env):
    _, client, tokens = env
    r = client.get("/api/tasks/next")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/tasks/next", headers=auth("rlhf_wrong")).status_code == 401
    label = {"task_id": 1, "strength": "tie", "client_request_id": "w1"}
    wrong = client.post("/api/labels", headers=auth("rlhf_wrong"), json=label)
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert wrong.json() == {"detail": "missing or invalid token: send 'Authorization: Bearer TOKEN'"}
    for header in ("Bearer", "Bearer   ", "Token abc"):
        r = client.post("/api/labels", headers={"Authorization": header}, json={})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # before the body's 422
    assert (
        client.get("/api/tasks/next", headers={"Authorization": f"Basic {tokens['ann']}"}).status_code == 401
    )
    for method, path in [
        ("get", "/api/export"),
        ("get", "/api/admin/dashboard"),
        ("post", "/api/admin/tasks"),
        ("post", "/api/admin/labellers"),
    ]:
        r = client.request(
            method, path, headers=auth(tokens["ann"]), json=[] if "tasks" in path else {"name": "x"}
        )
        assert r.status_code == 403, path
    assert client.get("/api/me", headers=auth(tokens["admin"])).json()["role"] == "admin"


def test_labeller_cannot_read_another_labellers_labels(env):
    _, client, tokens = env
    task = client.get("/api/tasks/next", headers=auth(tokens["ann"])).json()
    body = {"task_id": task["id"], "client_request_id": "a1", "strength": "tie"}
    label_id = client.post("/api/labels", json=body, headers=auth(tokens["ann"])).json()["label"]["id"]
    assert client.get(f"/api/labels/{label_id}", headers=auth(tokens["ann"])).status_code == 200
    r = client.get(f"/api/labels/{label_id}", headers=auth(tokens["bob"]))
    assert r.status_code == 404 and "a1" not in r.text
    assert client.get("/api/labels", headers=auth(tokens["bob"])).json() == []
    assert client.get(f"/api/tasks/{task['id']}", headers=auth(tokens["bob"])).status_code == 404


def test_admin_pushes_tasks_adds_labellers_and_exports(env, tmp_path):
    _, client, tokens = env
    h = auth(tokens["admin"])
    r = client.post(
        "/api/admin/tasks",
        json=[
            {
                "prompt": "User: rank\nAssistant:",
                "responses": [{"text": t} for t in "xyz"],
                "kind": "ranking",
                "priority": 99,
            }
        ],
        headers=h,
    )
    assert r.status_code == 201 and len(r.json()["task_ids"]) == 1
    bad = client.post("/api/admin/tasks", json=[{"prompt": "p", "responses": [{"text": "a"}]}], headers=h)
    assert bad.status_code == 422 and "needs 2 responses" in bad.json()["detail"]
    created = client.post("/api/admin/labellers", json={"name": "cat"}, headers=h).json()
    cat = auth(created["token"])
    task = client.get("/api/tasks/next", headers=cat).json()
    assert task["kind"] == "ranking"
    ids = [x["id"] for x in task["responses"]]
    r = client.post(
        "/api/labels", json={"task_id": task["id"], "client_request_id": "r", "ranking": ids[:2]}, headers=cat
    )
    assert r.status_code == 422 and "not a permutation" in r.json()["detail"]
    r = client.post(
        "/api/labels",
        json={"task_id": task["id"], "client_request_id": "r", "ranking": ids[::-1]},
        headers=cat,
    )
    assert r.status_code == 201
    export = client.get("/api/export?kind=rankings", headers=h)
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    (tmp_path / "r.jsonl").write_text(export.text)
    (ranking,) = load_preferences(tmp_path / "r.jsonl").rankings
    assert ranking.responses == ("x", "y", "z") and ranking.ranking == ((2,), (1,), (0,))
    assert ranking.labeller_id == "cat"
    figures = client.get("/api/admin/dashboard", headers=h).json()
    assert figures["labels_total"] == 1 and json.dumps(figures)


def test_nul_in_text_is_a_422_not_a_500(env):
    store, client, tokens = env
    h = auth(tokens["admin"])
    r = client.post(
        "/api/admin/tasks",
        json=[{"prompt": "p\u0000", "responses": [{"text": "a"}, {"text": "b"}]}],
        headers=h,
    )
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    task = client.get("/api/tasks/next", headers=auth(tokens["ann"])).json()
    body = {"task_id": task["id"], "client_request_id": "x", "strength": "tie", "comment": "a\u0000b"}
    r = client.post("/api/labels", json=body, headers=auth(tokens["ann"]))
    assert r.status_code == 422 and "NUL" in r.json()["detail"]


def test_no_malformed_request_gets_a_500(env):
    """A sweep of wrong types, sizes and shapes over every endpoint: all answered with a 4xx."""
    _, client, tokens = env
    client = TestClient(client.app, raise_server_exceptions=False)
    h = auth(tokens["admin"])
    task = client.get("/api/tasks/next", headers=h).json()
    bodies = [None, [], "x", 1, {}, {"task_id": None}, {"task_id": task["id"], "client_request_id": ["a"]},
              {"task_id": task["id"], "client_request_id": "c", "ranking": "1,2"},
              {"task_id": task["id"], "client_request_id": "c", "choice": -1, "strength": "better"},
              {"task_id": task["id"], "client_request_id": "c", "choice": 2**70, "strength": "better"},
              {"task_id": task["id"], "client_request_id": "c", "seconds": "NaN", "strength": "tie"},
              {"task_id": task["id"], "client_request_id": "c", "rating": 1.5}]  # fmt: skip
    for body in bodies:
        r = client.post("/api/labels", json=body, headers=h)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    for body in [None, {}, [{}], [{"prompt": "p", "responses": "ab"}], [{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "priority": "NaN"}],
                 [{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "gold": {"answer": {"choice": [0]}}}]]:  # fmt: skip
        r = client.post("/api/admin/tasks", json=body, headers=h)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    for body in [None, {"name": ""}, {"name": "x" * 101}, {"name": "ok", "role": "god"}, {"name": "a b"}]:
        r = client.post("/api/admin/labellers", json=body, headers=h)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
    for path in ["/api/tasks/0", "/api/tasks/1e3", "/api/labels/9999999", "/api/labels?limit=0", "/api/labels?offset=-1",
                 "/api/tasks/99999/skip", "/api/export?kind=", "/api/nothing"]:  # fmt: skip
        r = client.request("POST" if path.endswith("skip") else "GET", path, headers=h, json={"reason": "r"})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
