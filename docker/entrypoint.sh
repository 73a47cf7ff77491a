#!/bin/sh
# The image's only entrypoint, and what CI runs on a repository checkout (tests/ops): one script,
# the same commands in both places.
#
#   entrypoint.sh serve [OPTIONS]              the API (uvicorn); CLV_HOST, CLV_PORT, CLV_WORKERS...
#   entrypoint.sh migrate [REVISION]           alembic upgrade head (one-shot, before serve)
#   entrypoint.sh train [OPTIONS]              train, evaluate, promote into CLV_MODEL_DIR
#   entrypoint.sh score --out FILE [--store]   batch scores
#   entrypoint.sh import-transactions --format csv|cdnow FILE
#   entrypoint.sh COMMAND [ARGS]               any other `clv` subcommand (generate-demo, ...)
#   entrypoint.sh help                         the list of commands
#
# Without arguments it serves. Every setting is a CLV_* environment variable (README, Settings).
# Two more, set by the image (docs/containers.md), both off on a checkout:
#   CLV_WAIT_FOR_DATABASE_SECONDS  > 0: wait up to that long for a Postgres CLV_DATABASE_URL to
#                                  answer (and, but for migrate, to be migrated) before the command
#   CLV_DEFAULT_MODEL_DIR          a model directory (the one shipped in the image) copied into a
#                                  writable CLV_MODEL_DIR that has no `current` model yet
set -eu

# Which clv: $CLV_BIN, else the virtualenv next to this script (the image's /srv/.venv or a
# checkout's .venv), else the one on PATH.
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
if [ -n "${CLV_BIN:-}" ]; then
    clv=$CLV_BIN
elif [ -x "$here/../.venv/bin/clv" ]; then
    clv=$here/../.venv/bin/clv
elif command -v clv >/dev/null 2>&1; then
    clv=$(command -v clv)
else
    echo "entrypoint: no clv found (set CLV_BIN, or install the project into $here/../.venv)" >&2
    exit 127
fi

command=${1:-serve}
[ "$#" -gt 0 ] && shift

# Copy the shipped model into an empty model directory (a fresh volume), so the API serves at once.
# Each version is copied under a temporary name and renamed, and `current` is written last and
# renamed into place: a concurrent starter (migrate and api in one compose up) sees all or nothing.
seed_models() {
    source_dir=${CLV_DEFAULT_MODEL_DIR:-}
    target=${CLV_MODEL_DIR:-}
    [ -n "$source_dir" ] && [ -n "$target" ] && [ -f "$source_dir/current" ] || return 0
    [ -f "$target/current" ] && return 0
    if ! { mkdir -p "$target" 2>/dev/null && [ -w "$target" ]; }; then
        echo "entrypoint: $target has no current model and is read-only; not seeding it" >&2
        return 0
    fi
    for version in "$source_dir"/*/; do
        name=$(basename "$version")
        [ -e "$target/$name" ] && continue
        cp -R "$version" "$target/.$name.seed.$$"
        # -T: fail (and clean up) rather than move into a directory another starter just made.
        mv -T "$target/.$name.seed.$$" "$target/$name" 2>/dev/null || rm -rf "$target/.$name.seed.$$"
    done
    cp "$source_dir/current" "$target/.current.seed.$$"
    # A hard link never replaces an existing name: a pointer someone else (a trainer, the other
    # service) wrote meanwhile wins.
    if ln "$target/.current.seed.$$" "$target/current" 2>/dev/null; then
        echo "entrypoint: seeded $target with the shipped model $(cat "$target/current")" >&2
    fi
    rm -f "$target/.current.seed.$$"
}

# Bounded wait for a Postgres database (SQLite needs none); all but migrate wait for the migrations.
wait_for_database() {
    timeout=${CLV_WAIT_FOR_DATABASE_SECONDS:-0}
    [ "$timeout" != 0 ] || return 0
    case "${CLV_DATABASE_URL:-}" in postgresql*) ;; *) return 0 ;; esac
    python=$(dirname -- "$clv")/python
    [ -x "$python" ] || python=python3
    "$python" "$here/wait_for_database.py" --timeout "$timeout" "$@"
}

asks_for_help=false
for argument in "$@"; do
    case "$argument" in --help | -h) asks_for_help=true ;; esac
done
case "$command" in
    help | -h | --help | clv) ;;
    *)
        if [ "$asks_for_help" = true ]; then exec "$clv" "$command" "$@"; fi
        seed_models
        if [ "$command" = migrate ]; then wait_for_database; else wait_for_database --at-head; fi
        ;;
esac

# exec: clv replaces this shell, so SIGTERM (drain, then stop) and SIGHUP (reload the model) from
# the container runtime reach uvicorn directly.
case "$command" in
    help | -h | --help) exec "$clv" --help ;;
    clv) exec "$clv" "$@" ;;  # `entrypoint.sh clv serve` works too
    *) exec "$clv" "$command" "$@" ;;  # serve, migrate, train, score, import-transactions, ...
esac
