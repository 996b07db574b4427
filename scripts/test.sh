#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, then runs
# formatting, lints and the whole test suite. Works on a bare machine of this kind.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build output outside the tree, so a second run on the same machine reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/termguard-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The real kubectl 1.32 is the simulator's reference client (shipped with this machine kind).
if ! command -v kubectl >/dev/null 2>&1; then
  echo "scripts/test.sh: kubectl (1.32) is required by the kubectl integration tests and was not found" >&2
  exit 1
fi

# moto in server mode is the AWS of the queue-mode tests; tests/aws/moto_server.py extends
# exactly this version (it replaces two of its methods).
MOTO_VERSION=5.2.1
if [ "$(python3 -c 'import moto, flask; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ]; then
  echo "installing moto[server]==$MOTO_VERSION from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

# The AWS test peer checks itself first: a moto change shows up here, not as odd Rust failures.
python3 tests/aws/test_moto_server.py </dev/null

# --- Infrastructure as code (docs/infrastructure-as-code.md) ---------------------------------
# cfn-lint (pinned; PyPI) on the CloudFormation template, informational checks included.
# scripts/hcl, built from hcl/v2's Go module (cached under ~/.cache/termguard/hcl-KEY, keyed by
# its sources and the Go version; about a minute on a cold cache), checks deploy/terraform/ is
# formatted (hclwrite.Format, what terraform fmt is built on) and evaluates it for
# tests/iac/test_iac.py, which compares the module, the template and deploy/aws/ with one
# another (no terraform binary or provider can be fetched here). The stack itself is created in
# the AWS test peer by crates/termguard/tests/cloudformation.rs, under cargo test below.
CFN_LINT_VERSION=1.51.0
if [ "$(python3 -c 'import importlib.metadata as m; print(m.version("cfn-lint"))' 2>/dev/null)" != "$CFN_LINT_VERSION" ]; then
  echo "installing cfn-lint==$CFN_LINT_VERSION from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
fi
python3 -c 'import sys; from cfnlint.runner import main; sys.exit(main())' \
  --include-checks I -- deploy/cloudformation/termguard.yaml
if ! command -v go >/dev/null 2>&1; then
  echo "scripts/test.sh: Go (1.26) is required to build scripts/hcl and was not found" >&2
  exit 1
fi
hcl_key=$(cat scripts/hcl/go.mod scripts/hcl/go.sum scripts/hcl/*.go <(go env GOVERSION) | sha256sum | cut -c1-12)
HCL_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/termguard/hcl-$hcl_key/hcl"
if [ ! -x "$HCL_BIN" ]; then
  mkdir -p "$(dirname "$HCL_BIN")"
  (cd scripts/hcl && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go build -mod=readonly -trimpath -o "$HCL_BIN.tmp$$" .)
  mv "$HCL_BIN.tmp$$" "$HCL_BIN"
fi
(cd scripts/hcl && test -z "$(gofmt -l .)" && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false go vet ./...)
"$HCL_BIN" fmt deploy/terraform/*.tf
python3 tests/iac/test_iac.py "$HCL_BIN" </dev/null
# --- end of infrastructure as code ------------------------------------------------------------

cargo fmt --all -- --check

# The real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK),
# built from its Go modules on first use (about 12 minutes on 2 cores), then cached under
# ~/.cache/termguard/controlplane; started on free loopback ports for this run and stopped after.
if ! command -v go >/dev/null 2>&1; then
  echo "scripts/test.sh: Go (1.26) is required to build the real control plane and was not found" >&2
  exit 1
fi
scripts/cluster.sh build >/dev/null

# The Helm chart (deploy/helm/termguard). helm v3 is built from its Go module on first use
# (about 2.5 minutes on 2 cores), then cached under ~/.cache/termguard/helm (scripts/helm.sh).
# Lint it strictly with the plain manifests' values, render it, refuse to render it without
# a queue URL, and check that deploy/manifests/ is what it renders. TERMGUARD_HELM tells
# crates/termguard/tests/helm.rs which helm to use (it then applies the chart to the real
# control plane and runs termguard from the rendered Deployment).
TERMGUARD_HELM=$(scripts/helm.sh build)
export TERMGUARD_HELM
"$TERMGUARD_HELM" lint --strict deploy/helm/termguard --values deploy/manifests/values.yaml
"$TERMGUARD_HELM" template termguard deploy/helm/termguard --namespace termguard \
  --values deploy/manifests/values.yaml >/dev/null
if "$TERMGUARD_HELM" template termguard deploy/helm/termguard >/dev/null 2>&1; then
  echo "scripts/test.sh: the chart rendered without run.queueUrl; it must refuse to" >&2
  exit 1
fi
scripts/render-manifests.sh --check

# The fault-injecting proxy in front of kube-apiserver (standard library only) checks itself.
(cd scripts/controlplane/faultproxy && go vet ./... && go test -count=1 ./...)

cargo clippy --workspace --all-targets --locked -- -D warnings
# The image's build: the product without the lab and the simulator (the `lab` feature).
cargo clippy -p termguard --no-default-features --locked -- -D warnings
cargo build --workspace --locked --bins
# Least privilege on the AWS side: the IAM actions the code calls are exactly the policy's.
python3 scripts/iam-check.py

CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/termguard-cluster.XXXXXX")
trap 'scripts/cluster.sh down "$CLUSTER_DIR"' EXIT
TERMGUARD_BIN="$CARGO_TARGET_DIR/debug/termguard" scripts/cluster.sh up "$CLUSTER_DIR" </dev/null
# Every suite that has a real-cluster variant runs it; a missing cluster is a failure, not a skip.
export TERMGUARD_CLUSTER_DIR="$CLUSTER_DIR" TERMGUARD_REQUIRE_REAL_CLUSTER=1

# The container image (docs/image.md), built once: tests/image.rs unpacks it and runs queue
# mode from its root filesystem. In the dev profile (the same static, simulator-free build,
# unoptimised): on a cold machine it adds about 3.5 minutes, the release build about 38 on a
# busy 2-core machine. TERMGUARD_IMAGE_PROFILE=release tests the shipped image instead.
IMAGE_DIR="$CARGO_TARGET_DIR/image-test"
TERMGUARD_IMAGE_PROFILE="${TERMGUARD_IMAGE_PROFILE:-dev}" scripts/image.sh "$IMAGE_DIR" </dev/null
export TERMGUARD_IMAGE="$IMAGE_DIR/image.tar"

cargo test --workspace --locked </dev/null

# A short chaos soak on each backend (docs/reliability.md#the-chaos-soak): notices of every
# kind through the AWS test peer, faults all along (on the real backend through the
# fault-injecting proxy); it exits 1 naming any invariant that is not 0. Built in the dev
# profile: the test build's artifacts serve it.
cargo bench -p termguard --bench soak --profile dev --locked -- --notices 150 --seed 1 </dev/null
cargo bench -p termguard --bench soak --profile dev --locked -- --backend real --notices 150 --seed 2 </dev/null

# Least privilege, shown by the real authorizer: the termguard and termguard-audit users were
# refused nothing, and every rule of their shipped ClusterRoles was used by the code under test
# (the soak included).
python3 scripts/rbac-check.py "$CLUSTER_DIR/audit.log"
