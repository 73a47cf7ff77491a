#!/usr/bin/env bash
# The compose stack from docker-compose.yml, as a user starts it: `up -d`, then the API must become
# ready with no manual step (the shipped model seeded into the fresh volume), take an event with a
# key made through the entrypoint, and come down with its volumes. Uses `docker compose` with
# Docker, else podman-compose (pip, run through uv) which ignores `depends_on: condition:`.
# Expects the images of .ci/container-test.sh (CLV_IMAGE, CLV_TRAINER_IMAGE); without a registry
# Postgres is Debian's package (docker/postgres, built here when missing).
#   compose-test.sh ENGINE
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:?usage: compose-test.sh docker|podman}
t0=$(date +%s)
say() { echo "compose-test: $* ($(($(date +%s) - t0)) s)" >&2; }

export CLV_IMAGE=${CLV_IMAGE:-localhost/clv-service:test}
export CLV_TRAINER_IMAGE=${CLV_TRAINER_IMAGE:-localhost/clv-service-trainer:test}
if [ -z "${POSTGRES_IMAGE:-}" ]; then
    bases=$(.ci/container-base.sh "$engine")
    read -r runtime_image _ <<<"$bases"
    export POSTGRES_IMAGE=localhost/clv-postgres:r1
    if ! "$engine" image inspect "$POSTGRES_IMAGE" >/dev/null 2>&1; then
        flags=(--network host --build-arg "BASE_IMAGE=$runtime_image")
        [ "$engine" = podman ] && flags+=(--format docker)
        "$engine" build "${flags[@]}" -q -t "$POSTGRES_IMAGE" docker/postgres >/dev/null
        say "built $POSTGRES_IMAGE"
    fi
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export CLV_PUBLISH_PORT=$port CLV_WORKERS=1
project=clv-compose-test-$$
if [ "$engine" = docker ]; then
    compose=(docker compose -p "$project")
else
    compose=(.tools/bin/uv tool run --quiet --from "podman-compose==1.6.0" podman-compose -p "$project")
fi
cleanup() { "${compose[@]}" down -v >/dev/null 2>&1 || true; }
trap cleanup EXIT

"${compose[@]}" up -d --no-build >var/compose-test.log 2>&1 || { cat var/compose-test.log >&2; exit 1; }
say "up -d"
base=http://127.0.0.1:$port
for _ in $(seq 1 180); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ] && break
    sleep 1
done
if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" != 200 ]; then
    "${compose[@]}" logs >&2 || true
    echo "compose-test: FAIL the api never became ready on :$port" >&2
    exit 1
fi
say "ok   /readyz 200 without a training step (model $(curl -s "$base/readyz" | tr -d '\n' | cut -c1-120))"

api=$("$engine" ps --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=api" --format '{{.Names}}' | head -n1)
key=$("$engine" exec "$api" /srv/docker/entrypoint.sh keys create --name compose-test --scopes all 2>/dev/null)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
answer=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $key" -H 'content-type: application/json' \
    -X POST "$base/v1/events?score=true" \
    -d "{\"event_id\": \"compose-1\", \"customer_id\": \"compose-c1\", \"type\": \"order\", \"occurred_at\": \"$now\", \"amount\": \"59.90\", \"currency\": \"USD\"}")
code=$(tail -n1 <<<"$answer")
[ "$code" = 201 ] && grep -q '"prediction"' <<<"$answer" \
    || { echo "compose-test: FAIL POST /v1/events?score=true: $answer" >&2; exit 1; }
say "ok   event stored and scored through the stack (201)"
say "passed"
