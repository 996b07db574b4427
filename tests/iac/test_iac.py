#!/usr/bin/env python3
"""The infrastructure as code against deploy/aws/ and against each other, so they cannot drift.

Run: python3 tests/iac/test_iac.py HCL_BIN   (plain unittest; HCL_BIN is scripts/hcl built, as
scripts/test.sh does; needs PyYAML)

* deploy/cloudformation/termguard.yaml: its IAM statements are deploy/aws/iam-policy.json's (the
  queue's ARN being the stack's queue), its rule patterns deploy/aws/eventbridge-rules.json's
  (the lifecycle rule scoped to the groups), one rule resource per file rule.
* deploy/terraform/: evaluated by `HCL_BIN dump` with test variables, and the template evaluated
  here with the same parameters (a small evaluator of the intrinsic functions it uses; other
  resources' attributes stay symbolic, "${Queue.Arn}"): the same rules and patterns, the same IAM
  statements and trust policy, the same queue and dead-letter settings, one hook per group with
  the same settings, every rule targeting the queue and named in the queue policy.

What it cannot show: that AWS accepts the Terraform resources' attribute names (that needs the
provider's schema, not available offline); the CloudFormation side of that is cfn-lint's and the
stack test's (crates/termguard/tests/cloudformation.rs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TEMPLATE = os.path.join(ROOT, "deploy", "cloudformation", "termguard.yaml")
TERRAFORM = os.path.join(ROOT, "deploy", "terraform")
HCL_BIN = os.environ.get("TERMGUARD_HCL_BIN", "")
if __name__ == "__main__" and len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
    HCL_BIN = os.path.abspath(sys.argv.pop(1))

# Template rule resource -> deploy/aws/eventbridge-rules.json rule -> Terraform for_each key.
RULES = {
    "AsgLifecycleRule": ("termguard-asg-lifecycle", "asg-lifecycle"),
    "SpotInterruptionRule": ("termguard-spot-interruption", "spot-interruption"),
    "RebalanceRecommendationRule": ("termguard-rebalance-recommendation", "rebalance-recommendation"),
    "StateChangeRule": ("termguard-state-change", "state-change"),
    "ScheduledChangeRule": ("termguard-scheduled-change", "scheduled-change"),
}
GROUPS = ["blue", "green"]
OIDC = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !GetAtt, !Sub, ...) as their long forms."""


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


def load_template() -> dict:
    with open(TEMPLATE) as f:
        return yaml.load(f, Loader=CfnLoader)


class Evaluator:
    """The intrinsic functions the template uses, with parameters given and resources symbolic."""

    PSEUDO = {"AWS::Partition": "${partition}", "AWS::AccountId": "${account_id}", "AWS::Region": "${region}"}

    def __init__(self, template: dict, params: dict[str, str]):
        self.t = template
        self.params = {}
        for name, spec in template["Parameters"].items():
            value = params.get(name, spec.get("Default"))
            if value is None:
                raise AssertionError(f"parameter {name} has no default and no value")
            if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], str(value)):
                raise AssertionError(f"{name}={value!r} does not match {spec['AllowedPattern']}")
            if spec["Type"] == "Number":
                value = int(value)
            self.params[name] = value
        self.conditions = {k: self.cond(v) for k, v in template.get("Conditions", {}).items()}

    def ref(self, name: str):
        if name in self.params:
            return self.params[name]
        if name in self.PSEUDO:
            return self.PSEUDO[name]
        if name in self.t["Resources"]:
            return "${" + name + "}"
        raise AssertionError(f"Ref to unknown {name}")

    def cond(self, c) -> bool:
        (op, args), = c.items()
        if op == "Fn::Not":
            return not self.cond(args[0])
        if op == "Fn::Equals":
            return self.value(args[0]) == self.value(args[1])
        if op == "Condition":
            return self.conditions[args]
        raise AssertionError(f"condition {op} not handled")

    def value(self, v):
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Fn::GetAtt":
                assert a[0] in self.t["Resources"], a
                return "${" + ".".join(a) + "}"
            if k == "Fn::Sub":
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(self.sub(m.group(1))), a)
            if k == "Fn::Split":
                return self.value(a[1]).split(a[0])
            if k == "Fn::Select":
                return self.value(a[1])[int(a[0])]
            if k == "Fn::Join":
                return a[0].join(str(x) for x in self.value(a[1]))
            if k.startswith("Fn::"):
                raise AssertionError(f"{k} not handled")
        return {k: self.value(x) for k, x in v.items()}

    def sub(self, name: str):
        if "." in name:
            return "${" + name + "}"
        return self.ref(name)

    def resources(self) -> dict[str, dict]:
        out = {}
        for name, r in self.t["Resources"].items():
            if "Condition" in r and not self.conditions[r["Condition"]]:
                continue
            out[name] = {"Type": r["Type"], "Properties": self.value(r.get("Properties", {}))}
        return out


