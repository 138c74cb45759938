#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 cluster on this machine, for mcp-lifecycle-k8s's
# tests and CI: etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kubelet
# (its built-in dockershim on the local Docker engine; pods are Docker containers on
# Docker's default bridge) + kube-proxy (iptables mode). Everything is built from Debian
# bookworm's `kubernetes` source package; no image is pulled from anywhere.
# Needs root, Debian 12, Docker (cgroup v1, cgroupfs driver).
#
# Usage: scripts/k8s-cluster.sh build|start|stop|status|env|restart-apiserver
#   build   apt prerequisites (a deb-src line, apt-get update, packages; skipped when all is
#           there), Debian's kubernetes source, the two patches below, `make` of kube-apiserver,
#           kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl (under nice),
#           and the pause image k8s.gcr.io/pause:3.2 (static pause.c, FROM scratch).
#           Cold: 8-20 min on 2 busy cores. Again: under a second (make is skipped while the
#           cached binaries carry the stamp of the current source version + patch set).
#   start   fresh etcd data, CA/certificates/tokens/kubeconfigs, all daemons; waits for the node
#           to be Ready, the `default` service account (with its token) and kube-proxy.
#           Prints the elapsed time (10-20 s). Idempotent: exits 0 at once when the cluster
#           already runs and is healthy; leftovers of a crashed run are cleaned up first.
#   stop    stops our daemons (by recorded PID), removes only the containers our kubelet
#           created (from its dockershim sandbox checkpoints), unmounts the kubelet's mounts,
#           `kube-proxy --cleanup` (iptables), restores the sysctls saved at start, removes the
#           pod log dirs and the host dirs the kubelet created. Idempotent.
#   status  which daemons run, node readiness. Exit 0 running+Ready, 1 degraded, 3 stopped.
#   restart-apiserver [--compact]
#           stops the API server and starts it again (same etcd, keys and tokens), for the
#           test of watches that must survive it; --compact also compacts etcd to its
#           current revision meanwhile, so every resource version a watch holds expires.
#   env     KEY=value lines for the tests (`set -a; . <(scripts/k8s-cluster.sh env); set +a`):
#             KUBECONFIG                  admin (user `admin`, group system:masters)
#             MCP_K8S_KUBECONFIG_LIMITED  user `mcp-limited`, no groups but system:authenticated
#                                         (RBAC is on: bind it to a Role to test least privilege)
#             MCP_K8S_KUBECTL             the v1.20.2 kubectl built here
#             MCP_K8S_CLUSTER_SCRIPT      this script (tests call restart-apiserver)
#
# Cluster facts: API https://127.0.0.1:6443 (own CA, in the kubeconfigs), token auth,
# --authorization-mode=Node,RBAC; node `mcp-node` with the machine's primary IPv4 as its
# InternalIP (the kubelet refuses loopback); services 10.0.0.0/24 (not Docker's 172.17/16);
# pods get Docker bridge IPs. Image GC and eviction thresholds are set so the kubelet never
# deletes images (the Docker engine and its images are shared with the other tests). The
# kubelet takes up to 250 pods (--max-pods; its default is 110), so the scale benchmark
# (mcp-lifecycle-k8s/benches/cluster_scale.rs) can run 200 servers on this one node.
# Network rule: never send traffic to a ClusterIP unless kube-proxy runs (it does after a
# successful `start`); use 127.0.0.1, pod IPs or NodePorts on 127.0.0.1.
# No registry is started here: scripts/test-images.sh serves one on 127.0.0.1:5000, which
# pods can pull from (Docker treats loopback registries as insecure).
#
# Cached under $MCP_K8S_DIR (default /var/tmp/mcp-lifecycle-k8s):
#   src/        the Debian source package (.dsc + tarballs) and the patched, unpacked tree
#               src/kubernetes-<version>/ (its .mcp-patches holds the patch-set stamp)
#   go-cache/   the Go build cache (the tree's _output/local/go/cache links here, so a
#               re-unpacked tree still builds incrementally)
#   bin/        the six binaries + .stamp;  pause/  pause binary + Docker build context
#   run/        keys, tokens, kubeconfig, kubeconfig-limited, daemon logs and pid files,
#               etcd data, kubelet/dockershim state, saved sysctls;  lock  serializes runs
#
# The two source patches (both required on this kind of machine):
#  1. reflect2: the tarball vendors github.com/modern-go/reflect2 v1.0.1, which reaches into
#     the runtime's map iterator with the layout of Go < 1.18. Debian's Go is 1.19, and the
#     binaries then corrupt memory when json-iterator walks a map: kube-apiserver crashes
#     (SIGSEGV in reflect2 UnsafeMapType.UnsafeIterate) on e.g. a pod-status PATCH. The
#     vendored copy is replaced with Debian's reflect2 1.0.2
#     (golang-github-modern-go-reflect2-dev), which knows the new layout. Every binary is affected.
#  2. dockershim oom_score_adj: Docker here runs without CAP_SYS_RESOURCE, so it cannot give a
#     container a negative oom_score_adj, but dockershim always asks -998 for a pod's pause
#     sandbox (and -997 for Guaranteed pods) and runc fails ("can't get final child's PID from
#     pipe: EOF"): no pod could start. The kubelet has no flag for it, so a small patch raises
#     such values to $KUBELET_DOCKERSHIM_MIN_OOM_SCORE_ADJ when that is set; `start` sets it to 0
#     only when `docker run --oom-score-adj=-998` fails. Unset, the kubelet behaves as upstream.
#
# Environment: MCP_K8S_DIR (cache/state root), MCP_K8S_NODE_IP (override the node IP).
set -euo pipefail

