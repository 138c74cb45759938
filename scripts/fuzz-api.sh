#!/usr/bin/env bash
# Fuzzes mcpd's REST API from its own OpenAPI document with Schemathesis (a
# property-based API tester from PyPI): no 5xx, no crash, every response as the
# document says, and every 4xx a JSON error in the API's shape.
#
# Usage: scripts/fuzz-api.sh
#
# What it does:
#   1. makes sure a venv with Schemathesis $SCHEMATHESIS_VERSION exists under
#      $MCP_FUZZ_DIR (cached between runs; Debian's python3-venv is installed
#      with apt-get when missing, which needs root);
#   2. builds mcpd (`cargo build -p mcp-lifecycle-examples --bin mcpd`; or takes
#      $MCPD_BIN, such as the one `cargo test --workspace` left) and starts
#      it on a free loopback port: local backend, in-memory store, one admin token
#      made for this run, mcpd itself as the only allowed program (so a generated
#      spec that names it can really run: `mcpd serve-mcp-test-server`);
#   3. runs `st run` against /api/v1/openapi.json with the checks
#      not_a_server_error, response_schema_conformance, content_type_conformance,
#      ignored_auth, and json_api_error (scripts/fuzz_api_checks.py), at most
#      $FUZZ_MAX_EXAMPLES examples per operation, with a fixed seed. The event
#      stream (/api/v1/events) never ends, so it is left out of the fuzzing and
#      checked here with curl instead (401 and 4xx answers are JSON errors);
#   4. fails if mcpd died or panicked, stops it with SIGTERM, and exits non-zero
#      on any failure. About a minute on 2 cores once mcpd is built (2,700
#      test cases at the default 100 examples); creating the venv adds about
#      a minute the first time.
#
# Environment:
#   MCPD_BIN             the mcpd binary to fuzz (default: build it)
#   MCP_FUZZ_DIR         venv, logs and lock (default /var/tmp/mcp-lifecycle-fuzz)
#   FUZZ_MAX_EXAMPLES    examples per operation (default 100)
#   FUZZ_SEED            Hypothesis seed (default 11; any integer)
#
# Files under $MCP_FUZZ_DIR: venv/, mcpd.log, mcpd.yaml and schemathesis.toml
# of the last run, report/ (Schemathesis' JUnit report and pytest
# reproductions), .schemathesis/ (its cache), apt.log, lock.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${MCP_FUZZ_DIR:-/var/tmp/mcp-lifecycle-fuzz}"
VENV="$DIR/venv"
SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
SEED="${FUZZ_SEED:-11}"
START_TIMEOUT_S=30
STOP_TIMEOUT_S=20

log() { printf 'fuzz-api: %s\n' "$*"; }
die() {
    printf 'fuzz-api: ERROR: %s\n' "$*" >&2
    exit 1
}

case "$MAX_EXAMPLES" in '' | *[!0-9]*) die "FUZZ_MAX_EXAMPLES must be a number, got '$MAX_EXAMPLES'" ;; esac
case "$SEED" in '' | *[!0-9]*) die "FUZZ_SEED must be a number, got '$SEED'" ;; esac

mkdir -p "$DIR"
# One run at a time: runs share the venv.
exec 9>"$DIR/lock"
flock 9

# ---------------------------------------------------------------- the venv

apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to install $* (apt-get install -y $*)"
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    log "installing $* (apt-get)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$DIR/apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$DIR/apt.log" 2>&1 ||
            { tail -n 20 "$DIR/apt.log" >&2; die "apt-get update failed (log: $DIR/apt.log)"; }
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$DIR/apt.log" 2>&1 ||
            { tail -n 20 "$DIR/apt.log" >&2; die "apt-get install $* failed (log: $DIR/apt.log)"; }
    fi
}

ensure_venv() {
    if [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/st" --version 2>/dev/null)" = "st, version $SCHEMATHESIS_VERSION" ]; then
        return 0
    fi
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    log "creating the venv in $VENV with schemathesis==$SCHEMATHESIS_VERSION"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    "$VENV/bin/st" --version >/dev/null || die "schemathesis did not install into $VENV"
}

# ---------------------------------------------------------------- mcpd

build_mcpd() {
    log "building mcpd" >&2
    (cd "$ROOT" && cargo build -q -p mcp-lifecycle-examples --bin mcpd --message-format=json-render-diagnostics) |
        python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "mcpd":
        print(msg["executable"])
'
}

MCPD_PID=
stop_mcpd() {
    [ -n "$MCPD_PID" ] || return 0
    kill -TERM "$MCPD_PID" 2>/dev/null || { MCPD_PID=; return 0; }
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$MCPD_PID" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "mcpd (pid $MCPD_PID) did not stop within ${STOP_TIMEOUT_S}s of SIGTERM; killing it"
            kill -KILL "$MCPD_PID" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    wait "$MCPD_PID" 2>/dev/null || true
    MCPD_PID=
}
trap stop_mcpd EXIT

start_mcpd() {
    local bin="$1"
    TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
    cat >"$DIR/mcpd.yaml" <<EOF
listen: 127.0.0.1:0
backend: local
store: { in_memory: true }
tokens:
  - { name: fuzz, role: admin, token_env: MCPD_FUZZ_TOKEN }
local: { allowed_programs: ["$bin"] }
on_exit: stop
EOF
    : >"$DIR/mcpd.log"
    MCPD_FUZZ_TOKEN="$TOKEN" NO_COLOR=1 RUST_LOG=info,rmcp=warn \
        "$bin" --config "$DIR/mcpd.yaml" </dev/null >/dev/null 2>"$DIR/mcpd.log" &
    MCPD_PID=$!
    local deadline=$((SECONDS + START_TIMEOUT_S))
    BASE=
    while [ -z "$BASE" ]; do
        kill -0 "$MCPD_PID" 2>/dev/null || { cat "$DIR/mcpd.log" >&2; die "mcpd exited at start"; }
        [ "$SECONDS" -lt "$deadline" ] || { cat "$DIR/mcpd.log" >&2; die "mcpd did not listen within ${START_TIMEOUT_S}s"; }
        BASE="$(grep -o 'listening on http://[0-9.:]*' "$DIR/mcpd.log" | head -n 1 | sed 's/^listening on //')" || true
        [ -n "$BASE" ] || sleep 0.2
    done
    log "mcpd (pid $MCPD_PID) listens on $BASE"
}

