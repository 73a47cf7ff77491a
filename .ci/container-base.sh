#!/usr/bin/env bash
# Makes the two local Debian base images when they are missing (reused when present):
#   localhost/clv-bookworm-min:$REVISION    debootstrap minbase + python3 + ca-certificates (runtime)
#   localhost/clv-bookworm-build:$REVISION  the above + python3-venv (docker/base/Containerfile; build)
# Prints the two names (runtime, then build) on stdout; progress goes to stderr.
# For hosts without registry access (no python:3.11-slim-bookworm). Needs root, debootstrap and a
# Debian mirror (taken from /etc/apt, else deb.debian.org). Usage: container-base.sh ENGINE
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:?usage: container-base.sh docker|podman}
# Bump when this script or docker/base/Containerfile changes: hosts then make the new bases.
revision=r1
runtime_image=localhost/clv-bookworm-min:$revision
build_image=localhost/clv-bookworm-build:$revision
suite=bookworm

log() { echo "container-base: $*" >&2; }
exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }

mirror() {
    # The first Debian mirror apt uses for $suite (deb822 .sources or one-line sources.list).
    local uri
    uri=$(awk -v suite="$suite" '
        /^URIs:/ { uris = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) { print uris; exit } }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    if [ -z "$uri" ]; then
        uri=$(awk -v suite="$suite" '$1 == "deb" && $0 ~ " " suite " " { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

if ! exists "$runtime_image"; then
    rootfs=$(mktemp -d /var/tmp/clv-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $suite from $(mirror) (about 40 s)"
    debootstrap --variant=minbase --include=python3,ca-certificates \
        "$suite" "$rootfs" "$(mirror)" >/var/tmp/clv-debootstrap.log 2>&1 \
        || { tail -n 30 /var/tmp/clv-debootstrap.log >&2; exit 1; }
    # What the official slim images also leave out: package caches, lists, docs, man pages, and
    # message translations (the service logs in English; locale.alias stays).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
    find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
    tar -C "$rootfs" -c . | "$engine" import \
        --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$runtime_image" >/dev/null
    log "made $runtime_image"
fi

if ! exists "$build_image"; then
    build_flags=()
    [ "$engine" = podman ] && build_flags+=(--format docker)
    "$engine" build "${build_flags[@]}" --network host -q -t "$build_image" \
        --build-arg BASE_IMAGE="$runtime_image" -f docker/base/Containerfile docker/base >/dev/null
    log "made $build_image"
fi
echo "$runtime_image $build_image"
