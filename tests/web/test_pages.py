"""The server-rendered pages: sign-in (cookies, CSRF, rate limit), onboarding, labelling forms, admin."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from rlhf.feedback.store import Candidate
from rlhf.web import WebSettings, create_app


def make_client(store, base_url="http://testserver", raise_server_exceptions=True, **settings):
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db", **settings))
    app.state.store = store
    return TestClient(
        app, base_url=base_url, follow_redirects=False, raise_server_exceptions=raise_server_exceptions
    )


def field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no field {name}"
    return match.group(1)


def sign_in(client, token: str):
    page = client.get("/login")
    return client.post("/login", data={"token": token, "csrf_token": field(page.text, "csrf_token")})


@pytest.fixture
def store(make_store):
    store = make_store()
    store.push_candidates(
        [
            Candidate("User: capital of France?\nAssistant:", ["Paris.", "Rome."], gold_answer={"choice": 0},
                      explanation="Paris has been the capital since 987."),
            Candidate("User: <script>alert(1)</script>\nAssistant:", ["Hello.", "Go away."]),
        ]
    )  # fmt: skip
    return store


def test_sign_in_sets_a_safe_cookie(store):
    _, token = store.add_labeller("ann")
    with make_client(store) as client:
        assert client.get("/label").headers["location"] == "/login"
        r = sign_in(client, token)
        assert r.status_code == 303 and r.headers["location"] == "/label"
        cookie = r.headers["set-cookie"]
        assert "rlhf_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here
        assert client.get("/label").status_code == 200
        client.post("/logout", data={"csrf_token": field(client.get("/label").text, "csrf_token")})
        assert client.get("/label").status_code == 303  # the session is gone server-side too
    with make_client(store, base_url="https://testserver") as client:
        assert "Secure" in sign_in(client, token).headers["set-cookie"]


def test_sign_in_needs_its_csrf_cookie_and_is_rate_limited(store):
    _, token = store.add_labeller("ann")
    with make_client(store, sign_in_max_failures=3) as client:
        assert client.post("/login", data={"token": token, "csrf_token": "forged"}).status_code == 403
        for _ in range(3):
            assert sign_in(client, "rlhf_guess").status_code == 401
        r = sign_in(client, token)  # even the right token waits once the limit is reached
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text


def test_form_posts_without_csrf_are_refused(store):
    ann, token = store.add_labeller("ann", onboarded=True)
    with make_client(store) as client:
        sign_in(client, token)
        page = client.get("/label").text
        data = {
            "task_id": field(page, "task_id"),
            "client_request_id": "x1",
            "preference": "tie",
            "kind": "pairwise",
        }
        assert client.post("/label", data=data).status_code == 403
        assert client.post("/label", data={**data, "csrf_token": "wrong"}).status_code == 403
        assert client.post("/skip", data={"task_id": data["task_id"], "reason": "r"}).status_code == 403
        assert store.count_labels() == 0
        ok = client.post("/label", data={**data, "csrf_token": field(page, "csrf_token")})
        assert ok.status_code == 303 and store.count_labels() == 1


def test_onboarding_then_labelling_through_forms(store):
    ann, token = store.add_labeller("ann")
    with make_client(store) as client:
        sign_in(client, token)
        page = client.get("/label").text
        assert "Onboarding question" in page and "capital of France" in page
        order = [int(x) for x in field(page, "displayed_order").split(",")]
        rome = [r.id for r in store.get_task(ann.id, int(field(page, "task_id"))).responses][1]
        answer = {
            "csrf_token": field(page, "csrf_token"),
            "task_id": field(page, "task_id"),
            "client_request_id": field(page, "client_request_id"),
            "displayed_order": field(page, "displayed_order"),
            "kind": "pairwise",
            "preference": f"{rome}:better",
            "seconds": "3.5",
        }
        result = client.post("/label", data=answer)
        assert result.status_code == 200 and "Not quite" in result.text
        assert "Paris has been the capital since 987." in result.text
        again = client.post("/label", data=answer)  # a double-submitted form
        assert again.status_code == 200 and store.count_labels() == 1
        page = client.get("/label").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
        assert "Onboarding" not in page
        answer = {
            "csrf_token": field(page, "csrf_token"),
            "task_id": field(page, "task_id"),
            "client_request_id": field(page, "client_request_id"),
            "kind": "pairwise",
            "displayed_order": field(page, "displayed_order"),
        }
        missing = client.post("/label", data=answer)
        assert missing.status_code == 422 and "choose which response is better" in missing.text
        assert client.post("/label", data={**answer, "preference": "1:sideways"}).status_code == 422
        assert client.post("/label", data={**answer, "preference": "x:better"}).status_code == 422
        done = client.post("/label", data={**answer, "preference": "tie", "unsafe": "on"})
        assert done.status_code == 303
        assert "No tasks for you right now" in client.get("/label").text
        (label, gold) = store.labels_of(ann.id)
        assert label.tie and label.unsafe and gold.seconds == 3.5 and gold.displayed_order == order
        mine = client.get("/my/labels").text
        assert "tie" in mine and client.get("/guidelines").status_code == 200
    assert store.get_labeller(ann.id).flagged  # 0 of 1 gold right


def test_skip_form(store):
    _, token = store.add_labeller("ann", onboarded=True)
    with make_client(store) as client:
        sign_in(client, token)
        page = client.get("/label").text
        data = {"csrf_token": field(page, "csrf_token"), "task_id": field(page, "task_id")}
        assert client.post("/skip", data={**data, "reason": " "}).status_code == 422
        assert client.post("/skip", data={**data, "reason": "not my language"}).status_code == 303
        assert "No tasks" in client.get("/label").text


def test_admin_pages_need_the_admin_role(store):
    _, labeller_token = store.add_labeller("ann", onboarded=True)
    _, admin_token = store.add_labeller("root", role="admin")
    with make_client(store) as client:
        sign_in(client, labeller_token)
        assert client.get("/admin").status_code == 403
        assert client.get("/admin/export/pairs").status_code == 403
    with make_client(store) as client:
        assert sign_in(client, admin_token).headers["location"] == "/admin"
        page = client.get("/admin")
        assert page.status_code == 200 and "Dashboard" in page.text and "ann" in page.text
        assert "not yet measurable" in page.text  # no labels: no rate to extrapolate
        export = client.get("/admin/export/pairs")
        assert export.status_code == 200 and export.text == ""
        assert client.get("/admin/export/votes").status_code == 422


def test_malformed_form_posts_are_4xx(store):
    _, token = store.add_labeller("ann", onboarded=True)
    with make_client(store, raise_server_exceptions=False) as client:
        sign_in(client, token)
        page = client.get("/label").text
        base = {"csrf_token": field(page, "csrf_token"), "client_request_id": "c", "kind": "pairwise"}
        task_id = field(page, "task_id")
        for extra in [{"task_id": "abc"}, {"task_id": str(2**40)}, {"task_id": task_id, "preference": "tie:1:2"},
                      {"task_id": task_id, "ranking": "a,b"}, {"task_id": task_id, "rating": "x"},
                      {"task_id": task_id, "preference": "tie", "seconds": "inf", "displayed_order": "1,x"},
                      {"task_id": task_id, "preference": "tie", "edit_text": "x" * 30_000},
                      {"task_id": task_id, "preference": "tie", "client_request_id": "c" * 500}]:  # fmt: skip
            r = client.post("/label", data={**base, **extra})
            assert 400 <= r.status_code < 500, (extra, r.status_code)
            assert "That did not work" in r.text
        r = client.post("/skip", data={"csrf_token": base["csrf_token"], "task_id": "x", "reason": "r"})
        assert r.status_code == 422
        assert store.count_labels() == 0
