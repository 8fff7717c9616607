"""A labeller in real headless Chromium (Debian's, driven by Playwright): sign in, pass onboarding,
label a pairwise and a ranking task with the keyboard only; the labels then appear in the export.
The server is `rlhf label serve` in a subprocess. Screenshots of each page go to <tmp>/screenshots."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def signed_in_page(url: str, token: str):
    """A Chromium page signed in with `token` to the labelling app on the store at `url`, served by
    uvicorn in a thread of this process (stopped when the block ends)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    import uvicorn

    from rlhf.web import WebSettings, create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(WebSettings(db_url=url)), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/login")
            page.fill("#token", token)
            page.click("button[type=submit]")
            yield page
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(tmp_path):
    """(store, base URL, labeller token) with a gold question, a pairwise task and a ranking task."""
    from rlhf.feedback.store import Candidate, FeedbackStore

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = FeedbackStore(url)
    store.push_candidates(
        [
            Candidate("User: capital of France?\nAssistant:", ["Paris.", "Rome."], gold_answer={"choice": 0},
                      explanation="Paris is the capital of France."),
            Candidate("User: how do I boil an egg?\nAssistant:", ["Boil it 8 minutes.", "Eggs are round."], priority=2),
            Candidate("User: name a fruit\nAssistant:", ["Apple.", "A fruit.", "Rock."], kind="ranking", priority=1),
        ]
    )  # fmt: skip
    _, token = store.add_labeller("ann")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhf", "label", "serve", "--db", url, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(150):
        try:
            if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
    yield store, base, token
    proc.terminate()
    proc.wait(timeout=20)
    store.close()


def test_labeller_signs_in_onboards_and_labels_with_the_keyboard(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from rlhf.feedback.exchange import export_rows

    store, base, token = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        # The pages are served with a Content-Security-Policy; a script or style it blocks shows here.
        blocked = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{base}/label")  # not signed in -> the sign-in page
        assert page.url.endswith("/login")
        page.fill("#token", token)
        page.screenshot(path=str(shots / "1-login.png"))
        page.keyboard.press("Enter")
        page.wait_for_selector("#onboarding")
        page.screenshot(path=str(shots / "2-onboarding.png"))
        # The researchers prefer Paris; it is shown on the left (A) or the right (B) at random.
        paris_left = page.locator(".side-by-side .response").first.inner_text().find("Paris") >= 0
        page.keyboard.press("2" if paris_left else "6")  # A better / B better
        page.keyboard.press("Enter")
        page.wait_for_selector("#gold-verdict")
        assert "Right" in page.inner_text("#gold-verdict")
        assert "Paris is the capital of France." in page.inner_text("#gold-explanation")
        page.screenshot(path=str(shots / "3-gold-feedback.png"))
        page.keyboard.press("Enter")

        page.wait_for_selector("form[data-kind=pairwise]")
        egg_left = "Boil" in page.locator(".side-by-side .response").first.inner_text()
        page.keyboard.press("1" if egg_left else "7")  # the egg answer is much better
        page.keyboard.press("u")  # and flag the task, to see the flag travel to the export
        page.screenshot(path=str(shots / "4-pairwise.png"))
        page.keyboard.press("Enter")

        page.wait_for_selector("form[data-kind=ranking]")
        keys = {
            page.locator(f"#ranking-list li[data-key='{k}'] pre").inner_text(): str(k) for k in range(1, 4)
        }
        for text in ("Apple.", "A fruit.", "Rock."):  # best first, by the numbers shown
            page.keyboard.press(keys[text])
        page.screenshot(path=str(shots / "5-ranking.png"))
        page.keyboard.press("Enter")
        page.wait_for_selector("#no-tasks")
        page.screenshot(path=str(shots / "6-done.png"))
        assert blocked == []
        browser.close()

    pairs = list(export_rows(store, "pairs"))
    assert [(r["chosen"], r["rejected"], r["labeller_id"], r.get("unsafe")) for r in pairs] == [
        ("Boil it 8 minutes.", "Eggs are round.", "ann", True)
    ]
    (ranking,) = export_rows(store, "rankings")
    assert [ranking["responses"][i] for i in ranking["ranking"]] == ["Apple.", "A fruit.", "Rock."]
    assert not store.get_labeller(store.labeller_by_token(token).id).flagged
    assert sorted(f.name for f in shots.iterdir()) == [
        "1-login.png", "2-onboarding.png", "3-gold-feedback.png", "4-pairwise.png", "5-ranking.png", "6-done.png"
    ]  # fmt: skip


def test_ranking_by_drag_and_drop(tmp_path):
    """The mouse path of the ranking page: drag answers into order, submit, and the order is stored."""
    from rlhf.feedback.store import Candidate, FeedbackStore

    url = f"sqlite:///{tmp_path / 'dnd.db'}"
    store = FeedbackStore(url)
    store.push_candidates(
        [Candidate("User: a colour?\nAssistant:", ["Red.", "Blue.", "Chair."], kind="ranking")]
    )
    labeller, token = store.add_labeller("bea", onboarded=True)
    with signed_in_page(url, token) as page:
        page.wait_for_selector("#ranking-list")
        item = "#ranking-list li:has-text('{}')"
        # Target order Blue, Red, Chair: drag each to the top, last first.
        for text in ("Chair.", "Red.", "Blue."):
            page.drag_and_drop(
                item.format(text), "#ranking-list li >> nth=0", target_position={"x": 5, "y": 2}
            )
        shown = page.locator("#ranking-list li pre").all_inner_texts()
        assert shown == ["Blue.", "Red.", "Chair."]
        page.screenshot(path=str(tmp_path / "dnd-ranking.png"))
        page.click("#label-form button[type=submit]")
        page.wait_for_selector("#no-tasks")
    (label,) = store.labels_of(labeller.id)
    texts = {r.id: r.text for r in store.get_task(labeller.id, label.task_id).responses}
    assert [texts[i] for i in label.ranking] == ["Blue.", "Red.", "Chair."]
    store.close()


def test_binary_tasks_with_the_keyboard(tmp_path):
    """Good / bad with the keys: a reason typed and Enter pressed in its box does not submit (the browser
    would submit with the first button, Good); then b stores "bad" with the reason, and g a "good"."""
    from rlhf.feedback.store import Candidate, FeedbackStore

    url = f"sqlite:///{tmp_path / 'binary.db'}"
    store = FeedbackStore(url)
    store.push_candidates(
        [Candidate("User: 2+2?\nAssistant:", ["5"], kind="binary", priority=2),
         Candidate("User: hi\nAssistant:", ["Hello!"], kind="binary", priority=1)]
    )  # fmt: skip
    labeller, token = store.add_labeller("cat", onboarded=True)
    with signed_in_page(url, token) as page:
        page.wait_for_selector("#label-good")
        page.fill("#binary-reason", "2+2 is 4")
        page.press("#binary-reason", "Enter")
        assert "choose Good" in page.inner_text("#form-message") and store.count_labels() == 0
        page.screenshot(path=str(tmp_path / "binary.png"))
        page.keyboard.press("b")
        page.wait_for_selector("pre:has-text('Hello!')")
        page.keyboard.press("g")
        page.wait_for_selector("#no-tasks")
    second, first = store.labels_of(labeller.id)
    assert (first.label, first.reason, second.label, second.reason) == (False, "2+2 is 4", True, None)
    store.close()
