#!/usr/bin/env bash
# Test images and a local registry for mcp-lifecycle's Docker-based tests.
#
# Usage:
#   scripts/test-images.sh [all]         build, start the registry, push, write images.env
#   scripts/test-images.sh start-registry start the local registry (no-op if it answers)
#   scripts/test-images.sh stop-registry  stop the registry this script started
#   scripts/test-images.sh status         registry state, local images, images.env
#
# `all` (the default) is idempotent and takes a few seconds once everything is done:
#   1. builds mcp-test-server as a static binary (own target dir, see below);
#   2. builds FROM-scratch images mcp-lifecycle/test-server:v1, :v2, :v3
#      (nothing is pulled). Every image holds /mcp-test-server and /VERSION, runs as
#      65534:65534 and has ENTRYPOINT ["/mcp-test-server"] (stdio; a container can
#      pass `--transport http --port 8080`; MCP_TEST_BIND is 0.0.0.0). v1 and v2
#      differ only in content: MCP_TEST_VERSION (what the `version` tool and the
#      server info answer) and /VERSION. v3 exits at once with code 3
#      (MCP_TEST_EXIT_IMMEDIATELY_CODE=3), for failing rollouts;
#   3. installs Debian's docker-registry (Distribution 2.8) when missing (needs root)
#      and serves .ci/registry/config.yml on 127.0.0.1:$MCP_REGISTRY_PORT;
#   4. pushes v1, v2, v3 and latest (= v1) to 127.0.0.1:$MCP_REGISTRY_PORT/mcp-test-server,
#      re-pushing any tag whose registry digest is not the local image's (so a run
#      restores tags that tests moved or deleted);
#   5. writes /var/tmp/mcp-lifecycle-registry/images.env (KEY=value lines):
#        MCP_TEST_IMAGE_V1=mcp-lifecycle/test-server:v1        (and _V2, _V3; local tags)
#        MCP_TEST_REGISTRY=127.0.0.1:5000
#        MCP_TEST_REGISTRY_IMAGE=127.0.0.1:5000/mcp-test-server  (tags v1 v2 v3 latest)
#        MCP_TEST_REGISTRY_DIGEST_V1=sha256:...                (and _V2, _V3; manifest digests)
#        MCP_TEST_SERVER_STATIC_BIN=/var/tmp/mcp-lifecycle-static/.../mcp-test-server
#        MCP_TEST_IMAGES_SCRIPT=<this script>                  (for stop-/start-registry)
#
# Environment:
#   MCP_REGISTRY_PORT      registry port on 127.0.0.1 (default 5000)
#   MCP_STATIC_TARGET_DIR  cargo target dir of the static build
#                          (default /var/tmp/mcp-lifecycle-static; RUSTFLAGS differ from
#                          the normal build's, so sharing its target dir would rebuild it)
#
# Files under /var/tmp/mcp-lifecycle-registry/: registry-<port>.pid, registry-<port>.log,
# data/ (the registry's storage), images.env, lock (serializes runs), apt.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/test-images.sh"
STATE_DIR=/var/tmp/mcp-lifecycle-registry
ENV_FILE="$STATE_DIR/images.env"
CONFIG="$ROOT/.ci/registry/config.yml"

PORT="${MCP_REGISTRY_PORT:-5000}"
PID_FILE="$STATE_DIR/registry-$PORT.pid"
LOG_FILE="$STATE_DIR/registry-$PORT.log"
REGISTRY="127.0.0.1:$PORT"
REGISTRY_IMAGE="$REGISTRY/mcp-test-server"
LOCAL_REPO=mcp-lifecycle/test-server
VERSIONS=(v1 v2 v3)

TARGET=x86_64-unknown-linux-gnu
STATIC_TARGET_DIR="${MCP_STATIC_TARGET_DIR:-/var/tmp/mcp-lifecycle-static}"
BIN="$STATIC_TARGET_DIR/$TARGET/release/mcp-test-server"

START_TIMEOUT_S=30
STOP_TIMEOUT_S=10

log() { printf 'test-images: %s\n' "$*"; }
die() {
    printf 'test-images: ERROR: %s\n' "$*" >&2
    exit 1
}

