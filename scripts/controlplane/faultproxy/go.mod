// faultproxy: a fault-injecting HTTPS reverse proxy for kube-apiserver (standard library only).
// Built by `scripts/cluster.sh build` into the control plane's bin directory; see README.md.
module termguard.dev/controlplane/faultproxy

go 1.26
