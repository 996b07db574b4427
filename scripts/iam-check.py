#!/usr/bin/env python3
"""Least privilege on the AWS side: the IAM actions the code can call are the policy's.

Lists every operation of the AWS SDK crates termguard uses (aws-sdk-sqs, aws-sdk-autoscaling,
aws-sdk-eventbridge: one directory per operation under the crate's src/operation/, at the
version Cargo.lock pins), finds the ones crates/termguard/src calls (`.operation_name(`), maps
each to its IAM action (a batch SQS call needs its single action:
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html),
and fails when
  * the code calls an action deploy/aws/iam-policy.json does not allow, or
  * the policy allows an action no code calls.

    scripts/iam-check.py [POLICY]

Run after a cargo build (the crates' sources are then in cargo's registry).
"""

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"aws-sdk-sqs": "sqs", "aws-sdk-autoscaling": "autoscaling", "aws-sdk-eventbridge": "events"}
BATCH_OF = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
            "sqs:SendMessageBatch": "sqs:SendMessage"}


def locked_versions() -> dict:
    text = (ROOT / "Cargo.lock").read_text()
    out = {}
    for m in re.finditer(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', text):
        if m.group(1) in SERVICES:
            out[m.group(1)] = m.group(2)
    return out


def crate_dir(name: str, version: str) -> Path:
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    for d in sorted((home / "registry" / "src").glob(f"*/{name}-{version}")):
        return d
    sys.exit(f"iam-check: {name} {version} not in cargo's registry under {home}: run a cargo build first")


def pascal(snake: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_"))


def main() -> int:
    policy_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "deploy/aws/iam-policy.json"
    operations = {}  # snake_case operation -> IAM action
    for crate, version in locked_versions().items():
        prefix = SERVICES[crate]
        for op in (crate_dir(crate, version) / "src" / "operation").iterdir():
            if op.is_dir():
                operations.setdefault(op.name, set()).add(f"{prefix}:{pascal(op.name)}")
    if len(operations) < 50:
        sys.exit(f"iam-check: only {len(operations)} SDK operations found; the crates' layout changed?")
    called = {}  # IAM action -> where
    call = re.compile(r"\.([a-z][a-z0-9_]*)\(")
    for path in sorted((ROOT / "crates/termguard/src").rglob("*.rs")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("//"):
                continue
            for name in call.findall(line):
                for action in operations.get(name, ()):
                    action = BATCH_OF.get(action, action)
                    called.setdefault(action, f"{path.relative_to(ROOT)}:{n}")
    allowed = set()
    for st in json.loads(policy_path.read_text())["Statement"]:
        if st.get("Effect") == "Allow":
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            allowed.update(acts)
    print(f"iam-check: AWS actions the code calls, and where first ({policy_path.name}):")
    for action in sorted(called):
        print(f"  {'ok ' if action in allowed else 'MISSING'}  {action:45} {called[action]}")
    missing = sorted(set(called) - allowed)
    unused = sorted(allowed - set(called))
    if missing:
        print(f"iam-check: the policy does not allow {', '.join(missing)}", file=sys.stderr)
    if unused:
        print(f"iam-check: the policy allows what no code calls: {', '.join(unused)}", file=sys.stderr)
    if missing or unused:
        return 1
    print("iam-check: the policy allows exactly what the code calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