usage() { sed -n '2,9s/^# \{0,1\}//p' "$SELF"; }

case "$PORT" in
'' | *[!0-9]*) die "MCP_REGISTRY_PORT must be a port number, got '$PORT'" ;;
esac

# ---------------------------------------------------------------- prerequisites

# apt_install PACKAGE...: install Debian packages (needs root; updates lists if needed).
apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to install $* (apt-get install -y $*)"
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    log "installing $* (apt-get)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$STATE_DIR/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$STATE_DIR/apt.log" 2>&1 ||
            { tail -n 20 "$STATE_DIR/apt.log" >&2; die "apt-get update failed (log: $STATE_DIR/apt.log)"; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$STATE_DIR/apt.log" 2>&1 ||
            { tail -n 20 "$STATE_DIR/apt.log" >&2; die "apt-get install $* failed (log: $STATE_DIR/apt.log)"; }
    fi
}

# need_cmd COMMAND [PACKAGE]: make sure COMMAND exists, installing PACKAGE if not.
need_cmd() {
    command -v "$1" >/dev/null || apt_install "${2:-$1}"
    command -v "$1" >/dev/null || die "$1 not found after installing ${2:-$1}"
}

need_docker() {
    command -v docker >/dev/null || die "docker CLI not found"
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
        die "the Docker engine does not answer (docker version failed); is dockerd running?"
}

# ---------------------------------------------------------------- registry

registry_up() { curl -fsS -o /dev/null --max-time 2 "http://$REGISTRY/v2/" 2>/dev/null; }

# Print the pid of the registry this script started, if it is still alive.
registry_pid() {
    local pid
    [ -s "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE")"
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'docker-registry serve' || return 1
    tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "REGISTRY_HTTP_ADDR=$REGISTRY" || return 1
    printf '%s\n' "$pid"
}

ensure_registry_package() {
    command -v docker-registry >/dev/null && return 0
    apt_install docker-registry
    command -v docker-registry >/dev/null || die "docker-registry not found after installing it"
    # The package's init script may start a system registry on :5000 (all interfaces)
    # where policy-rc.d allows it; this script runs its own.
    if [ -s /var/run/docker-registry.pid ] && [ -x /etc/init.d/docker-registry ]; then
        log "stopping the system docker-registry service the package started"
        /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
}

start_registry() {
    mkdir -p "$STATE_DIR/data"
    if registry_up; then
        log "registry already answers at http://$REGISTRY/v2/"
        return 0
    fi
    ensure_registry_package
    [ -r "$CONFIG" ] || die "registry config $CONFIG not found"
    local pid
    if pid="$(registry_pid)"; then
        log "registry (pid $pid) is running but does not answer yet; waiting"
    else
        log "starting docker-registry on $REGISTRY (log: $LOG_FILE)"
        printf '\n--- %s start on %s\n' "$(date -u +%FT%TZ)" "$REGISTRY" >>"$LOG_FILE"
        # Own session (survives this script), no inherited descriptors beyond
        # 0-2: neither the lock nor a caller's pipe stays open in the daemon.
        (
            for fd in /proc/self/fd/*; do
                fd="${fd##*/}"
                if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
            done
            REGISTRY_HTTP_ADDR="$REGISTRY" exec setsid docker-registry serve "$CONFIG"
        ) </dev/null >>"$LOG_FILE" 2>&1 &
        pid=$!
        printf '%s\n' "$pid" >"$PID_FILE"
    fi
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until registry_up; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "docker-registry exited before answering on $REGISTRY (log above: $LOG_FILE)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOG_FILE" >&2 || true
            die "docker-registry (pid $pid) did not answer on http://$REGISTRY/v2/ within ${START_TIMEOUT_S}s"
        fi
        sleep 0.2
    done
    log "registry answers at http://$REGISTRY/v2/ (pid $pid)"
}

stop_registry() {
    local pid
    if ! pid="$(registry_pid)"; then
        rm -f "$PID_FILE"
        if registry_up; then
            die "a registry answers at $REGISTRY but this script did not start it (no live pid in $PID_FILE); stop it yourself"
        fi
        log "registry is not running"
        return 0
    fi
    log "stopping docker-registry (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "pid $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE"
    registry_up && die "pid $pid exited but something still answers at $REGISTRY"
    log "registry stopped"
}

