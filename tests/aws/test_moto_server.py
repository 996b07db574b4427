#!/usr/bin/env python3
"""Self-check of tests/aws/moto_server.py, the project's AWS test peer.

Run: python3 tests/aws/test_moto_server.py   (plain unittest; needs moto[server] and boto3)

Starts the launcher as a subprocess on a free port (timeouts scaled by
TERMGUARD_MOTO_TIME_SCALE=0.1, so a 30 s heartbeat timeout lasts 3 s) and drives it with boto3
the way termguard and its tests will: Auto Scaling group over three zones, termination hook on an
SQS queue, scale-in / TerminateInstanceInAutoScalingGroup / SimulateAZRebalance, the lifecycle
message on the queue, heartbeats, CompleteLifecycleAction, timeouts, scaling-activity causes.
A second launcher checks the global timeout and the direct (non-EventBridge) message shape; a
third one the fault injection (/_termguard/faults): fail_next, seeded error_rate, latency, AWS's
error shapes for Auto Scaling (Query/XML) and SQS (JSON and Query), and that a faulted call never
reached moto; a fourth one the SQS deletion record (/_termguard/sqs-deletions).
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "moto_server.py")
TIME_SCALE = 0.1  # AWS seconds -> real seconds in these tests
T = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"  # the time format inside Cause texts
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class Peer:
    """One launcher process and boto3 clients pointed at it."""

    def __init__(self, attempts: int | None = None, **env: str):
        self.attempts = attempts  # None: the clients retry once (botocore legacy mode, max_attempts 1)
        self.log = tempfile.NamedTemporaryFile(prefix="moto_server-", suffix=".log", delete=False)
        full_env = dict(os.environ, TERMGUARD_MOTO_TIME_SCALE=str(TIME_SCALE), **env)
        self.proc = subprocess.Popen(
            [sys.executable, LAUNCHER, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=full_env,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        m = re.fullmatch(r"READY (http://127\.0\.0\.1:(\d+))\n", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"launcher did not print READY (got {line!r}); log:\n{self.log_text()}")
        self.url = m.group(1)
        self.asg = self.client("autoscaling")
        self.ec2 = self.client("ec2")
        self.sqs = self.client("sqs")
        self.events = self.client("events")

    def client(self, service: str, attempts: int | None = None):
        """A boto3 client. attempts: botocore's standard retry mode with that many attempts in all
        (1: no retry); without it the peer's default (legacy mode, max_attempts 1 = one retry)."""
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        attempts = attempts if attempts is not None else self.attempts
        retries = {"max_attempts": 1} if attempts is None else {"mode": "standard", "total_max_attempts": attempts}
        return session.client(service, endpoint_url=self.url, config=BotoConfig(retries=retries))

    def log_text(self) -> str:
        with open(self.log.name) as f:
            return f.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()

    # test-only endpoints ---------------------------------------------------------------------

    def actions(self, **filters: str) -> list[dict]:
        q = urllib.parse.urlencode(filters)
        with urllib.request.urlopen(f"{self.url}/_termguard/lifecycle-actions?{q}", timeout=10) as r:
            return json.load(r)["lifecycle_actions"]

    def action(self, token: str) -> dict:
        (row,) = self.actions(token=token)
        return row

    def faults(self, method: str = "GET", config: object = None) -> tuple[int, dict]:
        """/_termguard/faults: GET (config and counters), PUT (replace the config), DELETE."""
        data = None if method in ("GET", "DELETE") else json.dumps(config).encode()
        req = urllib.request.Request(
            f"{self.url}/_termguard/faults", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def put_faults(self, config: dict) -> dict:
        status, body = self.faults("PUT", config)
        assert status == 200, body
        return body

    def deletions(self, method: str = "GET", **filters: str) -> list[dict]:
        """/_termguard/sqs-deletions: GET (the record, optionally filtered by queue=NAME) or DELETE."""
        q = urllib.parse.urlencode(filters)
        req = urllib.request.Request(f"{self.url}/_termguard/sqs-deletions?{q}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.load(r)
        assert set(body) == {"deletions"}, body
        return body["deletions"]

    def raw(self, data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """A POST to / as an SDK would send it: (status, headers with lower-case names, body)."""
        req = urllib.request.Request(self.url + "/", data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def query(self, params: dict[str, str]) -> tuple[int, str]:
        """An unsigned Auto Scaling Query request (as curl or a plain HTTP client would send it)."""
        data = urllib.parse.urlencode(dict(params, Version="2011-01-01")).encode()
        req = urllib.request.Request(
            self.url + "/", data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    # fixtures ------------------------------------------------------------------------------------

    def launch_template(self) -> str:
        name = "termguard-workers"
        try:
            self.ec2.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"},
            )
        except ClientError as e:
            if "AlreadyExists" not in e.response["Error"]["Code"]:
                raise
        return name

    def queue(self, name: str) -> tuple[str, str]:
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def group(self, name: str, size: int, zones: list[str] = ZONES) -> None:
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": self.launch_template(), "Version": "$Latest"},
            MinSize=0,
            MaxSize=20,
            DesiredCapacity=size,
            AvailabilityZones=zones,
        )

    def hook(self, group: str, queue_arn: str | None, hook: str = "termguard-terminate", **kw) -> None:
        args = dict(
            AutoScalingGroupName=group,
            LifecycleHookName=hook,
            LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
            HeartbeatTimeout=30,
        )
        if queue_arn:
            args.update(NotificationTargetARN=queue_arn, RoleARN="arn:aws:iam::123456789012:role/asg-to-sqs")
        args.update(kw)
        self.asg.put_lifecycle_hook(**args)

    # observations --------------------------------------------------------------------------------

    def members(self, group: str) -> dict[str, dict]:
        (g,) = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
        return {i["InstanceId"]: i for i in g["Instances"]}

    def lifecycle_state(self, instance_id: str) -> str | None:
        found = self.asg.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"]
        return found[0]["LifecycleState"] if found else None

    def ec2_state(self, instance_id: str) -> str:
        res = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return res[0]["Instances"][0]["State"]["Name"]

    def activity_for(self, group: str, instance_id: str, verb: str = "Terminating") -> dict:
        acts = self.asg.describe_scaling_activities(AutoScalingGroupName=group)["Activities"]
        (act,) = [a for a in acts if a["Description"] == f"{verb} EC2 instance: {instance_id}"] or [None]
        assert act is not None, f"no {verb} activity for {instance_id} in {acts}"
        return act

    def receive(self, queue_url: str, timeout: float = 10) -> dict:
        """The next message body on the queue (deleted once read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MaxNumberOfMessages=1)
            for m in out.get("Messages", []):
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
                return json.loads(m["Body"])
        raise AssertionError(f"no message on {queue_url} within {timeout}s")

    def assert_queue_empty(self, queue_url: str) -> None:
        out = self.sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0, MaxNumberOfMessages=10)
        assert not out.get("Messages"), out.get("Messages")


def wait_until(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def waiting_instances(peer: Peer, group: str) -> list[str]:
    return [i for i, m in peer.members(group).items() if m["LifecycleState"] == "Terminating:Wait"]


class MotoServerTest(unittest.TestCase):
    peer: Peer

    @classmethod
    def setUpClass(cls) -> None:
        # 10 s in Terminating:Proceed = 1 s real: long enough to observe, short enough to wait for.
        cls.peer = Peer(TERMGUARD_MOTO_PROCEED_SECONDS="10")

    @classmethod
    def tearDownClass(cls) -> None:
        rc = cls.peer.stop()
        if rc != 0:
            print(cls.peer.log_text(), file=sys.stderr)
        assert rc == 0, f"launcher exited {rc} on SIGTERM"

    def assertValidationError(self, err: ClientError, message: str) -> None:
        self.assertEqual(err.response["Error"]["Code"], "ValidationError")
        self.assertEqual(err.response["Error"]["Message"], message)
        self.assertEqual(err.response["ResponseMetadata"]["HTTPStatusCode"], 400)

    # -------------------------------------------------------------------------------------------

    def test_group_spreads_over_zones_and_records_launches(self):
        p = self.peer
        p.group("balanced", 6)
        members = p.members("balanced")
        self.assertEqual(len(members), 6)
        per_zone = {z: sum(1 for m in members.values() if m["AvailabilityZone"] == z) for z in ZONES}
        self.assertEqual(per_zone, {z: 2 for z in ZONES})
        for iid in members:
            act = p.activity_for("balanced", iid, verb="Launching a new")
            self.assertEqual(act["StatusCode"], "Successful")
            self.assertRegex(
                act["Cause"],
                rf"^At {T} a user request created an AutoScalingGroup changing the desired capacity from 0 to 6\.  "
                rf"At {T} an instance was started in response to a difference between desired and actual capacity, "
                r"increasing the capacity from 0 to 6\.$",
            )
            self.assertRegex(act["Details"], r'^\{"Subnet ID":"subnet-[0-9a-f]+","Availability Zone":"us-east-1[abc]"\}$')

    def test_set_queue_attributes_changes_only_what_it_is_given(self):
        p = self.peer
        url, arn = p.queue("policy-q")
        _, dlq = p.queue("policy-dlq")
        policy = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": arn}]})
        p.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
        redrive = json.dumps({"deadLetterTargetArn": dlq, "maxReceiveCount": "10"})
        p.sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": redrive})
        attrs = p.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy", "RedrivePolicy"])["Attributes"]
        self.assertEqual(json.loads(attrs["Policy"]), json.loads(policy))
        self.assertEqual(json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"], dlq)
        # Setting it to "" removes it, as SQS does.
        p.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": ""})
        attrs = p.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
        self.assertFalse(attrs.get("Policy"))

    def test_groups_keep_max_instance_lifetime_and_instance_lifecycle_policy(self):
        p = self.peer
        p.group("kept", 0)
        p.asg.update_auto_scaling_group(
            AutoScalingGroupName="kept",
            MaxInstanceLifetime=604800,
            InstanceLifecyclePolicy={"RetentionTriggers": {"TerminateHookAbandon": "retain"}},
            CapacityRebalance=True,
        )
        (g,) = p.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["kept"])["AutoScalingGroups"]
        self.assertEqual(g["MaxInstanceLifetime"], 604800)
        self.assertTrue(g["CapacityRebalance"])
        self.assertEqual(g["InstanceLifecyclePolicy"], {"RetentionTriggers": {"TerminateHookAbandon": "retain"}})
        # An update that does not name them keeps them; a lifetime of 0 clears it.
        p.asg.update_auto_scaling_group(AutoScalingGroupName="kept", MaxSize=10)
        (g,) = p.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["kept"])["AutoScalingGroups"]
        self.assertEqual(g["MaxInstanceLifetime"], 604800)
        p.asg.update_auto_scaling_group(AutoScalingGroupName="kept", MaxInstanceLifetime=0)
        (g,) = p.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["kept"])["AutoScalingGroups"]
        self.assertNotIn("MaxInstanceLifetime", g)
        self.assertIn("InstanceLifecyclePolicy", g)

    def test_put_lifecycle_hook_keeps_what_was_sent(self):
        p = self.peer
        p.group("hooked", 1)
        _, arn = p.queue("hooked-q")
        p.hook("hooked", arn, NotificationMetadata='{"cluster":"test"}', DefaultResult="CONTINUE")
        (h,) = p.asg.describe_lifecycle_hooks(AutoScalingGroupName="hooked")["LifecycleHooks"]
        self.assertEqual(h["NotificationTargetARN"], arn)
        self.assertEqual(h["RoleARN"], "arn:aws:iam::123456789012:role/asg-to-sqs")
        self.assertEqual(h["HeartbeatTimeout"], 30)
        self.assertEqual(h["GlobalTimeout"], 3000)  # min(172800, 100 x 30)
        self.assertEqual(h["DefaultResult"], "CONTINUE")
        self.assertEqual(h["NotificationMetadata"], '{"cluster":"test"}')
        p.hook("hooked", None, hook="long", HeartbeatTimeout=7200)
        (long,) = p.asg.describe_lifecycle_hooks(AutoScalingGroupName="hooked", LifecycleHookNames=["long"])[
            "LifecycleHooks"
        ]
        self.assertEqual(long["GlobalTimeout"], 172800)
        self.assertEqual(long["DefaultResult"], "ABANDON")
        self.assertNotIn("NotificationTargetARN", long)
        missing = "arn:aws:sqs:us-east-1:123456789012:no-such-queue"
        with self.assertRaises(ClientError) as cm:
            p.hook("hooked", missing, hook="broken")
        self.assertValidationError(
            cm.exception,
            f"Unable to publish test message to notification target {missing} using IAM role "
            "arn:aws:iam::123456789012:role/asg-to-sqs. Please check your target and role configuration and "
            "try to put lifecycle hook again.",
        )
        with self.assertRaises(ClientError) as cm:
            p.hook("hooked", None, hook="too-short", HeartbeatTimeout=10)
        self.assertEqual(cm.exception.response["Error"]["Code"], "ValidationError")

    def test_scale_in_waits_for_the_hook_then_continue_terminates(self):
        p = self.peer
        queue_url, queue_arn = p.queue("scale-in-q")
        p.group("scale-in", 6)
        p.hook("scale-in", queue_arn, NotificationMetadata='{"cluster":"prod-eu"}')
        before = set(p.members("scale-in"))

        p.asg.set_desired_capacity(AutoScalingGroupName="scale-in", DesiredCapacity=5)
        (iid,) = waiting_instances(p, "scale-in")
        self.assertEqual(p.lifecycle_state(iid), "Terminating:Wait")
        self.assertEqual(p.ec2_state(iid), "running")
        self.assertEqual(set(p.members("scale-in")), before)  # still listed, not replaced

        msg = p.receive(queue_url)
        self.assertEqual(msg["detail-type"], "EC2 Instance-terminate Lifecycle Action")
        self.assertEqual(msg["source"], "aws.autoscaling")
        self.assertEqual(msg["version"], "0")
        self.assertEqual(msg["account"], "123456789012")
        self.assertEqual(msg["region"], "us-east-1")
        self.assertRegex(msg["time"], rf"^{T}$")
        self.assertRegex(msg["resources"][0], r"^arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:.*:autoScalingGroupName/scale-in$")
        detail = msg["detail"]
        token = detail["LifecycleActionToken"]
        self.assertRegex(token, rf"^{UUID_RE}$")
        self.assertEqual(
            detail,
            {
                "LifecycleActionToken": token,
                "AutoScalingGroupName": "scale-in",
                "LifecycleHookName": "termguard-terminate",
                "EC2InstanceId": iid,
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                "NotificationMetadata": '{"cluster":"prod-eu"}',
                "Origin": "AutoScalingGroup",
                "Destination": "EC2",
            },
        )

        act = p.activity_for("scale-in", iid)
        self.assertEqual(act["StatusCode"], "MidLifecycleAction")
        self.assertNotIn("EndTime", act)
        self.assertRegex(
            act["Cause"],
            rf"^At {T} a user request explicitly set group desired capacity changing the desired capacity from 6 to 5\.  "
            rf"At {T} an instance was taken out of service in response to a difference between desired and actual "
            rf"capacity, shrinking the capacity from 6 to 5\.  At {T} instance {iid} was selected for termination\.$",
        )
        # newest first, in-progress first
        first = p.asg.describe_scaling_activities(AutoScalingGroupName="scale-in", MaxRecords=1)["Activities"][0]
        self.assertEqual(first["ActivityId"], act["ActivityId"])

        p.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName="scale-in", LifecycleHookName="termguard-terminate", LifecycleActionToken=token
        )
        p.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName="scale-in", LifecycleHookName="termguard-terminate", InstanceId=iid
        )
        row = p.action(token)
        self.assertEqual((row["state"], row["heartbeat_count"], row["instance_id"]), ("waiting", 2, iid))
        self.assertTrue(row["notification"]["sent"])

        p.asg.complete_lifecycle_action(
            AutoScalingGroupName="scale-in",
            LifecycleHookName="termguard-terminate",
            LifecycleActionToken=token,
            InstanceId=iid,
            LifecycleActionResult="CONTINUE",
        )
        row = p.action(token)
        self.assertEqual((row["state"], row["result"], row["ended_by"]), ("completed", "CONTINUE", "CompleteLifecycleAction"))
        self.assertGreaterEqual(row["ended_at_ms"], row["last_heartbeat_at_ms"])
        self.assertEqual(p.lifecycle_state(iid), "Terminating:Proceed")

        wait_until(lambda: p.lifecycle_state(iid) is None, 5, "the instance to leave the group")
        self.assertEqual(p.ec2_state(iid), "terminated")
        self.assertEqual(len(p.members("scale-in")), 5)
        act = p.activity_for("scale-in", iid)
        self.assertEqual((act["StatusCode"], act["Progress"]), ("Successful", 100))
        self.assertIn("EndTime", act)

        # the action is over: AWS's ValidationError, by token and by instance id
        with self.assertRaises(ClientError) as cm:
            p.asg.complete_lifecycle_action(
                AutoScalingGroupName="scale-in",
                LifecycleHookName="termguard-terminate",
                LifecycleActionToken=token,
                LifecycleActionResult="CONTINUE",
            )
        self.assertValidationError(cm.exception, f"No active Lifecycle Action found with token {token}")
        with self.assertRaises(ClientError) as cm:
            p.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName="scale-in", LifecycleHookName="termguard-terminate", InstanceId=iid
            )
        self.assertValidationError(cm.exception, f"No active Lifecycle Action found with instance ID {iid}")
        status, body = p.query(
            {
                "Action": "CompleteLifecycleAction",
                "AutoScalingGroupName": "scale-in",
                "LifecycleHookName": "termguard-terminate",
                "LifecycleActionToken": token,
                "LifecycleActionResult": "CONTINUE",
            }
        )
        self.assertEqual(status, 400)
        self.assertRegex(
            body,
            r'^<ErrorResponse xmlns="http://autoscaling\.amazonaws\.com/doc/2011-01-01/"><Error><Type>Sender</Type>'
            rf"<Code>ValidationError</Code><Message>No active Lifecycle Action found with token {token}</Message>"
            r"</Error><RequestId>[^<]+</RequestId></ErrorResponse>$",
        )
        p.assert_queue_empty(queue_url)

    def test_unknown_token_and_success_body(self):
        p = self.peer
        token = str(uuid.uuid4())
        with self.assertRaises(ClientError) as cm:
            p.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName="nope", LifecycleHookName="h", LifecycleActionToken=token
            )
        self.assertValidationError(cm.exception, f"No active Lifecycle Action found with token {token}")
        # a successful call's body, AWS's shape (empty result element)
        queue_url, queue_arn = p.queue("body-q")
        p.group("body", 2)
        p.hook("body", queue_arn)
        p.asg.set_desired_capacity(AutoScalingGroupName="body", DesiredCapacity=1)
        token = p.receive(queue_url)["detail"]["LifecycleActionToken"]
        params = {"AutoScalingGroupName": "body", "LifecycleHookName": "termguard-terminate", "LifecycleActionToken": token}
        status, body = p.query(dict(params, Action="RecordLifecycleActionHeartbeat"))
        self.assertEqual(status, 200, body)
        self.assertRegex(
            body,
            r'^<RecordLifecycleActionHeartbeatResponse xmlns="http://autoscaling\.amazonaws\.com/doc/2011-01-01/">'
            r"<RecordLifecycleActionHeartbeatResult/><ResponseMetadata><RequestId>[^<]+</RequestId></ResponseMetadata>"
            r"</RecordLifecycleActionHeartbeatResponse>$",
        )
        status, body = p.query(dict(params, Action="CompleteLifecycleAction", LifecycleActionResult="CONTINUE"))
        self.assertEqual(status, 200, body)
        self.assertIn("<CompleteLifecycleActionResult/>", body)

    def test_terminate_instance_in_group_user_request(self):
        p = self.peer
        queue_url, queue_arn = p.queue("user-q")
        p.group("user", 6)
        p.hook("user", queue_arn)
        victim = sorted(p.members("user"))[0]

        out = p.asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
        act = out["Activity"]
        self.assertEqual(act["Description"], f"Terminating EC2 instance: {victim}")
        self.assertEqual(act["StatusCode"], "MidLifecycleAction")
        self.assertRegex(
            act["Cause"],
            rf"^At {T} instance {victim} was taken out of service in response to a user request, "
            r"shrinking the capacity from 6 to 5\.$",
        )
        self.assertEqual(p.lifecycle_state(victim), "Terminating:Wait")
        msg = p.receive(queue_url)
        self.assertEqual(msg["detail"]["EC2InstanceId"], victim)
        (g,) = p.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["user"])["AutoScalingGroups"]
        self.assertEqual(g["DesiredCapacity"], 5)

        # complete by instance id alone, with ABANDON: a terminating instance is terminated either way
        p.asg.complete_lifecycle_action(
            AutoScalingGroupName="user", LifecycleHookName="termguard-terminate", InstanceId=victim,
            LifecycleActionResult="ABANDON",
        )
        row = p.action(msg["detail"]["LifecycleActionToken"])
        self.assertEqual((row["state"], row["result"]), ("completed", "ABANDON"))
        wait_until(lambda: p.ec2_state(victim) == "terminated", 5, "EC2 termination")
        self.assertIsNone(p.lifecycle_state(victim))

        # without decrementing: a replacement is launched at once; the cause has no capacity clause
        second = sorted(i for i, m in p.members("user").items() if m["LifecycleState"] == "InService")[0]
        act = p.asg.terminate_instance_in_auto_scaling_group(InstanceId=second, ShouldDecrementDesiredCapacity=False)[
            "Activity"
        ]
        self.assertRegex(act["Cause"], rf"^At {T} instance {second} was taken out of service in response to a user request\.$")
        in_service = [i for i, m in p.members("user").items() if m["LifecycleState"] == "InService"]
        self.assertEqual(len(in_service), 5)
        self.assertEqual(p.receive(queue_url)["detail"]["EC2InstanceId"], second)

        with self.assertRaises(ClientError) as cm:
            p.asg.terminate_instance_in_auto_scaling_group(InstanceId="i-00000000000000000", ShouldDecrementDesiredCapacity=True)
        self.assertValidationError(
            cm.exception, "Instance Id not found - No managed instance found for instance ID i-00000000000000000"
        )

    def test_az_rebalance(self):
        p = self.peer
        queue_url, queue_arn = p.queue("rebalance-q")
        p.group("rebalance", 5)  # 2 / 2 / 1
        p.hook("rebalance", queue_arn)
        counts = {z: sum(1 for m in p.members("rebalance").values() if m["AvailabilityZone"] == z) for z in ZONES}
        self.assertEqual(counts, {"us-east-1a": 2, "us-east-1b": 2, "us-east-1c": 1})

        status, body = p.query({"Action": "SimulateAZRebalance", "AutoScalingGroupName": "rebalance"})
        self.assertEqual(status, 200, body)
        victim = re.search(r"<TerminatingInstanceId>(i-[0-9a-f]+)</TerminatingInstanceId>", body).group(1)
        launched = re.search(r"<LaunchedInstanceId>(i-[0-9a-f]+)</LaunchedInstanceId>", body).group(1)
        members = p.members("rebalance")
        self.assertEqual(members[victim]["AvailabilityZone"], "us-east-1a")  # a zone with the most
        self.assertEqual(members[launched]["AvailabilityZone"], "us-east-1c")  # the zone with the fewest
        self.assertEqual(members[victim]["LifecycleState"], "Terminating:Wait")

        act = p.activity_for("rebalance", victim)
        self.assertEqual(act["StatusCode"], "MidLifecycleAction")
        self.assertRegex(
            act["Cause"],
            rf"^At {T} instances were launched to balance instances in zones us-east-1c with other zones resulting "
            rf"in more than desired number of instances in the group\.  At {T} an instance was taken out of service "
            rf"in response to a difference between desired and actual capacity, shrinking the capacity from 6 to 5\.  "
            rf"At {T} instance {victim} was selected for termination\.$",
        )
        launch = p.activity_for("rebalance", launched, verb="Launching a new")
        self.assertRegex(
            launch["Cause"],
            rf"^At {T} availability zones us-east-1a us-east-1b us-east-1c had 2 2 1 instances respectively\. "
            r"An instance was launched to aid in balancing the group's zones\.$",
        )
        msg = p.receive(queue_url)
        self.assertEqual(msg["detail"]["EC2InstanceId"], victim)
        p.asg.complete_lifecycle_action(
            AutoScalingGroupName="rebalance", LifecycleHookName="termguard-terminate",
            LifecycleActionToken=msg["detail"]["LifecycleActionToken"], LifecycleActionResult="CONTINUE",
        )
        wait_until(lambda: p.lifecycle_state(victim) is None, 5, "rebalanced instance to go")
        counts = {z: sum(1 for m in p.members("rebalance").values() if m["AvailabilityZone"] == z) for z in ZONES}
        self.assertEqual(counts, {"us-east-1a": 1, "us-east-1b": 2, "us-east-1c": 2})

        # a named instance; and nothing happens while AZRebalance is suspended
        named = next(i for i, m in p.members("rebalance").items() if m["AvailabilityZone"] == "us-east-1b")
        status, body = p.query({"Action": "SimulateAZRebalance", "AutoScalingGroupName": "rebalance", "InstanceId": named})
        self.assertEqual(status, 200, body)
        self.assertIn(f"<TerminatingInstanceId>{named}</TerminatingInstanceId>", body)
        self.assertEqual(p.receive(queue_url)["detail"]["EC2InstanceId"], named)
        p.asg.suspend_processes(AutoScalingGroupName="rebalance", ScalingProcesses=["AZRebalance"])
        status, body = p.query({"Action": "SimulateAZRebalance", "AutoScalingGroupName": "rebalance"})
        self.assertEqual(status, 400, body)
        self.assertIn("<Code>ValidationError</Code>", body)

    def test_heartbeat_timeout_applies_default_result(self):
        p = self.peer
        queue_url, queue_arn = p.queue("timeout-q")
        p.group("timeout", 3)
        p.hook("timeout", queue_arn, DefaultResult="CONTINUE")  # 30 s = 3 s real
        p.asg.set_desired_capacity(AutoScalingGroupName="timeout", DesiredCapacity=2)
        msg = p.receive(queue_url)
        token, iid = msg["detail"]["LifecycleActionToken"], msg["detail"]["EC2InstanceId"]
        started = p.action(token)["started_at_ms"] / 1000

        time.sleep(max(0.0, started + 1.5 - time.time()))
        p.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName="timeout", LifecycleHookName="termguard-terminate", LifecycleActionToken=token
        )
        time.sleep(max(0.0, started + 3.6 - time.time()))  # past the first 30 s, inside the extended one
        self.assertEqual(p.action(token)["state"], "waiting")
        self.assertEqual(p.lifecycle_state(iid), "Terminating:Wait")

        row = wait_until(lambda: (r := p.action(token))["state"] != "waiting" and r, 5, "the heartbeat timeout")
        self.assertEqual((row["state"], row["result"], row["ended_by"]), ("expired", "CONTINUE", "HeartbeatTimeout"))
        waited = (row["ended_at_ms"] - row["last_heartbeat_at_ms"]) / 1000
        self.assertAlmostEqual(waited, 30 * TIME_SCALE, delta=0.5)
        wait_until(lambda: p.lifecycle_state(iid) is None, 5, "the expired instance to go")
        self.assertEqual(p.ec2_state(iid), "terminated")
        with self.assertRaises(ClientError) as cm:
            p.asg.complete_lifecycle_action(
                AutoScalingGroupName="timeout", LifecycleHookName="termguard-terminate",
                LifecycleActionToken=token, LifecycleActionResult="CONTINUE",
            )
        self.assertValidationError(cm.exception, f"No active Lifecycle Action found with token {token}")

    def test_default_abandon_without_heartbeat(self):
        p = self.peer
        queue_url, queue_arn = p.queue("abandon-q")
        p.group("abandon", 2)
        p.hook("abandon", queue_arn)  # DefaultResult defaults to ABANDON
        p.asg.set_desired_capacity(AutoScalingGroupName="abandon", DesiredCapacity=1)
        token = p.receive(queue_url)["detail"]["LifecycleActionToken"]
        row = wait_until(lambda: (r := p.action(token))["state"] != "waiting" and r, 6, "the heartbeat timeout")
        self.assertEqual((row["state"], row["result"], row["heartbeat_count"]), ("expired", "ABANDON", 0))
        self.assertAlmostEqual((row["ended_at_ms"] - row["started_at_ms"]) / 1000, 3.0, delta=0.5)
        wait_until(lambda: p.ec2_state(row["instance_id"]) == "terminated", 5, "termination after ABANDON")

    def test_abandon_ends_the_other_hooks(self):
        p = self.peer
        queue_url, queue_arn = p.queue("two-hooks-q")
        p.group("two-hooks", 2)
        p.hook("two-hooks", queue_arn, hook="first")
        p.hook("two-hooks", queue_arn, hook="second")
        p.asg.set_desired_capacity(AutoScalingGroupName="two-hooks", DesiredCapacity=1)
        msgs = [p.receive(queue_url), p.receive(queue_url)]
        self.assertEqual(sorted(m["detail"]["LifecycleHookName"] for m in msgs), ["first", "second"])
        tokens = {m["detail"]["LifecycleHookName"]: m["detail"]["LifecycleActionToken"] for m in msgs}
        self.assertNotEqual(tokens["first"], tokens["second"])
        p.asg.complete_lifecycle_action(
            AutoScalingGroupName="two-hooks", LifecycleHookName="first",
            LifecycleActionToken=tokens["first"], LifecycleActionResult="ABANDON",
        )
        self.assertEqual(p.action(tokens["second"])["state"], "cancelled")
        iid = msgs[0]["detail"]["EC2InstanceId"]
        wait_until(lambda: p.lifecycle_state(iid) is None, 5, "termination after ABANDON")

    def test_scale_out_waits_for_the_launch_hook(self):
        p = self.peer
        queue_url, queue_arn = p.queue("launch-q")
        p.group("launch", 1)
        p.hook(
            "launch", queue_arn, hook="termguard-launch", LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING",
            NotificationMetadata='{"cluster":"prod-eu"}', DefaultResult="ABANDON",
        )
        (first,) = p.members("launch")
        self.assertEqual(p.lifecycle_state(first), "InService")  # launched before the hook: untouched

        # scale-out by SetDesiredCapacity: Pending:Wait, one message, not launched twice
        p.asg.set_desired_capacity(AutoScalingGroupName="launch", DesiredCapacity=2)
        (new,) = set(p.members("launch")) - {first}
        self.assertEqual(p.lifecycle_state(new), "Pending:Wait")
        msg = p.receive(queue_url)
        self.assertEqual(msg["detail-type"], "EC2 Instance-launch Lifecycle Action")
        self.assertEqual(msg["source"], "aws.autoscaling")
        self.assertRegex(msg["resources"][0], r"autoScalingGroupName/launch$")
        token = msg["detail"]["LifecycleActionToken"]
        self.assertEqual(
            msg["detail"],
            {
                "LifecycleActionToken": token,
                "AutoScalingGroupName": "launch",
                "LifecycleHookName": "termguard-launch",
                "EC2InstanceId": new,
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
                "NotificationMetadata": '{"cluster":"prod-eu"}',
                "Origin": "EC2",
                "Destination": "AutoScalingGroup",
            },
        )
        act = p.activity_for("launch", new, verb="Launching a new")
        self.assertEqual(act["StatusCode"], "MidLifecycleAction")
        p.asg.set_desired_capacity(AutoScalingGroupName="launch", DesiredCapacity=2)  # the waiting one counts
        self.assertEqual(len(p.members("launch")), 2)
        row = p.action(token)
        self.assertEqual(
            (row["transition"], row["state"], row["instance_lifecycle_state"]),
            ("autoscaling:EC2_INSTANCE_LAUNCHING", "waiting", "Pending:Wait"),
        )

        # a heartbeat extends it past the 3 s (scaled) heartbeat timeout
        time.sleep(2)
        p.asg.record_lifecycle_action_heartbeat(
            AutoScalingGroupName="launch", LifecycleHookName="termguard-launch", LifecycleActionToken=token
        )
        time.sleep(2)
        self.assertEqual(p.action(token)["state"], "waiting")
        p.asg.complete_lifecycle_action(
            AutoScalingGroupName="launch", LifecycleHookName="termguard-launch",
            LifecycleActionToken=token, LifecycleActionResult="CONTINUE",
        )
        row = p.action(token)
        self.assertEqual((row["state"], row["result"], row["heartbeat_count"]), ("completed", "CONTINUE", 1))
        self.assertEqual(p.lifecycle_state(new), "Pending:Proceed")
        wait_until(lambda: p.lifecycle_state(new) == "InService", 5, "InService after CONTINUE")
        self.assertEqual(p.ec2_state(new), "running")
        self.assertEqual(p.activity_for("launch", new, verb="Launching a new")["StatusCode"], "Successful")
        with self.assertRaises(ClientError) as cm:
            p.asg.complete_lifecycle_action(
                AutoScalingGroupName="launch", LifecycleHookName="termguard-launch",
                LifecycleActionToken=token, LifecycleActionResult="CONTINUE",
            )
        self.assertValidationError(cm.exception, f"No active Lifecycle Action found with token {token}")

        # scale-out by UpdateAutoScalingGroup, then ABANDON: terminated and replaced (in Pending:Wait again)
        p.asg.update_auto_scaling_group(AutoScalingGroupName="launch", DesiredCapacity=3)
        msg = p.receive(queue_url)
        abandoned, token = msg["detail"]["EC2InstanceId"], msg["detail"]["LifecycleActionToken"]
        self.assertEqual(p.lifecycle_state(abandoned), "Pending:Wait")
        p.asg.complete_lifecycle_action(
            AutoScalingGroupName="launch", LifecycleHookName="termguard-launch",
            InstanceId=abandoned, LifecycleActionResult="ABANDON",
        )
        self.assertEqual(p.action(token)["result"], "ABANDON")
        self.assertIsNone(p.lifecycle_state(abandoned))
        self.assertEqual(p.ec2_state(abandoned), "terminated")
        self.assertEqual(p.activity_for("launch", abandoned, verb="Launching a new")["StatusCode"], "Cancelled")
        msg = p.receive(queue_url)
        replacement, token = msg["detail"]["EC2InstanceId"], msg["detail"]["LifecycleActionToken"]
        self.assertNotIn(replacement, (first, new, abandoned))
        self.assertEqual(p.lifecycle_state(replacement), "Pending:Wait")
        self.assertEqual(len(p.members("launch")), 3)

        # no heartbeat: the heartbeat timeout applies DefaultResult (ABANDON) -> terminated
        row = wait_until(lambda: (r := p.action(token))["state"] != "waiting" and r, 6, "the heartbeat timeout")
        self.assertEqual((row["state"], row["result"], row["ended_by"]), ("expired", "ABANDON", "HeartbeatTimeout"))
        self.assertEqual(p.ec2_state(replacement), "terminated")
        p.asg.delete_auto_scaling_group(AutoScalingGroupName="launch", ForceDelete=True)  # stop the replacements
        with self.assertRaises(ClientError) as cm:
            p.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName="launch", LifecycleHookName="termguard-launch", LifecycleActionToken=token
            )
        self.assertValidationError(cm.exception, f"No active Lifecycle Action found with token {token}")

    def test_scaling_activity_paging(self):
        p = self.peer
        p.group("paging", 5)
        p.asg.set_desired_capacity(AutoScalingGroupName="paging", DesiredCapacity=2)  # no hook: at once
        seen, token = [], None
        while True:
            kw = {"NextToken": token} if token else {}
            page = p.asg.describe_scaling_activities(AutoScalingGroupName="paging", MaxRecords=2, **kw)
            self.assertLessEqual(len(page["Activities"]), 2)
            seen.extend(page["Activities"])
            token = page.get("NextToken")
            if not token:
                break
        self.assertEqual(len(seen), 8)
        self.assertEqual(len({a["ActivityId"] for a in seen}), 8)
        self.assertTrue(all(a["StatusCode"] == "Successful" for a in seen))
        self.assertTrue(all(a["Description"].startswith("Terminating") for a in seen[:3]))  # newest first
        starts = [a["StartTime"] for a in seen]
        self.assertEqual(starts, sorted(starts, reverse=True))
        self.assertRegex(seen[0]["Cause"], r"shrinking the capacity from 5 to 2\.  At .* was selected for termination\.$")
        other = p.asg.describe_scaling_activities(AutoScalingGroupName="no-such-group")["Activities"]
        self.assertEqual(other, [])

    def test_eventbridge_rule_routes_the_event(self):
        p = self.peer
        rule_queue_url, rule_queue_arn = p.queue("rule-q")
        p.events.put_rule(
            Name="asg-terminate",
            EventPattern=json.dumps(
                {"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance-terminate Lifecycle Action"]}
            ),
        )
        p.events.put_targets(Rule="asg-terminate", Targets=[{"Id": "q", "Arn": rule_queue_arn}])
        p.group("via-rule", 2)
        p.hook("via-rule", None)  # EventBridge only, as the console creates it
        p.asg.set_desired_capacity(AutoScalingGroupName="via-rule", DesiredCapacity=1)
        msg = p.receive(rule_queue_url)
        self.assertEqual(msg["detail-type"], "EC2 Instance-terminate Lifecycle Action")
        token = msg["detail"]["LifecycleActionToken"]
        row = p.action(token)
        self.assertIsNone(row["notification"]["target"])
        p.events.remove_targets(Rule="asg-terminate", Ids=["q"])
        p.events.delete_rule(Name="asg-terminate")


    def test_cloudformation_queue_policy_and_lifecycle_hook(self):
        # The two resource types moto's CloudFormation lacks, added by the launcher.
        p = self.peer
        cfn = p.client("cloudformation")
        p.group("cfn-group", 1)
        template = {
            "Resources": {
                "Q": {"Type": "AWS::SQS::Queue"},
                "P": {"Type": "AWS::SQS::QueuePolicy", "Properties": {
                    "Queues": [{"Ref": "Q"}],
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                        "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                        "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["Q", "Arn"]}}]}}},
                "H": {"Type": "AWS::AutoScaling::LifecycleHook", "Properties": {
                    "AutoScalingGroupName": "cfn-group", "LifecycleHookName": "cfn-hook",
                    "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                    "HeartbeatTimeout": "120", "DefaultResult": "CONTINUE"}},
            },
            "Outputs": {"Url": {"Value": {"Ref": "Q"}}, "Hook": {"Value": {"Ref": "H"}}},
        }
        cfn.create_stack(StackName="cfn-self-test", TemplateBody=json.dumps(template))
        stack = cfn.describe_stacks(StackName="cfn-self-test")["Stacks"][0]
        self.assertEqual(stack["StackStatus"], "CREATE_COMPLETE")
        out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        self.assertEqual(out["Hook"], "cfn-hook")
        policy = json.loads(p.sqs.get_queue_attributes(QueueUrl=out["Url"], AttributeNames=["Policy"])["Attributes"]["Policy"])
        self.assertEqual(policy["Statement"][0]["Principal"], {"Service": "events.amazonaws.com"})
        self.assertTrue(policy["Statement"][0]["Resource"].startswith("arn:aws:sqs:us-east-1:123456789012:cfn-self-test-Q-"))
        hooks = p.asg.describe_lifecycle_hooks(AutoScalingGroupName="cfn-group")["LifecycleHooks"]
        self.assertEqual(len(hooks), 1)
        self.assertEqual(
            {k: hooks[0][k] for k in ("LifecycleHookName", "LifecycleTransition", "HeartbeatTimeout", "GlobalTimeout", "DefaultResult")},
            {"LifecycleHookName": "cfn-hook", "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
             "HeartbeatTimeout": 120, "GlobalTimeout": 12000, "DefaultResult": "CONTINUE"},
        )
        # The hook is a real one: a scale-in waits for it.
        p.asg.set_desired_capacity(AutoScalingGroupName="cfn-group", DesiredCapacity=0)
        wait_until(lambda: waiting_instances(p, "cfn-group"), 10, "an instance in Terminating:Wait")
        # Deleting the stack removes the hook and the policy.
        # moto deletes in an order that changes with the hash seed; either order must work.
        cfn.delete_stack(StackName="cfn-self-test")
        self.assertEqual(p.asg.describe_lifecycle_hooks(AutoScalingGroupName="cfn-group")["LifecycleHooks"], [])
        self.assertNotIn(out["Url"], p.sqs.list_queues().get("QueueUrls", []))


SQS_SIGNED = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"


def is_throttling(response: dict) -> bool:
    """botocore's own verdict (standard retry mode) on a parsed error response."""
    return ThrottledRetryableChecker().is_retryable(RetryContext(attempt_number=1, parsed_response=response))


class FaultInjectionTest(unittest.TestCase):
    """PUT/GET/DELETE /_termguard/faults on a launcher of its own: AWS-shaped errors, latency."""

    peer: Peer

    @classmethod
    def setUpClass(cls) -> None:
        cls.peer = Peer(attempts=1)  # no retries: every injected fault reaches the test

    @classmethod
    def tearDownClass(cls) -> None:
        rc = cls.peer.stop()
        if rc != 0:
            print(cls.peer.log_text(), file=sys.stderr)
        assert rc == 0, f"launcher exited {rc} on SIGTERM"

    def setUp(self) -> None:
        self.addCleanup(self.peer.faults, "DELETE")

    def waiting_action(self, group: str) -> tuple[str, str]:
        """A scale-in held by a termination hook (HeartbeatTimeout 300 = 30 s real): (token, instance)."""
        p = self.peer
        queue_url, queue_arn = p.queue(f"{group}-q")
        p.group(group, 2)
        p.hook(group, queue_arn, HeartbeatTimeout=300)
        p.asg.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=1)
        detail = p.receive(queue_url)["detail"]
        return detail["LifecycleActionToken"], detail["EC2InstanceId"]

    def assertAwsError(self, err: ClientError, code: str, status: int, fault: str) -> dict:
        response = err.response
        self.assertEqual(response["Error"]["Code"], code)
        self.assertEqual(response["ResponseMetadata"]["HTTPStatusCode"], status)
        self.assertEqual(response["Error"].get("Type"), fault)
        return response

    # -------------------------------------------------------------------------------------------

    def test_fail_next_throttles_exactly_n_heartbeats(self):
        p = self.peer
        token, iid = self.waiting_action("fail-next")
        kw = dict(
            AutoScalingGroupName="fail-next", LifecycleHookName="termguard-terminate",
            LifecycleActionToken=token, InstanceId=iid,
        )
        snap = p.put_faults(
            {"seed": 1, "rules": [{"action": "RecordLifecycleActionHeartbeat", "fail_next": 2, "group": "fail-next"}]}
        )
        self.assertEqual(
            snap["config"],
            {
                "seed": 1,
                "rules": [
                    {
                        "action": "RecordLifecycleActionHeartbeat", "error_rate": 0.0, "fail_next": 2,
                        "error": "throttling", "latency_ms": None, "group": "fail-next", "instance": None,
                    }
                ],
            },
        )
        for _ in range(2):
            with self.assertRaises(ClientError) as cm:
                p.asg.record_lifecycle_action_heartbeat(**kw)
            response = self.assertAwsError(cm.exception, "Throttling", 400, "Sender")
            self.assertEqual(response["Error"]["Message"], "Rate exceeded")
            self.assertTrue(is_throttling(response))
        p.asg.record_lifecycle_action_heartbeat(**kw)  # the third one reaches the action
        row = p.action(token)
        self.assertEqual((row["state"], row["heartbeat_count"], row["heartbeats_refused"]), ("waiting", 1, 2))
        self.assertEqual(len(row["heartbeats_refused_ms"]), 2)
        self.assertLessEqual(max(row["heartbeats_refused_ms"]), row["last_heartbeat_at_ms"])
        self.assertEqual(row["completes_refused"], 0)
        _, snap = p.faults()
        self.assertEqual(snap["calls"], {"RecordLifecycleActionHeartbeat": 3})
        self.assertEqual(snap["injected"], {"RecordLifecycleActionHeartbeat": 2})
        self.assertEqual(
            snap["rules"],
            [{"action": "RecordLifecycleActionHeartbeat", "matched": 3, "injected": 2, "fail_next_remaining": 0}],
        )

        # on the wire (an unsigned Query request goes through the same door)
        p.put_faults({"rules": [{"action": "RecordLifecycleActionHeartbeat", "fail_next": 1}]})
        status, body = p.query(dict(kw, Action="RecordLifecycleActionHeartbeat"))
        self.assertEqual(status, 400)
        self.assertRegex(
            body,
            r'^<ErrorResponse xmlns="http://autoscaling\.amazonaws\.com/doc/2011-01-01/"><Error><Type>Sender</Type>'
            rf"<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>{UUID_RE}</RequestId>"
            r"</ErrorResponse>$",
        )

        # the filters: another instance is not faulted; a call naming only the token is matched
        # to its instance through the token
        p.put_faults({"rules": [{"action": "*", "fail_next": 1, "instance": "i-00000000000000000"}]})
        p.asg.record_lifecycle_action_heartbeat(**kw)
        p.put_faults({"rules": [{"action": "*", "fail_next": 1, "instance": iid}]})
        with self.assertRaises(ClientError) as cm:
            p.asg.record_lifecycle_action_heartbeat(
                AutoScalingGroupName="fail-next", LifecycleHookName="termguard-terminate", LifecycleActionToken=token
            )
        self.assertAwsError(cm.exception, "Throttling", 400, "Sender")
        row = p.action(token)
        self.assertEqual((row["heartbeat_count"], row["heartbeats_refused"]), (2, 4))

        # an SDK that retries gets through: botocore's standard mode retries the throttled call
        retrying = p.client("autoscaling", attempts=3)
        p.put_faults({"rules": [{"action": "RecordLifecycleActionHeartbeat", "fail_next": 2}]})
        out = retrying.record_lifecycle_action_heartbeat(**kw)
        self.assertEqual(out["ResponseMetadata"]["RetryAttempts"], 2)
        row = p.action(token)
        self.assertEqual((row["state"], row["heartbeat_count"], row["heartbeats_refused"]), ("waiting", 3, 6))

    def test_failed_complete_leaves_the_action_waiting(self):
        p = self.peer
        token, iid = self.waiting_action("fail-complete")
        kw = dict(
            AutoScalingGroupName="fail-complete", LifecycleHookName="termguard-terminate",
            LifecycleActionToken=token, InstanceId=iid, LifecycleActionResult="CONTINUE",
        )
        for kind, code, status in (("internal", "InternalFailure", 500), ("unavailable", "ServiceUnavailable", 503)):
            p.put_faults({"rules": [{"action": "CompleteLifecycleAction", "fail_next": 1, "error": kind}]})
            with self.assertRaises(ClientError) as cm:
                p.asg.complete_lifecycle_action(**kw)
            self.assertAwsError(cm.exception, code, status, "Receiver")
            row = p.action(token)
            self.assertEqual((row["state"], row["result"], row["ended_by"]), ("waiting", None, None))
            self.assertEqual(p.lifecycle_state(iid), "Terminating:Wait")
            self.assertEqual(p.ec2_state(iid), "running")
        self.assertEqual(p.action(token)["completes_refused"], 2)

        # a 5xx is transient to botocore: with retries the complete goes through on the second attempt
        p.put_faults({"rules": [{"action": "CompleteLifecycleAction", "fail_next": 1, "error": "internal"}]})
        out = p.client("autoscaling", attempts=2).complete_lifecycle_action(**kw)
        self.assertEqual(out["ResponseMetadata"]["RetryAttempts"], 1)
        row = p.action(token)
        self.assertEqual((row["state"], row["result"], row["completes_refused"]), ("completed", "CONTINUE", 3))
        wait_until(lambda: p.lifecycle_state(iid) is None, 5, "the instance to go after CONTINUE")

    def test_error_rate_with_a_seed_is_repeatable(self):
        p = self.peer
        p.group("error-rate", 1)

        def run(config: dict, calls: int = 30) -> tuple[list[bool], dict]:
            p.put_faults(config)  # a PUT restarts the seeded sequence and the counters
            failed = []
            for _ in range(calls):
                try:
                    p.asg.describe_scaling_activities(AutoScalingGroupName="error-rate")
                    failed.append(False)
                except ClientError as e:
                    self.assertAwsError(e, "Throttling", 400, "Sender")
                    failed.append(True)
            return failed, p.faults()[1]

        config = {"seed": 7, "rules": [{"action": "DescribeScalingActivities", "error_rate": 0.3}]}
        first, snap = run(config)
        second, _ = run(config)
        self.assertEqual(first, second)
        rng = random.Random(7)  # one draw per matching call, as documented
        self.assertEqual(first, [rng.random() < 0.3 for _ in range(30)])
        self.assertTrue(0 < sum(first) < 30, first)
        self.assertEqual(snap["calls"], {"DescribeScalingActivities": 30})
        self.assertEqual(snap["injected"], {"DescribeScalingActivities": sum(first)})
        other, _ = run(dict(config, seed=8))
        self.assertNotEqual(first, other)

        # fail_next first (drawing nothing), then error_rate
        both, snap = run({"seed": 7, "rules": [{"action": "DescribeScalingActivities", "fail_next": 2, "error_rate": 0.3}]})
        rng = random.Random(7)
        self.assertEqual(both, [True, True] + [rng.random() < 0.3 for _ in range(28)])
        self.assertEqual(snap["injected"], {"DescribeScalingActivities": sum(both)})

    def test_sqs_faults_by_the_json_protocol(self):
        p = self.peer
        self.assertEqual(p.sqs.meta.service_model.protocol, "json")  # botocore, like the Rust SDK
        url, _ = p.queue("faulty-q")
        p.sqs.send_message(QueueUrl=url, MessageBody="hello")

        p.put_faults({"rules": [{"action": "ReceiveMessage", "fail_next": 1}]})
        with self.assertRaises(ClientError) as cm:
            p.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        response = self.assertAwsError(cm.exception, "RequestThrottled", 400, "Sender")
        self.assertTrue(is_throttling(response))
        self.assertEqual(response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-query-error"], "RequestThrottled;Sender")
        # the faulted receive never reached SQS: the message is still there, visible
        (msg,) = p.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=60)["Messages"]
        self.assertEqual(msg["Body"], "hello")

        # a failed DeleteMessage deleted nothing
        p.put_faults({"rules": [{"action": "DeleteMessage", "fail_next": 1, "error": "internal"}]})
        with self.assertRaises(ClientError) as cm:
            p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        self.assertAwsError(cm.exception, "InternalFailure", 500, "Receiver")

        def in_flight() -> str:
            attrs = p.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
            return attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]

        self.assertEqual(in_flight(), "1")
        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        self.assertEqual(in_flight(), "0")

        # on the wire, beside moto's own SQS JSON error (same headers, same body keys)
        json_headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "AmazonSQS.ReceiveMessage",
            "Authorization": SQS_SIGNED,
        }
        aws_headers = {"content-type", "x-amzn-errortype", "x-amzn-query-error", "x-amzn-requestid"}
        missing = url.rsplit("/", 1)[0] + "/no-such-queue"
        status, moto_headers, moto_body = p.raw(json.dumps({"QueueUrl": missing}).encode(), json_headers)
        self.assertEqual(status, 400)
        self.assertLessEqual(aws_headers, set(moto_headers))
        p.put_faults({"rules": [{"action": "ReceiveMessage", "fail_next": 1}]})
        status, headers, body = p.raw(json.dumps({"QueueUrl": url}).encode(), json_headers)
        self.assertEqual(status, 400)
        self.assertLessEqual(aws_headers, set(headers))
        self.assertEqual(headers["content-type"], "application/x-amz-json-1.0")
        self.assertEqual(headers["x-amzn-errortype"], "com.amazonaws.sqs#RequestThrottled")
        self.assertEqual(headers["x-amzn-query-error"], "RequestThrottled;Sender")
        self.assertRegex(headers["x-amzn-requestid"], rf"^{UUID_RE}$")
        self.assertEqual(
            json.loads(body),
            {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Rate exceeded", "Message": "Rate exceeded"},
        )
        self.assertEqual(set(json.loads(body)), set(json.loads(moto_body)))

        # the Query protocol names the action as a parameter; the same rule applies
        p.put_faults({"rules": [{"action": "ReceiveMessage", "fail_next": 1, "error": "unavailable"}]})
        form = urllib.parse.urlencode({"Action": "ReceiveMessage", "Version": "2012-11-05", "QueueUrl": url}).encode()
        status, headers, body = p.raw(
            form, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Authorization": SQS_SIGNED}
        )
        self.assertEqual(status, 503)
        self.assertRegex(
            body.decode(),
            r'^<ErrorResponse xmlns="http://queue\.amazonaws\.com/doc/2012-11-05/"><Error><Type>Receiver</Type>'
            r"<Code>ServiceUnavailable</Code><Message>The request has failed due to a temporary failure of the "
            rf"server\.</Message></Error><RequestId>{UUID_RE}</RequestId></ErrorResponse>$",
        )
        self.assertEqual(p.faults()[1]["injected"], {"ReceiveMessage": 1})

    def test_latency_alone_and_with_an_error(self):
        p = self.peer
        p.put_faults({"rules": [{"action": "DescribeAutoScalingGroups", "latency_ms": [400, 500]}]})
        started = time.monotonic()
        p.asg.describe_auto_scaling_groups()
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        p.put_faults({"rules": [{"action": "DescribeAutoScalingGroups", "latency_ms": 400, "fail_next": 1}]})
        started = time.monotonic()
        with self.assertRaises(ClientError) as cm:
            p.asg.describe_auto_scaling_groups()
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertAwsError(cm.exception, "Throttling", 400, "Sender")
        self.assertEqual(p.faults()[1]["config"]["rules"][0]["latency_ms"], [400.0, 400.0])

    def test_delete_clears_and_a_bad_config_is_refused(self):
        p = self.peer
        p.put_faults({"rules": [{"action": "*", "fail_next": 1000}]})
        with self.assertRaises(ClientError) as cm:
            p.asg.describe_auto_scaling_groups()
        self.assertAwsError(cm.exception, "Throttling", 400, "Sender")
        with self.assertRaises(ClientError) as cm:
            p.sqs.list_queues()
        self.assertAwsError(cm.exception, "RequestThrottled", 400, "Sender")
        p.ec2.describe_instances()  # only Auto Scaling and SQS are ever faulted

        status, snap = p.faults("DELETE")
        self.assertEqual((status, snap), (200, {"config": None, "calls": {}, "injected": {}, "rules": []}))
        p.asg.describe_auto_scaling_groups()
        _, snap = p.faults()
        self.assertEqual((snap["config"], snap["calls"], snap["injected"]), (None, {"DescribeAutoScalingGroups": 1}, {}))

        good = {"seed": 3, "rules": [{"action": "DeleteMessage", "error_rate": 0.5}]}
        p.put_faults(good)
        for bad, says in (
            ([], "JSON object"),
            ({"rules": [{"action": "NoSuchAction"}]}, "rules[0].action"),
            ({"rules": [{"action": "ReceiveMessage", "error": "teapot"}]}, "rules[0].error must be one of"),
            ({"rules": [{"action": "ReceiveMessage", "error_rate": 1.5}]}, "between 0 and 1"),
            ({"rules": [{"action": "ReceiveMessage", "fail_next": -1}]}, "fail_next"),
            ({"rules": [{"action": "ReceiveMessage", "latency_ms": [5, 1]}]}, "latency_ms"),
            ({"rules": [{"action": "ReceiveMessage", "errors": "internal"}]}, "unknown field"),
            ({"seed": 1, "rule": []}, "unknown field"),
        ):
            status, body = p.faults("PUT", bad)
            self.assertEqual(status, 400, bad)
            self.assertIn(says, body["error"])
        self.assertEqual(p.faults()[1]["config"]["seed"], 3)  # a refused PUT changes nothing

        # moto's own reset clears the faults too
        req = urllib.request.Request(f"{p.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
        self.assertIsNone(p.faults()[1]["config"])


def now_ms() -> int:
    return int(time.time() * 1000)


class SqsDeletionsTest(unittest.TestCase):
    """GET/DELETE /_termguard/sqs-deletions on a launcher of its own: what DeleteMessage removed."""

    peer: Peer

    @classmethod
    def setUpClass(cls) -> None:
        cls.peer = Peer(attempts=1)  # no retries: an injected fault reaches the test

    @classmethod
    def tearDownClass(cls) -> None:
        rc = cls.peer.stop()
        if rc != 0:
            print(cls.peer.log_text(), file=sys.stderr)
        assert rc == 0, f"launcher exited {rc} on SIGTERM"

    def setUp(self) -> None:
        self.addCleanup(self.peer.faults, "DELETE")

    def receive_all(self, url: str, count: int, visibility: int = 60) -> dict[str, dict]:
        """Receive `count` messages (body -> message, with SentTimestamp and ApproximateReceiveCount)."""
        got: dict[str, dict] = {}
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            out = self.peer.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=visibility,
                AttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
            got.update({m["Body"]: m for m in out.get("Messages", [])})
        self.assertEqual(len(got), count, got)
        return got

    def in_flight(self, url: str) -> str:
        attrs = self.peer.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        return attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]

    # -------------------------------------------------------------------------------------------

    def test_delete_message_records_body_and_times(self):
        p = self.peer
        self.assertEqual(p.sqs.meta.service_model.protocol, "json")  # botocore, like the Rust SDK
        url, _ = p.queue("del-q")
        sent_from = now_ms()
        first_id = p.sqs.send_message(QueueUrl=url, MessageBody="first")["MessageId"]
        p.sqs.send_message(QueueUrl=url, MessageBody="second")
        sent_until = now_ms()
        msgs = self.receive_all(url, 2)
        received_until = now_ms()
        self.assertEqual(p.deletions(queue="del-q"), [])  # receiving deletes nothing

        before = now_ms()
        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msgs["first"]["ReceiptHandle"])
        after = now_ms()
        (row,) = p.deletions(queue="del-q")
        self.assertEqual(
            set(row),
            {"queue_name", "queue_url", "account", "region", "action", "message_id", "body", "sent_at_ms",
             "first_received_at_ms", "deleted_at_ms", "receive_count", "receipt_handle_stale"},
        )
        self.assertEqual(
            (row["queue_name"], row["queue_url"], row["account"], row["region"], row["action"]),
            ("del-q", url, "123456789012", "us-east-1", "DeleteMessage"),
        )
        self.assertEqual((row["message_id"], row["body"]), (first_id, "first"))
        self.assertEqual(row["message_id"], msgs["first"]["MessageId"])
        self.assertEqual(row["sent_at_ms"], int(msgs["first"]["Attributes"]["SentTimestamp"]))
        self.assertTrue(sent_from <= row["sent_at_ms"] <= sent_until, (sent_from, row, sent_until))
        self.assertTrue(row["sent_at_ms"] <= row["first_received_at_ms"] <= received_until, row)
        self.assertTrue(before <= row["deleted_at_ms"] <= after, (before, row, after))
        self.assertEqual(row["receive_count"], 1)
        self.assertEqual(row["receive_count"], int(msgs["first"]["Attributes"]["ApproximateReceiveCount"]))
        self.assertFalse(row["receipt_handle_stale"])
        self.assertEqual(self.in_flight(url), "1")  # "second" is still there, and not in the record

        # moto answers a second delete with the same handle with success, but removes nothing: no record
        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msgs["first"]["ReceiptHandle"])
        # a handle no message ever had: ReceiptHandleIsInvalid, no record
        with self.assertRaises(ClientError) as cm:
            p.sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-receipt-handle")
        self.assertEqual(cm.exception.response["Error"]["Code"], "ReceiptHandleIsInvalid")
        self.assertEqual(p.deletions(queue="del-q"), [row])
        self.assertEqual(self.in_flight(url), "1")

        # the filter is by queue name; without it every queue's deletions, in deletion order
        other, _ = p.queue("del-other-q")
        p.sqs.send_message(QueueUrl=other, MessageBody="elsewhere")
        p.sqs.delete_message(QueueUrl=other, ReceiptHandle=self.receive_all(other, 1)["elsewhere"]["ReceiptHandle"])
        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msgs["second"]["ReceiptHandle"])
        self.assertEqual([r["body"] for r in p.deletions(queue="del-q")], ["first", "second"])
        self.assertEqual([r["body"] for r in p.deletions(queue="del-other-q")], ["elsewhere"])
        everything = [r for r in p.deletions() if r["queue_name"] in ("del-q", "del-other-q")]
        self.assertEqual([r["body"] for r in everything], ["first", "elsewhere", "second"])
        times = [r["deleted_at_ms"] for r in everything]
        self.assertEqual(times, sorted(times))
        self.assertEqual(p.deletions(queue="no-such-q"), [])

    def test_delete_message_batch_and_the_query_protocol(self):
        p = self.peer
        url, _ = p.queue("batch-q")
        for body in ("a", "b", "c"):
            p.sqs.send_message(QueueUrl=url, MessageBody=body)
        msgs = self.receive_all(url, 3)
        # "b" is received a second time: a new receipt handle, ApproximateReceiveCount 2
        p.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=msgs["b"]["ReceiptHandle"], VisibilityTimeout=0)
        again = self.receive_all(url, 1)["b"]
        self.assertNotEqual(again["ReceiptHandle"], msgs["b"]["ReceiptHandle"])

        before = now_ms()
        out = p.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": "a", "ReceiptHandle": msgs["a"]["ReceiptHandle"]},
                {"Id": "b", "ReceiptHandle": again["ReceiptHandle"]},
                {"Id": "bogus", "ReceiptHandle": "not-a-receipt-handle"},
            ],
        )
        after = now_ms()
        self.assertEqual(sorted(e["Id"] for e in out["Successful"]), ["a", "b"])
        self.assertEqual([(e["Id"], e["Code"]) for e in out["Failed"]], [("bogus", "ReceiptHandleIsInvalid")])
        rows = p.deletions(queue="batch-q")
        self.assertEqual([(r["body"], r["action"]) for r in rows], [("a", "DeleteMessageBatch"), ("b", "DeleteMessageBatch")])
        self.assertEqual([r["message_id"] for r in rows], [msgs["a"]["MessageId"], msgs["b"]["MessageId"]])
        self.assertEqual([r["receive_count"] for r in rows], [1, 2])
        self.assertEqual([r["receipt_handle_stale"] for r in rows], [False, False])
        self.assertEqual({r["queue_url"] for r in rows}, {url})
        for r in rows:
            self.assertTrue(before <= r["deleted_at_ms"] <= after, (before, r, after))
            self.assertTrue(r["sent_at_ms"] <= r["first_received_at_ms"] <= r["deleted_at_ms"], r)
        self.assertEqual(self.in_flight(url), "1")  # "c"

        # the Query protocol (Action=DeleteMessage), with a stale handle: moto removes the message
        # anyway (AWS may not), so it is recorded, flagged as stale
        p.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=msgs["c"]["ReceiptHandle"], VisibilityTimeout=0)
        self.receive_all(url, 1)
        form = urllib.parse.urlencode(
            {"Action": "DeleteMessage", "Version": "2012-11-05", "QueueUrl": url,
             "ReceiptHandle": msgs["c"]["ReceiptHandle"]}
        ).encode()
        status, _, body = p.raw(
            form, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Authorization": SQS_SIGNED}
        )
        self.assertEqual(status, 200, body)
        self.assertIn(b"DeleteMessageResponse", body)
        row = p.deletions(queue="batch-q")[-1]
        self.assertEqual(
            (row["body"], row["action"], row["queue_url"], row["receive_count"], row["receipt_handle_stale"]),
            ("c", "DeleteMessage", url, 2, True),
        )
        self.assertEqual(len(p.deletions(queue="batch-q")), 3)
        self.assertEqual(self.in_flight(url), "0")

    def test_a_delete_refused_by_a_fault_is_not_recorded(self):
        p = self.peer
        url, _ = p.queue("refused-q")
        p.sqs.send_message(QueueUrl=url, MessageBody="keep")
        msg = self.receive_all(url, 1)["keep"]

        p.put_faults({"rules": [{"action": "DeleteMessage", "fail_next": 1, "error": "internal"},
                                {"action": "DeleteMessageBatch", "fail_next": 1}]})
        with self.assertRaises(ClientError) as cm:
            p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
        self.assertEqual(cm.exception.response["Error"]["Code"], "InternalFailure")
        with self.assertRaises(ClientError) as cm:
            p.sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "1", "ReceiptHandle": msg["ReceiptHandle"]}])
        self.assertEqual(cm.exception.response["Error"]["Code"], "RequestThrottled")
        self.assertEqual(p.faults()[1]["injected"], {"DeleteMessage": 1, "DeleteMessageBatch": 1})
        self.assertEqual(p.deletions(queue="refused-q"), [])
        self.assertEqual(self.in_flight(url), "1")

        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])  # fail_next used up
        (row,) = p.deletions(queue="refused-q")
        self.assertEqual((row["body"], row["receive_count"]), ("keep", 1))

    def test_delete_and_reset_clear_the_record(self):
        p = self.peer
        url, _ = p.queue("clear-q")
        for body in ("x", "y"):
            p.sqs.send_message(QueueUrl=url, MessageBody=body)
        msgs = self.receive_all(url, 2)
        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msgs["x"]["ReceiptHandle"])
        self.assertEqual(len(p.deletions(queue="clear-q")), 1)
        self.assertEqual(p.deletions("DELETE"), [])
        self.assertEqual(p.deletions(), [])
        with self.assertRaises(urllib.error.HTTPError) as cm:
            p.deletions("PUT")
        self.assertEqual(cm.exception.code, 405)

        p.sqs.delete_message(QueueUrl=url, ReceiptHandle=msgs["y"]["ReceiptHandle"])
        self.assertEqual([r["body"] for r in p.deletions()], ["y"])
        req = urllib.request.Request(f"{p.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
        self.assertEqual(p.deletions(), [])


class GlobalTimeoutAndDirectShapeTest(unittest.TestCase):
    """A second launcher: GlobalTimeout overridden to 60 s (6 s real), direct message shape."""

    def test_global_timeout_and_direct_shape(self):
        p = Peer(TERMGUARD_MOTO_GLOBAL_TIMEOUT="60", TERMGUARD_MOTO_NOTIFICATION_SHAPE="direct")
        try:
            queue_url, queue_arn = p.queue("direct-q")
            p.group("direct", 2)
            p.hook("direct", queue_arn, DefaultResult="CONTINUE")
            (h,) = p.asg.describe_lifecycle_hooks(AutoScalingGroupName="direct")["LifecycleHooks"]
            self.assertEqual(h["GlobalTimeout"], 60)
            test_note = p.receive(queue_url)
            self.assertEqual(test_note["Event"], "autoscaling:TEST_NOTIFICATION")
            self.assertEqual(test_note["Service"], "AWS Auto Scaling")

            p.asg.set_desired_capacity(AutoScalingGroupName="direct", DesiredCapacity=1)
            msg = p.receive(queue_url)
            self.assertEqual(msg["Service"], "AWS Auto Scaling")
            self.assertEqual(msg["LifecycleTransition"], "autoscaling:EC2_INSTANCE_TERMINATING")
            self.assertRegex(msg["Time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            token, iid = msg["LifecycleActionToken"], msg["EC2InstanceId"]
            self.assertNotIn("detail-type", msg)

            # heartbeats every 1 s (heartbeat timeout 3 s) cannot keep it past the global 6 s
            while p.action(token)["state"] == "waiting":
                try:
                    p.asg.record_lifecycle_action_heartbeat(
                        AutoScalingGroupName="direct", LifecycleHookName="termguard-terminate", InstanceId=iid
                    )
                except ClientError as e:
                    self.assertEqual(e.response["Error"]["Code"], "ValidationError")
                    break
                time.sleep(1.0)
            row = p.action(token)
            self.assertEqual((row["state"], row["result"], row["ended_by"]), ("expired", "CONTINUE", "GlobalTimeout"))
            self.assertGreaterEqual(row["heartbeat_count"], 4)
            self.assertAlmostEqual((row["ended_at_ms"] - row["started_at_ms"]) / 1000, 6.0, delta=0.5)
            wait_until(lambda: p.lifecycle_state(iid) is None, 5, "termination after the global timeout")
        finally:
            rc = p.stop()
            self.assertEqual(rc, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
