#!/usr/bin/env bash
# Podman for mcp-lifecycle's Docker-backend tests: Debian's Podman (rootful),
# serving its Docker-compatible API on a socket of its own, with the test
# images loaded from the Docker engine.
#
# Usage:
#   scripts/podman.sh [start]   install if missing, configure, start the API service
#                               (no-op if it answers), load the test images
#   scripts/podman.sh stop      stop the service this script started
#   scripts/podman.sh env       print DOCKER_HOST=... for the service
#   scripts/podman.sh status    whether the service answers, and its version
#
# What this machine's Podman needs (Debian 12, Podman 4.3, inside a container
# runtime with cgroup v1):
#   - default ulimits within the host's hard limits (else every container fails
#     with "error setting rlimit ... operation not permitted");
#   - catatonit, the init process `init: true` containers get;
#   - the local test registry (127.0.0.1:5000) marked insecure.
# The images come from `scripts/test-images.sh` (run it first): they are
# saved from the Docker engine and loaded here under the same names.
#
# Files under /var/tmp/mcp-lifecycle-podman/: service.pid, service.log,
# apt.log, images.stamp (the image ids last loaded), tmp/ (the service's
# TMPDIR: a push through the API leaves digest files there, which would
# otherwise litter /var/tmp; emptied at stop).
set -euo pipefail

STATE_DIR=/var/tmp/mcp-lifecycle-podman
SOCKET_DIR=/run/mcp-lifecycle-podman
SOCKET="$SOCKET_DIR/podman.sock"
PID_FILE="$STATE_DIR/service.pid"
LOG_FILE="$STATE_DIR/service.log"
STAMP="$STATE_DIR/images.stamp"
SERVICE_TMP="$STATE_DIR/tmp"
IMAGES=(mcp-lifecycle/test-server:v1 mcp-lifecycle/test-server:v2 mcp-lifecycle/test-server:v3)
START_TIMEOUT_S=30

log() { printf 'podman: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

answers() {
    curl -sf --max-time 2 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

install() {
    if command -v podman >/dev/null && command -v catatonit >/dev/null; then
        return
    fi
    log "installing podman and catatonit from Debian's packages"
    mkdir -p "$STATE_DIR"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman catatonit \
        >"$STATE_DIR/apt.log" 2>&1; then
        apt-get update -qq >>"$STATE_DIR/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman catatonit \
            >>"$STATE_DIR/apt.log" 2>&1 || die "apt-get install podman failed; see $STATE_DIR/apt.log"
    fi
}

configure() {
    mkdir -p /etc/containers/containers.conf.d /etc/containers/registries.conf.d
    local hard_nofile
    hard_nofile=$(ulimit -Hn)
    [ "$hard_nofile" = unlimited ] && hard_nofile=1048576
    local nofile=$((hard_nofile < 65536 ? hard_nofile : 65536))
    cat >/etc/containers/containers.conf.d/50-mcp-lifecycle.conf <<EOF
# Written by mcp-lifecycle's scripts/podman.sh.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
init_path = "$(command -v catatonit)"
EOF
    cat >/etc/containers/registries.conf.d/50-mcp-lifecycle.conf <<'EOF'
# Written by mcp-lifecycle's scripts/podman.sh: the local test registry.
[[registry]]
location = "127.0.0.1:5000"
insecure = true
EOF
}

start_service() {
    if answers; then
        return
    fi
    mkdir -p "$STATE_DIR" "$SOCKET_DIR" "$SERVICE_TMP"
    rm -f "$SOCKET"
    log "starting the API service on $SOCKET"
    TMPDIR="$SERVICE_TMP" setsid podman system service --time=0 "unix://$SOCKET" >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local waited=0
    until answers; do
        sleep 0.2
        waited=$((waited + 1))
        if [ "$waited" -gt $((START_TIMEOUT_S * 5)) ]; then
            die "the service did not answer within ${START_TIMEOUT_S}s; see $LOG_FILE"
        fi
    done
}

load_images() {
    local ids
    ids=$(docker image inspect --format '{{.Id}}' "${IMAGES[@]}" 2>/dev/null) ||
        die "the test images are missing from Docker; run scripts/test-images.sh first"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$ids" ] &&
        podman image exists "${IMAGES[0]}" 2>/dev/null; then
        return
    fi
    log "loading ${IMAGES[*]} from Docker"
    docker save "${IMAGES[@]}" | podman load -q >/dev/null
    echo "$ids" >"$STAMP"
}

stop_service() {
    if [ -f "$PID_FILE" ]; then
        local pid
        pid=$(cat "$PID_FILE")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
        rm -f "$PID_FILE"
    fi
    # Containers the tests left behind would outlive the service otherwise.
    podman ps -aq --filter label=mcp-lifecycle.dev/managed-by 2>/dev/null |
        xargs -r podman rm -f >/dev/null 2>&1 || true
    # The bridge network the Docker backend creates on first use (its CNI
    # config); the machine had none before.
    podman network rm -f mcp-lifecycle >/dev/null 2>&1 || true
    rm -rf "$SERVICE_TMP"
}

case "${1:-start}" in
start)
    install
    configure
    start_service
    load_images
    log "ready: DOCKER_HOST=unix://$SOCKET ($(podman --version))"
    ;;
stop) stop_service ;;
env) echo "DOCKER_HOST=unix://$SOCKET" ;;
status)
    if answers; then
        echo "podman API answers on $SOCKET: $(podman --version)"
    else
        echo "podman API is not running"
    fi
    ;;
*) die "unknown command ${1}; see the usage at the top of this script" ;;
esac
