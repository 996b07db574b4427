# termguard's container image, for people with Docker (or any BuildKit/Buildah builder):
#   docker build -t termguard .
# It builds what scripts/image.sh builds without a container engine (the image the project
# builds and tests on its own machines, docs/image.md): the same static binary (glibc with
# crt-static, --no-default-features: no lab or simulator), the same files in the same places,
# the same user, entrypoint and labels. Keep the two in step. This file cannot be built on the
# project's machines (they have no Docker engine); scripts/image.sh is what the tests check.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build -p termguard --locked --release --no-default-features \
      --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/termguard /rootfs/usr/local/bin/termguard \
 && strip /rootfs/usr/local/bin/termguard \
 && if readelf -l /rootfs/usr/local/bin/termguard | grep -q INTERP; then echo "not static" >&2; exit 1; fi \
 && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' >/rootfs/etc/group \
 && printf 'passwd: files\ngroup: files\nhosts: files dns\n' >/rootfs/etc/nsswitch.conf \
 && chmod 0644 /rootfs/etc/passwd /rootfs/etc/group /rootfs/etc/nsswitch.conf

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/termguard"]
CMD ["run"]
LABEL org.opencontainers.image.title="termguard" \
      org.opencontainers.image.description="Guarantees that no Kubernetes node on AWS is terminated undrained" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
