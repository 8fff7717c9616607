"""The labelling app against an attacker's requests: bodies bounded while they stream, error replies that
never echo the input and never fail to encode, revoking labellers and rotating tokens, sign-in limits
under concurrency and forged X-Forwarded-For, cache and content-security headers, and `--workers N`
stopping with the server. The live-server tests run `rlhf label serve` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from rlhf.cli import main
from rlhf.feedback.store import Candidate, FeedbackStore
from rlhf.web import WebSettings, create_app

LIMIT = 100_000  # the app's max_body_bytes in the TestClient tests


@pytest.fixture
def env(make_store):
    """(store, app, tokens): an admin, two onboarded labellers and three pairwise tasks."""
    store = make_store()
    store.push_candidates([Candidate(f"User: q{i}\nAssistant:", [f"good {i}", f"bad {i}"]) for i in range(3)])
    tokens = {
        "admin": store.add_labeller("root", role="admin")[1],
        "ann": store.add_labeller("ann", onboarded=True)[1],
        "bob": store.add_labeller("bob", onboarded=True)[1],
    }
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db", max_body_bytes=LIMIT))
    app.state.store = store
    return store, app, tokens


def client_for(app, **kw) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False, **kw)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no field {name}"
    return match.group(1)


def sign_in(client: TestClient, token: str) -> httpx.Response:
    page = client.get("/login")
    return client.post("/login", data={"token": token, "csrf_token": field(page.text, "csrf_token")})


# Every route that takes a body: the JSON API, and the forms (sign-in, label, skip, sign-out).
BODY_ROUTES = [
    ("POST", "/api/labels"),
    ("POST", "/api/tasks/1/skip"),
    ("POST", "/api/admin/tasks"),
    ("POST", "/api/admin/labellers"),
    ("PATCH", "/api/admin/labellers/2"),
    ("POST", "/login"),
    ("POST", "/label"),
    ("POST", "/skip"),
    ("POST", "/logout"),
]


def chunks(total: int, form: bool = False, size: int = 16_384):
    """A body with no Content-Length (sent chunked), well-formed up to its end: only its size is wrong."""
    yield b"token=" if form else b'{"task_id": 1, "client_request_id": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b"" if form else b'"}'


@pytest.mark.parametrize("method,path", BODY_ROUTES)
@pytest.mark.parametrize("who", ["nobody", "admin"])
def test_a_chunked_body_over_the_limit_is_a_413_on_every_route(env, method, path, who):
    store, app, tokens = env
    with client_for(app) as client:
        form = not path.startswith("/api")
        headers = {"Content-Type": "application/x-www-form-urlencoded" if form else "application/json"}
        if who == "admin":
            headers |= auth(tokens["admin"])
            sign_in(client, tokens["admin"])
        r = client.request(method, path, content=chunks(3 * LIMIT, form), headers=headers)
        assert r.status_code == 413, (r.status_code, r.text[:300])
        assert len(r.content) < 20_000 and "xxxxxxxx" not in r.text  # nothing echoed
        if path.startswith("/api"):
            assert r.json() == {"detail": f"request body over {LIMIT:,} bytes"}
        declared = client.request(method, path, content=b"{" + b" " * (2 * LIMIT) + b"}", headers=headers)
        assert declared.status_code == 413 and len(declared.content) < 20_000
    assert store.count_labels() == 0


def test_a_body_within_the_limit_still_works_chunked_or_not(env):
    store, app, tokens = env
    with client_for(app) as client:
        big = [{"prompt": "User: long\nAssistant:", "responses": [{"text": "y" * 20_000}, {"text": "z" * 20_000}],
                "priority": 9}]  # fmt: skip
        raw = json.dumps(big).encode()
        assert 40_000 < len(raw) < LIMIT
        admin = {**auth(tokens["admin"]), "Content-Type": "application/json"}
        r = client.post(
            "/api/admin/tasks", content=iter([raw[:10], raw[10:30_000], raw[30_000:]]), headers=admin
        )
        assert r.status_code == 201, r.text
        h = auth(tokens["ann"])
        task = client.get("/api/tasks/next", headers=h).json()
        assert task["id"] == r.json()["task_ids"][0]
        body = {"task_id": task["id"], "client_request_id": "c1", "strength": "tie", "comment": "c" * 2000}
        assert client.post("/api/labels", json=body, headers=h).status_code == 201
    assert store.count_labels() == 1


def test_a_validation_error_never_echoes_the_input(env):
    _, app, tokens = env
    with client_for(app) as client:
        h = auth(tokens["ann"])
        secret = "s3cr3t" * 10_000  # 60 KB, within the limit
        for body in [
            {"task_id": secret, "client_request_id": "x"},
            {"task_id": 1, "client_request_id": secret},
            {"task_id": 1, "client_request_id": "x", secret[:5000]: 1},  # an unknown key, long
            [secret],
        ]:
            r = client.post("/api/labels", json=body, headers=h)
            # at most an unknown key's name is quoted, cut short
            assert r.status_code == 422 and "s3cr3t" * 8 not in r.text and len(r.content) < 2_000, r.text[
                :300
            ]
            assert isinstance(r.json()["detail"], str) and all("input" not in e for e in r.json()["errors"])
        many = client.post("/api/admin/tasks", json=[{}] * 1000, headers=auth(tokens["admin"]))
        assert many.status_code == 422 and len(many.content) < 10_000 and "more" in many.json()["detail"]


# Bodies a JSON library or a database cannot take as they are; each a 4xx JSON reply with a detail.
HOSTILE = [
    (b'{"task_id": 1, "client_request_id": "x", "seconds": NaN, "strength": "tie"}', "application/json", "NaN"),
    (b'{"task_id": Infinity, "client_request_id": "x"}', "application/json", "Infinity"),
    (b'[{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "priority": -Infinity}]', "application/json", "Infinity"),
    (b'{"task_id": 1, "client_request_id": "x", "strength": "tie", "comment": "\\ud800"}', "application/json", "surrogate"),
    (b'{"task_id": 1, "client_request_id": "\\udfff", "strength": "tie"}', "application/json", "surrogate"),
    (b'{"\\ud800": 1}', "application/json", "surrogate"),
    (b'{"reason": "\\ud800"}', "application/json", "surrogate"),
    (b'[{"prompt": "p\\ud800", "responses": [{"text": "a"}, {"text": "b"}]}]', "application/json", "surrogate"),
    (b'{"name": "\\ud800x"}', "application/json", "surrogate"),
    (b'{"active": false, "x": "\\ud800"}', "application/json", "surrogate"),
    (b'{"task_id": 1, "client_request_id": "x"}', "text/plain", "Content-Type"),
    (b"task_id=1&client_request_id=x", "application/x-www-form-urlencoded", "Content-Type"),
    (b'{"task_id": "\xff\xfe"}', "application/json", "UTF-8"),
    (b"", "application/json", "required"),
    (b"", "", "required"),
    (b"[" * 40_000 + b"]" * 40_000, "application/json", "nested too deeply"),
    (b'{"task_id": ' + b"9" * 4301 + b', "client_request_id": "x"}', "application/json", "too many digits"),
]  # fmt: skip


@pytest.mark.parametrize("body,content_type,fragment", HOSTILE)
def test_hostile_json_is_a_4xx_json_reply_on_every_api_route(env, body, content_type, fragment):
    store, app, tokens = env
    with client_for(app) as client:
        h = auth(tokens["admin"])
        client.get("/api/tasks/next", headers=h)  # holds task 1, so that a valid skip would succeed
        for method, path in [r for r in BODY_ROUTES if r[1].startswith("/api")]:
            headers = {**h, "Content-Type": content_type} if content_type else h
            r = client.request(method, path, content=body, headers=headers)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
            detail = r.json()["detail"]
            assert isinstance(detail, str) and detail
        r = client.post("/api/labels", content=body, headers={**h, "Content-Type": content_type})
        assert fragment in r.json()["detail"], r.json()["detail"]
        if content_type == "application/json":  # a body that is not acceptable JSON: 422, as documented
            assert r.status_code == 422 and r.json()["errors"], r.text[:300]
    assert store.count_labels() == 0


def test_every_api_error_is_json_with_a_detail(env):
    _, app, tokens = env
    with client_for(app) as client:
        for method, path, headers in [
            ("GET", "/api/nothing", auth(tokens["ann"])),
            ("DELETE", "/api/labels", auth(tokens["ann"])),
            ("GET", "/api/me", {}),
            ("GET", "/api/admin/labellers", auth(tokens["ann"])),
            ("GET", "/api/tasks/99999", auth(tokens["ann"])),
        ]:
            r = client.request(method, path, headers=headers)
            assert r.status_code >= 400 and r.headers["content-type"] == "application/json", (path, r.text)
            assert isinstance(r.json()["detail"], str)


def test_an_unexpected_failure_is_a_json_500_that_says_nothing_more(env, monkeypatch):
    store, app, tokens = env

    def broken(labeller_id):
        raise RuntimeError("connection string postgresql://u:hunter2@db")

    monkeypatch.setattr(store, "next_task", broken)
    with client_for(app) as client:
        r = client.get("/api/tasks/next", headers=auth(tokens["ann"]))
        assert r.status_code == 500 and r.json() == {"detail": "internal server error"}


def test_the_store_refuses_text_no_database_can_hold(make_store):
    """Lone surrogates reach the store from Python and from import files too, not only from the API."""
    from rlhf.feedback.store import InvalidInput, LabelIn

    store = make_store()
    with pytest.raises(InvalidInput, match="prompt contains a lone UTF-16 surrogate"):
        store.push_candidates([Candidate("p\ud800", ["a", "b"])])
    (task_id,) = store.push_candidates([Candidate("p", ["a", "b"])])
    ann, _ = store.add_labeller("ann", onboarded=True)
    store.next_task(ann.id)
    for answer in [
        LabelIn(task_id, "r1", strength="tie", comment="\udfff"),
        LabelIn(task_id, "\ud800", strength="tie"),
    ]:
        with pytest.raises(InvalidInput):
            store.submit_label(ann.id, answer)
    with pytest.raises(InvalidInput):
        store.skip(ann.id, task_id, "\ud800")
    assert store.count_labels() == 0


# ----------------------------------------------------------------------------- revoking and rotating


def test_admin_deactivates_reactivates_and_rotates_through_the_api(env):
    store, app, tokens = env
    with client_for(app) as admin_client, client_for(app) as ann_client:
        admin = auth(tokens["admin"])
        ann_id = next(
            x["id"]
            for x in admin_client.get("/api/admin/labellers", headers=admin).json()
            if x["name"] == "ann"
        )
        sign_in(ann_client, tokens["ann"])
        assert ann_client.get("/label").status_code == 200
        held = ann_client.get("/api/tasks/next", headers=auth(tokens["ann"])).json()

        r = admin_client.patch(f"/api/admin/labellers/{ann_id}", json={"active": False}, headers=admin)
        assert r.status_code == 200 and r.json()["active"] is False
        # the next request: her token and her session are refused
        assert ann_client.get("/api/me", headers=auth(tokens["ann"])).status_code == 401
        assert ann_client.get("/label").headers["location"] == "/login"
        assert sign_in(ann_client, tokens["ann"]).status_code == 401
        # and the task she held is back in the queue (bob is given it first: it has the lowest id)
        assert client_for(app).get("/api/tasks/next", headers=auth(tokens["bob"])).json()["id"] == held["id"]

        r = admin_client.patch(f"/api/admin/labellers/{ann_id}", json={"active": True}, headers=admin)
        assert r.status_code == 200 and r.json()["active"] is True
        assert ann_client.get("/api/me", headers=auth(tokens["ann"])).status_code == 200
        assert ann_client.get("/label").status_code == 303  # the old session stays ended

        sign_in(ann_client, tokens["ann"])
        r = admin_client.post(f"/api/admin/labellers/{ann_id}/token", headers=admin)
        assert r.status_code == 200 and r.json()["labeller"]["name"] == "ann"
        new_token = r.json()["token"]
        assert ann_client.get("/api/me", headers=auth(tokens["ann"])).status_code == 401
        assert ann_client.get("/label").status_code == 303  # sessions made with the old token end too
        assert ann_client.get("/api/me", headers=auth(new_token)).json()["name"] == "ann"
        assert store.labeller_by_token(tokens["ann"]) is None


def test_only_admins_manage_labellers_and_not_themselves(env):
    store, app, tokens = env
    root_id, bob_id = store.labeller_by_name("root").id, store.labeller_by_name("bob").id
    with client_for(app) as client:
        for token in ("rlhf_forged", tokens["ann"]):
            for method, path, body in [
                ("GET", "/api/admin/labellers", None),
                ("PATCH", f"/api/admin/labellers/{bob_id}", {"active": False}),
                ("POST", f"/api/admin/labellers/{bob_id}/token", None),
            ]:
                r = client.request(method, path, json=body, headers=auth(token))
                assert r.status_code in (401, 403), (path, r.status_code)
        admin = auth(tokens["admin"])
        r = client.patch(f"/api/admin/labellers/{root_id}", json={"active": False}, headers=admin)
        assert r.status_code == 409 and "your own account" in r.json()["detail"]
        assert (
            client.patch("/api/admin/labellers/99999", json={"active": False}, headers=admin).status_code
            == 404
        )
        assert client.post("/api/admin/labellers/99999/token", headers=admin).status_code == 404
        assert (
            client.patch(f"/api/admin/labellers/{bob_id}", json={"active": "no"}, headers=admin).status_code
            == 422
        )
    assert store.labeller_by_token(tokens["bob"]) is not None


def test_cli_deactivates_reactivates_and_rotates(capsys, tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    store = FeedbackStore(db)
    _, token = store.add_labeller("ann")

    def run(*args):
        code = main(["label", *args, "--db", db])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = run("deactivate", "ann")
    assert code == 0 and "deactivated 'ann'" in out
    assert store.labeller_by_token(token) is None
    assert run("labellers")[1].split() == ["ann", "labeller", "inactive,", "onboarding"]
    assert run("activate", "ann")[0] == 0 and store.labeller_by_token(token).name == "ann"
    code, out, _ = run("rotate-token", "ann")
    new_token = out.strip().splitlines()[-1]
    assert code == 0 and new_token.startswith("rlhf_") and new_token != token
    assert store.labeller_by_token(token) is None and store.labeller_by_token(new_token).name == "ann"
    code, _, err = run("deactivate", "nobody")
    assert (
        code != 0
        and err.strip() == "rlhf: error: no labeller named 'nobody' (rlhf label labellers lists them)"
    )
    store.close()


# ----------------------------------------------------------------------------- sign-in limit


def test_the_sign_in_limit_holds_under_concurrent_attempts(env, monkeypatch):
    """Twelve wrong tokens at once from one address, with 3 allowed: at most 3 are even checked."""
    store, _, tokens = env
    app = create_app(WebSettings(db_url="sqlite:///never-opened.db", sign_in_max_failures=3))
    app.state.store = store
    import rlhf.web.routes.auth as auth_routes

    checked = []
    real_sign_in = auth_routes.sign_in

    def slow_sign_in(store, token, hours):  # a wide window between the limit's check and the failure
        checked.append(token)
        time.sleep(0.3)
        return real_sign_in(store, token, hours)

    monkeypatch.setattr(auth_routes, "sign_in", slow_sign_in)
    with client_for(app) as client:
        csrf = field(client.get("/login").text, "csrf_token")  # its cookie is in the client's jar
        statuses = []

        def attempt():
            # a client (cookie jar) of its own: each reply sets a new sign-in cookie, and a shared jar
            # would send it with another thread's form (a 403, the form's CSRF check)
            own = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
            own.cookies.set("rlhf_login_csrf", csrf)
            statuses.append(own.post("/login", data={"token": "rlhf_guess", "csrf_token": csrf}).status_code)

        threads = [threading.Thread(target=attempt) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [401] * 3 + [429] * 9, statuses
        assert len(checked) == 3
        # the right token waits too, once the limit is reached
        page = client.get("/login")
        r = client.post("/login", data={"token": tokens["ann"], "csrf_token": field(page.text, "csrf_token")})
        assert r.status_code == 429


# ----------------------------------------------------------------------------- headers


def test_signed_in_pages_are_not_cached_and_carry_a_csp(env):
    _, app, tokens = env
    with client_for(app) as client:
        sign_in(client, tokens["admin"])
        for path in ["/label", "/my/labels", "/guidelines", "/admin", "/login"]:
            r = client.get(path)
            assert r.status_code == 200, path
            assert r.headers["cache-control"] == "no-store", path
            csp = r.headers["content-security-policy"]
            assert (
                "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
            )
            assert "<script>" not in r.text and " style=" not in r.text and " onclick=" not in r.text, path
        r = client.get("/api/me", headers=auth(tokens["ann"]))
        assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
        static = client.get("/static/label.js")
        assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")


# ----------------------------------------------------------------------------- a live server

SRC = str(Path(__file__).parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "label", "serve", "--db", db, "--port", str(port), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
    proc.kill()
    raise AssertionError("the server did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def live(tmp_path):
    """A factory `live(*serve_args) -> base URL` for `rlhf label serve` on a fresh SQLite file."""
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    FeedbackStore(db).close()
    procs = []

    def factory(*args: str) -> str:
        port = free_port()
        procs.append(start_server(db, port, *args))
        return f"http://127.0.0.1:{port}"

    factory.db = db
    yield factory
    for proc in procs:
        stop(proc)


def upload_chunked(port: int, path: str, total: int, content_type: str) -> tuple[int, bytes]:
    """Send `total` bytes as a chunked body over a raw socket, stopping as soon as a reply arrives;
    returns (bytes of body sent, the reply)."""
    chunk = b"x" * 65_536
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        reply = b""
        try:
            while sent < total:
                readable, writable, _ = select.select([sock], [sock], [], 10)
                if readable:
                    break
                if not writable:
                    pytest.fail(f"the server neither read nor answered after {sent:,} bytes")
                sock.sendall(frame)
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection after answering: read what it sent
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65_536)
            except OSError:
                break
            if not data:
                break
            reply += data
            if b"\r\n\r\n" in reply and b'"}' in reply or b"</html>" in reply:
                break
    return sent, reply


def test_a_live_server_stops_reading_an_oversized_chunked_body(live):
    base = live()
    port = int(base.rsplit(":", 1)[1])
    form = "application/x-www-form-urlencoded"
    for path, content_type, status in [
        ("/api/labels", "application/json", b"413"),  # no token: refused at the limit, before auth
        ("/api/admin/tasks", "text/plain", b"413"),
        ("/login", form, b"413"),
        ("/label", form, b"413"),
        ("/login", "application/json", b"403"),  # a form route does not read a JSON body at all
    ]:
        sent, reply = upload_chunked(port, path, 50_000_000, content_type)
        assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
        assert sent < 20_000_000, f"{path}: the server read {sent:,} bytes before answering"
        assert b"xxxxxxxx" not in reply
    assert httpx.get(f"{base}/login", timeout=5).status_code == 200  # and it still serves


def failed_sign_ins(base: str, forwarded_for: list[str]) -> list[int]:
    statuses = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for address in forwarded_for:
            page = client.get("/login")
            r = client.post(
                "/login",
                data={"token": "rlhf_guess", "csrf_token": field(page.text, "csrf_token")},
                headers={"X-Forwarded-For": address},
            )
            statuses.append(r.status_code)
    return statuses


def test_a_forged_x_forwarded_for_does_not_reset_the_sign_in_limit(live):
    base = live()  # no proxy configured: the header is the client's own word
    assert failed_sign_ins(base, [f"10.0.0.{i}" for i in range(7)]) == [401] * 5 + [429] * 2


def test_x_forwarded_for_from_a_configured_proxy_is_believed(live):
    base = live("--forwarded-allow-ips", "127.0.0.1")  # as if behind a proxy on this machine
    assert failed_sign_ins(base, ["10.0.0.1"] * 6) == [401] * 5 + [429]
    assert failed_sign_ins(base, ["10.0.0.2"]) == [401]  # another client behind the proxy


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the workers")
def test_kill_9_of_the_server_stops_its_workers_and_frees_the_port(tmp_path):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    FeedbackStore(db).close()
    port = free_port()
    server = start_server(db, port, "--workers", "2")
    workers = []
    try:
        for _ in range(100):  # uvicorn's workers, which hold the listening socket
            workers = [pid for pid in children_of(server.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]  # fmt: skip
            if len(workers) == 2:
                break
            time.sleep(0.1)
        assert len(workers) == 2, children_of(server.pid)
        server.send_signal(signal.SIGKILL)
        server.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers), "workers outlived the server"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
        restarted = start_server(db, port, "--workers", "2")  # the port is free again
        stop(restarted)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        stop(server)


def test_store_refusals_do_not_repeat_the_submitted_values(env):
    """A reused client_request_id (409), a ranking that is not a permutation (422) and a bad labeller name
    (422): the reply says what is wrong without quoting what was sent (found by an attacker's trial)."""
    store, app, tokens = env
    store.push_candidates(
        [Candidate("User: rank?\nAssistant:", ["r1", "r2", "r3"], kind="ranking", priority=5)]
    )
    marker = "ECHO<script>alert(1)</script>" + "Z" * 60
    with client_for(app) as client:
        ann = auth(tokens["ann"])
        task = client.get("/api/tasks/next", headers=ann).json()  # the ranking task comes first
        ids = [r["id"] for r in task["responses"]]
        bad = {"task_id": task["id"], "client_request_id": "a1", "ranking": [ids[0], ids[0], 424242]}
        r = client.post("/api/labels", headers=ann, json=bad)
        assert r.status_code == 422 and "not a permutation" in r.json()["detail"]
        assert "424242" not in r.text
        ok = {"task_id": task["id"], "client_request_id": marker, "ranking": ids}
        assert client.post("/api/labels", headers=ann, json=ok).status_code == 201
        other = client.get("/api/tasks/next", headers=ann).json()
        reused = {"task_id": other["id"], "client_request_id": marker, "strength": "tie"}
        r = client.post("/api/labels", headers=ann, json=reused)
        assert r.status_code == 409 and "already used for task" in r.json()["detail"]
        assert "ECHO" not in r.text
        r = client.post("/api/admin/labellers", headers=auth(tokens["admin"]), json={"name": marker[:100]})
        assert r.status_code == 422 and "a labeller name is" in r.json()["detail"]
        assert "ECHO" not in r.text
        r = client.post("/api/admin/labellers", headers=auth(tokens["admin"]), json={"name": "ann"})
        assert r.status_code == 409 and "'ann'" not in r.text


@pytest.mark.parametrize("change", ["rotate", "deactivate"])
def test_a_sign_in_racing_a_token_change_never_outlives_it(make_store, change):
    """The token check and the new session are one transaction: a sign-in with the old token either
    fails or its session is ended by the rotation / deactivation (before, in about 1 round of 6 it
    made a live session after the change; and a deactivated account's came back on reactivation)."""
    import sqlalchemy as sa

    from rlhf.feedback.models import Session as WebSession
    from rlhf.web.security import sign_in

    store = make_store()
    bob, token = store.add_labeller("bob", onboarded=True)
    for _ in range(30):
        start = threading.Barrier(2)
        results = {}

        def signing_in(token=token, results=results, start=start):
            start.wait()
            results["signed_in"] = sign_in(store, token, 1.0)

        def changing(start=start):
            start.wait()
            if change == "rotate":
                store.rotate_token(bob.id)
            else:
                store.set_active(bob.id, False)

        threads = [threading.Thread(target=signing_in), threading.Thread(target=changing)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        if change == "deactivate":
            store.set_active(bob.id, True)  # reactivating does not revive a session of before
        with store.read() as s:
            live = s.scalar(sa.select(sa.func.count()).where(WebSession.labeller_id == bob.id))
        assert live == 0, (
            f"a session made with the {'old token' if change == 'rotate' else 'revoked account'}"
        )
        if change == "rotate":
            token = store.rotate_token(bob.id)[1]  # the next round signs in with a current token
        with store.transaction() as s:
            s.execute(sa.delete(WebSession))


def test_exports_stream_in_chunks_one_at_a_time(env, monkeypatch):
    """Four concurrent exports of 50,000 labels took 1 GB and stalled labelling (attacker's trial): an
    export is read a chunk at a time, and a second one while the first runs is a 429."""
    import rlhf.feedback.exchange as exchange
    import rlhf.web.routes.api_admin as api_admin

    store, app, tokens = env
    store.push_candidates([Candidate(f"User: more {i}\nAssistant:", [f"x{i}", f"y{i}"]) for i in range(5)])
    with client_for(app) as client:
        for who in ("ann", "bob"):
            while (task := client.get("/api/tasks/next", headers=auth(tokens[who]))).status_code == 200:
                body = {"task_id": task.json()["id"], "client_request_id": f"{who}{task.json()['id']}"}
                client.post("/api/labels", headers=auth(tokens[who]), json={**body, "strength": "tie"})
        whole = client.get("/api/export", headers=auth(tokens["admin"])).text.splitlines()
        assert len(whole) == store.count_labels() == 8  # 8 tasks, one label each
        for module in (exchange, api_admin):
            monkeypatch.setattr(module, "EXPORT_CHUNK", 3)
        chunked = client.get("/api/export", headers=auth(tokens["admin"])).text.splitlines()
        assert chunked == whole  # the same rows, in label order, read 3 at a time
        assert [json.loads(x)["label_id"] for x in chunked] == sorted(
            json.loads(x)["label_id"] for x in whole
        )
        assert app.state.exports.acquire(blocking=False)  # as if an export were running
        try:
            r = client.get("/api/export", headers=auth(tokens["admin"]))
            assert r.status_code == 429 and r.headers["retry-after"] == "10"
        finally:
            app.state.exports.release()
        assert client.get("/api/export", headers=auth(tokens["admin"])).status_code == 200  # freed


def test_a_push_is_at_most_a_thousand_tasks(env):
    """16,000 tasks in one push held the write lock for 16 s while every labeller waited."""
    store, app, tokens = env
    task = {"prompt": "User: q\nAssistant:", "responses": [{"text": "a"}, {"text": "b"}]}
    with client_for(app) as client:
        r = client.post("/api/admin/tasks", headers=auth(tokens["admin"]), json=[task] * 1001)
        assert r.status_code == 422 and "at most 1000" in r.json()["detail"]
    assert len(store.labellers()) == 3 and store.count_labels() == 0
