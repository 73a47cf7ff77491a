#!/usr/bin/env bash
# Prints the container engine to use (docker or podman), preparing podman first where needed.
#
# Order: $CONTAINER_ENGINE if set; a Docker daemon that answers; else podman. As root on Debian or
# Ubuntu, whatever is missing of podman, runc, debootstrap, catatonit and the CNI dnsname plugin is
# installed from apt and, unless an admin configured it, podman is set up for a host like the CI
# machines (cgroup v1 + a v2 "unified" mount that crun refuses, no right to raise rlimits, no
# systemd). Idempotent: every step is skipped when its result is already there.
# Progress goes to stderr; stdout is only the engine name.
set -euo pipefail

log() { echo "container-engine: $*" >&2; }

if [ -n "${CONTAINER_ENGINE:-}" ]; then
    echo "$CONTAINER_ENGINE"
    exit 0
fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    echo docker
    exit 0
fi

need=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ -x /usr/libexec/podman/catatonit ] || need+=(catatonit)  # `init: true` / --init
# Service names as host names on compose networks (podman 4.3's CNI backend needs the plugin).
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${need[*]} from apt"
        export DEBIAN_FRONTEND=noninteractive
        apt_log=/var/tmp/clv-container-engine-apt.log
        { apt-get install -y -q --no-install-recommends "${need[@]}" \
            || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }; } \
            >"$apt_log" 2>&1 || { tail -n 30 "$apt_log" >&2; exit 1; }
    elif ! command -v podman >/dev/null 2>&1; then
        log "no Docker daemon and no podman: install one (docs/containers.md)"
        exit 1
    else
        log "not installed (needs root and apt): ${need[*]}; trying the podman that is there"
    fi
fi

# Written only when absent (or when we wrote it before): an admin's own configuration wins.
conf=/etc/containers/containers.conf
marker="# written by clv-service .ci/container-engine.sh"
if [ "$(id -u)" = 0 ] && { [ ! -e "$conf" ] || grep -qF "$marker" "$conf"; }; then
    mkdir -p /etc/containers
    cat >"$conf.tmp" <<CONF
$marker
# runc, not crun: crun 1.8 refuses a cgroup v1 host with a v2 "unified" mount. No default rlimits:
# the CI sandbox may not raise them. cgroupfs and a file event log: there is no systemd.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    if ! cmp -s "$conf.tmp" "$conf" 2>/dev/null; then
        mv "$conf.tmp" "$conf"
        log "wrote $conf"
    else
        rm -f "$conf.tmp"
    fi
fi
podman info >/dev/null
echo podman
