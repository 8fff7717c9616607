"""Throwaway feedback databases for the store and web tests: SQLite always, PostgreSQL when
RLHF_TEST_POSTGRES_URL is set (`.ci/run` starts a server with scripts/test_postgres.sh and sets it).

Each PostgreSQL test gets its own schema (dropped afterwards), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(
            not POSTGRES_URL,
            reason="RLHF_TEST_POSTGRES_URL is not set (start a server with scripts/test_postgres.sh)",
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path):
    """A factory `make_store(settings=None) -> FeedbackStore` on a fresh database of each backend."""
    from sqlalchemy import create_engine

    from rlhf.feedback.store import FeedbackStore

    stores = []
    schema = None
    if request.param == "postgres":
        schema = f"t_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES_URL)
        with admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url, kw = POSTGRES_URL, {"connect_args": {"options": f"-csearch_path={schema}"}}
    else:
        url, kw = f"sqlite:///{tmp_path / 'feedback.db'}", {}

    def factory(settings=None, **extra):
        store = FeedbackStore(url, settings, **kw, **extra)
        stores.append(store)
        return store

    factory.backend = request.param
    factory.url = url
    factory.engine_kw = kw
    yield factory
    for store in stores:
        store.close()
    if schema is not None:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
