#!/usr/bin/env bash
# Builds termguard's container image without a container engine (docs/image.md): a static
# binary (glibc, crt-static) of the product without the simulator (--no-default-features),
# a root filesystem around it (the binary, /etc/passwd and /etc/group with the non-root user
# 65532, /etc/nsswitch.conf, the CA bundle), assembled into an OCI image with umoci.
#
#   scripts/image.sh [OUT_DIR]
#
# OUT_DIR (default: $CARGO_TARGET_DIR/image) receives oci/ (an OCI image layout, tag
# VERSION) and image.tar (the same layout as one archive: `podman load -i`, `skopeo copy
# oci-archive:`, `docker load` from Docker 25). TERMGUARD_IMAGE_PROFILE picks the cargo
# profile (release, the default; dev for a quicker test image). The root Dockerfile builds the
# same image for people with Docker.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/termguard-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
PROFILE="${TERMGUARD_IMAGE_PROFILE:-release}"
OUT="${1:-$CARGO_TARGET_DIR/image}"
TARGET=x86_64-unknown-linux-gnu
UID_GID=65532
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

if ! command -v umoci >/dev/null 2>&1; then
  echo "installing umoci (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq umoci >/dev/null
fi
if [ ! -r "$CA_BUNDLE" ]; then
  echo "scripts/image.sh: $CA_BUNDLE (Debian's ca-certificates) is needed in the image" >&2
  exit 1
fi

# Static: the gnu target with crt-static (no musl target needed). With --target, RUSTFLAGS
# reach only the target's crates, not build scripts or proc macros.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build -p termguard --locked --no-default-features --profile "$PROFILE" --target "$TARGET"
case "$PROFILE" in dev) dir=debug ;; *) dir="$PROFILE" ;; esac
BIN="$CARGO_TARGET_DIR/$TARGET/$dir/termguard"

# The image only works if nothing is loaded at run time: no interpreter, no NEEDED library.
if readelf -l "$BIN" | grep -q 'INTERP' || readelf -d "$BIN" | grep -q '(NEEDED)'; then
  echo "scripts/image.sh: $BIN is not static:" >&2
  ldd "$BIN" >&2 || true
  exit 1
fi

VERSION=$("$BIN" --version | awk '{print $2}')
REVISION=$(git rev-parse HEAD)
# Reproducible timestamps: the commit's time, not the build's.
EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/termguard-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
install -d -m 0755 "$ROOTFS/usr/local/bin" "$ROOTFS/etc/ssl/certs"
install -m 0755 "$BIN" "$ROOTFS/usr/local/bin/termguard"
strip "$ROOTFS/usr/local/bin/termguard"
install -m 0644 "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
# getpwuid (a home directory for ~/.kube and ~/.aws when HOME is unset) and getaddrinfo read
# these through glibc's built-in files and dns modules; the kubelet mounts /etc/hosts and
# /etc/resolv.conf over the image's.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
  "$UID_GID" "$UID_GID" >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnonroot:x:%s:\n' "$UID_GID" >"$ROOTFS/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"
chmod 0644 "$ROOTFS"/etc/passwd "$ROOTFS"/etc/group "$ROOTFS"/etc/nsswitch.conf
# Everything belongs to root and nothing is writable by the user: the pod's
# readOnlyRootFilesystem only confirms it.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
  -C "$ROOTFS" -cf "$WORK/layer.tar" .

rm -rf "$OUT/oci" "$OUT/image.tar"
mkdir -p "$OUT"
IMAGE="$OUT/oci:$VERSION"
umoci init --layout "$OUT/oci"
umoci new --image "$IMAGE"
umoci raw add-layer --image "$IMAGE" --history.created "$CREATED" \
  --history.created_by "scripts/image.sh" "$WORK/layer.tar"
umoci config --image "$IMAGE" --created "$CREATED" --history.created "$CREATED" \
  --os linux --architecture amd64 \
  --config.user "$UID_GID:$UID_GID" \
  --config.entrypoint /usr/local/bin/termguard --config.cmd run \
  --config.label org.opencontainers.image.title=termguard \
  --config.label "org.opencontainers.image.description=Guarantees that no Kubernetes node on AWS is terminated undrained" \
  --config.label org.opencontainers.image.licenses=Apache-2.0 \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label "org.opencontainers.image.revision=$REVISION" \
  --config.label "org.opencontainers.image.created=$CREATED"
umoci gc --layout "$OUT/oci"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
  -C "$OUT/oci" -cf "$OUT/image.tar" .

layer=$(find "$OUT/oci/blobs" -type f -size +1M -printf '%s\n' | sort -n | tail -1)
echo "image termguard:$VERSION ($PROFILE) in $OUT/oci and $OUT/image.tar"
echo "image size: $(numfmt --to=iec "$layer") compressed layer," \
  "$(numfmt --to=iec "$(stat -c %s "$OUT/image.tar")") image.tar," \
  "$(numfmt --to=iec "$(du -sb "$ROOTFS" | cut -f1)") unpacked"