def tf_dump(variables: dict) -> dict[str, dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(variables, f)
    try:
        out = subprocess.run(
            [HCL_BIN, "dump", "-var-file", f.name, TERRAFORM], check=True, capture_output=True, text=True
        )
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout)["resources"]


def without_queue_arn(policy: dict, queue_arn: str) -> dict:
    """The policy with the queue's ARN written as deploy/aws/iam-policy.json writes it."""
    text = json.dumps(policy).replace(json.dumps(queue_arn), json.dumps("QUEUE"))
    return json.loads(text)


class TemplateMatchesDeployAws(unittest.TestCase):
    def setUp(self):
        self.res = Evaluator(load_template(), {
            "ClusterName": "prod", "AutoScalingGroupNames": ",".join(GROUPS), "OidcProvider": OIDC,
        }).resources()
        with open(os.path.join(ROOT, "deploy", "aws", "iam-policy.json")) as f:
            self.policy = json.load(f)
        with open(os.path.join(ROOT, "deploy", "aws", "eventbridge-rules.json")) as f:
            self.rules = json.load(f)["rules"]

    def test_iam_statements_are_deploy_aws_iam_policy(self):
        (doc,) = [p["PolicyDocument"] for p in self.res["Role"]["Properties"]["Policies"]]
        want = json.loads(json.dumps(self.policy).replace('"arn:aws:sqs:us-east-1:123456789012:termguard"', '"QUEUE"'))
        self.assertEqual(without_queue_arn(doc, "${Queue.Arn}"), want)

    def test_rule_patterns_are_deploy_aws_eventbridge_rules(self):
        rules = {k: v for k, v in self.res.items() if v["Type"] == "AWS::Events::Rule"}
        self.assertEqual(set(rules), set(RULES), "one template rule per file rule")
        self.assertEqual({v[0] for v in RULES.values()}, set(self.rules))
        for logical, (file_rule, _) in RULES.items():
            want = json.loads(json.dumps(self.rules[file_rule]))
            if logical == "AsgLifecycleRule":
                want["detail"] = {"AutoScalingGroupName": GROUPS}
            self.assertEqual(rules[logical]["Properties"]["EventPattern"], want, logical)
            self.assertEqual(rules[logical]["Properties"]["Targets"], [{"Id": "termguard", "Arn": "${Queue.Arn}"}])

    def test_one_hook_per_group_up_to_ten(self):
        hooks = [v["Properties"] for v in self.res.values() if v["Type"] == "AWS::AutoScaling::LifecycleHook"]
        self.assertEqual([h["AutoScalingGroupName"] for h in hooks], GROUPS)
        ten = [f"g{i}" for i in range(10)]
        res = Evaluator(load_template(), {"ClusterName": "p", "AutoScalingGroupNames": ",".join(ten), "OidcProvider": OIDC}).resources()
        names = [v["Properties"]["AutoScalingGroupName"] for v in res.values() if v["Type"] == "AWS::AutoScaling::LifecycleHook"]
        self.assertEqual(names, ten)
        with self.assertRaisesRegex(AssertionError, "does not match"):
            Evaluator(load_template(), {"ClusterName": "p", "AutoScalingGroupNames": ",".join(ten + ["g10"]), "OidcProvider": OIDC})


