#!/usr/bin/env bash
# aws-node-termination-handler (NTH), queue-processor mode, as the benchmark's peer: built from
# its Go module, run as a plain process against the test control plane of scripts/cluster.sh
# and the AWS test peer (tests/aws/moto_server.py). See docs/nth-peer.md.
#
#   scripts/nth.sh build                          build once (cached); prints the binary's path
#   scripts/nth.sh run CLUSTER_DIR -- NTH_ARGS…   run NTH against the cluster `cluster.sh up CLUSTER_DIR` started
#
# build: the version is the one scripts/peers/nth/go.mod requires; the cache directory is keyed
# by it and by a hash of go.mod, go.sum and the Go version:
# ~/.cache/termguard/peers/nth-<version>-<hash>/node-termination-handler. When NTH cannot be
# built, it exits 1 with one line on stderr saying why (the benchmark then runs without it).
#
# run: NTH only knows rest.InClusterConfig(), so it gets what a pod of its Helm chart's
# queue-processor Deployment gets, without touching the machine's files: its own
# ServiceAccount and ClusterRole (scripts/peers/nth/rbac.yaml, from the chart), a token of that
# ServiceAccount from the TokenRequest API, written with the cluster's CA and the namespace into
# /var/run/secrets/kubernetes.io/serviceaccount inside a private mount namespace (a tmpfs;
# missing directories come from an overlay whose upper layer is that tmpfs),
# KUBERNETES_SERVICE_HOST/PORT pointing at the API server, and the Deployment's environment with
# the chart's default values. NTH_ARGS are NTH's own flags (--queue-url, --aws-endpoint, …); a
# flag wins over the environment. The script ends by exec'ing NTH (bash → unshare → sh → NTH),
# so the PID of `scripts/nth.sh run` is NTH's PID. Needs root (mount namespaces), kubectl and
# openssl. Files: CLUSTER_DIR/nth/ (removed with the cluster by `cluster.sh down`).
#
# Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default "testing"; moto accepts any),
# NTH_TOKEN_DURATION (the ServiceAccount token's lifetime, default 24h), NTH_PROBES_PORT
# (default: a free loopback port).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MOD=$ROOT/scripts/peers/nth
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

