#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the feedback-store tests and print its URL.
#
#   export RLHF_TEST_POSTGRES_URL="$(scripts/test_postgres.sh)"
#
# Needs the server binaries (Debian: `apt-get install postgresql`; `.ci/run` installs them). On any
# failure it prints nothing and exits 0, so the PostgreSQL tests skip instead of CI failing. The cluster
# lives in a temporary directory with trust authentication on loopback only; a server already answering
# on the port (an earlier run) is re-used.
set -uo pipefail
PORT="${RLHF_TEST_POSTGRES_PORT:-54329}"

find_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return 0
    return 1
}

BINDIR="$(find_bindir)"
[ -n "$BINDIR" ] || { echo "test_postgres: no PostgreSQL binaries; PostgreSQL tests will skip" >&2; exit 0; }
URL="postgresql+psycopg://rlhf@127.0.0.1:$PORT/rlhf_test"

if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
    "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U rlhf rlhf_test >/dev/null 2>&1 || true
    if "$BINDIR/psql" -h 127.0.0.1 -p "$PORT" -U rlhf -d rlhf_test -qAtc "select 1" >/dev/null 2>&1; then
        echo "test_postgres: re-using the server on 127.0.0.1:$PORT" >&2
        echo "$URL"
    else
        echo "test_postgres: port $PORT is taken by another server; PostgreSQL tests will skip" >&2
    fi
    exit 0
fi

DATA="$(mktemp -d /tmp/rlhf-pg.XXXXXX)"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
    # initdb refuses to run as root: run the server as the `postgres` system user (created by the package).
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres >&2 || true
    chown postgres "$DATA"
    RUN_AS=(runuser -u postgres --)
fi
"${RUN_AS[@]}" "$BINDIR/initdb" -D "$DATA/db" -U rlhf --auth=trust -E UTF8 >/dev/null 2>&1 \
    || { echo "test_postgres: initdb failed; PostgreSQL tests will skip" >&2; exit 0; }
"${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA/db" -l "$DATA/log" -w -t 30 \
    -o "-h 127.0.0.1 -p $PORT -k $DATA -c fsync=off -c max_connections=200" start >/dev/null 2>&1 \
    || { echo "test_postgres: server did not start (see $DATA/log); PostgreSQL tests will skip" >&2; exit 0; }
"$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U rlhf rlhf_test >/dev/null 2>&1 \
    || { echo "test_postgres: createdb failed; PostgreSQL tests will skip" >&2; exit 0; }
echo "test_postgres: server in $DATA on 127.0.0.1:$PORT (stop: ${RUN_AS[*]} $BINDIR/pg_ctl -D $DATA/db stop)" >&2
echo "$URL"