@unittest.skipUnless(HCL_BIN, "TERMGUARD_HCL_BIN (scripts/hcl, built) not set")
class TerraformMatchesTemplate(unittest.TestCase):
    def setUp(self):
        self.cfn = Evaluator(load_template(), {
            "ClusterName": "prod", "AutoScalingGroupNames": ",".join(GROUPS), "OidcProvider": OIDC,
        }).resources()
        self.tf = tf_dump({"cluster_name": "prod", "auto_scaling_group_names": GROUPS, "oidc_provider": OIDC})
        # Symbolic references of each side, mapped to one vocabulary.
        self.names = {
            "${Queue.Arn}": "QUEUE_ARN", "${aws_sqs_queue.queue.arn}": "QUEUE_ARN",
            "${DeadLetterQueue.Arn}": "DLQ_ARN", "${aws_sqs_queue.dead_letter.arn}": "DLQ_ARN",
            "${Queue}": "QUEUE_URL", "${aws_sqs_queue.queue.url}": "QUEUE_URL",
            "${partition}": "PARTITION", "${data.aws_partition.current.partition}": "PARTITION",
            "${account_id}": "ACCOUNT", "${data.aws_caller_identity.current.account_id}": "ACCOUNT",
        }
        for logical, (_, key) in RULES.items():
            self.names["${" + logical + ".Arn}"] = f"RULE_ARN:{key}"
            self.names[f'${{aws_cloudwatch_event_rule.rule["{key}"].arn}}'] = f"RULE_ARN:{key}"

    def norm(self, v):
        if isinstance(v, str):
            for k, n in sorted(self.names.items(), key=lambda kv: -len(kv[0])):
                v = v.replace(k, n)
            return v
        if isinstance(v, list):
            return [self.norm(x) for x in v]
        if isinstance(v, dict):
            return {k: self.norm(x) for k, x in v.items()}
        return v

    def tf_of(self, prefix: str) -> dict[str, dict]:
        return {k: v for k, v in self.tf.items() if k.startswith(prefix)}

    def test_the_module_has_the_templates_resources_and_no_others(self):
        count = lambda t: sum(1 for v in self.cfn.values() if v["Type"] == t)  # noqa: E731
        kinds = {
            "aws_sqs_queue.": count("AWS::SQS::Queue"),
            "aws_sqs_queue_policy.": count("AWS::SQS::QueuePolicy"),
            "aws_cloudwatch_event_rule.": count("AWS::Events::Rule"),
            "aws_cloudwatch_event_target.": sum(len(v["Properties"]["Targets"]) for v in self.cfn.values() if v["Type"] == "AWS::Events::Rule"),
            "aws_iam_role.": count("AWS::IAM::Role"),
            "aws_iam_role_policy.": sum(len(v["Properties"]["Policies"]) for v in self.cfn.values() if v["Type"] == "AWS::IAM::Role"),
            "aws_autoscaling_lifecycle_hook.": count("AWS::AutoScaling::LifecycleHook"),
        }
        self.assertEqual({k: len(self.tf_of(k)) for k in kinds}, kinds)
        self.assertEqual(sum(kinds.values()), len(self.tf))

    def test_rules_patterns_and_targets(self):
        for logical, (_, key) in RULES.items():
            rule = self.tf[f'aws_cloudwatch_event_rule.rule["{key}"]']
            cfn = self.cfn[logical]["Properties"]
            self.assertEqual(json.loads(rule["event_pattern"]), cfn["EventPattern"], key)
            self.assertEqual(rule["state"], cfn["State"])
            self.assertEqual(rule["description"], cfn["Description"])
            target = self.tf[f'aws_cloudwatch_event_target.queue["{key}"]']
            self.assertEqual(target["rule"], f'${{aws_cloudwatch_event_rule.rule["{key}"].name}}')
            self.assertEqual(
                self.norm([{"Id": target["target_id"], "Arn": target["arn"]}]), self.norm(cfn["Targets"])
            )

    def test_queue_dead_letter_queue_and_policy(self):
        q, cq = self.tf["aws_sqs_queue.queue"], self.cfn["Queue"]["Properties"]
        d, cd = self.tf["aws_sqs_queue.dead_letter"], self.cfn["DeadLetterQueue"]["Properties"]
        for tf, cfn in ((q, cq), (d, cd)):
            self.assertEqual(tf["message_retention_seconds"], cfn["MessageRetentionPeriod"])
            self.assertEqual(tf["sqs_managed_sse_enabled"], cfn["SqsManagedSseEnabled"])
            self.assertEqual(tf["tags"], {t["Key"]: t["Value"] for t in cfn["Tags"]})
        self.assertEqual(q["visibility_timeout_seconds"], cq["VisibilityTimeout"])
        self.assertEqual(q["receive_wait_time_seconds"], cq["ReceiveMessageWaitTimeSeconds"])
        self.assertEqual(self.norm(json.loads(q["redrive_policy"])), self.norm(cq["RedrivePolicy"]))
        self.assertGreaterEqual(json.loads(q["redrive_policy"])["maxReceiveCount"], 5)
        policy = self.tf["aws_sqs_queue_policy.queue"]
        cp = self.cfn["QueuePolicy"]["Properties"]
        self.assertEqual(self.norm([policy["queue_url"]]), self.norm(cp["Queues"]))
        tf_doc, cfn_doc = self.norm(json.loads(policy["policy"])), self.norm(cp["PolicyDocument"])
        for doc in (tf_doc, cfn_doc):  # the same rules, in any order
            doc["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"].sort()
        self.assertEqual(tf_doc, cfn_doc)
        self.assertEqual(len(cfn_doc["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]), len(RULES))

    def test_role_trust_and_policy(self):
        role, crole = self.tf["aws_iam_role.termguard"], self.cfn["Role"]["Properties"]
        self.assertEqual(self.norm(json.loads(role["assume_role_policy"])), self.norm(json.loads(crole["AssumeRolePolicyDocument"])))
        trust = json.loads(role["assume_role_policy"])["Statement"][0]
        self.assertEqual(trust["Condition"]["StringEquals"][f"{OIDC}:sub"], "system:serviceaccount:termguard:termguard")
        self.assertEqual(role["tags"], {t["Key"]: t["Value"] for t in crole["Tags"]})
        policy = self.tf["aws_iam_role_policy.termguard"]
        self.assertEqual(policy["role"], "${aws_iam_role.termguard.id}")
        (cpolicy,) = crole["Policies"]
        self.assertEqual(policy["name"], cpolicy["PolicyName"])
        self.assertEqual(self.norm(json.loads(policy["policy"])), self.norm(cpolicy["PolicyDocument"]))

    def test_one_hook_per_group_with_the_same_settings(self):
        chooks = {v["Properties"]["AutoScalingGroupName"]: v["Properties"] for v in self.cfn.values() if v["Type"] == "AWS::AutoScaling::LifecycleHook"}
        for g in GROUPS:
            h, c = self.tf[f'aws_autoscaling_lifecycle_hook.terminate["{g}"]'], chooks[g]
            self.assertEqual(
                (h["autoscaling_group_name"], h["name"], h["lifecycle_transition"], h["heartbeat_timeout"], h["default_result"]),
                (c["AutoScalingGroupName"], c["LifecycleHookName"], c["LifecycleTransition"], c["HeartbeatTimeout"], c["DefaultResult"]),
            )
            self.assertNotIn("notification_target_arn", h)
            self.assertNotIn("NotificationTargetARN", c)

    def test_defaults_are_the_templates(self):
        # Every Terraform variable with a default has the template parameter's default.
        variables = {
            "service_account_namespace": "ServiceAccountNamespace", "service_account_name": "ServiceAccountName",
            "lifecycle_hook_name": "LifecycleHookName", "heartbeat_timeout": "HeartbeatTimeout",
            "max_receive_count": "MaxReceiveCount",
        }
        params = load_template()["Parameters"]
        src = ""
        for name in sorted(os.listdir(TERRAFORM)):
            if name.endswith(".tf"):
                with open(os.path.join(TERRAFORM, name)) as f:
                    src += f.read()
        for tf, cfn in variables.items():
            block = re.search(r'variable "%s" \{(.*?)\n\}' % tf, src, re.S)
            self.assertIsNotNone(block, tf)
            default = re.search(r"^\s*default\s*=\s*(.+)$", block.group(1), re.M)
            self.assertIsNotNone(default, tf)
            self.assertEqual(json.loads(default.group(1)), params[cfn]["Default"], tf)


if __name__ == "__main__":
    unittest.main()
