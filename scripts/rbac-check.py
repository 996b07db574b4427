#!/usr/bin/env python3
"""Least privilege, shown by a real authorizer.

Reads the real control plane's audit log after the test suites ran termguard against it, and
for each user the tests run as, the ClusterRole shipped for it:
  * `termguard` (queue mode, drain, uncordon): ClusterRole termguard in
    deploy/manifests/termguard.yaml (rendered from the Helm chart deploy/helm/termguard), or
    MANIFEST;
  * `termguard-audit` (`termguard audit`): ClusterRole termguard-audit in
    deploy/kubernetes/termguard-audit-rbac.yaml.
It fails when
  * a request of that user was refused (403): the manifest lacks a rule the code needs, or
  * a (group, resource, verb) the ClusterRole grants was never used: a rule the code never needs.

    scripts/rbac-check.py AUDIT_LOG [MANIFEST]

The audit log is JSON lines (kube-apiserver --audit-log-format=json, Metadata level); see
https://kubernetes.io/docs/tasks/debug/debug-cluster/audit/ for the event fields.
"""

import json
import sys
from collections import Counter
from pathlib import Path

def cluster_role_rules(manifest: Path, role: str):
    """(apiGroup, resource, verb) triples the ClusterRole named `role` grants."""
    try:
        import yaml  # PyYAML comes with moto[server]
    except ImportError:
        sys.exit("rbac-check: PyYAML is needed (pip install pyyaml)")
    for doc in yaml.safe_load_all(manifest.read_text()):
        if doc and doc.get("kind") == "ClusterRole" and doc["metadata"]["name"] == role:
            for rule in doc.get("rules", []):
                for group in rule.get("apiGroups", []):
                    for resource in rule.get("resources", []):
                        for verb in rule.get("verbs", []):
                            yield (group, resource, verb)
            return
    sys.exit(f"rbac-check: no ClusterRole {role!r} in {manifest}")


def requests(audit_log: Path, user: str):
    """(apiGroup, resource[/subresource], verb, code, uri) of every request of `user`."""
    with audit_log.open() as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("user", {}).get("username") != user or ev.get("stage") != "ResponseComplete":
                continue
            ref = ev.get("objectRef") or {}
            if not ref.get("resource"):
                continue  # discovery, /version: non-resource URLs every user may read
            resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            code = (ev.get("responseStatus") or {}).get("code", 0)
            yield (ref.get("apiGroup", ""), resource, ev.get("verb", ""), code, ev.get("requestURI", ""))


def check(audit_log: Path, user: str, role: str, manifest: Path) -> bool:
    """Prints the use of each rule of `role` by `user`; returns whether the check passed."""
    granted = set(cluster_role_rules(manifest, role))
    used = Counter()
    forbidden = []
    for group, resource, verb, code, uri in requests(audit_log, user):
        if code == 403:
            forbidden.append(f"{verb} {uri}")
        used[(group, resource, verb)] += 1
    if not used:
        print(f"rbac-check: no request of user {user!r} in {audit_log}: did the real-cluster tests run?",
              file=sys.stderr)
        return False
    print(f"rbac-check: requests of user {user!r} per ClusterRole {role!r} rule ({manifest.name}):", flush=True)
    for group, resource, verb in sorted(granted):
        print(f"  {used.get((group, resource, verb), 0):7}  {group or 'core'} {resource} {verb}", flush=True)
    unused = sorted(r for r in granted if used.get(r, 0) == 0)
    failed = False
    if forbidden:
        failed = True
        print(f"rbac-check: {len(forbidden)} requests of {user!r} were refused (403); the ClusterRole lacks:",
              file=sys.stderr)
        for f in sorted(set(forbidden))[:20]:
            print(f"  {f}", file=sys.stderr)
    if unused:
        failed = True
        print(f"rbac-check: granted to {user!r} but never used by the code under test (remove them, or test "
              "the code that needs them):", file=sys.stderr)
        for group, resource, verb in unused:
            print(f"  {group or 'core'} {resource} {verb}", file=sys.stderr)
    if not failed:
        print(f"rbac-check: {user!r}: every rule is used and nothing was refused")
    return not failed


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    audit_log = Path(sys.argv[1])
    root = Path(__file__).resolve().parent.parent
    manifest = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "deploy/manifests/termguard.yaml"
    checks = [
        ("termguard", "termguard", manifest),
        ("termguard-audit", "termguard-audit", root / "deploy/kubernetes/termguard-audit-rbac.yaml"),
    ]
    passed = [check(audit_log, user, role, path) for user, role, path in checks]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