die() { printf 'scripts/nth.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '[nth %(%T)T] %s\n' -1 "$*" >&2; }

nth_version() {
  local v
  v=$(sed -n 's#^[[:space:]]*github.com/aws/aws-node-termination-handler \(v[^ ]*\).*#\1#p' "$MOD/go.mod")
  [[ -n $v ]] || die "scripts/peers/nth/go.mod requires no github.com/aws/aws-node-termination-handler"
  echo "$v"
}

cache_root() { echo "${TERMGUARD_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/termguard/peers}"; }

# ---------------------------------------------------------------------------------------------
# build

cmd_build() {
  local version home bin
  version=$(nth_version)
  command -v go >/dev/null || die "cannot build NTH $version: Go (1.26) not found"
  home=$(cache_root)/nth-$version-$(cat "$MOD/go.mod" "$MOD/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-12)
  bin=$home/node-termination-handler
  if [[ -x $bin ]]; then echo "$bin"; return; fi
  mkdir -p "$home" || die "cannot build NTH $version: cannot create $home"
  local free_kb
  mkdir -p "$(go env GOMODCACHE)" "$(go env GOCACHE)" 2>/dev/null || true
  free_kb=$(df -Pk "$home" "$(go env GOMODCACHE)" "$(go env GOCACHE)" 2>/dev/null | awk 'NR>1{print $4}' | sort -n | head -1 || true)
  (( ${free_kb:-0} > 1024*1024 )) || die "cannot build NTH $version: ~1 GB free needed for Go's caches, $((${free_kb:-0}/1024)) MB left"
  local t0=$SECONDS buildlog=$home/build.log
  log "building aws-node-termination-handler $version (cold: ~3 min on 2 cores; output in $buildlog)"
  # -mod=readonly: go.sum pins every module; nothing is resolved afresh. Modules come from
  # GOMODCACHE or the Go module proxy.
  if ! (cd "$MOD" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$bin.tmp$$" \
          github.com/aws/aws-node-termination-handler/cmd) >"$buildlog" 2>&1; then
    rm -f "$bin.tmp$$"
    die "cannot build NTH $version: go build failed ($(grep -v '^go: downloading' "$buildlog" | tail -n 1 | cut -c1-200); full output in $buildlog)"
  fi
  mv -f "$bin.tmp$$" "$bin"
  log "built in $((SECONDS - t0)) s: $bin"
  echo "$bin"
}

# ---------------------------------------------------------------------------------------------
# run

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd_run() {
  [[ $# -ge 1 ]] || die "usage: scripts/nth.sh run CLUSTER_DIR -- NTH_ARGS..."
  local dir=$1; shift
  if [[ ${1:-} == -- ]]; then shift; fi
  [[ -s $dir/env && -s $dir/kubeconfig && -s $dir/pki/ca.crt ]] ||
    die "$dir is no running cluster (no env, kubeconfig, pki/ca.crt): start one with scripts/cluster.sh up $dir"
  dir=$(realpath "$dir")
  [[ $(id -u) -eq 0 ]] || die "run needs root: NTH's service-account files go into a private mount namespace"
  local c
  for c in unshare kubectl openssl python3; do command -v "$c" >/dev/null || die "run needs $c"; done
  local api_port bin
  api_port=$(sed -n 's/^API_PORT=//p' "$dir/env")
  [[ $api_port =~ ^[0-9]+$ ]] || die "no API_PORT in $dir/env"
  bin=$(cmd_build)

  # In a pod, NTH reaches the API server as KUBERNETES_SERVICE_HOST; here that is 127.0.0.1,
  # which the serving certificate must name (client-go verifies it against ca.crt).
  openssl x509 -in "$dir/pki/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -q 'IP Address:127\.0\.0\.1' ||
    die "the API server's certificate ($dir/pki/apiserver.crt) does not cover IP 127.0.0.1"

  local k=(kubectl --kubeconfig "$dir/kubeconfig") state=$dir/nth
  mkdir -p "$state/mnt"
  "${k[@]}" apply -f "$MOD/rbac.yaml" >"$state/rbac.log" 2>&1 ||
    die "applying scripts/peers/nth/rbac.yaml failed: $(tail -n 1 "$state/rbac.log")"
  # A bound ServiceAccount token from the TokenRequest API (tokens.csv is read only when the API
  # server starts), as the kubelet projects into a pod, but with a long lifetime: nothing here
  # would refresh it.
  local token
  token=$("${k[@]}" -n kube-system create token aws-node-termination-handler \
    --duration="${NTH_TOKEN_DURATION:-24h}" 2>"$state/token.log") ||
    die "kubectl create token failed: $(tail -n 1 "$state/token.log")"
  (umask 077; printf '%s' "$token" >"$state/token")
  cp "$dir/pki/ca.crt" "$state/ca.crt"
  printf 'kube-system' >"$state/namespace"

  # The environment of the chart's queue-processor Deployment
  # (config/helm/aws-node-termination-handler/templates/deployment.yaml) with values.yaml's
  # defaults. NODE_NAME is the node NTH's own pod would run on (fieldRef spec.nodeName): here it
  # runs on none, and in queue mode the name is only used for Kubernetes events (off). POD_NAME
  # and NAMESPACE let the drain skip NTH's own pod; there is none in the cluster.
  local probes_port=${NTH_PROBES_PORT:-$(free_port)}
  local -a env=(
    NODE_NAME=nth-host POD_NAME=aws-node-termination-handler-0 NAMESPACE=kube-system
    ENABLE_PROBES_SERVER=true PROBES_SERVER_PORT="$probes_port" PROBES_SERVER_ENDPOINT=/healthz
    LOG_LEVEL=info JSON_LOGGING=false LOG_FORMAT_VERSION=1
    ENABLE_PROMETHEUS_SERVER=false PROMETHEUS_SERVER_PORT=9092
    CHECK_ASG_TAG_BEFORE_DRAINING=true CHECK_TAG_BEFORE_DRAINING=true
    MANAGED_ASG_TAG=aws-node-termination-handler/managed MANAGED_TAG=aws-node-termination-handler/managed
    USE_PROVIDER_ID=false DRY_RUN=false CORDON_ONLY=false TAINT_NODE=false
    ENABLE_OUT_OF_SERVICE_TAINT=false EXCLUDE_FROM_LOAD_BALANCERS=false
    DELETE_LOCAL_DATA=true IGNORE_DAEMON_SETS=true
    POD_TERMINATION_GRACE_PERIOD=-1 NODE_TERMINATION_GRACE_PERIOD=120
    EMIT_KUBERNETES_EVENTS=false COMPLETE_LIFECYCLE_ACTION_DELAY_SECONDS=-1
    ENABLE_SQS_TERMINATION_DRAINING=true DELETE_SQS_MSG_IF_NODE_NOT_FOUND=false WORKERS=10
    HEARTBEAT_INTERVAL=-1 HEARTBEAT_UNTIL=-1
    # What the pod's in-cluster environment would hold.
    KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$api_port"
    # AWS: static credentials (moto takes any), never IMDS or a profile on this machine. The
    # endpoint and region are flags (--aws-endpoint, --aws-region).
    AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
  )
  printf '%s\n' "probes http://127.0.0.1:$probes_port/healthz" "bin $bin" >"$state/info"
  # This shell's own CPU ticks so far (/proc/PID/stat fields 14 and 15, utime and stime): they
  # stay with the PID across the exec below, so a reader of NTH's CPU time subtracts them.
  local stat
  read -r stat </proc/$$/stat
  stat=${stat##*) }
  read -r -a f <<<"$stat"
  echo "$(( f[11] + f[12] ))" >"$state/wrapper-cpu-ticks"

  # In the private mount namespace: a tmpfs over CLUSTER_DIR/nth/mnt; if the service-account
  # directory does not exist, an overlay over its deepest existing ancestor (upper layer in
  # that tmpfs) creates it there and nowhere else; then the files, then NTH. `mount -n`: no
  # /run/mount/utab on the machine either.
  exec env -i PATH="$PATH" "${env[@]}" unshare -m --propagation private sh -c '
    set -eu
    state=$1 bin=$2; shift 2
    sa=/var/run/secrets/kubernetes.io/serviceaccount
    mount -n -t tmpfs -o mode=0755,size=16m nth "$state/mnt"
    if [ ! -d "$sa" ]; then
      base=$(readlink -f /var/run)
      for c in secrets kubernetes.io; do
        if [ -d "$base/$c" ]; then base=$base/$c; else break; fi
      done
      case $base in /|/proc*|/sys*|/dev*) echo "scripts/nth.sh: no place for $sa" >&2; exit 1 ;; esac
      mkdir "$state/mnt/upper" "$state/mnt/work"
      mount -n -t overlay overlay -o "lowerdir=$base,upperdir=$state/mnt/upper,workdir=$state/mnt/work" "$base"
      mkdir -p "$sa"
    fi
    mount -n -t tmpfs -o mode=0755,size=1m nth-sa "$sa"
    cp "$state/token" "$state/ca.crt" "$state/namespace" "$sa/"
    exec "$bin" "$@"
  ' nth "$state" "$bin" "$@"
}

case ${1:-} in
  build) cmd_build ;;
  run) shift; cmd_run "$@" ;;
  -h|--help|help|"") sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command $1 (build, run)" ;;
esac
