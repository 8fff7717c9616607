"""Binary (good / bad) tasks in the labelling app: the page and its buttons, the JSON API, onboarding
on a binary gold question, the unpaired export and the dashboard's agreement figures."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from rlhf.feedback.store import Candidate
from rlhf.web import WebSettings, create_app
from tests.web.test_pages import field, make_client, sign_in


def binary(n: int, **kw) -> list[Candidate]:
    return [
        Candidate(f"User: q{i}?\nAssistant:", [f"answer {i}"], kind="binary", priority=i, **kw)
        for i in range(n)
    ]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_binary_page_buttons_reason_and_gold(make_store):
    store = make_store()
    store.push_candidates(
        [Candidate("User: 3+3?\nAssistant:", ["7"], kind="binary", gold_answer={"label": False},
                   explanation="3+3 is 6, so the answer is wrong.")]
    )  # fmt: skip
    store.push_candidates(binary(2))
    ann, token = store.add_labeller("ann")
    with make_client(store) as client:
        sign_in(client, token)
        page = client.get("/label").text
        assert 'name="label" value="good"' in page and 'name="label" value="bad"' in page
        assert 'name="reason"' in page and "Submit <kbd>Enter</kbd>" not in page
        base = {
            "csrf_token": field(page, "csrf_token"),
            "task_id": field(page, "task_id"),
            "client_request_id": field(page, "client_request_id"),
            "kind": "binary",
        }
        result = client.post("/label", data={**base, "label": "good", "reason": ""})  # the Good button
        assert result.status_code == 200 and "Not quite" in result.text
        assert "Bad (thumbs down)" in result.text and "3+3 is 6" in result.text
        page = client.get("/label").text
        base = {
            **base,
            "task_id": field(page, "task_id"),
            "client_request_id": field(page, "client_request_id"),
        }
        missing = client.post("/label", data=base)  # Enter without a button
        assert missing.status_code == 422 and "choose Good (key g) or Bad (key b)" in missing.text
        odd = client.post("/label", data={**base, "label": "<b>meh</b>"})
        assert odd.status_code == 422 and "label must be" in odd.text and "meh" not in odd.text
        done = client.post("/label", data={**base, "label": "bad", "reason": "off\r\ntopic"})
        assert done.status_code == 303
        label = store.labels_of(ann.id)[0]
        assert label.label is False and label.reason == "off\ntopic" and label.kind == "binary"
        assert "bad: off" in client.get("/my/labels").text
    assert store.get_labeller(ann.id).flagged  # 0 of 1 gold right


def test_binary_api_export_and_dashboard(make_store, tmp_path):
    store = make_store()
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db"))
    app.state.store = store
    with TestClient(app, raise_server_exceptions=False) as client:
        admin = auth(store.add_labeller("root", role="admin")[1])
        r = client.post("/api/admin/tasks", json=[
            {"prompt": "User: hi\nAssistant:", "responses": [{"text": "Hello!"}], "kind": "binary",
             "labels_wanted": 3, "objective": "helpful"},
            {"prompt": "User: bye\nAssistant:", "responses": [{"text": "Go away."}], "kind": "binary",
             "labels_wanted": 3}], headers=admin)  # fmt: skip
        assert r.status_code == 201
        answers = {"ann": (True, False), "bob": (True, False), "cat": (True, True)}
        for name, labels in answers.items():
            h = auth(store.add_labeller(name, onboarded=True)[1])
            for i, label in enumerate(labels):
                task = client.get("/api/tasks/next", headers=h).json()
                assert task["kind"] == "binary" and len(task["responses"]) == 1
                body = {"task_id": task["id"], "client_request_id": f"{name}{i}", "label": label}
                if name == "cat":  # refused: a number is not a boolean, and a rating does not apply
                    for bad in ({"label": 1}, {"label": "true"}, {"label": True, "rating": 3}):
                        reply = client.post("/api/labels", json={**body, **bad}, headers=h)
                        assert reply.status_code == 422 and isinstance(reply.json()["detail"], str)
                        assert "true" not in reply.json()["detail"].replace("true (good)", "")
                    body["reason"] = "polite"
                reply = client.post("/api/labels", json=body, headers=h)
                assert reply.status_code == 201, reply.text
                assert reply.json()["label"]["label"] is label
        export = client.get("/api/export?kind=binary", headers=admin)
        rows = [json.loads(line) for line in export.text.splitlines()]
        assert len(rows) == 6 and set(rows[0]) >= {"prompt", "completion", "label", "labeller_id"}
        hello = [r for r in rows if r["completion"] == "Hello!"]
        assert [r["label"] for r in hello] == [True, True, True]
        assert all(r["objective"] == "helpful" for r in hello)
        bye = {r["labeller_id"]: r for r in rows if r["completion"] == "Go away."}
        assert bye["cat"]["label"] is True and bye["cat"]["reason"] == "polite" and "reason" not in bye["ann"]
        assert client.get("/api/export?kind=pairs", headers=admin).text == ""
        figures = client.get("/api/admin/dashboard", headers=admin).json()
        # 2 tasks x 3 labellers: "Hello!" 3 of 3 pairs agree, "Go away." 1 of 3 -> 4/6; Fleiss' kappa:
        # P_bar = (1 + 1/3) / 2 = 2/3, p_good = 4/6, P_e = 4/9 + 1/9 = 5/9 -> (2/3 - 5/9) / (4/9) = 1/4
        b = figures["binary_agreement"]
        assert b["items"] == 2 and abs(b["percent"] - 4 / 6) < 1e-12 and abs(b["fleiss"] - 0.25) < 1e-12
        assert any(x["kind"] == "binary" for x in figures["disagreements"])
        with make_client(store) as browser:
            sign_in(browser, store.add_labeller("root2", role="admin")[1])
            page = browser.get("/admin").text
            assert "Good / bad agreement" in page and "0.67" in page
            assert browser.get("/admin/export/binary").text.count("\n") == 6
