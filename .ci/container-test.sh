#!/usr/bin/env bash
# `make container-test`: prepare a container engine, build both images from the real Dockerfile,
# check them end to end against the host's Postgres (.ci/container_check.py), then bring the
# docker-compose.yml stack up and down (.ci/compose-test.sh).
#
# Idempotent, for a fresh CI machine as for a workstation: installs podman where neither Docker nor
# podman works (.ci/container-engine.sh), makes local Debian base images when no Python base image
# is given (.ci/container-base.sh; reused when present), passes the host's extra CA certificates to
# the build as the `extra-ca` secret (never into an image).
#   CLV_PYTHON_IMAGE / CLV_RUNTIME_IMAGE   base images to build on (e.g. python:3.11-slim-bookworm)
#   CLV_EXTRA_CA_DIR                       *.crt to trust in the build (/usr/local/share/ca-certificates)
#   CONTAINER_ENGINE                       docker or podman, skipping the detection
#   CLV_COMPOSE_TEST=0                     skip the compose stack test (.ci/compose-test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
say() { echo "container-test: $* ($(($(date +%s) - t0)) s)" >&2; }

engine=$(.ci/container-engine.sh)
say "engine: $engine"

if [ -n "${CLV_PYTHON_IMAGE:-}" ]; then
    python_image=$CLV_PYTHON_IMAGE
    runtime_image=${CLV_RUNTIME_IMAGE:-$CLV_PYTHON_IMAGE}
else
    bases=$(.ci/container-base.sh "$engine")  # fails the script if it fails
    read -r runtime_image python_image <<<"$bases"
fi
say "base images: build $python_image, runtime $runtime_image"

flags=(--network host --build-arg "PYTHON_IMAGE=$python_image" --build-arg "RUNTIME_IMAGE=$runtime_image")
[ "$engine" = podman ] && flags+=(--format docker)  # OCI would drop HEALTHCHECK
ca_dir=${CLV_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
bundle=$(mktemp)
trap 'rm -f "$bundle"' EXIT
if compgen -G "$ca_dir/*.crt" >/dev/null; then
    cat "$ca_dir"/*.crt >"$bundle"
    flags+=(--secret "id=extra-ca,src=$bundle")
fi
[ "$engine" = docker ] && export DOCKER_BUILDKIT=1

api=localhost/clv-service:test
trainer=localhost/clv-service-trainer:test
mkdir -p var
# The images these tags named before this build: removed afterwards unless still in use.
previous=$("$engine" image inspect --format '{{.Id}}' "$api" "$trainer" 2>/dev/null || true)
"$engine" build "${flags[@]}" --target trainer -t "$trainer" . >var/container-build.log 2>&1 \
    || { tail -n 40 var/container-build.log >&2; exit 1; }
say "built $trainer"
"$engine" build "${flags[@]}" -t "$api" . >>var/container-build.log 2>&1 \
    || { tail -n 40 var/container-build.log >&2; exit 1; }
say "built $api (build log: var/container-build.log)"

.venv/bin/python .ci/container_check.py --engine "$engine" --api "$api" --trainer "$trainer"
if [ "${CLV_COMPOSE_TEST:-1}" != 0 ]; then
    CLV_IMAGE=$api CLV_TRAINER_IMAGE=$trainer .ci/compose-test.sh "$engine"
fi
current=$("$engine" image inspect --format '{{.Id}}' "$api" "$trainer")
for id in $previous; do
    grep -qxF "$id" <<<"$current" && continue  # a fully cached build: the same image
    "$engine" image rm "$id" >/dev/null 2>&1 || true  # fails harmlessly when still in use
done
say "passed"