W=${MCP_K8S_DIR:-/var/tmp/mcp-lifecycle-k8s}
R=$W/run
BIN=$W/bin
KVER=1.20.5+really1.20.2-1.1+deb12u1           # Debian bookworm's kubernetes source package
DSC=$W/src/kubernetes_$KVER.dsc
SRC=$W/src/kubernetes-1.20.5+really1.20.2
GOCACHE_DIR=$W/go-cache
COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
# socat: dockershim forwards a port by running `nsenter -t PID -n socat - TCP4:localhost:PORT`
# (mcp-lifecycle-k8s's PodAccess::PortForward and `kubectl port-forward` need it).
APT_PKGS="golang-go golang-github-modern-go-reflect2-dev etcd-server dpkg-dev make patch rsync
  jq openssl curl gcc libc6-dev iptables socat"
PAUSE_IMAGE=k8s.gcr.io/pause:3.2               # dockershim's default sandbox image name
API=https://127.0.0.1:6443
NODE=mcp-node
SERVICE_CIDR=10.0.0.0/24
DAEMONS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
# kernel settings the kubelet (vm.*, kernel.*) and kube-proxy (route_localnet) may change
SYSCTLS="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/conf/all/route_localnet
  net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables"
# host dirs the kubelet creates no matter what --root-dir says
HOST_DIRS="/var/log/pods /var/log/containers /var/lib/kubelet"