# A server that runs (mcpd as the test MCP server), so that operations on a
# server reach more than "not found", and the configuration that points the
# generated names and programs at it part of the time.
apply_target() {
    local bin="$1"
    curl -sS --max-time 30 -o "$DIR/body" -w '%{http_code}' -X POST \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data "{\"name\": \"fuzz\", \"source\": {\"command\": {\"program\": \"$bin\", \"args\": [\"serve-mcp-test-server\"]}}}" \
        "$BASE/api/v1/servers" | grep -qx 201 || die "applying the target server failed: $(head -c 300 "$DIR/body")"
    curl -sS --max-time 30 -o "$DIR/body" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
        "$BASE/api/v1/servers/fuzz/start?wait=true&timeout=20s" | grep -qx 200 ||
        die "the target server did not get ready: $(head -c 300 "$DIR/body")"
    cat >"$DIR/schemathesis.toml" <<EOF
# Written by scripts/fuzz-api.sh for one run.
[dictionaries.servers]
values = ["fuzz", "fuzz-b"]

[dictionaries.instances]
values = ["fuzz-0", "fuzz-1"]

[dictionaries.programs]
values = ["$bin"]

[parameters]
"path.name" = { dictionary = "servers", probability = 0.6 }
"path.instance" = { dictionary = "instances", probability = 0.6 }
"body.name" = { dictionary = "servers", probability = 0.6 }
"body.source.command.program" = { dictionary = "programs", probability = 0.5 }

# A start that waits for a server that cannot get ready answers 504 timeout,
# as documented; every other 5xx is a failure.
[[operations]]
include-name = "POST /api/v1/servers/{name}/start"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "504"]
EOF
    log "target server 'fuzz' is ready"
}

# ---------------------------------------------------------------- the event stream

# check_json_error EXPECTED_STATUS ARGS...: curl ARGS (bounded), expect that status and a JSON error.
check_json_error() {
    local want="$1"
    shift
    local out status
    out="$(curl -sS --max-time 5 -o "$DIR/body" -w '%{http_code} %{content_type}' "$@")" || die "curl $* failed"
    status="${out%% *}"
    [ "$status" = "$want" ] || die "$* answered $status, expected $want: $(head -c 300 "$DIR/body")"
    case "${out#* }" in application/json*) ;; *) die "$* answered $status as '${out#* }', not JSON" ;; esac
    python3 -c 'import json, sys; b = json.load(open(sys.argv[1])); assert isinstance(b.get("code"), str) and isinstance(b.get("message"), str), b' \
        "$DIR/body" || die "$* answered $status without an error body: $(head -c 300 "$DIR/body")"
}

check_events() {
    local url="$BASE/api/v1/events"
    check_json_error 401 "$url"
    check_json_error 401 -H 'Authorization: Bearer wrong' "$url"
    check_json_error 422 -H "Authorization: Bearer $TOKEN" "$url?server=a&server=b"
    check_json_error 405 -X POST -H "Authorization: Bearer $TOKEN" "$url"
    log "event stream: 401, 405 and 422 answers are JSON errors"
}

# ---------------------------------------------------------------- main

ensure_venv
if [ -n "${MCPD_BIN:-}" ]; then
    [ -x "$MCPD_BIN" ] || die "MCPD_BIN=$MCPD_BIN is not an executable"
    MCPD_BIN="$(cd "$(dirname "$MCPD_BIN")" && pwd)/$(basename "$MCPD_BIN")"
else
    MCPD_BIN="$(build_mcpd)"
    [ -x "$MCPD_BIN" ] || die "cargo did not report the mcpd binary"
fi
start_mcpd "$MCPD_BIN"
check_events
apply_target "$MCPD_BIN"

log "schemathesis $SCHEMATHESIS_VERSION: at most $MAX_EXAMPLES examples per operation, seed $SEED"
started=$SECONDS
status=0
# From $DIR, where Schemathesis keeps its cache.
(cd "$DIR" && SCHEMATHESIS_HOOKS="$ROOT/scripts/fuzz_api_checks.py" "$VENV/bin/st" --config-file "$DIR/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
    --url "$BASE" \
    -H "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,response_schema_conformance,content_type_conformance,ignored_auth,json_api_error \
    --exclude-path /api/v1/events \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 2 \
    --request-timeout 30 \
    --suppress-health-check all \
    --report junit,pytest --report-dir "$DIR/report" \
    --no-color) || status=$?
log "schemathesis took $((SECONDS - started))s (exit $status)"

if ! kill -0 "$MCPD_PID" 2>/dev/null; then
    tail -n 40 "$DIR/mcpd.log" >&2
    die "mcpd died during the run (log: $DIR/mcpd.log)"
fi
if grep -q 'panicked' "$DIR/mcpd.log"; then
    grep -n -A3 'panicked' "$DIR/mcpd.log" | head -n 40 >&2
    die "mcpd panicked during the run (log: $DIR/mcpd.log)"
fi
stop_mcpd
[ "$status" = 0 ] || die "schemathesis found failures (exit $status; reproductions in $DIR/report)"
log "no failures"
