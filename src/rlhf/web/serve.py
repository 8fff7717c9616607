"""Running the app with uvicorn: migrate once in the parent, then start one or several workers.

Workers are separate processes (`--workers N`); each builds its app from RLHF_LABEL_* environment
variables (`rlhf.web.app.app_from_env`). They share nothing but the database, which is why sessions,
sign-in failures and task reservations all live there.

Workers stop with the server: they are in its process group (a service manager or `kill -- -PGID`
stops them all), and each watches its parent, exiting when the parent is gone, so even `kill -9` of
the server alone leaves no worker holding the port.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from rlhf.web.settings import WebSettings

PARENT_ENV = "RLHF_LABEL_SERVER_PID"  # set for the workers of `--workers N`: the pid they watch


def serve(
    settings: WebSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    forwarded_allow_ips: str = "",
    log_level: str = "info",
) -> None:
    """Serve until stopped. `forwarded_allow_ips`: the reverse proxies (comma-separated addresses, or
    "*") whose X-Forwarded-For/-Proto are believed; empty trusts none, so a client cannot choose the
    address the sign-in limit counts by sending the header itself."""
    import uvicorn

    from rlhf.feedback.store import FeedbackStore

    FeedbackStore(settings.db_url).close()  # create or migrate the schema before any worker starts
    if workers > 1 and settings.db_url.startswith("sqlite"):
        print(
            "rlhf: warning: several workers on SQLite take turns for every write; use PostgreSQL for --workers > 1",
            file=sys.stderr,
        )
    settings.run_migrations = False
    os.environ.update(settings.to_env())
    if workers > 1:
        os.environ[PARENT_ENV] = str(os.getpid())
    proxies = forwarded_allow_ips.strip()
    uvicorn.run(
        "rlhf.web.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Behind a reverse proxy, X-Forwarded-For/-Proto give the client address (for the sign-in
        # limit) and the scheme (https -> Secure cookies); only from the proxies named.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_level=log_level,
    )


def watch_parent(parent_pid: int, interval: float = 0.5, grace: float = 5.0) -> threading.Thread:
    """In a worker: stop this process when `parent_pid` is no longer its parent (the server died, even
    by SIGKILL, and the worker was re-parented). SIGTERM first, so uvicorn closes its listening socket
    and finishes requests under way; after `grace` seconds, exit regardless."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    thread = threading.Thread(target=watch, name="rlhf-parent-watch", daemon=True)
    thread.start()
    return thread
