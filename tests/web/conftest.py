from tests.dbs import make_store  # noqa: F401  (the fixture, on SQLite and PostgreSQL)