log() { echo "k8s-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
lock() { mkdir -p "$W"; exec 9>"$W/lock"; flock 9; }
kc() { "$BIN/kubectl" --kubeconfig="$R/kubeconfig" "$@"; }

# ---------------------------------------------------------------------------------- build

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

prep() {
  local missing="" p
  for p in $APT_PKGS; do pkg_installed "$p" || missing="$missing $p"; done
  [ -z "$missing" ] && [ -f "$DSC" ] && return 0
  if ! grep -qsr '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    log "adding a deb-src entry (/etc/apt/sources.list.d/debian-src.sources)"
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      > /etc/apt/sources.list.d/debian-src.sources
  fi
  apt-get update -q
  # shellcheck disable=SC2086
  [ -z "$missing" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
}

# Both patches (see the header). Their text is part of the build stamp: changing this
# function re-unpacks the source and rebuilds.
apply_patches() {
  local tree=$1 v=vendor/github.com/modern-go/reflect2 d=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f $d/go_above_118.go ] || die "$d lacks go_above_118.go (golang-github-modern-go-reflect2-dev >= 1.0.2 needed)"
  rm -f "$tree/$v"/*.go "$tree/$v"/*.s
  cp $d/*.go $d/*.s "$tree/$v/"
  patch -d "$tree" -p1 --forward --no-backup-if-mismatch --quiet <<'EOF'
--- a/pkg/kubelet/dockershim/docker_sandbox.go
+++ b/pkg/kubelet/dockershim/docker_sandbox.go
@@ -651,7 +651,7 @@
 	createConfig.Config.ExposedPorts = exposedPorts
 	hc.PortBindings = portBindings
 
-	hc.OomScoreAdj = defaultSandboxOOMAdj
+	hc.OomScoreAdj = minOOMScoreAdj(defaultSandboxOOMAdj)
 
 	// Apply resource options.
 	if err := ds.applySandboxResources(hc, c.GetLinux()); err != nil {
--- a/pkg/kubelet/dockershim/helpers_linux.go
+++ b/pkg/kubelet/dockershim/helpers_linux.go
@@ -119,7 +119,7 @@
 				CPUQuota:   rOpts.CpuQuota,
 				CPUPeriod:  rOpts.CpuPeriod,
 			}
-			createConfig.HostConfig.OomScoreAdj = int(rOpts.OomScoreAdj)
+			createConfig.HostConfig.OomScoreAdj = minOOMScoreAdj(int(rOpts.OomScoreAdj))
 		}
 		// Note: ShmSize is handled in kube_docker_client.go
 
--- a/pkg/kubelet/dockershim/oom_score_floor.go
+++ b/pkg/kubelet/dockershim/oom_score_floor.go
@@ -0,0 +1,22 @@
+// +build !dockerless
+
+package dockershim
+
+import (
+	"os"
+	"strconv"
+)
+
+// minOOMScoreAdj is a local patch (mcp-lifecycle scripts/k8s-cluster.sh), not upstream.
+// A Docker daemon without CAP_SYS_RESOURCE cannot start a container with a negative
+// oom_score_adj, yet dockershim asks -998 for every pod sandbox and -997 for Guaranteed
+// pods. When KUBELET_DOCKERSHIM_MIN_OOM_SCORE_ADJ is set, lower values are raised to it;
+// when unset, nothing changes.
+func minOOMScoreAdj(v int) int {
+	if s := os.Getenv("KUBELET_DOCKERSHIM_MIN_OOM_SCORE_ADJ"); s != "" {
+		if floor, err := strconv.Atoi(s); err == nil && v < floor {
+			return floor
+		}
+	}
+	return v
+}
EOF
}

# The tarball has no git metadata: give the version explicitly (else v0.0.0-master+$Format:%h$).
version_env() {
  cat <<'EOF'
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v1.20.2'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF
}

build_stamp() {
  { echo "$KVER $COMPONENTS"; declare -f apply_patches version_env
    dpkg-query -W -f='${Version}\n' golang-github-modern-go-reflect2-dev golang-go; } | sha256sum | cut -c1-16
}

unpack_source() {  # fresh, patched tree at $SRC, unless it already carries $1
  local stamp=$1
  [ "$(cat "$SRC/.mcp-patches" 2>/dev/null)" = "$stamp" ] && return 0
  [ -f "$DSC" ] || (cd "$W/src" && apt-get source --download-only -q "kubernetes=$KVER")
  log "unpacking and patching the source"
  rm -rf "$SRC" "$SRC.new"
  # apt-get source checked the files against the signed archive index; dpkg-source itself
  # has no keyring for the .dsc signature here, so drop its gpgv noise
  dpkg-source -x "$DSC" "$SRC.new" 2>&1 >/dev/null |
    { grep -v -e '^gpgv:' -e 'cannot verify inline signature' >&2 || true; }
  apply_patches "$SRC.new"
  version_env > "$SRC.new/.mcp-version.env"
  mkdir -p "$SRC.new/_output/local/go" "$GOCACHE_DIR"
  ln -s "$GOCACHE_DIR" "$SRC.new/_output/local/go/cache"   # hack/lib/golang.sh forces GOCACHE there
  echo "$stamp" > "$SRC.new/.mcp-patches"
  mv "$SRC.new" "$SRC"
}

build_pause_image() {  # static pause from the source tree, FROM scratch, nothing pulled
  local ctx=$W/pause
  if [ ! -x "$ctx/pause" ]; then
    mkdir -p "$ctx"
    [ -f "$SRC/build/pause/linux/pause.c" ] || die "no source tree: run build"
    nice -n 19 gcc -Os -Wall -Werror -static -DVERSION=v3.4-mcp-lifecycle -o "$ctx/pause.new" "$SRC/build/pause/linux/pause.c"
    mv "$ctx/pause.new" "$ctx/pause"
    printf 'FROM scratch\nLABEL io.mcp-lifecycle.k8s-pause=1\nADD pause /pause\nENTRYPOINT ["/pause"]\n' > "$ctx/Dockerfile"
  fi
  [ "$(docker image inspect -f '{{index .Config.Labels "io.mcp-lifecycle.k8s-pause"}}' $PAUSE_IMAGE 2>/dev/null)" = 1 ] && return 0
  log "building $PAUSE_IMAGE"
  DOCKER_BUILDKIT=0 docker build -q -t $PAUSE_IMAGE "$ctx" >/dev/null
}

build() {
  local t0 stamp c
  t0=$(now)
  lock
  mkdir -p "$W/src" "$BIN" "$W/home"
  prep
  stamp=$(build_stamp)
  if [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$stamp" ] && (cd "$BIN" && for c in $COMPONENTS; do [ -x "$c" ] || exit 1; done); then
    log "binaries up to date (stamp $stamp)"
  else
    unpack_source "$stamp"
    log "building $COMPONENTS (nice 19; 10-20 min cold)"
    local what=""; for c in $COMPONENTS; do what="$what cmd/$c"; done
    # GOPATH mode (hack/lib/init.sh sets GO111MODULE=off), vendored deps only; no cgo needed.
    ( cd "$SRC"; unset GOPATH GOFLAGS GOROOT
      export CGO_ENABLED=0 GOPROXY=off HOME=$W/home KUBE_GIT_VERSION_FILE=$SRC/.mcp-version.env
      nice -n 19 make WHAT="${what# }" )
    rm -f "$BIN/.stamp"
    for c in $COMPONENTS; do cp "$SRC/_output/bin/$c" "$BIN/$c.new"; mv "$BIN/$c.new" "$BIN/$c"; done
    echo "$stamp" > "$BIN/.stamp"
  fi
  "$BIN/kubelet" --version
  build_pause_image
  log "build done in $(since "$t0")"
}

# ---------------------------------------------------------------------------------- daemons

pid_of() { cat "$R/$1.pid" 2>/dev/null; }
exe_of() { case $1 in etcd) command -v etcd;; *) echo "$BIN/$1";; esac; }
alive() {  # running, and really our binary (guards against a recycled PID)
  local pid; pid=$(pid_of "$1") || return 1
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(exe_of "$1")")" ]
}
daemon() {  # daemon NAME ARGS... : own session, log + pid file under $R, no inherited fds
  local name=$1 fd close=()
  shift
  rm -f "$R/$name.pid"
  # Close every descriptor above stderr: a caller's lock (flock(1) around a test run,
  # this script's own fd 9) must not be held for the daemon's whole life.
  for fd in /proc/$$/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && close+=("$fd")
  done
  (
    for fd in "${close[@]}"; do eval "exec $fd>&-" 2>/dev/null || true; done
    exec setsid sh -c 'echo $$ > "$0"; exec "$@"' "$R/$name.pid" "$@" > "$R/$name.log" 2>&1 < /dev/null
  ) &
  while [ ! -s "$R/$name.pid" ]; do sleep 0.05; done
}
node_ready() {
  [ "$(kc get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
sa_ready() {  # pods need the default service account and its token secret
  [ -n "$(kc -n default get sa default -o jsonpath='{.secrets[0].name}' 2>/dev/null)" ]
}
proxy_healthy() {  # healthz answers, and the first sync wrote the rules of default/kubernetes
  curl -fs -m 2 http://127.0.0.1:10256/healthz >/dev/null 2>&1 &&
    iptables-save 2>/dev/null | grep -q 'default/kubernetes'
}
healthy() {
  local d; for d in $DAEMONS; do alive $d || return 1; done
  node_ready && proxy_healthy
}
leftovers() {
  local d; for d in $DAEMONS; do [ -f "$R/$d.pid" ] && return 0; done
  compgen -G "$R/dockershim/sandbox/*" >/dev/null || [ -f "$R/sysctl.orig" ] || [ -f "$R/proxy-started" ]
}

# wait_for WHAT TIMEOUT_S DAEMONS-THAT-MUST-LIVE -- CMD...
wait_for() {
  local what=$1 timeout=$2 deadline d; shift 2
  local watch=(); while [ "$1" != -- ]; do watch+=("$1"); shift; done; shift
  deadline=$(( $(date +%s) + timeout ))
  until "$@"; do
    for d in "${watch[@]}"; do
      alive "$d" || { log "$d died while waiting for $what; its log:"; tail -25 "$R/$d.log" >&2; return 1; }
    done
    [ "$(date +%s)" -lt $deadline ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    sleep 0.25
  done
}

node_ip() {
  [ -n "${MCP_K8S_NODE_IP:-}" ] && { echo "$MCP_K8S_NODE_IP"; return; }
  # a route lookup only, nothing is sent
  ip -4 route get 1.1.1.1 | awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }'
}

make_pki() {  # own CA; apiserver serving cert; apiserver->kubelet client cert; SA signing key
  local p=$R/pki
  rm -rf "$p"; mkdir -p "$p"
  cat > "$p/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:10.0.0.1
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
EOF
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -config "$p/openssl.cnf" -extensions ca -days 3650 \
    -subj /CN=mcp-lifecycle-k8s-ca -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
  sign() {  # sign NAME SUBJECT EXTENSIONS
    openssl req -new "${ec[@]}" -config "$p/openssl.cnf" -subj "$2" -keyout "$p/$1.key" 2>/dev/null |
      openssl x509 -req -CA "$p/ca.crt" -CAkey "$p/ca.key" -set_serial "0x$(openssl rand -hex 12)" \
        -days 3650 -extfile "$p/openssl.cnf" -extensions "$3" -out "$p/$1.crt" 2>/dev/null
  }
  sign apiserver /CN=kube-apiserver server
  sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" client
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

write_kubeconfig() {  # FILE USER TOKEN
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mcp-lifecycle-k8s
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 "$R/pki/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@mcp-lifecycle-k8s
  context: {cluster: mcp-lifecycle-k8s, user: $2, namespace: default}
current-context: $2@mcp-lifecycle-k8s
EOF
}

start_apiserver() {  # ADMIN_TOKEN: runs the API server on the current run dir, waits for readyz
  # --endpoint-reconciler-type=none: the advertise address is loopback, which must not become
  # the endpoint of the `kubernetes` service. --kubelet-preferred-address-types=InternalIP:
  # logs/exec/attach go to NODE_IP:10250 (the hostname may resolve to loopback).
  daemon kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 --insecure-port=0 \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$R/pki/apiserver.crt" --tls-private-key-file="$R/pki/apiserver.key" \
    --token-auth-file="$R/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$R/pki/sa.pub" --service-account-signing-key-file="$R/pki/sa.key" \
    --service-cluster-ip-range=$SERVICE_CIDR \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --kubelet-client-certificate="$R/pki/kubelet-client.crt" --kubelet-client-key="$R/pki/kubelet-client.key" \
    --profiling=false
  wait_for "the API server" 90 etcd kube-apiserver -- \
    curl -fs -m 2 --cacert "$R/pki/ca.crt" -H "Authorization: Bearer $1" $API/readyz -o /dev/null
}

restart_apiserver() {  # for tests of watches that must survive an API server restart
  local t0 admin
  t0=$(now)
  lock
  alive kube-apiserver || die "the API server does not run: '$0 start' first"
  admin=$(awk -F, '$2 == "admin" { print $1 }' "$R/tokens.csv")
  stop_daemon kube-apiserver
  if [ "${1:-}" = "--compact" ]; then
    # Every resource version a watch holds is now older than etcd keeps: a
    # watch that resumes from one gets 410 Gone and must list again.
    local rev
    rev=$(curl -fs -m 5 -X POST http://127.0.0.1:2379/v3/kv/range -d '{"key":"AA=="}' |
      sed -n 's/.*"revision":"\([0-9]*\)".*/\1/p')
    [ -n "$rev" ] || die "cannot read etcd's revision"
    curl -fs -m 30 -X POST http://127.0.0.1:2379/v3/kv/compaction \
      -d "{\"revision\":\"$rev\",\"physical\":true}" >/dev/null || die "etcd compaction failed"
    log "etcd compacted at revision $rev"
  fi
  log "API server stopped; starting it again"
  start_apiserver "$admin" || die "the API server did not come back"
  log "API server restarted in $(since "$t0")"
}

start() {
  local t0 ip d admin limited oom_env=()
  t0=$(now)
  for d in $COMPONENTS; do [ -x "$BIN/$d" ] || die "$BIN/$d missing: run '$0 build' first"; done
  lock
  if healthy; then log "already running and healthy (node $NODE Ready)"; print_env; return 0; fi
  if leftovers; then log "cleaning up a previous run first"; cleanup; fi
  ip=$(node_ip); [ -n "$ip" ] || die "no primary IPv4 address found (set MCP_K8S_NODE_IP)"
  for d in 2379 2380 6443 10248 10250 10256 10249; do
    if ss -Hltn "sport = :$d" | grep -q .; then die "port $d is already in use"; fi
  done
  build_pause_image

  umask 077
  mkdir -p "$R"
  rm -rf "$R/etcd-data" "$R/kubelet" "$R/dockershim"
  : > "$R/created-dirs"
  for d in $HOST_DIRS; do [ -e "$d" ] || echo "$d" >> "$R/created-dirs"; done
  for d in $SYSCTLS; do if [ -f "/proc/sys/$d" ]; then echo "$d $(cat "/proc/sys/$d")"; fi; done > "$R/sysctl.orig"
  # netfilter tables that exist now (kube-proxy creates e.g. the mangle table, which its
  # --cleanup leaves behind, empty)
  if command -v nft >/dev/null; then nft list tables > "$R/nft-tables.orig" 2>/dev/null || true; fi

  # Does Docker allow a negative oom_score_adj? (see patch 2) -- checked while etcd starts
  ( if docker run --rm --network none --oom-score-adj=-998 $PAUSE_IMAGE -v >/dev/null 2>&1
    then echo ok; else echo clamp; fi > "$R/oom-check" ) &
  local oom_pid=$!

  make_pki
  admin=$(openssl rand -hex 24); limited=$(openssl rand -hex 24)
  printf '%s,admin,uid-admin,system:masters\n%s,mcp-limited,uid-mcp-limited\n' "$admin" "$limited" > "$R/tokens.csv"
  write_kubeconfig "$R/kubeconfig" admin "$admin"
  write_kubeconfig "$R/kubeconfig-limited" mcp-limited "$limited"
  umask 022   # the daemons (kubelet: pod dirs, log dirs) get the usual umask

  daemon etcd etcd --name mcp --data-dir "$R/etcd-data" --logger=zap --log-level=warn \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster mcp=http://127.0.0.1:2380
  wait_for etcd 30 etcd -- curl -fs -m 2 http://127.0.0.1:2379/health -o /dev/null || { cleanup; exit 1; }

  start_apiserver "$admin" || { cleanup; exit 1; }
  log "API server ready after $(since "$t0")"

  daemon kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$R/kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 --leader-elect=false \
    --service-account-private-key-file="$R/pki/sa.key" --root-ca-file="$R/pki/ca.crt" \
    --use-service-account-credentials=false --profiling=false
  daemon kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$R/kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 --leader-elect=false --profiling=false

  wait "$oom_pid" || true
  if [ "$(cat "$R/oom-check")" = clamp ]; then
    log "Docker cannot set a negative oom_score_adj: KUBELET_DOCKERSHIM_MIN_OOM_SCORE_ADJ=0"
    oom_env=(env KUBELET_DOCKERSHIM_MIN_OOM_SCORE_ADJ=0)
  fi
  # kubelet: dockershim on the local Docker; --cgroups-per-qos=false: pods stay under Docker's
  # own cgroups (no kubepods tree on the host); image GC at 100 % and tiny eviction thresholds:
  # the kubelet never deletes images; --make-iptables-util-chains=false: no kubelet iptables
  # chains; all state under $R; its API (10250) only accepts the API server's client cert;
  # node status every 2 s (not 10 s): the node turns Ready ~8 s sooner after registering;
  # --max-pods=250 (default 110): room for the 200 servers of benches/cluster_scale.rs.
  daemon kubelet "${oom_env[@]}" "$BIN/kubelet" --kubeconfig="$R/kubeconfig" \
    --hostname-override=$NODE --node-ip="$ip" --address="$ip" --read-only-port=0 \
    --healthz-bind-address=127.0.0.1 --healthz-port=10248 \
    --container-runtime=docker --docker-endpoint=unix:///var/run/docker.sock \
    --pod-infra-container-image=$PAUSE_IMAGE \
    --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
    --fail-swap-on=false --node-status-update-frequency=2s --max-pods=250 \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard='memory.available<1Mi,nodefs.available<1%,imagefs.available<1%' \
    --make-iptables-util-chains=false \
    --root-dir="$R/kubelet" --cert-dir="$R/kubelet/pki" \
    --experimental-dockershim-root-directory="$R/dockershim" \
    --volume-plugin-dir="$R/kubelet/volume-plugins" \
    --anonymous-auth=false --client-ca-file="$R/pki/ca.crt" --authorization-mode=AlwaysAllow \
    --v=1
  # kube-proxy: iptables mode; --conntrack-*=0 leaves the host's conntrack sysctls alone
  touch "$R/proxy-started"
  daemon kube-proxy "$BIN/kube-proxy" --kubeconfig="$R/kubeconfig" --hostname-override=$NODE \
    --proxy-mode=iptables --bind-address="$ip" \
    --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --v=1

  local all; read -ra all <<< "$DAEMONS"
  wait_for "node $NODE Ready" 180 "${all[@]}" -- node_ready || { cleanup; exit 1; }
  log "node $NODE Ready after $(since "$t0")"
  wait_for "the default service account" 60 "${all[@]}" -- sa_ready || { cleanup; exit 1; }
  wait_for kube-proxy 60 "${all[@]}" -- proxy_healthy || { cleanup; exit 1; }
  kc get nodes -o wide
  print_env
  log "started in $(since "$t0")"
}

# ---------------------------------------------------------------------------------- stop

stop_daemon() {
  local name=$1 pid _
  if alive "$name"; then
    pid=$(pid_of "$name")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do alive "$name" || break; sleep 0.25; done
    alive "$name" && { log "$name did not stop, killing it"; kill -9 "$pid" 2>/dev/null || true; sleep 0.5; }
  fi
  rm -f "$R/$name.pid"
}

cleanup() {  # everything `stop` does; never fails
  local d sb ids="" uids="" m s v
  for d in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_daemon $d; done

  # only the containers our kubelet made: its sandbox checkpoints + the containers in them
  for sb in "$R"/dockershim/sandbox/*; do
    [ -e "$sb" ] || continue; sb=$(basename "$sb")
    ids="$ids $(docker ps -aq --no-trunc --filter "id=$sb") $(docker ps -aq --no-trunc --filter "label=io.kubernetes.sandbox.id=$sb")"
    uids="$uids $(docker inspect -f '{{index .Config.Labels "io.kubernetes.pod.uid"}}' "$sb" 2>/dev/null || true)"
  done
  ids=$(echo $ids)
  if [ -n "$ids" ]; then
    log "removing $(echo "$ids" | wc -w) containers of our pods"
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null 2>&1 || true
  fi
  rm -rf "$R/dockershim"

  # kubelet mounts under its root dir (secret/projected tmpfs volumes, its rshared self-bind)
  awk -v r="$R/kubelet" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done

  if [ -f "$R/proxy-started" ]; then
    # removes kube-proxy's rules/chains; exits non-zero on the ipvs part (no ipset) -- harmless.
    # It leaves these behind: remove them too.
    "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    for s in mangle nat filter; do iptables -t $s -X KUBE-PROXY-CANARY 2>/dev/null || true; done
    for s in KUBE-MARK-MASQ KUBE-MARK-DROP; do
      iptables -t nat -F $s 2>/dev/null || true; iptables -t nat -X $s 2>/dev/null || true
    done
    rm -f "$R/proxy-started"
  fi
  if [ -f "$R/nft-tables.orig" ]; then  # drop tables that appeared since start and are empty now
    nft list tables 2>/dev/null | grep -vxF -f "$R/nft-tables.orig" | while read -r _ fam tbl; do
      nft list table "$fam" "$tbl" 2>/dev/null |
        grep -qvE '^[[:space:]]*(table .*|chain .*|type .*|policy .*|\}|)$' ||
        nft delete table "$fam" "$tbl" 2>/dev/null || true
    done
    rm -f "$R/nft-tables.orig"
  fi

  if [ -f "$R/sysctl.orig" ]; then
    while read -r s v; do
      [ "$(cat "/proc/sys/$s" 2>/dev/null)" = "$v" ] || echo "$v" > "/proc/sys/$s" 2>/dev/null || log "could not restore $s=$v"
    done < "$R/sysctl.orig"
    rm -f "$R/sysctl.orig"
  fi

  # pod logs of our pods, dangling links to them, and the host dirs the kubelet created
  for v in $uids; do rm -rf /var/log/pods/*_"$v"; done
  if [ -d /var/log/containers ]; then
    find /var/log/containers -xtype l -lname '/var/log/pods/*' -delete 2>/dev/null || true
  fi
  if [ -f "$R/created-dirs" ]; then
    while read -r d; do if [ -n "$d" ]; then rm -rf "$d"; fi; done < "$R/created-dirs"
    rm -f "$R/created-dirs"
  fi
  rm -rf "$R/etcd-data" "$R/oom-check"
  if ! awk -v r="$R/kubelet" '$2 == r || index($2, r "/") == 1 { f = 1 } END { exit !f }' /proc/mounts; then
    rm -rf "$R/kubelet"
  fi
  return 0
}

stop() {
  [ -d "$R" ] || { log "not running"; return 0; }
  lock
  if leftovers; then cleanup; log "stopped"; else log "not running"; fi
}

# ---------------------------------------------------------------------------------- info

print_env() {
  echo "KUBECONFIG=$R/kubeconfig"
  echo "MCP_K8S_KUBECONFIG_LIMITED=$R/kubeconfig-limited"
  echo "MCP_K8S_KUBECTL=$BIN/kubectl"
  echo "MCP_K8S_CLUSTER_SCRIPT=$(readlink -f "$0")"
}

status() {
  local d up=0 n=0
  for d in $DAEMONS; do
    n=$((n + 1))
    if alive $d; then up=$((up + 1)); echo "$d: running (pid $(pid_of $d))"; else echo "$d: stopped"; fi
  done
  [ $up = 0 ] && { echo "cluster: stopped"; return 3; }
  if alive kube-apiserver && node_ready; then echo "node $NODE: Ready"; else echo "node $NODE: not Ready"; fi
  healthy && { echo "cluster: running"; return 0; }
  echo "cluster: degraded ($up/$n daemons)"; return 1
}

case "${1:-}" in
  build) build;;
  start) start;;
  stop) stop;;
  status) status;;
  env) print_env;;
  restart-apiserver) shift; restart_apiserver "$@";;
  *) echo "usage: $0 build|start|stop|status|env|restart-apiserver" >&2; exit 2;;
esac
