"""Opening a feedback database: engine settings per backend, and migrating the schema to head.

SQLite (the embedded default) gets `BEGIN IMMEDIATE` for every transaction: the write lock is taken up
front, so two threads can never both read "task 7 is free" and then both claim it (SQLite has no
`SELECT ... FOR UPDATE`). PostgreSQL uses row locks (`FOR UPDATE SKIP LOCKED`) in `rlhf.feedback.store`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rlhf.errors import UserError

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates this database.
_MIGRATION_LOCK = 7_000_007
READ_ONLY = "rlhf_read_only"  # an execution option: this transaction only reads


def normalize_url(url: str) -> str:
    """Check a database URL; `postgresql://` means the psycopg 3 driver (the one we depend on)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(
            f"{url!r} is not a database URL; expected sqlite:///path/file.db or postgresql+psycopg://user@host/db"
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(
            f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql+psycopg://"
        )
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, connect_args: dict | None = None) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pool = {}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # Connections past the pool are opened (PRAGMAs and all) and closed again per use: keep enough
            # for any thread pool a caller runs (the web app's own database threads are 1 + 4).
            pool = {"pool_size": 40, "max_overflow": 20}
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False, **(connect_args or {})}, **pool
        )
        _sqlite_immediate_transactions(engine)
        return engine
    # Enough for the web app's database threads (4 + 4 a worker); pre-ping survives a restarted server.
    return create_engine(
        url, pool_size=10, max_overflow=30, pool_pre_ping=True, connect_args=connect_args or {}
    )


def _sqlite_immediate_transactions(engine: Engine) -> None:
    # The recipe from SQLAlchemy's SQLite docs: stop pysqlite's own BEGIN, then emit ours.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
        # WAL + NORMAL: a commit survives a crash of the app; only a power cut can lose the last commits
        # (SQLite's recommended setting for WAL). It spares one fsync per label.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        # Reads (FeedbackStore.read) need no write lock: in WAL mode they see a snapshot and never wait.
        # Straight on the driver's connection: this runs once per transaction, and a statement through
        # SQLAlchemy's execution machinery costs several times what SQLite takes for a BEGIN.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creating it in an empty database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if is_postgres(engine):
            # Several worker processes may start at once; only one migrates, the others then see head.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
