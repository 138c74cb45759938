#!/usr/bin/env bash
# A PostgreSQL server of the project's own, for mcp-lifecycle-postgres's tests and CI:
# Debian's `postgresql` package, a cluster under $MCP_PG_DIR (default
# /var/tmp/mcp-lifecycle-postgres) owned by the `postgres` user, listening on 127.0.0.1 only
# (port $MCP_PG_PORT, default 55432; the package's own cluster on 5432 is left alone),
# TCP logins by password only (scram-sha-256), TLS offered with a certificate of its own CA.
# Needs root, Debian.
#
# Usage: scripts/postgres.sh start|stop|status|env
#   start   installs `postgresql` with apt-get if initdb is missing; creates the cluster
#           (initdb, a CA and a server certificate for 127.0.0.1, the role and database
#           `mcp_lifecycle` with a random password) on first use; starts the server and waits
#           until it accepts logins. Idempotent: returns at once when it already runs.
#   stop    stops the server (fast shutdown); the cluster stays for the next start.
#   status  exit 0 when the server runs and accepts connections, 3 when it is stopped.
#   env     KEY=value lines for the tests (`set -a; . <(scripts/postgres.sh env); set +a`):
#             MCP_LIFECYCLE_POSTGRES_URL  postgres://mcp_lifecycle:PASSWORD@127.0.0.1:PORT/mcp_lifecycle
#             MCP_LIFECYCLE_POSTGRES_CA   the CA certificate the server's TLS certificate is signed by
#                                         (for sslmode=verify-full&sslrootcert=...)
#
# Layout: data/ the cluster; run/ its Unix socket (the `postgres` superuser logs in there, by
# peer authentication, and nowhere else); tls/ the CA and server keys; password the role's
# password; server.log; lock serializes runs of this script.
set -euo pipefail

W=${MCP_PG_DIR:-/var/tmp/mcp-lifecycle-postgres}
PORT=${MCP_PG_PORT:-55432}
DATA=$W/data
SOCK=$W/run
ROLE=mcp_lifecycle
DB=mcp_lifecycle

log() { echo "postgres: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
lock() { mkdir -p "$W"; exec 9>"$W/lock"; flock 9; }
as_pg() { runuser -u postgres -- "$@"; }

pg_bin() {  # the newest installed server's bin directory
  local v
  v=$(ls /usr/lib/postgresql/ 2>/dev/null | sort -V | tail -1)
  [ -n "$v" ] && [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && echo "/usr/lib/postgresql/$v/bin"
}

install() {
  pg_bin >/dev/null && return 0
  log "installing Debian's postgresql package"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  pg_bin >/dev/null || die "postgresql installed, but no initdb under /usr/lib/postgresql/*/bin"
}

running() { [ -f "$DATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }
accepting() { pg_isready -q -h 127.0.0.1 -p "$PORT" -t 1 >/dev/null 2>&1; }

make_tls() {  # own CA, and a server certificate for 127.0.0.1 and localhost
  local t=$W/tls
  mkdir -p "$t"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mcp-lifecycle test CA" \
    -keyout "$t/ca.key" -out "$t/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$t/server.key" -out "$t/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$t/ext.cnf"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 3650 -extfile "$t/ext.cnf" -out "$t/server.pem" >/dev/null 2>&1
  chmod 600 "$t/ca.key" "$t/server.key"
}

init_cluster() {
  log "creating the cluster in $DATA"
  rm -rf "$DATA" "$SOCK"
  mkdir -p "$W" "$SOCK"
  [ -s "$W/password" ] || { od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$W/password"; chmod 600 "$W/password"; }
  [ -f "$W/tls/server.pem" ] || make_tls
  chown -R postgres:postgres "$W"
  chmod 700 "$W"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  cat > "$DATA/pg_hba.conf" <<EOF
# The superuser on the Unix socket only; everyone else over TCP from loopback, by password.
local all postgres peer
host  all all 127.0.0.1/32 scram-sha-256
EOF
  cat >> "$DATA/postgresql.conf" <<EOF

# scripts/postgres.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
password_encryption = 'scram-sha-256'
max_connections = 300
ssl = on
ssl_cert_file = '$W/tls/server.pem'
ssl_key_file = '$W/tls/server.key'
EOF
  chown postgres:postgres "$DATA/pg_hba.conf" "$DATA/postgresql.conf"
}

# Starts the postmaster with no descriptor of ours but stdin/stdout/stderr: a caller's lock
# (this script's fd 9, a flock(1) around a test run) must not be held for the server's life.
start_server() {
  local fd close=()
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && close+=("$fd")
  done
  (
    for fd in "${close[@]}"; do eval "exec $fd>&-" 2>/dev/null || true; done
    as_pg "$BIN/pg_ctl" start -D "$DATA" -l "$W/server.log" -w -t 60 -s < /dev/null
  ) || { log "the server did not start; its log:"; tail -25 "$W/server.log" >&2; return 1; }
}

ensure_role_and_db() {
  local pw
  pw=$(cat "$W/password")
  as_pg psql -h "$SOCK" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q -X >/dev/null <<EOF
SELECT format('CREATE ROLE %I LOGIN', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE LOGIN PASSWORD '$pw';
SELECT format('CREATE DATABASE %I OWNER %I', '$DB', '$ROLE') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB') \gexec
EOF
}

start() {
  local t0; t0=$(now)
  install
  BIN=$(pg_bin)
  lock
  if running && accepting; then log "running on 127.0.0.1:$PORT"; return 0; fi
  if ! running && ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; then
    die "port $PORT is taken by another process (set MCP_PG_PORT to use another)"
  fi
  [ -f "$DATA/PG_VERSION" ] || init_cluster
  running || start_server
  ensure_role_and_db
  log "running on 127.0.0.1:$PORT ($(since "$t0"))"
}

stop() {
  BIN=$(pg_bin) || { log "not installed"; return 0; }
  [ -d "$DATA" ] || { log "not running"; return 0; }
  lock
  if running; then as_pg "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -s; log "stopped"; else log "not running"; fi
}

status() {
  BIN=$(pg_bin) || { echo "postgres: not installed"; return 3; }
  if running && accepting; then echo "postgres: running on 127.0.0.1:$PORT"; return 0; fi
  if running; then echo "postgres: running, not accepting connections"; return 1; fi
  echo "postgres: stopped"; return 3
}

print_env() {
  [ -s "$W/password" ] || die "no cluster yet: run '$0 start' first"
  echo "MCP_LIFECYCLE_POSTGRES_URL=postgres://$ROLE:$(cat "$W/password")@127.0.0.1:$PORT/$DB"
  echo "MCP_LIFECYCLE_POSTGRES_CA=$W/tls/ca.pem"
}

case "${1:-}" in
  start) start;;
  stop) stop;;
  status) status;;
  env) print_env;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2;;
esac