status() {
    local pid
    if pid="$(registry_pid)"; then log "registry pid $pid (started by this script)"; fi
    if registry_up; then log "registry answers at http://$REGISTRY/v2/"; else log "registry does not answer at $REGISTRY"; fi
    if command -v docker >/dev/null; then
        docker image ls "$LOCAL_REPO" || true
        docker image ls "$REGISTRY_IMAGE" || true
    fi
    if [ -r "$ENV_FILE" ]; then log "$ENV_FILE:" && cat "$ENV_FILE"; else log "no $ENV_FILE yet"; fi
}

# ---------------------------------------------------------------- binary and images

build_binary() {
    command -v cargo >/dev/null || die "cargo not found"
    log "building static mcp-test-server (target dir $STATIC_TARGET_DIR)"
    (
        cd "$ROOT"
        # CARGO_ENCODED_RUSTFLAGS would take precedence over RUSTFLAGS.
        env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$STATIC_TARGET_DIR" \
            RUSTFLAGS="-C target-feature=+crt-static" \
            cargo build --release -p mcp-lifecycle-tests --bin mcp-test-server --target "$TARGET"
    ) || die "static build of mcp-test-server failed"
    [ -x "$BIN" ] || die "cargo succeeded but $BIN does not exist"
    local kind
    kind="$(file -b "$BIN")"
    case "$kind" in
    *"statically linked"* | *"static-pie linked"*) log "static binary OK: $BIN" ;;
    *) die "$BIN is not statically linked (a FROM scratch image cannot run it): $kind" ;;
    esac
}

# write_context DIR VERSION: the build context of one image: binary, /VERSION, Dockerfile.
write_context() {
    local dir="$1" version="$2" extra=""
    [ "$version" = v3 ] && extra="ENV MCP_TEST_EXIT_IMMEDIATELY_CODE=3"
    mkdir -p "$dir"
    cp "$BIN" "$dir/mcp-test-server"
    chmod 0755 "$dir/mcp-test-server"
    printf 'mcp-test-server %s\n' "$version" >"$dir/VERSION"
    chmod 0644 "$dir/VERSION"
    cat >"$dir/Dockerfile" <<EOF
FROM scratch
COPY mcp-test-server /mcp-test-server
COPY VERSION /VERSION
ENV MCP_TEST_VERSION=$version MCP_TEST_BIND=0.0.0.0
$extra
LABEL org.opencontainers.image.title="mcp-test-server" org.opencontainers.image.version="$version"
USER 65534:65534
ENTRYPOINT ["/mcp-test-server"]
EOF
}

# smoke_test VERSION: run a freshly built image once.
smoke_test() {
    local version="$1" tag="$LOCAL_REPO:$1" out rc
    if [ "$version" = v3 ]; then
        rc=0
        docker run --rm --network none "$tag" >/dev/null 2>&1 || rc=$?
        [ "$rc" = 3 ] || die "$tag should exit with code 3 at once, exited with $rc"
    else
        out="$(docker run --rm --network none "$tag" --version 2>&1)" ||
            die "$tag does not run: $out"
        case "$out" in mcp-test-server*) ;; *) die "$tag --version printed: $out" ;; esac
    fi
}

build_images() {
    local ctx version tag before after
    ctx="$(mktemp -d "${TMPDIR:-/tmp}/mcp-test-images.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: ctx is local
    trap "rm -rf '$ctx'" EXIT
    for version in "${VERSIONS[@]}"; do
        tag="$LOCAL_REPO:$version"
        write_context "$ctx/$version" "$version"
        before="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
        # The classic builder: this Docker has no buildx, and FROM scratch needs nothing else.
        DOCKER_BUILDKIT=0 docker build --pull=false -t "$tag" "$ctx/$version" >"$ctx/build-$version.log" 2>&1 ||
            { cat "$ctx/build-$version.log" >&2; die "docker build of $tag failed"; }
        after="$(docker image inspect --format '{{.Id}}' "$tag")"
        if [ "$before" = "$after" ]; then
            log "image $tag unchanged ($after)"
        else
            smoke_test "$version"
            log "image $tag built ($after)"
        fi
    done
    rm -rf "$ctx"
    trap - EXIT
}

