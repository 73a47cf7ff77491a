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

# exec: clv replaces this shell, so SIGTERM (drain, then stop) and SIGHUP (reload the model) from
# the container runtime reach uvicorn directly.
case "$command" in
    help | -h | --help) exec "$clv" --help ;;
    clv) exec "$clv" "$@" ;;  # `entrypoint.sh clv serve` works too
    *) exec "$clv" "$command" "$@" ;;  # serve, migrate, train, score, import-transactions, ...
esac
