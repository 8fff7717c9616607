"""The labelling app's settings: one dataclass, read from the environment by every worker process.

Its own module so that the app factory and the request dependencies both read it without importing
each other (`app` builds the routers, whose dependencies in `deps` need the settings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass
class WebSettings:
    db_url: str = "sqlite:///rlhf-feedback.db"
    project: str = "default"
    secure_cookies: bool | None = None  # None: Secure exactly when the request came over HTTPS
    session_hours: float = 12.0
    sign_in_max_failures: int = 5  # failed sign-ins per client address within the window, then 429
    sign_in_window_seconds: float = 300.0
    max_body_bytes: int = 1_000_000
    gold_accuracy_threshold: float = 0.7
    onboarding_questions: int = 5
    assignment_seconds: float = 1800.0
    run_migrations: bool = True
    db_threads: int = 0  # threads running the store's calls; 0: 1 for SQLite (one writer), 4 for PostgreSQL
    guidelines_file: str = ""  # Markdown/plain text shown above the built-in guidelines

    @classmethod
    def from_env(cls, prefix: str = "RLHF_LABEL_") -> WebSettings:
        """Settings from RLHF_LABEL_DB_URL, RLHF_LABEL_PROJECT, ... (how `--workers N` passes them on)."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw is None:
                continue
            kind = str(f.type)
            if "bool" in kind:
                values[f.name] = None if raw == "" else raw.lower() in ("1", "true", "yes")
            elif "int" in kind:
                values[f.name] = int(raw)
            elif "float" in kind:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def to_env(self, prefix: str = "RLHF_LABEL_") -> dict[str, str]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[prefix + f.name.upper()] = "" if value is None else str(value)
        return out