# remote_digest TAG: the registry's manifest digest for TAG, or nothing.
remote_digest() {
    curl -fsS -I --max-time 5 \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REGISTRY/v2/mcp-test-server/manifests/$1" 2>/dev/null |
        tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }' || true
}

# local_digest IMAGE: IMAGE's digest in $REGISTRY_IMAGE, as docker recorded it on push.
local_digest() {
    docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$1" |
        awk -F@ -v repo="$REGISTRY_IMAGE" '$1 == repo { print $2; exit }'
}

push_images() {
    local tag src remote mine out
    for tag in "${VERSIONS[@]}" latest; do
        src="$tag"
        [ "$tag" = latest ] && src=v1
        docker tag "$LOCAL_REPO:$src" "$REGISTRY_IMAGE:$tag"
        remote="$(remote_digest "$tag")"
        mine="$(local_digest "$REGISTRY_IMAGE:$tag")"
        if [ -n "$remote" ] && [ "$remote" = "$mine" ]; then
            log "registry has $REGISTRY_IMAGE:$tag = $remote (up to date)"
            continue
        fi
        out="$(docker push "$REGISTRY_IMAGE:$tag" 2>&1)" ||
            { printf '%s\n' "$out" >&2; die "docker push $REGISTRY_IMAGE:$tag failed"; }
        remote="$(remote_digest "$tag")"
        mine="$(local_digest "$REGISTRY_IMAGE:$tag")"
        if [ -z "$remote" ] || [ "$remote" != "$mine" ]; then
            die "pushed $REGISTRY_IMAGE:$tag but the registry answers digest '$remote', docker recorded '$mine'"
        fi
        log "pushed $REGISTRY_IMAGE:$tag = $remote"
    done
    log "pushed digests:"
    for tag in "${VERSIONS[@]}" latest; do
        printf '  %-6s %s\n' "$tag" "$(docker inspect --format '{{index .RepoDigests 0}}' "$REGISTRY_IMAGE:$tag")"
    done
}

write_env() {
    local tmp="$ENV_FILE.tmp.$$" version upper
    {
        echo "# Written by scripts/test-images.sh; KEY=value lines for mcp-lifecycle's Docker tests."
        for version in "${VERSIONS[@]}"; do
            upper="$(printf '%s' "$version" | tr '[:lower:]' '[:upper:]')"
            echo "MCP_TEST_IMAGE_$upper=$LOCAL_REPO:$version"
        done
        echo "MCP_TEST_REGISTRY=$REGISTRY"
        echo "MCP_TEST_REGISTRY_IMAGE=$REGISTRY_IMAGE"
        for version in "${VERSIONS[@]}"; do
            upper="$(printf '%s' "$version" | tr '[:lower:]' '[:upper:]')"
            echo "MCP_TEST_REGISTRY_DIGEST_$upper=$(local_digest "$REGISTRY_IMAGE:$version")"
        done
        echo "MCP_TEST_SERVER_STATIC_BIN=$BIN"
        echo "MCP_TEST_IMAGES_SCRIPT=$SELF"
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
    log "wrote $ENV_FILE"
}

# ---------------------------------------------------------------- main

cmd="${1:-all}"
case "$cmd" in
-h | --help | help)
    usage
    exit 0
    ;;
all | start-registry | stop-registry | status) ;;
*)
    usage >&2
    die "unknown command '$cmd'"
    ;;
esac

mkdir -p "$STATE_DIR"
need_cmd curl
need_cmd flock util-linux
need_cmd setsid util-linux
# One run at a time (tests may call start-/stop-registry concurrently).
exec 9>"$STATE_DIR/lock"
flock -w 600 9 || die "another test-images.sh run holds $STATE_DIR/lock"

case "$cmd" in
all)
    need_cmd file
    need_docker
    build_binary
    build_images
    start_registry
    push_images
    write_env
    log "done in ${SECONDS}s"
    ;;
start-registry) start_registry ;;
stop-registry) stop_registry ;;
status) status ;;
esac
