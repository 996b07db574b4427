#!/usr/bin/env python3
"""termguard's AWS test peer: moto's server with the Auto Scaling lifecycle-hook behaviour added.

Usage:
    python3 tests/aws/moto_server.py --port 0 [--host 127.0.0.1] [--time-scale 0.1] [--quiet]

It binds (port 0 = a free port), prints exactly one line to stdout,
``READY http://127.0.0.1:<port>``, once the socket accepts connections, then serves until
SIGTERM/SIGINT (exit status 0). Any credentials and region work; the tests use us-east-1.

Why: moto 5.2.1 (the project's AWS test peer) answers CompleteLifecycleAction and
RecordLifecycleActionHeartbeat with an HTML 500, returns no scaling activities, hard-codes a
lifecycle hook's NotificationTargetARN/RoleARN/GlobalTimeout, and terminates instances at once
instead of holding them in Terminating:Wait (https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks.html). termguard's
queue mode lives exactly there, so this launcher adds it, following AWS's documented semantics
(docs/aws-semantics.md: lifecycle hooks, heartbeats, the global timeout, scaling activity
causes). Everything else is moto's own behaviour.

What it adds (details and the JSON format in tests/aws/README.md):
* PutLifecycleHook keeps NotificationTargetARN, RoleARN and NotificationMetadata as sent;
  GlobalTimeout = min(172800, 100 x HeartbeatTimeout); HeartbeatTimeout 30..7200 (default 3600),
  DefaultResult CONTINUE|ABANDON (default ABANDON); an SQS target must exist (else AWS's
  "Unable to publish test message to notification target ..." ValidationError).
* With a termination hook (autoscaling:EC2_INSTANCE_TERMINATING) on the group, scale-in
  (SetDesiredCapacity, UpdateAutoScalingGroup, ExecutePolicy), TerminateInstanceInAutoScalingGroup
  and an AZ rebalance put the instance in Terminating:Wait (one lifecycle action per hook, each with
  its own token) instead of terminating it; without a hook the instance is terminated at once as
  before. The lifecycle message is sent to the SQS queue the hook's NotificationTargetARN names, in
  the EventBridge shape by default
  (crates/termguard/tests/data/events/eventbridge-asg-terminate-lifecycle-action.json),
  and is also put on the account's default EventBridge bus (moto's events backend), so an
  EventBridge rule with an SQS target created by a test routes it as AWS would.
* With a launch hook (autoscaling:EC2_INSTANCE_LAUNCHING), every instance the group launches
  (scale-out, replacements) waits in Pending:Wait (one action per hook) and its "EC2
  Instance-launch Lifecycle Action" message (Origin EC2, Destination AutoScalingGroup) is sent the
  same way; CONTINUE -> Pending:Proceed -> InService, ABANDON -> terminated and replaced.
* CompleteLifecycleAction / RecordLifecycleActionHeartbeat (by token, or by instance id + group +
  hook), with AWS's ValidationError (HTTP 400) "No active Lifecycle Action found with token <t>" /
  "... with instance ID <i>" once the action is unknown or over.
* Heartbeat timeout (restarted by each heartbeat) and global timeout run in real time in a
  background thread and apply the hook's DefaultResult. CONTINUE or ABANDON on a terminating
  instance both terminate it: Terminating:Proceed, then (after a short proceed delay) the instance is
  removed from the group and terminated in EC2, and its scaling activity becomes Successful.
  ABANDON also ends the instance's other hooks' actions (state "cancelled"), CONTINUE lets them run.
* DescribeScalingActivities: one activity per launched/terminated instance with AWS's Description
  and Cause texts (docs/aws-semantics.md#scaling-activity-causes: two spaces between sentences,
  times YYYY-MM-DDTHH:MM:SSZ), StatusCode
  MidLifecycleAction while waiting; in-progress first, then newest first; MaxRecords/NextToken.
* Test-only: the Query action ``SimulateAZRebalance`` (AutoScalingGroupName, optional InstanceId)
  and ``GET /_termguard/lifecycle-actions`` (JSON state of every lifecycle action).
* Test-only fault injection for retry tests and chaos soaks: ``PUT /_termguard/faults`` with
  ``{"seed": 7, "rules": [{"action": "RecordLifecycleActionHeartbeat" | "ReceiveMessage" | ... | "*",
  "fail_next": 2, "error_rate": 0.3, "error": "throttling" | "internal" | "unavailable",
  "latency_ms": [min, max], "group": ..., "instance": ...}]}`` replaces the config, ``GET`` shows it
  with per-action counters (calls seen, faults injected), ``DELETE`` clears it. A matching Auto
  Scaling or SQS call (Query or JSON protocol) sleeps, then - fail_next first, then a draw of the
  seeded random.Random - gets the error AWS would send (Auto Scaling: 400 Throttling, 500
  InternalFailure, 503 ServiceUnavailable, XML; SQS JSON: 400 RequestThrottled / 500 / 503 with
  x-amzn-query-error, as moto writes SQS errors) and never reaches moto. Refused heartbeats and
  completes are counted on the lifecycle action (heartbeats_refused, completes_refused).
* Test-only record of SQS deletions for chaos soaks: ``GET /_termguard/sqs-deletions`` (optional
  ``?queue=NAME``) returns ``{"deletions": [{"queue_name", "queue_url", "account", "region",
  "action", "message_id", "body", "sent_at_ms", "first_received_at_ms", "deleted_at_ms",
  "receive_count", "receipt_handle_stale"}, ...]}`` in deletion order: one row per message that
  DeleteMessage / a DeleteMessageBatch entry (JSON or Query protocol) really removed - not for an
  invalid or already-used receipt handle, nor for a delete refused by an injected fault.
  ``DELETE`` (and /moto-api/reset) clears it.
* Test-only knobs (environment, or the matching flags): TERMGUARD_MOTO_TIME_SCALE (multiplies every
  timeout and delay this launcher runs, e.g. 0.1 makes a 30 s heartbeat timeout last 3 s; the
  values the API reports stay AWS's), TERMGUARD_MOTO_GLOBAL_TIMEOUT (seconds: replaces
  min(172800, 100 x HeartbeatTimeout) for every hook, reported as GlobalTimeout),
  TERMGUARD_MOTO_PROCEED_SECONDS (time spent in Terminating:Proceed, default 1),
  TERMGUARD_MOTO_NOTIFICATION_SHAPE = eventbridge (default) | direct (the flat
  "Service": "AWS Auto Scaling" message AWS writes to a hook's own SQS target, plus the
  autoscaling:TEST_NOTIFICATION when the hook is put).

How (the cleanest approach moto's internals allow): moto builds one Flask app per service
around ``AutoScalingResponse.dispatch`` and keeps its state in per-account/region backend objects,
so this script monkey-patches moto's classes in-process before starting moto's own WSGI app
(nothing in site-packages is edited):
* AutoScalingResponse gets the new actions as methods, replacements for put_lifecycle_hook,
  describe_scaling_activities and terminate_instance_in_auto_scaling_group, and thin wrappers that
  record *why* a capacity change happens (the first sentence of the Cause).
* FakeAutoScalingGroup.set_desired_capacity and replace_autoscaling_group_instances are replaced
  (they are single monolithic methods): the capacity arithmetic is moto's, copied; scale-in now
  picks InService, unprotected instances from the zone with the most of them (oldest first, as
  AWS's default termination policy does up to its random tie-break) and routes them through the
  lifecycle machinery; launches spread instances over the group's zones (moto put a whole batch in
  one random zone, which made a multi-AZ group and an AZ rebalance meaningless).
* AutoScalingBackend keeps the new state (lifecycle actions, terminations, activities) in an
  attribute set up by its __init__, so moto's /moto-api/reset clears it too.
* A small WSGI wrapper in front of moto's DomainDispatcherApplication serves /_termguard/*,
  routes *unsigned* Query requests for Auto Scaling actions (Version=2011-01-01, e.g. curl or a
  plain HTTP client sending SimulateAZRebalance) to the Auto Scaling backend, region us-east-1
  (signed requests, from any SDK, are routed by moto as usual), and names each Auto Scaling / SQS
  call's action (Action=..., or X-Amz-Target: AmazonSQS.<Action>) for the fault injection.
* moto's SQS Queue.delete_message is wrapped (under the queue's own message lock) to record each
  message it really removed, with its body; SQSResponse.delete_message / delete_message_batch are
  wrapped to name the API action and the request URL (for the queue URL) in a thread-local.
* Create/UpdateAutoScalingGroup keep MaxInstanceLifetime and InstanceLifecyclePolicy (moto 5.2.1
  ignores both, and CapacityRebalance in an update), so DescribeAutoScalingGroups reports them.
* moto's SQS Queue._set_attributes is wrapped to keep the queue's access policy when a
  SetQueueAttributes call does not set it (moto drops it; SQS changes only what is given).
* Two CloudFormationModel subclasses give moto's CloudFormation AWS::SQS::QueuePolicy and
  AWS::AutoScaling::LifecycleHook (moto skips types it has no model for).
* One re-entrant lock serialises every Auto Scaling request, EC2's termination notifications and
  the timer thread, so the state machine never races.

Written against moto 5.2.1 (a warning is printed on another version).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlparse
from xml.sax.saxutils import escape as xml_escape

import moto
from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    LifecycleHook,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow

LOG = logging.getLogger("termguard.moto")

MOTO_VERSION_WRITTEN_FOR = "5.2.1"
ASG_XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
DEFAULT_REGION = "us-east-1"
# Test-only Query actions (not in the Auto Scaling API model).
CUSTOM_ACTIONS = {"SimulateAZRebalance"}


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


class Config:
    time_scale: float = 1.0
    global_timeout_override: float | None = None
    proceed_seconds: float = 1.0
    notification_shape: str = "eventbridge"

    @classmethod
    def from_env(cls) -> None:
        env = os.environ
        if env.get("TERMGUARD_MOTO_TIME_SCALE"):
            cls.time_scale = float(env["TERMGUARD_MOTO_TIME_SCALE"])
        if env.get("TERMGUARD_MOTO_GLOBAL_TIMEOUT"):
            cls.global_timeout_override = float(env["TERMGUARD_MOTO_GLOBAL_TIMEOUT"])
        if env.get("TERMGUARD_MOTO_PROCEED_SECONDS"):
            cls.proceed_seconds = float(env["TERMGUARD_MOTO_PROCEED_SECONDS"])
        if env.get("TERMGUARD_MOTO_NOTIFICATION_SHAPE"):
            cls.notification_shape = env["TERMGUARD_MOTO_NOTIFICATION_SHAPE"]

    @classmethod
    def validate(cls) -> None:
        if not cls.time_scale > 0:
            raise SystemExit("time scale must be > 0")
        if cls.global_timeout_override is not None and not cls.global_timeout_override > 0:
            raise SystemExit("global timeout override must be > 0")
        if cls.proceed_seconds < 0:
            raise SystemExit("proceed seconds must be >= 0")
        if cls.notification_shape not in ("eventbridge", "direct"):
            raise SystemExit("notification shape must be 'eventbridge' or 'direct'")

    @classmethod
    def real_seconds(cls, aws_seconds: float) -> float:
        """AWS-time seconds -> wall-clock seconds this server actually waits."""
        return aws_seconds * cls.time_scale


# --------------------------------------------------------------------------------------------
# shared state
# --------------------------------------------------------------------------------------------

# Serialises Auto Scaling requests, EC2 termination notifications and the timer thread.
LOCK = threading.RLock()
_TL = threading.local()  # the current request's capacity-change trigger (for Cause texts)
_SEQ = itertools.count(1)  # creation order of activities and actions (sort tie-break)
_REGISTRY: list[AutoScalingBackend] = []  # backends that hold termguard state


def aws_time(dt: datetime) -> str:
    """The time format inside Cause texts: YYYY-MM-DDTHH:MM:SSZ."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def utc_epoch(dt: datetime) -> float:
    """moto keeps naive UTC datetimes."""
    return dt.replace(tzinfo=timezone.utc).timestamp()


def epoch_ms(epoch: float | None) -> int | None:
    return None if epoch is None else int(round(epoch * 1000))


class Activity:
    """A scaling activity as DescribeScalingActivities reports it."""

    def __init__(
        self,
        group: FakeAutoScalingGroup,
        description: str,
        cause: str,
        instance_id: str,
        details: dict[str, str],
        status_code: str,
        progress: int,
        start: datetime,
    ):
        self.activity_id = str(uuid.uuid4())
        self.group_name = group.name
        self.group_arn = group.arn
        self.description = description
        self.cause = cause
        self.instance_id = instance_id
        self.details = json.dumps(details, separators=(",", ":"))
        self.status_code = status_code
        self.status_message: str | None = None
        self.progress = progress
        self.start_time = start
        self.end_time: datetime | None = None
        self.seq = next(_SEQ)
        self.group_deleted = False

    @property
    def in_progress(self) -> bool:
        return self.status_code not in ("Successful", "Failed", "Cancelled")

    def finish(self, status: str = "Successful", message: str | None = None) -> None:
        self.status_code = status
        self.progress = 100
        self.end_time = utcnow()
        if message:
            self.status_message = message

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ActivityId": self.activity_id,
            "AutoScalingGroupName": self.group_name,
            "Description": self.description,
            "Cause": self.cause,
            "StartTime": self.start_time,
            "StatusCode": self.status_code,
            "Progress": self.progress,
            "Details": self.details,
            "AutoScalingGroupARN": self.group_arn,
        }
        if self.end_time is not None:
            out["EndTime"] = self.end_time
        if self.status_message:
            out["StatusMessage"] = self.status_message
        return out


class LifecycleAction:
    """One hook's lifecycle action for one instance (one token)."""

    def __init__(self, backend: AutoScalingBackend, hook: LifecycleHook, term: "Termination | Launch"):
        self.token = str(uuid.uuid4())
        self.account = backend.account_id
        self.region = backend.region_name
        self.group_name = hook.auto_scaling_group_name
        self.hook_name = hook.name
        self.transition = hook.lifecycle_transition
        self.instance_id = term.instance_id
        self.heartbeat_timeout = int(hook.heartbeat_timeout)
        self.global_timeout = int(hook.global_timeout)
        self.default_result = hook.default_result
        self.term = term
        self.seq = next(_SEQ)
        self.state = "waiting"  # waiting | completed | expired | cancelled
        self.result: str | None = None
        self.ended_by: str | None = None
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.heartbeat_deadline = self.started_mono + Config.real_seconds(self.heartbeat_timeout)
        self.global_deadline = self.started_mono + Config.real_seconds(self.global_timeout)
        self.heartbeats: list[float] = []
        self.heartbeats_arrived: list[float] = []  # when each heartbeat request reached the peer
        self.ended_wall: float | None = None
        # Calls refused by an injected fault (PUT /_termguard/faults), wall-clock epoch seconds.
        self.heartbeats_refused: list[float] = []
        self.completes_refused: list[float] = []
        self.notification: dict[str, Any] = {
            "target": hook.notification_target_arn,
            "shape": Config.notification_shape,
            "sent": False,
            "message_id": None,
            "error": None,
            "body": None,
        }

    @property
    def waiting(self) -> bool:
        return self.state == "waiting"

    def deadline(self) -> float:
        return min(self.heartbeat_deadline, self.global_deadline)

    def _wall(self, mono: float) -> float:
        return self.started_wall + (mono - self.started_mono)

    def end(self, state: str, result: str | None, ended_by: str) -> None:
        self.state = state
        self.result = result
        self.ended_by = ended_by
        self.ended_wall = time.time()
        LOG.info(
            "lifecycle action %s (%s, hook %s) %s: result %s (%s)",
            self.token, self.instance_id, self.hook_name, state, result, ended_by,
        )

    def to_json(self) -> dict[str, Any]:
        last_hb = self.heartbeats[-1] if self.heartbeats else None
        return {
            "token": self.token,
            "account": self.account,
            "region": self.region,
            "group": self.group_name,
            "hook": self.hook_name,
            "instance_id": self.instance_id,
            "transition": self.transition,
            "state": self.state,
            "result": self.result,
            "ended_by": self.ended_by,
            "default_result": self.default_result,
            "heartbeat_timeout": self.heartbeat_timeout,
            "global_timeout": self.global_timeout,
            "heartbeat_count": len(self.heartbeats),
            "started_at": iso_ms(self.started_wall),
            "started_at_ms": epoch_ms(self.started_wall),
            "heartbeats": [iso_ms(t) for t in self.heartbeats],
            "heartbeats_ms": [epoch_ms(t) for t in self.heartbeats],
            "heartbeats_arrived_ms": [epoch_ms(t) for t in self.heartbeats_arrived],
            "heartbeats_refused": len(self.heartbeats_refused),
            "heartbeats_refused_ms": [epoch_ms(t) for t in self.heartbeats_refused],
            "completes_refused": len(self.completes_refused),
            "completes_refused_ms": [epoch_ms(t) for t in self.completes_refused],
            "last_heartbeat_at": iso_ms(last_hb),
            "last_heartbeat_at_ms": epoch_ms(last_hb),
            "ended_at": iso_ms(self.ended_wall),
            "ended_at_ms": epoch_ms(self.ended_wall),
            "heartbeat_deadline": iso_ms(self._wall(self.heartbeat_deadline)),
            "heartbeat_deadline_ms": epoch_ms(self._wall(self.heartbeat_deadline)),
            "global_deadline": iso_ms(self._wall(self.global_deadline)),
            "global_deadline_ms": epoch_ms(self._wall(self.global_deadline)),
            "instance_lifecycle_state": self.term.instance_state.lifecycle_state,
            "activity_id": self.term.activity.activity_id if self.term.activity else None,
            "cause": self.term.activity.cause if self.term.activity else None,
            "notification": dict(self.notification),
        }


class Transition:
    """An instance held by lifecycle hooks: wait -> proceed -> done."""

    def __init__(
        self,
        backend: AutoScalingBackend,
        group: FakeAutoScalingGroup,
        instance_state: InstanceState,
        activity: Activity | None,
    ):
        self.backend = backend
        self.group = group
        self.instance_state = instance_state
        self.instance_id = instance_state.instance.id
        self.activity = activity
        self.actions: list[LifecycleAction] = []
        self.phase = "wait"  # wait | proceed | done
        self.proceed_at: float | None = None


class Termination(Transition):
    """An instance on its way out of a group: Terminating:Wait -> :Proceed -> Terminated."""


class Launch(Transition):
    """A new instance held by launch hooks: Pending:Wait -> :Proceed -> InService (or abandoned)."""


class TGState:
    def __init__(self) -> None:
        self.actions: dict[str, LifecycleAction] = {}
        self.terminations: dict[str, Termination] = {}
        self.launches: dict[str, Launch] = {}
        self.activities: list[Activity] = []


def tg_state(backend: AutoScalingBackend) -> TGState:
    st = backend.__dict__.get("_tg")
    if st is None:
        st = TGState()
        backend.__dict__["_tg"] = st
    if backend not in _REGISTRY:
        _REGISTRY.append(backend)
    return st


# --------------------------------------------------------------------------------------------
# the timer thread
# --------------------------------------------------------------------------------------------


class Scheduler(threading.Thread):
    """Applies heartbeat/global timeouts and finishes Terminating:Proceed, in real time."""

    def __init__(self) -> None:
        super().__init__(name="termguard-lifecycle-timer", daemon=True)
        self.cond = threading.Condition(LOCK)
        self.stopping = False

    def kick(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def run(self) -> None:
        with self.cond:
            while not self.stopping:
                try:
                    next_due = self.tick(time.monotonic())
                except Exception:  # never let the timer die
                    LOG.exception("lifecycle timer tick failed")
                    next_due = None
                timeout = 5.0 if next_due is None else max(0.0, next_due - time.monotonic())
                self.cond.wait(min(timeout, 5.0))

    def tick(self, now: float) -> float | None:
        next_due: float | None = None

        def due(t: float) -> None:
            nonlocal next_due
            next_due = t if next_due is None else min(next_due, t)

        for backend in list(_REGISTRY):
            st = backend.__dict__.get("_tg")
            if st is None:
                continue
            for term in list(st.terminations.values()):
                if term.phase == "wait":
                    for action in term.actions:
                        if not action.waiting:
                            continue
                        if not expire_if_due(action, now):
                            due(action.deadline())
                if term.phase == "proceed" and term.proceed_at is not None:
                    if now >= term.proceed_at:
                        finalize_termination(term)
                    else:
                        due(term.proceed_at)
            for launch in list(st.launches.values()):
                if launch.phase == "wait":
                    for action in launch.actions:
                        if action.waiting and not expire_if_due(action, now):
                            due(action.deadline())
                if launch.phase == "proceed" and launch.proceed_at is not None:
                    if now >= launch.proceed_at:
                        finalize_launch(launch)
                    else:
                        due(launch.proceed_at)
        return next_due


SCHEDULER = Scheduler()


def expire_if_due(action: "LifecycleAction", now: float | None = None) -> bool:
    """Apply the hook's DefaultResult once the heartbeat or global timeout has passed."""
    now = time.monotonic() if now is None else now
    if not action.waiting or now < action.deadline():
        return False
    by_global = action.global_deadline <= action.heartbeat_deadline
    action.end("expired", action.default_result, "GlobalTimeout" if by_global else "HeartbeatTimeout")
    after_action_ended(action.term, action)
    return True


# --------------------------------------------------------------------------------------------
# cause texts (docs/aws-semantics.md#scaling-activity-causes)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def trigger(kind: str, **info: Any):
    """Record what asked for a capacity change while moto's code runs it."""
    prev = getattr(_TL, "trigger", None)
    _TL.trigger = dict(kind=kind, **info)
    try:
        yield
    finally:
        _TL.trigger = prev


def current_trigger() -> dict[str, Any]:
    return getattr(_TL, "trigger", None) or {"kind": None}


def trigger_sentence(trig: dict[str, Any], group: FakeAutoScalingGroup, old: int, new: int, t: str) -> str:
    """The Cause's first sentence: who changed the desired capacity (empty when unchanged)."""
    kind = trig.get("kind")
    if kind == "create":
        return f"At {t} a user request created an AutoScalingGroup changing the desired capacity from {old} to {new}.  "
    if old == new:
        return ""
    if kind == "set-desired":
        return f"At {t} a user request explicitly set group desired capacity changing the desired capacity from {old} to {new}.  "
    if kind == "update":
        return (
            f"At {t} a user request update of AutoScalingGroup constraints to min: {group.min_size}, "
            f"max: {group.max_size}, desired: {group.desired_capacity} changing the desired capacity from {old} to {new}.  "
        )
    if kind == "policy":
        return f"At {t} a user request executed policy {trig.get('policy')} changing the desired capacity from {old} to {new}.  "
    return ""


def launch_cause(prefix: str, t: str, before: int, after: int) -> str:
    return (
        f"{prefix}At {t} an instance was started in response to a difference between desired and actual "
        f"capacity, increasing the capacity from {before} to {after}."
    )


def scale_in_cause(prefix: str, t: str, before: int, after: int, instance_id: str) -> str:
    return (
        f"{prefix}At {t} an instance was taken out of service in response to a difference between desired "
        f"and actual capacity, shrinking the capacity from {before} to {after}.  "
        f"At {t} instance {instance_id} was selected for termination."
    )


def user_terminate_cause(t: str, instance_id: str, before: int, after: int, decrement: bool) -> str:
    cause = f"At {t} instance {instance_id} was taken out of service in response to a user request"
    if decrement:
        return cause + f", shrinking the capacity from {before} to {after}."
    return cause + "."


def rebalance_terminate_cause(t: str, zones: list[str], before: int, after: int, instance_id: str) -> str:
    zone_text = " ".join(zones) if zones else "null"
    return (
        f"At {t} instances were launched to balance instances in zones {zone_text} with other zones "
        f"resulting in more than desired number of instances in the group.  "
        + scale_in_cause("", t, before, after, instance_id)
    )


def rebalance_launch_cause(t: str, zones: list[str], counts: list[int]) -> str:
    return (
        f"At {t} availability zones {' '.join(zones)} had {' '.join(str(c) for c in counts)} instances "
        f"respectively. An instance was launched to aid in balancing the group's zones."
    )


# --------------------------------------------------------------------------------------------
# group helpers
# --------------------------------------------------------------------------------------------


def zone_of(state: InstanceState) -> str:
    return state.instance.availability_zone


def subnet_of(state: InstanceState) -> str | None:
    return getattr(state.instance, "subnet_id", None)


def instance_details(state: InstanceState) -> dict[str, str]:
    details = {}
    if subnet_of(state):
        details["Subnet ID"] = subnet_of(state)
    details["Availability Zone"] = zone_of(state)
    return details


def zone_counts(group: FakeAutoScalingGroup, states: list[InstanceState]) -> dict[str, int]:
    counts = {z: 0 for z in group.availability_zones}
    for s in states:
        counts[zone_of(s)] = counts.get(zone_of(s), 0) + 1
    return counts


def counted_instances(group: FakeAutoScalingGroup) -> list[InstanceState]:
    """Instances that count toward capacity/zone balance (not on their way out, not standby)."""
    return [s for s in group.instance_states if s.lifecycle_state in ("InService", "Pending", "Pending:Wait", "Pending:Proceed")]


def target_instance_count(group: FakeAutoScalingGroup) -> int:
    """moto 5.2.1's FakeAutoScalingGroup.set_desired_capacity arithmetic, unchanged."""
    import math

    target_capacity = group.desired_capacity or 0
    is_mixed_instances = group.mixed_instances_policy and len(
        group.mixed_instances_policy.get("LaunchTemplate", {}).get("Overrides", [])
    )
    if not is_mixed_instances:
        return target_capacity
    policy = group.mixed_instances_policy or {}
    overrides = policy["LaunchTemplate"]["Overrides"]
    distribution = policy.get("InstancesDistribution", {})
    on_demand_base = int(distribution.get("OnDemandBaseCapacity", 0))
    percent_above_base = int(distribution.get("OnDemandPercentageAboveBaseCapacity", 100))
    primary_weight_str = overrides[0].get("WeightedCapacity", "1")
    primary_weight = int(primary_weight_str) if primary_weight_str.isdigit() else 1
    if primary_weight == 0:
        primary_weight = 1
    if on_demand_base >= target_capacity:
        total_on_demand_capacity = target_capacity
        total_spot_capacity = 0
    else:
        above_base_capacity = target_capacity - on_demand_base
        on_demand_above_base_capacity = int(above_base_capacity * percent_above_base) / 100.0
        spot_above_base_capacity = int(above_base_capacity - on_demand_above_base_capacity)
        total_on_demand_capacity = int(on_demand_base + on_demand_above_base_capacity)
        total_spot_capacity = spot_above_base_capacity
    return math.ceil(total_on_demand_capacity / primary_weight) + math.ceil(total_spot_capacity / primary_weight)


def pick_launch_zone(group: FakeAutoScalingGroup, avoid: str | None = None) -> str:
    counts = zone_counts(group, counted_instances(group))
    order = {z: i for i, z in enumerate(group.availability_zones)}
    return min(
        group.availability_zones,
        key=lambda z: (counts.get(z, 0), 1 if z == avoid else 0, order[z]),
    )


def subnet_for_zone(group: FakeAutoScalingGroup, zone: str) -> str | None:
    if not group.vpc_zone_identifier:
        return None
    subnet_ids = group.vpc_zone_identifier.split(",")
    subnets = group.autoscaling_backend.ec2_backend.describe_subnets(subnet_ids=subnet_ids)
    for subnet in subnets:
        if subnet.availability_zone == zone:
            return subnet.id
    return subnet_ids[0]


def launch_instances(
    group: FakeAutoScalingGroup,
    count: int,
    propagated_tags: dict[str, str],
    cause_for: Any = None,
    zone: str | None = None,
) -> list[InstanceState]:
    """moto's replace_autoscaling_group_instances, one instance at a time into the emptiest zone."""
    propagated_tags = dict(propagated_tags)
    propagated_tags[ASG_NAME_TAG] = group.name
    propagated_tags.update(group.instance_tags)
    associate_public_ip = group.launch_config.associate_public_ip_address if group.launch_config else None
    launch_template = None
    if group.ec2_launch_template:
        if group.ec2_launch_template.id:
            launch_template = {"LaunchTemplateId": group.ec2_launch_template.id}
        elif group.ec2_launch_template.name:
            launch_template = {"LaunchTemplateName": group.ec2_launch_template.name}
    backend = group.autoscaling_backend
    launched = []
    before = len(group.active_instances())
    t = aws_time(utcnow())
    for i in range(count):
        placement = zone or pick_launch_zone(group)
        reservation = backend.ec2_backend.run_instances(
            group.image_id,
            1,
            group.user_data,
            group.security_groups,
            instance_type=group.instance_type,
            tags={"instance": dict(propagated_tags)},
            placement=placement,
            launch_config=group.launch_config,
            launch_template=launch_template,
            is_instance_type_default=False,
            associate_public_ip=associate_public_ip,
            subnet_id=subnet_for_zone(group, placement),
        )
        for instance in reservation.instances:
            instance.autoscaling_group = group
            state = InstanceState(instance, protected_from_scale_in=group.new_instances_protected_from_scale_in)
            group.instance_states.append(state)
            launched.append(state)
    st = tg_state(backend)
    hooks = lifecycle_hooks(backend, group.name, LAUNCHING)
    for state in launched:
        cause = cause_for(t) if cause_for else launch_cause("", t, before, before + count)
        activity = Activity(
            group,
            f"Launching a new EC2 instance: {state.instance.id}",
            cause,
            state.instance.id,
            instance_details(state),
            "Successful",
            100,
            utcnow(),
        )
        st.activities.append(activity)
        if hooks:
            begin_launch(group, state, activity, hooks)
        else:
            activity.finish()
    return launched


def select_for_scale_in(group: FakeAutoScalingGroup, count: int) -> list[InstanceState]:
    """AWS's default termination policy, deterministic: zone with the most instances, oldest first."""
    candidates = [s for s in group.active_instances() if not s.protected_from_scale_in]
    remaining = list(group.active_instances())
    newest = "NewestInstance" in (group.termination_policies or [])
    order = {z: i for i, z in enumerate(group.availability_zones)}
    chosen: list[InstanceState] = []
    for _ in range(count):
        if not candidates:
            break
        counts = zone_counts(group, remaining)
        zones = {zone_of(s) for s in candidates}
        zone = max(zones, key=lambda z: (counts.get(z, 0), -order.get(z, 99)))
        in_zone = [s for s in candidates if zone_of(s) == zone]
        victim = in_zone[-1] if newest else in_zone[0]
        chosen.append(victim)
        candidates.remove(victim)
        remaining.remove(victim)
    return chosen


def lifecycle_hooks(backend: AutoScalingBackend, group_name: str, transition: str) -> list[LifecycleHook]:
    return [
        h
        for h in backend.lifecycle_hooks.values()
        if h.auto_scaling_group_name == group_name and h.lifecycle_transition == transition
    ]


def termination_hooks(backend: AutoScalingBackend, group_name: str) -> list[LifecycleHook]:
    return lifecycle_hooks(backend, group_name, TERMINATING)


# --------------------------------------------------------------------------------------------
# the termination state machine
# --------------------------------------------------------------------------------------------


def begin_termination(
    group: FakeAutoScalingGroup,
    state: InstanceState,
    cause: str | None,
    force: bool = False,
) -> Termination:
    """Take an instance out of service: Terminating:Wait when the group has a termination hook."""
    backend = group.autoscaling_backend
    st = tg_state(backend)
    activity = None
    if cause is not None:
        activity = Activity(
            group,
            f"Terminating EC2 instance: {state.instance.id}",
            cause,
            state.instance.id,
            instance_details(state),
            "InProgress",
            0,
            utcnow(),
        )
        st.activities.append(activity)
    term = Termination(backend, group, state, activity)
    st.terminations[term.instance_id] = term
    hooks = [] if force else termination_hooks(backend, group.name)
    if not hooks:
        state.lifecycle_state = "Terminating"
        finalize_termination(term)
        return term
    hold_for_hooks(term, hooks, "Terminating:Wait", 50)
    return term


def hold_for_hooks(
    held: Transition, hooks: list[LifecycleHook], wait_state: str, progress: int
) -> None:
    """Put the instance in its wait state with one lifecycle action (and message) per hook."""
    st = tg_state(held.backend)
    held.instance_state.lifecycle_state = wait_state
    if held.activity:
        held.activity.status_code = "MidLifecycleAction"
        held.activity.progress = progress
    for hook in hooks:
        action = LifecycleAction(held.backend, hook, held)
        held.actions.append(action)
        st.actions[action.token] = action
        LOG.info(
            "%s -> %s (group %s, hook %s, token %s)",
            held.instance_id, wait_state, held.group.name, hook.name, action.token,
        )
        send_lifecycle_notification(held.backend, held.group, hook, action)
    SCHEDULER.kick()


def after_action_ended(term: "Termination | Launch", action: LifecycleAction) -> None:
    """ABANDON ends the instance's other actions; once none is waiting the instance proceeds."""
    if isinstance(term, Launch):
        after_launch_action_ended(term, action)
        return
    if term.phase != "wait":
        return
    if action.result == "ABANDON":
        for other in term.actions:
            if other.waiting:
                other.end("cancelled", None, f"AbandonedByHook:{action.hook_name}")
    if any(a.waiting for a in term.actions):
        return
    term.phase = "proceed"
    term.instance_state.lifecycle_state = "Terminating:Proceed"
    if term.activity:
        term.activity.status_code = "InProgress"
        term.activity.progress = 75
    term.proceed_at = time.monotonic() + Config.real_seconds(Config.proceed_seconds)
    LOG.info("%s -> Terminating:Proceed", term.instance_id)
    SCHEDULER.kick()


def finalize_termination(term: Termination, terminate_in_ec2: bool = True) -> None:
    """Terminating(:Proceed) -> Terminated: out of the group, terminated in EC2, activity done."""
    if term.phase == "done":
        return
    term.phase = "done"
    group = term.group
    backend = term.backend
    st = tg_state(backend)
    if st.terminations.get(term.instance_id) is term:
        del st.terminations[term.instance_id]  # lifecycle actions keep their own reference
    term.instance_state.lifecycle_state = "Terminated"
    group.instance_states = [s for s in group.instance_states if s is not term.instance_state]
    if terminate_in_ec2:
        try:
            backend.ec2_backend.terminate_instances([term.instance_id])
        except Exception as err:  # already gone
            LOG.info("EC2 termination of %s: %s", term.instance_id, err)
    if term.activity and term.activity.in_progress:
        term.activity.finish()
    LOG.info("%s -> Terminated", term.instance_id)
    if group.name in backend.autoscaling_groups and backend.autoscaling_groups[group.name] is group:
        backend.update_attached_elbs(group.name)
    if term.activity:
        put_on_event_bus(
            backend,
            "EC2 Instance Terminate Successful",
            [group.arn, f"arn:aws:ec2:{backend.region_name}:{backend.account_id}:instance/{term.instance_id}"],
            {
                "StatusCode": "InProgress",
                "Description": term.activity.description,
                "AutoScalingGroupName": group.name,
                "ActivityId": term.activity.activity_id,
                "Details": json.loads(term.activity.details),
                "RequestId": term.activity.activity_id,
                "StatusMessage": "",
                "EndTime": iso_ms(time.time()),
                "EC2InstanceId": term.instance_id,
                "StartTime": iso_ms(utc_epoch(term.activity.start_time)),
                "Cause": term.activity.cause,
                "Origin": "AutoScalingGroup",
                "Destination": "EC2",
            },
        )


def cancel_termination_now(term: Termination, reason: str, terminate_in_ec2: bool = True) -> None:
    for action in term.actions:
        if action.waiting:
            action.end("cancelled", None, reason)
    finalize_termination(term, terminate_in_ec2=terminate_in_ec2)


# --------------------------------------------------------------------------------------------
# the launch state machine
# --------------------------------------------------------------------------------------------


def begin_launch(
    group: FakeAutoScalingGroup,
    state: InstanceState,
    activity: Activity | None,
    hooks: list[LifecycleHook],
) -> Launch:
    """Hold a new instance in Pending:Wait: one lifecycle action per launch hook."""
    backend = group.autoscaling_backend
    st = tg_state(backend)
    launch = Launch(backend, group, state, activity)
    st.launches[launch.instance_id] = launch
    hold_for_hooks(launch, hooks, "Pending:Wait", 30)
    return launch


def after_launch_action_ended(launch: Launch, action: LifecycleAction) -> None:
    """CONTINUE from every hook: Pending:Proceed, then InService. ABANDON: terminate and replace."""
    if launch.phase != "wait":
        return
    if action.result == "ABANDON":
        for other in launch.actions:
            if other.waiting:
                other.end("cancelled", None, f"AbandonedByHook:{action.hook_name}")
        abandon_launch(launch, action)
        return
    if any(a.waiting for a in launch.actions):
        return
    launch.phase = "proceed"
    launch.instance_state.lifecycle_state = "Pending:Proceed"
    if launch.activity:
        launch.activity.status_code = "InProgress"
        launch.activity.progress = 60
    launch.proceed_at = time.monotonic() + Config.real_seconds(Config.proceed_seconds)
    LOG.info("%s -> Pending:Proceed", launch.instance_id)
    SCHEDULER.kick()


def finalize_launch(launch: Launch) -> None:
    """Pending:Proceed -> InService."""
    if launch.phase == "done":
        return
    launch.phase = "done"
    st = tg_state(launch.backend)
    if st.launches.get(launch.instance_id) is launch:
        del st.launches[launch.instance_id]
    launch.instance_state.lifecycle_state = "InService"
    if launch.activity and launch.activity.in_progress:
        launch.activity.finish()
    LOG.info("%s -> InService", launch.instance_id)
    group = launch.group
    backend = launch.backend
    if backend.autoscaling_groups.get(group.name) is group:
        backend.update_attached_elbs(group.name)
        backend.update_attached_target_groups(group.name)


def end_launch(launch: Launch, replace: bool, message: str | None, terminate_in_ec2: bool = True) -> None:
    """A launch that will not go into service: out of the group, terminated, replaced if asked."""
    if launch.phase == "done":
        return
    launch.phase = "done"
    st = tg_state(launch.backend)
    if st.launches.get(launch.instance_id) is launch:
        del st.launches[launch.instance_id]
    for action in launch.actions:
        if action.waiting:
            action.end("cancelled", None, message or "LaunchEnded")
    group = launch.group
    backend = launch.backend
    launch.instance_state.lifecycle_state = "Terminated"
    group.instance_states = [s for s in group.instance_states if s is not launch.instance_state]
    if launch.activity and launch.activity.in_progress:
        launch.activity.finish("Cancelled", message)
    if terminate_in_ec2:
        try:
            backend.ec2_backend.terminate_instances([launch.instance_id])
        except Exception as err:  # already gone
            LOG.info("EC2 termination of %s: %s", launch.instance_id, err)
    LOG.info("%s -> Terminated (launch abandoned)", launch.instance_id)
    if replace and backend.autoscaling_groups.get(group.name) is group:
        group.set_desired_capacity(group.desired_capacity)


def abandon_launch(launch: Launch, action: LifecycleAction) -> None:
    message = (
        f"Instance failed to complete user's Lifecycle Action: Lifecycle Action with token {action.token} "
        f"was abandoned: Lifecycle Action Completed with ABANDON Result"
    )
    end_launch(launch, replace=True, message=message)


def find_action(
    backend: AutoScalingBackend,
    group_name: str | None,
    hook_name: str | None,
    token: str | None,
    instance_id: str | None,
) -> LifecycleAction:
    st = tg_state(backend)
    for candidate in list(st.actions.values()):  # a timeout that is due wins over a late call
        expire_if_due(candidate)
    if token:
        action = st.actions.get(token)
        if (
            action is None
            or not action.waiting
            or (group_name and action.group_name != group_name)
            or (hook_name and action.hook_name != hook_name)
            or (instance_id and action.instance_id != instance_id)
        ):
            raise ValidationError(f"No active Lifecycle Action found with token {token}")
        return action
    if instance_id:
        for action in st.actions.values():
            if (
                action.waiting
                and action.instance_id == instance_id
                and (not group_name or action.group_name == group_name)
                and (not hook_name or action.hook_name == hook_name)
            ):
                return action
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")
    raise ValidationError("Either LifecycleActionToken or InstanceId must be specified")


# --------------------------------------------------------------------------------------------
# notifications
# --------------------------------------------------------------------------------------------


def parse_sqs_arn(arn: str | None) -> tuple[str, str, str] | None:
    """arn:<partition>:sqs:<region>:<account>:<name> -> (account, region, name)."""
    if not arn:
        return None
    parts = arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs":
        return None
    return parts[4], parts[3], parts[5]


def sqs_queue_for(arn: str | None) -> tuple[Any, str] | None:
    parsed = parse_sqs_arn(arn)
    if parsed is None:
        return None
    from moto.sqs import sqs_backends

    account, region, name = parsed
    backend = sqs_backends[account][region]
    backend.get_queue(name)  # raises QueueDoesNotExist
    return backend, name


def origin_destination(launching: bool) -> tuple[str, str]:
    """A launch goes from EC2 into the group; a termination from the group to EC2."""
    return ("EC2", "AutoScalingGroup") if launching else ("AutoScalingGroup", "EC2")


def lifecycle_event(backend: AutoScalingBackend, group: FakeAutoScalingGroup, hook: LifecycleHook, action: LifecycleAction) -> dict[str, Any]:
    """crates/termguard/tests/data/events/eventbridge-asg-terminate-lifecycle-action.json, field
    for field."""
    detail: dict[str, Any] = {
        "LifecycleActionToken": action.token,
        "AutoScalingGroupName": group.name,
        "LifecycleHookName": hook.name,
        "EC2InstanceId": action.instance_id,
        "LifecycleTransition": hook.lifecycle_transition,
    }
    if getattr(hook, "notification_metadata", None):
        detail["NotificationMetadata"] = hook.notification_metadata
    launching = hook.lifecycle_transition == LAUNCHING
    detail["Origin"], detail["Destination"] = origin_destination(launching)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "EC2 Instance-launch Lifecycle Action" if launching else "EC2 Instance-terminate Lifecycle Action",
        "source": "aws.autoscaling",
        "account": backend.account_id,
        "time": aws_time(datetime.fromtimestamp(action.started_wall, tz=timezone.utc)),
        "region": backend.region_name,
        "resources": [group.arn],
        "detail": detail,
    }


def direct_notification(backend: AutoScalingBackend, group: FakeAutoScalingGroup, hook: LifecycleHook, action: LifecycleAction) -> dict[str, Any]:
    """crates/termguard/tests/data/events/sqs-direct-asg-terminate-lifecycle.json, field for field."""
    origin, destination = origin_destination(hook.lifecycle_transition == LAUNCHING)
    body: dict[str, Any] = {
        "Origin": origin,
        "LifecycleHookName": hook.name,
        "Destination": destination,
        "AccountId": backend.account_id,
        "RequestId": str(uuid.uuid4()),
        "LifecycleTransition": hook.lifecycle_transition,
        "AutoScalingGroupName": group.name,
        "Service": "AWS Auto Scaling",
        "Time": iso_ms(action.started_wall),
        "EC2InstanceId": action.instance_id,
        "LifecycleActionToken": action.token,
    }
    if getattr(hook, "notification_metadata", None):
        body["NotificationMetadata"] = hook.notification_metadata
    return body


def send_lifecycle_notification(backend: AutoScalingBackend, group: FakeAutoScalingGroup, hook: LifecycleHook, action: LifecycleAction) -> None:
    event = lifecycle_event(backend, group, hook, action)
    target = hook.notification_target_arn
    if target:
        body = event if Config.notification_shape == "eventbridge" else direct_notification(backend, group, hook, action)
        text = json.dumps(body)
        action.notification["body"] = body
        try:
            found = sqs_queue_for(target)
            if found is None:
                raise ValueError(f"unsupported notification target {target} (only SQS queues)")
            sqs, name = found
            message = sqs.send_message(queue_name=name, message_body=text)
            action.notification["sent"] = True
            action.notification["message_id"] = message.id
        except Exception as err:  # best effort, like AWS; recorded for the tests
            action.notification["error"] = f"{type(err).__name__}: {err}"
            LOG.warning("lifecycle notification for %s to %s failed: %s", action.instance_id, target, err)
    put_on_event_bus(backend, event["detail-type"], event["resources"], event["detail"])


def put_on_event_bus(backend: AutoScalingBackend, detail_type: str, resources: list[str], detail: dict[str, Any]) -> None:
    """Emit an aws.autoscaling event on the default bus, so EventBridge rules created by a test fire."""
    try:
        from moto.events import events_backends

        events = events_backends[backend.account_id][backend.region_name]
        bus = events.event_buses.get("default")
        if bus is None or not bus.rules:
            return
        events.put_events(
            [
                {
                    "Source": "aws.autoscaling",
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "Resources": resources,
                    "Time": time.time(),
                }
            ]
        )
    except Exception as err:
        LOG.warning("EventBridge emission of %r failed: %s", detail_type, err)


def send_test_notification(backend: AutoScalingBackend, group_name: str, target: str) -> None:
    found = sqs_queue_for(target)
    if found is None:
        return
    sqs, name = found
    group = backend.autoscaling_groups.get(group_name)
    body = {
        "AccountId": backend.account_id,
        "RequestId": str(uuid.uuid4()),
        "AutoScalingGroupARN": group.arn if group else None,
        "AutoScalingGroupName": group_name,
        "Service": "AWS Auto Scaling",
        "Event": "autoscaling:TEST_NOTIFICATION",
        "Time": iso_ms(time.time()),
    }
    sqs.send_message(queue_name=name, message_body=json.dumps(body))


# --------------------------------------------------------------------------------------------
# patches: models
# --------------------------------------------------------------------------------------------

_orig_backend_init = AutoScalingBackend.__init__
_orig_notify_terminate = AutoScalingBackend.notify_terminate_instances
_orig_delete_group = AutoScalingBackend.delete_auto_scaling_group


def _backend_init(self: AutoScalingBackend, region_name: str, account_id: str) -> None:
    _orig_backend_init(self, region_name, account_id)
    self.__dict__["_tg"] = TGState()


def _group_set_desired_capacity(self: FakeAutoScalingGroup, new_capacity: int | None) -> None:
    """Replaces moto's: scale-in goes through lifecycle hooks; launches are zone-balanced."""
    with LOCK:
        old = self.__dict__.get("desired_capacity") or 0
        self.desired_capacity = self.min_size if new_capacity is None else new_capacity
        trig = current_trigger()
        deleting = trig.get("kind") == "delete"
        now = aws_time(utcnow())
        prefix = "" if deleting else trigger_sentence(trig, self, old, self.desired_capacity or 0, now)
        target = target_instance_count(self)
        active = self.active_instances()
        # Instances held by launch hooks (Pending*) count toward capacity: no second launch for them.
        delta = target - len(counted_instances(self))
        if delta > 0:
            before = len(counted_instances(self))
            launch_instances(
                self,
                delta,
                self.get_propagated_tags(),
                cause_for=lambda t: launch_cause(prefix, t, before, before + delta),
            )
        elif delta < 0:
            before = len(active)
            for victim in select_for_scale_in(self, -delta):
                cause = None if deleting else scale_in_cause(prefix, now, before, target, victim.instance.id)
                begin_termination(self, victim, cause, force=deleting)
        if self.name in self.autoscaling_backend.autoscaling_groups:
            self.autoscaling_backend.update_attached_elbs(self.name)
            self.autoscaling_backend.update_attached_target_groups(self.name)


def _group_replace_instances(self: FakeAutoScalingGroup, count_needed: int, propagated_tags: dict[str, str]) -> None:
    """Used by moto itself (EC2 TerminateInstances of a member): zone-balanced replacements."""
    with LOCK:
        launch_instances(self, count_needed, propagated_tags)


def _backend_notify_terminate(self: AutoScalingBackend, instance_ids: list[str]) -> None:
    """EC2 TerminateInstances on group members: end their lifecycle actions, then moto's logic."""
    with LOCK:
        st = tg_state(self)
        for iid in instance_ids:
            term = st.terminations.get(iid)
            if term and term.phase != "done":
                cancel_termination_now(term, "InstanceTerminatedInEC2", terminate_in_ec2=False)
            launch = st.launches.get(iid)
            if launch and launch.phase != "done":
                end_launch(launch, replace=True, message="InstanceTerminatedInEC2", terminate_in_ec2=False)
        _orig_notify_terminate(self, instance_ids)


def _backend_delete_group(self: AutoScalingBackend, group_name: str) -> None:
    """Deletion as with ForceDelete: no hooks run, waiting instances go at once, hooks are deleted."""
    with LOCK, trigger("delete"):
        st = tg_state(self)
        if group_name in self.autoscaling_groups:
            for term in list(st.terminations.values()):
                if term.group is self.autoscaling_groups[group_name] and term.phase != "done":
                    cancel_termination_now(term, "GroupDeleted")
            for launch in list(st.launches.values()):
                if launch.group is self.autoscaling_groups[group_name] and launch.phase != "done":
                    end_launch(launch, replace=False, message="GroupDeleted")
        _orig_delete_group(self, group_name)
        for key, hook in list(self.lifecycle_hooks.items()):
            if hook.auto_scaling_group_name == group_name:
                del self.lifecycle_hooks[key]
        for activity in st.activities:
            if activity.group_name == group_name:
                activity.group_deleted = True


# --------------------------------------------------------------------------------------------
# patches: responses (Query actions)
# --------------------------------------------------------------------------------------------

_orig_call_action = AutoScalingResponse.call_action
_orig_parse_parameters = AutoScalingResponse.parse_parameters


def _call_action(self: AutoScalingResponse):
    with LOCK:
        return _orig_call_action(self)


def _parse_parameters(self: AutoScalingResponse, request: Any) -> None:
    if self._get_action() in CUSTOM_ACTIONS:  # not in botocore's model: plain Query params
        self.params = {k: v[0] if isinstance(v, list) else v for k, v in self.querystring.items()}
        return
    _orig_parse_parameters(self, request)


def _wrap_with_trigger(name: str, kind: str, **fixed: Any) -> None:
    original = getattr(AutoScalingResponse, name)

    def wrapped(self: AutoScalingResponse):
        info = dict(fixed)
        if kind == "policy":
            info["policy"] = self._get_param("PolicyName")
        with trigger(kind, **info):
            return original(self)

    wrapped.__name__ = name
    setattr(AutoScalingResponse, name, wrapped)


def _keep_group_settings(name: str) -> None:
    """Wraps Create/UpdateAutoScalingGroup to keep MaxInstanceLifetime and InstanceLifecyclePolicy.

    moto 5.2.1 ignores both parameters (and CapacityRebalance in an update); DescribeAutoScalingGroups serialises a group's attributes
    by their snake_case names, so keeping them on the group is enough for it to report them
    (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html).
    An update changes only what it is given; MaxInstanceLifetime 0 clears it, as AWS does.
    """
    original = getattr(AutoScalingResponse, name)

    def wrapped(self: AutoScalingResponse):
        result = original(self)
        group = self.autoscaling_backend.autoscaling_groups.get(self._get_param("AutoScalingGroupName"))
        if group is not None:
            lifetime = self._get_int_param("MaxInstanceLifetime")
            if lifetime is not None:
                group.max_instance_lifetime = lifetime or None
            policy = self._get_params().get("InstanceLifecyclePolicy")
            if policy is not None:
                group.instance_lifecycle_policy = policy
            rebalance = self._get_bool_param("CapacityRebalance")
            if rebalance is not None:  # moto's update ignores it
                group.capacity_rebalance = rebalance
        return result

    wrapped.__name__ = name
    setattr(AutoScalingResponse, name, wrapped)


def _put_lifecycle_hook(self: AutoScalingResponse):
    put_hook(
        self.autoscaling_backend,
        name=self._get_param("LifecycleHookName"),
        group_name=self._get_param("AutoScalingGroupName"),
        transition=self._get_param("LifecycleTransition"),
        heartbeat=self._get_int_param("HeartbeatTimeout"),
        result=self._get_param("DefaultResult"),
        target=self._get_param("NotificationTargetARN"),
        role=self._get_param("RoleARN"),
        metadata=self._get_param("NotificationMetadata"),
    )
    return EmptyResult()


def put_hook(
    backend: AutoScalingBackend,
    name: str,
    group_name: str,
    transition: str | None,
    heartbeat: int | None,
    result: str | None,
    target: str | None,
    role: str | None,
    metadata: str | None,
) -> LifecycleHook:
    """PutLifecycleHook's semantics, for the API and for CloudFormation's AWS::AutoScaling::LifecycleHook."""
    key = f"{group_name}_{name}"
    existing = backend.lifecycle_hooks.get(key)
    transition = transition or (existing.lifecycle_transition if existing else None)
    if transition not in (TERMINATING, LAUNCHING):
        raise ValidationError(
            "LifecycleTransition must be autoscaling:EC2_INSTANCE_LAUNCHING or autoscaling:EC2_INSTANCE_TERMINATING"
        )
    if heartbeat is None:
        heartbeat = existing.heartbeat_timeout if existing else 3600
    if not 30 <= int(heartbeat) <= 7200:
        raise ValidationError(f"HeartbeatTimeout must be between 30 and 7200 seconds (got {heartbeat})")
    result = result or (existing.default_result if existing else "ABANDON")
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"DefaultResult must be CONTINUE or ABANDON (got {result})")
    if existing is not None:
        target = target if target is not None else existing.notification_target_arn
        role = role if role is not None else existing.role_arn
        metadata = metadata if metadata is not None else getattr(existing, "notification_metadata", None)
    if target and parse_sqs_arn(target):
        account, region, queue = parse_sqs_arn(target)
        ok = True
        try:
            sqs_queue_for(target)
        except Exception:
            ok = False
        if not ok or queue.endswith(".fifo"):
            raise ValidationError(
                f"Unable to publish test message to notification target {target} using IAM role {role}. "
                "Please check your target and role configuration and try to put lifecycle hook again."
            )
    hook = LifecycleHook(name, group_name, transition, int(heartbeat), result)
    hook.notification_target_arn = target or None
    hook.role_arn = role or None
    hook.notification_metadata = metadata or None
    aws_global = min(172800, 100 * int(heartbeat))
    hook.global_timeout = int(Config.global_timeout_override) if Config.global_timeout_override else aws_global
    backend.lifecycle_hooks[key] = hook
    if target and Config.notification_shape == "direct" and existing is None:
        send_test_notification(backend, group_name, target)
    return hook


def _record_lifecycle_action_heartbeat(self: AutoScalingResponse):
    action = find_action(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("LifecycleActionToken"),
        self._get_param("InstanceId"),
    )
    now = time.monotonic()
    action.heartbeats.append(time.time())
    action.heartbeats_arrived.append(arrival())
    action.heartbeat_deadline = now + Config.real_seconds(action.heartbeat_timeout)
    LOG.info("heartbeat %d for %s (%s)", len(action.heartbeats), action.token, action.instance_id)
    SCHEDULER.kick()
    return EmptyResult()


def _complete_lifecycle_action(self: AutoScalingResponse):
    result = self._get_param("LifecycleActionResult")
    action = find_action(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("LifecycleActionToken"),
        self._get_param("InstanceId"),
    )
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError(f"LifecycleActionResult must be CONTINUE or ABANDON (got {result})")
    action.end("completed", result, "CompleteLifecycleAction")
    after_action_ended(action.term, action)
    return EmptyResult()


def _describe_scaling_activities(self: AutoScalingResponse):
    backend = self.autoscaling_backend
    st = tg_state(backend)
    group_name = self._get_param("AutoScalingGroupName")
    activity_ids = self._get_param("ActivityIds", []) or []
    include_deleted = bool(self._get_param("IncludeDeletedGroups", False))
    max_records = self._get_int_param("MaxRecords") or 100
    if not 1 <= max_records <= 100:
        raise ValidationError(f"MaxRecords must be between 1 and 100 (got {max_records})")
    token = self._get_param("NextToken")
    items = [
        a
        for a in st.activities
        if (not group_name or a.group_name == group_name)
        and (not activity_ids or a.activity_id in activity_ids)
        and (include_deleted or not a.group_deleted)
    ]
    # AWS: "Activities are sorted by start time. Activities still in progress are described first."
    items.sort(key=lambda a: (0 if a.in_progress else 1, -utc_epoch(a.start_time), -a.seq))
    start = 0
    if token:
        m = re.fullmatch(r"tg-(\d+)", token)
        if not m:
            raise ValidationError(f"The NextToken '{token}' is invalid.")
        start = int(m.group(1))
    page = items[start : start + max_records]
    result: dict[str, Any] = {"Activities": [a.to_api() for a in page]}
    if start + max_records < len(items):
        result["NextToken"] = f"tg-{start + max_records}"
    return ActionResult(result)


def _find_member(backend: AutoScalingBackend, instance_id: str) -> tuple[FakeAutoScalingGroup, InstanceState]:
    for group in backend.autoscaling_groups.values():
        for state in group.instance_states:
            if state.instance.id == instance_id:
                return group, state
    raise ValidationError(f"Instance Id not found - No managed instance found for instance ID {instance_id}")


def _terminate_instance_in_auto_scaling_group(self: AutoScalingResponse):
    backend = self.autoscaling_backend
    instance_id = self._get_param("InstanceId")
    decrement = bool(self._get_bool_param("ShouldDecrementDesiredCapacity", False))
    group, state = _find_member(backend, instance_id)
    st = tg_state(backend)
    existing = st.terminations.get(instance_id)
    if existing is not None and existing.phase != "done" and existing.activity is not None:
        return ActionResult({"Activity": existing.activity.to_api()})  # already on its way out
    if state.lifecycle_state != "InService":
        raise ValidationError(f"Instance {instance_id} is in state {state.lifecycle_state} and cannot be terminated")
    desired = group.desired_capacity or 0
    if decrement and desired <= (group.min_size or 0):
        raise ValidationError(
            f"Currently, desiredSize equals minSize ({group.min_size}). Terminating instance without replacement "
            "will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or "
            "lower group's min size."
        )
    t = aws_time(utcnow())
    if decrement:
        group.desired_capacity = desired - 1
    cause = user_terminate_cause(t, instance_id, desired, desired - 1, decrement)
    term = begin_termination(group, state, cause)
    if not decrement:
        group.set_desired_capacity(group.desired_capacity)  # the replacement
    else:
        backend.update_attached_elbs(group.name)
    return ActionResult({"Activity": term.activity.to_api()})


def _simulate_az_rebalance(self: AutoScalingResponse):
    """Test-only: an AZRebalance as AWS runs it: launch in the emptiest zone, then terminate."""
    backend = self.autoscaling_backend
    group_name = self._get_param("AutoScalingGroupName")
    instance_id = self._get_param("InstanceId")
    group = backend.autoscaling_groups.get(group_name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{group_name}' not found")
    if "AZRebalance" in group._suspended_processes:
        raise ValidationError(f"AZRebalance is suspended for AutoScalingGroup '{group_name}'")
    active = group.active_instances()
    if instance_id:
        victim = next((s for s in group.instance_states if s.instance.id == instance_id), None)
        if victim is None:
            raise ValidationError(f"Instance Id not found - No managed instance found for instance ID {instance_id}")
        if victim.lifecycle_state != "InService":
            raise ValidationError(f"Instance {instance_id} is in state {victim.lifecycle_state}")
    else:
        if not active:
            raise ValidationError(f"AutoScalingGroup '{group_name}' has no InService instance to rebalance")
        counts = zone_counts(group, active)
        order = {z: i for i, z in enumerate(group.availability_zones)}
        unprotected = [s for s in active if not s.protected_from_scale_in] or active
        zone = max({zone_of(s) for s in unprotected}, key=lambda z: (counts.get(z, 0), -order.get(z, 99)))
        victim = [s for s in unprotected if zone_of(s) == zone][0]
    zones = list(group.availability_zones)
    counts_before = zone_counts(group, counted_instances(group))
    launch_zone = pick_launch_zone(group, avoid=zone_of(victim))
    launched = launch_instances(
        group,
        1,
        group.get_propagated_tags(),
        cause_for=lambda t: rebalance_launch_cause(t, zones, [counts_before.get(z, 0) for z in zones]),
        zone=launch_zone,
    )
    before = len(group.active_instances())
    t = aws_time(utcnow())
    cause = rebalance_terminate_cause(t, [launch_zone], before, before - 1, victim.instance.id)
    term = begin_termination(group, victim, cause)
    backend.update_attached_elbs(group.name)
    st = tg_state(backend)
    launch_activity = next(a for a in reversed(st.activities) if a.instance_id == launched[0].instance.id)
    members = "".join(
        "<member>" + activity_xml(a) + "</member>" for a in (term.activity, launch_activity) if a is not None
    )
    return (
        f'<SimulateAZRebalanceResponse xmlns="{ASG_XMLNS}"><SimulateAZRebalanceResult>'
        f"<TerminatingInstanceId>{xml_escape(victim.instance.id)}</TerminatingInstanceId>"
        f"<LaunchedInstanceId>{xml_escape(launched[0].instance.id)}</LaunchedInstanceId>"
        f"<Activities>{members}</Activities>"
        f"</SimulateAZRebalanceResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
        f"</ResponseMetadata></SimulateAZRebalanceResponse>"
    )


def activity_xml(a: Activity) -> str:
    fields = a.to_api()
    out = []
    for key, value in fields.items():
        if isinstance(value, datetime):
            value = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        out.append(f"<{key}>{xml_escape(str(value))}</{key}>")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# CloudFormation: the two resource types of deploy/cloudformation/termguard.yaml moto lacks
# --------------------------------------------------------------------------------------------
# moto 5.2.1's CloudFormation skips a resource type it has no model for (a warning, and the stack
# still reports CREATE_COMPLETE), and it has none for AWS::SQS::QueuePolicy and
# AWS::AutoScaling::LifecycleHook. moto finds its models as the subclasses of CloudFormationModel,
# so defining two more is all it takes; each does what the AWS API call behind it does
# (SetQueueAttributes Policy, PutLifecycleHook through put_hook above), following
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sqs-queuepolicy.html
# and .../aws-resource-autoscaling-lifecyclehook.html. Not modelled: updates (a stack update
# replaces neither), the generated PhysicalResourceId format of a QueuePolicy.


def _queue_name_from_url(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def install_cloudformation_models() -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.sqs.exceptions import QueueDoesNotExist
    from moto.sqs.models import sqs_backends
    from moto.autoscaling.models import autoscaling_backends

    # moto's model metaclass files each model under the service its module names.
    class CfnQueuePolicy(CloudFormationModel):
        __module__ = "moto.sqs.termguard"

        def __init__(self, account_id: str, region_name: str, queues: list[str], document: Any):
            self.account_id, self.region_name = account_id, region_name
            self.queues, self.document = queues, document
            self.id = f"termguard-queue-policy-{uuid.uuid4()}"

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::SQS::QueuePolicy"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Id"

        @property
        def physical_resource_id(self) -> str:
            return self.id

        def _set(self, policy: str, gone_ok: bool = False) -> None:
            backend = sqs_backends[self.account_id][self.region_name]
            for url in self.queues:
                try:
                    backend.set_queue_attributes(_queue_name_from_url(url), {"Policy": policy})
                except QueueDoesNotExist:
                    # moto deletes a stack's resources in set order, which changes with the
                    # hash seed: the queue may go before its policy, and the policy went with it.
                    if not gone_ok:
                        raise

        @classmethod
        def create_from_cloudformation_json(  # type: ignore[misc]
            cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
        ) -> "CfnQueuePolicy":
            props = cloudformation_json["Properties"]
            document = props["PolicyDocument"]
            policy = CfnQueuePolicy(account_id, region_name, list(props["Queues"]), document)
            policy._set(document if isinstance(document, str) else json.dumps(document))
            return policy

        def delete(self, account_id: str, region_name: str) -> None:
            self._set("", gone_ok=True)

    class CfnLifecycleHook(CloudFormationModel):
        __module__ = "moto.autoscaling.termguard"

        def __init__(self, account_id: str, region_name: str, group: str, name: str):
            self.account_id, self.region_name, self.group, self.name = account_id, region_name, group, name

        @staticmethod
        def cloudformation_name_type() -> str:
            return "LifecycleHookName"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::AutoScaling::LifecycleHook"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return False

        @property
        def physical_resource_id(self) -> str:
            return self.name

        @classmethod
        def create_from_cloudformation_json(  # type: ignore[misc]
            cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
        ) -> "CfnLifecycleHook":
            props = cloudformation_json["Properties"]
            backend = autoscaling_backends[account_id][region_name]
            group = props["AutoScalingGroupName"]
            heartbeat = props.get("HeartbeatTimeout")
            with LOCK:
                if group not in backend.autoscaling_groups:
                    raise ValidationError(f"No AutoScalingGroup named {group}")
                put_hook(
                    backend,
                    name=resource_name,
                    group_name=group,
                    transition=props["LifecycleTransition"],
                    heartbeat=int(heartbeat) if heartbeat is not None else None,
                    result=props.get("DefaultResult"),
                    target=props.get("NotificationTargetARN"),
                    role=props.get("RoleARN"),
                    metadata=props.get("NotificationMetadata"),
                )
            return CfnLifecycleHook(account_id, region_name, group, resource_name)

        def delete(self, account_id: str, region_name: str) -> None:
            backend = autoscaling_backends[account_id][region_name]
            with LOCK:
                backend.lifecycle_hooks.pop(f"{self.group}_{self.name}", None)

    # moto memoizes its model lists on first use.
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


def install_patches() -> None:
    if moto.__version__ != MOTO_VERSION_WRITTEN_FOR:
        LOG.warning(
            "moto %s installed; this launcher patches moto %s internals", moto.__version__, MOTO_VERSION_WRITTEN_FOR
        )
    AutoScalingBackend.__init__ = _backend_init
    AutoScalingBackend.notify_terminate_instances = _backend_notify_terminate
    AutoScalingBackend.delete_auto_scaling_group = _backend_delete_group
    FakeAutoScalingGroup.set_desired_capacity = _group_set_desired_capacity
    FakeAutoScalingGroup.replace_autoscaling_group_instances = _group_replace_instances

    AutoScalingResponse.call_action = _call_action
    AutoScalingResponse.parse_parameters = _parse_parameters
    _keep_group_settings("create_auto_scaling_group")
    _keep_group_settings("update_auto_scaling_group")
    _wrap_with_trigger("create_auto_scaling_group", "create")
    _wrap_with_trigger("set_desired_capacity", "set-desired")
    _wrap_with_trigger("update_auto_scaling_group", "update")
    _wrap_with_trigger("execute_policy", "policy")
    AutoScalingResponse.put_lifecycle_hook = _put_lifecycle_hook
    AutoScalingResponse.record_lifecycle_action_heartbeat = _record_lifecycle_action_heartbeat
    AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action
    AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities
    AutoScalingResponse.terminate_instance_in_auto_scaling_group = _terminate_instance_in_auto_scaling_group
    AutoScalingResponse.simulate_az_rebalance = _simulate_az_rebalance
    install_sqs_deletion_record()
    install_sqs_attribute_fix()
    install_fast_paths()
    install_disjoint_receives()
    install_cloudformation_models()


# --------------------------------------------------------------------------------------------
# fault injection (test-only): PUT/GET/DELETE /_termguard/faults
# --------------------------------------------------------------------------------------------

FAULT_SERVICES = ("autoscaling", "sqs")  # the services termguard calls; others are never faulted
ASG_VERSION = "2011-01-01"
SQS_VERSION = "2012-11-05"
SQS_XMLNS = "http://queue.amazonaws.com/doc/2012-11-05/"
SQS_JSON_TARGET_PREFIX = "AmazonSQS."  # X-Amz-Target of the SQS JSON protocol (AWS SDK for Rust, boto3)
SQS_JSON_NAMESPACE = "com.amazonaws.sqs"  # __type prefix, as moto (and SQS) write it
LIFECYCLE_CALLS = ("RecordLifecycleActionHeartbeat", "CompleteLifecycleAction")
# error kind -> (HTTP status, fault type, code per service, message). The messages are AWS's
# common-error texts; Auto Scaling says "Throttling"/"Rate exceeded", SQS's modelled throttling
# error is "RequestThrottled" (botocore's sqs model; the AWS SDK for Rust maps that code).
FAULT_KINDS: dict[str, tuple[int, str, dict[str, str], str]] = {
    "throttling": (400, "Sender", {"autoscaling": "Throttling", "sqs": "RequestThrottled"}, "Rate exceeded"),
    "internal": (
        500,
        "Receiver",
        {"autoscaling": "InternalFailure", "sqs": "InternalFailure"},
        "The request processing has failed because of an unknown error, exception or failure.",
    ),
    "unavailable": (
        503,
        "Receiver",
        {"autoscaling": "ServiceUnavailable", "sqs": "ServiceUnavailable"},
        "The request has failed due to a temporary failure of the server.",
    ),
}
HTTP_REASONS = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
_MEMBER_KEY = re.compile(r"(AutoScalingGroupNames|InstanceIds)\.member\.\d+")


class FaultConfigError(ValueError):
    """A PUT /_termguard/faults body that is not a valid fault config (HTTP 400)."""


_OPERATIONS: dict[str, set[str]] = {}


def operation_names(service: str) -> set[str]:
    if service not in _OPERATIONS:
        import botocore.session

        model = botocore.session.get_session().get_service_model(service)
        _OPERATIONS[service] = set(model.operation_names) | (CUSTOM_ACTIONS if service == "autoscaling" else set())
    return _OPERATIONS[service]


class ApiCall:
    """One Auto Scaling or SQS request as the WSGI front sees it, before moto does."""

    def __init__(self, service: str, action: str, protocol: str, params: dict[str, str]):
        self.service = service  # autoscaling | sqs
        self.action = action  # the Query action name (ReceiveMessage, also for AmazonSQS.ReceiveMessage)
        self.protocol = protocol  # query | json
        self.params = params  # Query parameters, first value of each ({} for the JSON protocol)
        self.groups: set[str] = set()
        self.instances: set[str] = set()
        for key, value in params.items():
            if key == "AutoScalingGroupName" or (key.startswith("AutoScalingGroupNames.") and _MEMBER_KEY.fullmatch(key)):
                self.groups.add(value)
            elif key == "InstanceId" or (key.startswith("InstanceIds.") and _MEMBER_KEY.fullmatch(key)):
                self.instances.add(value)
        self.lifecycle_action: LifecycleAction | None = None

    def resolve_lifecycle_action(self) -> None:
        """Heartbeat/Complete: the action the call names (by token, else by instance), if any."""
        if self.action not in LIFECYCLE_CALLS:
            return
        token = self.params.get("LifecycleActionToken")
        instance_id = self.params.get("InstanceId")
        group = self.params.get("AutoScalingGroupName")
        hook = self.params.get("LifecycleHookName")
        with LOCK:
            found: list[LifecycleAction] = []
            for backend in _REGISTRY:
                st = backend.__dict__.get("_tg")
                if st is None:
                    continue
                if token:
                    if token in st.actions:
                        found.append(st.actions[token])
                elif instance_id:
                    found.extend(
                        a
                        for a in st.actions.values()
                        if a.instance_id == instance_id
                        and (not group or a.group_name == group)
                        and (not hook or a.hook_name == hook)
                    )
            if not found:
                return
            found.sort(key=lambda a: (a.waiting, a.seq))  # a waiting one, else the newest
            self.lifecycle_action = found[-1]
            self.groups.add(self.lifecycle_action.group_name)
            self.instances.add(self.lifecycle_action.instance_id)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaultConfigError(f"{what} must be a number (got {value!r})")
    return float(value)


class FaultRule:
    FIELDS = ("action", "error_rate", "fail_next", "error", "latency_ms", "group", "instance")

    def __init__(self, spec: Any, index: int):
        where = f"rules[{index}]"
        if not isinstance(spec, dict):
            raise FaultConfigError(f"{where} must be an object")
        unknown = sorted(set(spec) - set(self.FIELDS))
        if unknown:
            raise FaultConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(self.FIELDS)})")
        action = spec.get("action")
        known = operation_names("autoscaling") | operation_names("sqs")
        if not isinstance(action, str) or (action != "*" and action not in known):
            raise FaultConfigError(
                f"{where}.action must be \"*\" or an Auto Scaling or SQS action name such as "
                f"RecordLifecycleActionHeartbeat or ReceiveMessage (got {action!r})"
            )
        self.action = action
        self.error_rate = _number(spec.get("error_rate", 0), f"{where}.error_rate")
        if not 0 <= self.error_rate <= 1:
            raise FaultConfigError(f"{where}.error_rate must be between 0 and 1 (got {self.error_rate})")
        fail_next = spec.get("fail_next", 0)
        if isinstance(fail_next, bool) or not isinstance(fail_next, int) or fail_next < 0:
            raise FaultConfigError(f"{where}.fail_next must be an integer >= 0 (got {fail_next!r})")
        self.fail_next = fail_next
        self.error = spec.get("error", "throttling")
        if self.error not in FAULT_KINDS:
            raise FaultConfigError(f"{where}.error must be one of {', '.join(FAULT_KINDS)} (got {self.error!r})")
        latency = spec.get("latency_ms")
        if latency is not None:
            if isinstance(latency, (int, float)) and not isinstance(latency, bool):
                latency = [latency, latency]
            if not isinstance(latency, list) or len(latency) != 2:
                raise FaultConfigError(f"{where}.latency_ms must be [min, max] in milliseconds (got {latency!r})")
            low, high = (_number(v, f"{where}.latency_ms") for v in latency)
            if not 0 <= low <= high <= 600_000:
                raise FaultConfigError(f"{where}.latency_ms needs 0 <= min <= max <= 600000 (got {latency!r})")
            latency = [low, high]
        self.latency_ms: list[float] | None = latency
        for field in ("group", "instance"):
            value = spec.get(field)
            if value is not None and (not isinstance(value, str) or not value):
                raise FaultConfigError(f"{where}.{field} must be a non-empty string (got {value!r})")
        self.group: str | None = spec.get("group")
        self.instance: str | None = spec.get("instance")
        # state
        self.fail_next_remaining = self.fail_next
        self.matched = 0
        self.injected = 0

    def matches(self, call: ApiCall) -> bool:
        return (
            (self.action == "*" or self.action == call.action)
            and (self.group is None or self.group in call.groups)
            and (self.instance is None or self.instance in call.instances)
        )

    def to_config(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "error_rate": self.error_rate,
            "fail_next": self.fail_next,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "group": self.group,
            "instance": self.instance,
        }


class FaultInjector:
    """The fault config and its counters. Its own lock: never held while LOCK is taken."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.config: dict[str, Any] | None = None
        self.rules: list[FaultRule] = []
        self.rng = random.Random(0)
        self.latency_rng = random.Random("0:latency")
        self.calls: dict[str, int] = {}
        self.injected: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return bool(self.rules)

    def put(self, body: Any) -> None:
        """Replace the config (and restart the random sequences and every counter)."""
        if not isinstance(body, dict):
            raise FaultConfigError("the fault config must be a JSON object {\"seed\": …, \"rules\": […]}")
        unknown = sorted(set(body) - {"seed", "rules"})
        if unknown:
            raise FaultConfigError(f"unknown field(s) {', '.join(unknown)} (known: seed, rules)")
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, (int, str)):
            raise FaultConfigError(f"seed must be an integer or a string (got {seed!r})")
        specs = body.get("rules", [])
        if not isinstance(specs, list):
            raise FaultConfigError("rules must be a list")
        rules = [FaultRule(spec, i) for i, spec in enumerate(specs)]
        with self.lock:
            self.config = {"seed": seed, "rules": [r.to_config() for r in rules]}
            self.rules = rules
            self.rng = random.Random(seed)
            self.latency_rng = random.Random(f"{seed}:latency")
            self.calls = {}
            self.injected = {}
        LOG.info("fault config: %s", json.dumps(self.config))

    def clear(self) -> None:
        with self.lock:
            self.config = None
            self.rules = []
            self.calls = {}
            self.injected = {}

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "config": self.config,
                "calls": dict(sorted(self.calls.items())),
                "injected": dict(sorted(self.injected.items())),
                "rules": [
                    {
                        "action": r.action,
                        "matched": r.matched,
                        "injected": r.injected,
                        "fail_next_remaining": r.fail_next_remaining,
                    }
                    for r in self.rules
                ],
            }

    def decide(self, call: ApiCall) -> tuple[float, FaultRule | None]:
        """Count the call; return (seconds to sleep, the rule whose error it gets, or None).

        Every matching rule adds its latency; the first matching rule that fires (fail_next
        left, else one draw of the seeded random.Random against error_rate) supplies the error
        and the rules after it are not consulted for one.
        """
        with self.lock:
            self.calls[call.action] = self.calls.get(call.action, 0) + 1
            latency = 0.0
            fired: FaultRule | None = None
            for rule in self.rules:
                if not rule.matches(call):
                    continue
                rule.matched += 1
                if rule.latency_ms is not None:
                    latency += self.latency_rng.uniform(*rule.latency_ms) / 1000.0
                if fired is None:
                    if rule.fail_next_remaining > 0:
                        rule.fail_next_remaining -= 1
                        fired = rule
                    elif rule.error_rate > 0 and self.rng.random() < rule.error_rate:
                        fired = rule
            if fired is not None:
                fired.injected += 1
                self.injected[call.action] = self.injected.get(call.action, 0) + 1
            return latency, fired


FAULTS = FaultInjector()


def fault_response(call: ApiCall, kind: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The error AWS would send, in the request's protocol (see tests/aws/README.md)."""
    status, fault_type, codes, message = FAULT_KINDS[kind]
    code = codes[call.service]
    request_id = str(uuid.uuid4())
    if call.protocol == "json":
        error_type = f"{SQS_JSON_NAMESPACE}#{code}"
        # moto 5.2.1's own SQS JSON errors, key for key: {"__type", "message", "Message"}.
        body = json.dumps({"__type": error_type, "message": message, "Message": message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("X-Amzn-Errortype", error_type),
            ("x-amzn-query-error", f"{code};{fault_type}"),
            ("x-amzn-requestid", request_id),
        ]
    else:
        xmlns = ASG_XMLNS if call.service == "autoscaling" else SQS_XMLNS
        body = (
            f'<ErrorResponse xmlns="{xmlns}"><Error><Type>{fault_type}</Type><Code>{code}</Code>'
            f"<Message>{xml_escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-requestid", request_id)]
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


def record_refusal(call: ApiCall, rule: FaultRule) -> None:
    action = call.lifecycle_action
    if action is None:
        return
    with LOCK:
        if call.action == "RecordLifecycleActionHeartbeat":
            action.heartbeats_refused.append(time.time())
        elif call.action == "CompleteLifecycleAction":
            action.completes_refused.append(time.time())
    LOG.info("%s for %s (%s) refused by an injected %s fault", call.action, action.token, action.instance_id, rule.error)


# --------------------------------------------------------------------------------------------
# SQS deletion record (test-only): GET/DELETE /_termguard/sqs-deletions
# --------------------------------------------------------------------------------------------


class SqsDeletionLog:
    """Every message moto's SQS actually removed by DeleteMessage / DeleteMessageBatch, in order.

    Its own lock, taken (briefly) while a queue's message lock is held, never the other way round.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any]) -> None:
        with self.lock:
            # Stamped under the lock, so deleted_at_ms never decreases along the list.
            row["deleted_at_ms"] = epoch_ms(time.time())
            self.rows.append(row)
        LOG.info(
            "SQS %s deleted message %s from %s (receive count %s%s)",
            row["action"] or "internal", row["message_id"], row["queue_name"], row["receive_count"],
            ", stale receipt handle" if row["receipt_handle_stale"] else "",
        )

    def clear(self) -> None:
        with self.lock:
            self.rows = []

    def snapshot(self, queue: str | None = None) -> dict[str, Any]:
        with self.lock:
            rows = [dict(r) for r in self.rows if queue is None or r["queue_name"] == queue]
        return {"deletions": rows}


SQS_DELETIONS = SqsDeletionLog()


def _sqs_delete_context(name: str, action: str) -> None:
    """Wrap SQSResponse.<name>: tell the Queue patch which API call deletes, and the request URL."""
    from moto.sqs.responses import SQSResponse

    orig = getattr(SQSResponse, name)

    def wrapped(self: Any):
        prev = getattr(_TL, "sqs_delete", None)
        _TL.sqs_delete = {"action": action, "request_url": urlparse(self.uri)}
        try:
            return orig(self)
        finally:
            _TL.sqs_delete = prev

    wrapped.__name__ = name
    setattr(SQSResponse, name, wrapped)


def _make_queue_delete_message(orig: Any) -> Any:
    def _queue_delete_message(self: Any, receipt_handle: str) -> None:
        """moto's Queue.delete_message, plus a record of each message it really removed.

        moto 5.2.1: a handle already used for a deletion is a silent success (nothing removed, so
        nothing recorded); a handle no message ever had raises ReceiptHandleIsInvalid (nothing
        recorded); any handle the message ever had - also a stale one from an earlier receive -
        removes it (recorded, with receipt_handle_stale). Held under the queue's own message lock,
        which also keeps a concurrent SendMessage from being lost while moto rebuilds the list.
        """
        with self._messages_lock:
            candidates = [m for m in self._messages if m.had_receipt_handle(receipt_handle)]
            orig(self, receipt_handle)
            remaining = {id(m) for m in self._messages}
            removed = [m for m in candidates if id(m) not in remaining]
            if not removed:
                return
            ctx = getattr(_TL, "sqs_delete", None) or {}
            request_url = ctx.get("request_url")
            for message in removed:
                SQS_DELETIONS.append(
                    {
                        "queue_name": self.name,
                        "queue_url": self.url(request_url) if request_url else None,
                        "account": self.account_id,
                        "region": self.region,
                        "action": ctx.get("action"),
                        "message_id": message.id,
                        "body": message.body,
                        "sent_at_ms": message.sent_timestamp,
                        "first_received_at_ms": message.approximate_first_receive_timestamp,
                        "deleted_at_ms": None,  # stamped by SqsDeletionLog.append
                        "receive_count": message.approximate_receive_count,
                        "receipt_handle_stale": receipt_handle != message.receipt_handle,
                    }
                )

    return _queue_delete_message


def install_sqs_deletion_record() -> None:
    from moto.sqs.models import Queue as SqsQueue

    SqsQueue.delete_message = _make_queue_delete_message(SqsQueue.delete_message)
    _sqs_delete_context("delete_message", "DeleteMessage")
    _sqs_delete_context("delete_message_batch", "DeleteMessageBatch")


def _make_queue_set_attributes(orig: Any) -> Any:
    def _queue_set_attributes(self: Any, attributes: dict[str, Any], now: float | None = None) -> None:
        """moto's Queue._set_attributes, keeping the access policy when the call does not set it.

        moto 5.2.1 sets ``policy`` from every call's attributes, so SetQueueAttributes with only
        a RedrivePolicy drops the queue's policy; SQS changes only the attributes given
        (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html).
        """
        kept = getattr(self, "policy", None)
        orig(self, attributes, now)
        if "Policy" not in attributes:
            self.policy = kept

    return _queue_set_attributes


def install_sqs_attribute_fix() -> None:
    from moto.sqs.models import Queue as SqsQueue

    SqsQueue._set_attributes = _make_queue_set_attributes(SqsQueue._set_attributes)


# --------------------------------------------------------------------------------------------
# throughput: two moto hot spots that make the peer, not its client, the bottleneck of a burst
# --------------------------------------------------------------------------------------------


def install_fast_paths() -> None:
    """Two costs moto pays per request, which real AWS does not, and which dominate a burst of
    a few hundred messages (profiled with py-spy on the queue benchmark):

    * routing: moto finds the backend of every request under one global lock, listing its own
      package directory (a stat per service, ~200) and trying every URL pattern; the answer
      depends on the host name alone, so it is memoized;
    * receiving: for each message it hands out, moto's SQS checks the retention period by
      computing every queue attribute, approximate counts included (a scan of the whole queue),
      which makes one ReceiveMessage O(batch x queue); the check reads the one attribute.

    Behaviour is unchanged: same backends, same retention rule."""
    from moto.moto_server import werkzeug_app
    from moto.sqs.models import SQSBackend

    route = werkzeug_app.DomainDispatcherApplication.get_backend_for_host
    routes: dict[str, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host is None:
            return None
        if host not in routes:
            routes[host] = route(self, host)
        return routes[host]

    def retained(self: SQSBackend, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        period = int(getattr(queue, "message_retention_period"))
        return period + message.sent_timestamp / 1000 > time.time()

    werkzeug_app.DomainDispatcherApplication.get_backend_for_host = get_backend_for_host
    SQSBackend.is_message_valid_based_on_retention_period = retained


_RECEIVE_LOCKS_GUARD = threading.Lock()


def install_disjoint_receives() -> None:
    """Concurrent ReceiveMessage calls on one queue get different messages, as on SQS: moto
    scans the queue and marks what it hands out with no lock, so two receivers polling at once
    (termguard keeps several long polls open) often got the same message. A per-queue lock is
    held while a receive scans and marks, and released while it long-polls."""
    from moto.sqs.models import Queue as SqsQueue
    from moto.sqs.models import SQSBackend

    receive = SQSBackend.receive_message
    wait = SqsQueue.wait_for_messages

    def lock_of(queue: Any) -> threading.Lock:
        with _RECEIVE_LOCKS_GUARD:
            return queue.__dict__.setdefault("_termguard_receive_lock", threading.Lock())

    def receive_message(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with lock_of(self.get_queue(queue_name)):
            return receive(self, queue_name, *args, **kwargs)

    def wait_for_messages(self: Any, timeout: int) -> None:
        lock = lock_of(self)
        lock.release()
        try:
            wait(self, timeout)
        finally:
            lock.acquire()

    SQSBackend.receive_message = receive_message
    SqsQueue.wait_for_messages = wait_for_messages


# --------------------------------------------------------------------------------------------
# WSGI front: /_termguard/* and unsigned Auto Scaling Query requests
# --------------------------------------------------------------------------------------------


def _asg_operation_names() -> set[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("autoscaling")
    return set(model.operation_names) | CUSTOM_ACTIONS


_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")
MAX_BODY = 8 * 1024 * 1024  # bodies up to this size are buffered (SQS messages are at most 1 MiB)


# When the request this thread serves reached the peer, before it queued on LOCK (a scale-in of
# hundreds of instances holds it for seconds): what a client did is timed by this.
ARRIVAL = threading.local()


def arrival() -> float:
    return getattr(ARRIVAL, "at", None) or time.time()


class TermguardApp:
    def __init__(self, inner: Any):
        self.inner = inner
        self.asg_actions = _asg_operation_names()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        ARRIVAL.at = time.time()
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_termguard/"):
            return self.termguard_endpoint(environ, start_response, path)
        if path.rstrip("/") == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
            FAULTS.clear()  # a reset clears everything added here
            SQS_DELETIONS.clear()
        call = self.identify(environ)
        if call is not None:
            faulted = self.inject_faults(call, start_response)
            if faulted is not None:
                return faulted
        return self.inner(environ, start_response)

    def identify(self, environ: dict[str, Any]) -> ApiCall | None:
        """An Auto Scaling or SQS request: its action, by either protocol. Also routes unsigned
        Auto Scaling Query requests (curl, plain HTTP clients) as if signed for us-east-1."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scope = _CREDENTIAL_SCOPE.search(auth)
        service = scope.group(1) if scope else None
        if service is not None and service not in FAULT_SERVICES:
            return None  # EC2, EventBridge, ...: passed to moto untouched
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            if not target.startswith(SQS_JSON_TARGET_PREFIX) or service not in (None, "sqs"):
                return None
            self._read_body(environ)  # so that a faulted call still consumes its request
            return ApiCall("sqs", target[len(SQS_JSON_TARGET_PREFIX) :], "json", {})
        params = {k: v for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)}
        if environ.get("REQUEST_METHOD") == "POST":
            params.update({k: v[0] for k, v in self._peek_form(environ).items() if v})
        action = params.get("Action", "")
        version = params.get("Version", "")
        if not action:
            return None
        if service is None:
            if version == ASG_VERSION:
                if not auth and environ.get("REQUEST_METHOD") == "POST" and action in self.asg_actions:
                    # Route like a SigV4 request for autoscaling in us-east-1 (moto checks no signatures).
                    environ["HTTP_AUTHORIZATION"] = (
                        f"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/{DEFAULT_REGION}/autoscaling/"
                        "aws4_request, SignedHeaders=host, Signature=0"
                    )
                service = "autoscaling"
            elif version == SQS_VERSION:
                service = "sqs"
            else:
                return None
        return ApiCall(service, action, "query", params)

    @staticmethod
    def inject_faults(call: ApiCall, start_response: Any) -> list[bytes] | None:
        """Apply the fault config: sleep, then answer with AWS's error instead of moto."""
        if FAULTS.active:
            call.resolve_lifecycle_action()
        latency, rule = FAULTS.decide(call)
        if latency > 0:
            time.sleep(latency)
        if rule is None:
            return None
        record_refusal(call, rule)
        status, headers, body = fault_response(call, rule.error)
        LOG.info("injected %s fault: %s -> HTTP %d", rule.error, call.action, status)
        start_response(f"{status} {HTTP_REASONS[status]}", headers)
        return [body]

    @staticmethod
    def _read_body(environ: dict[str, Any]) -> bytes | None:
        """Read the request body once and put it back for moto."""
        if "_termguard.body" in environ:
            return environ["_termguard.body"]
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length <= 0 or length > MAX_BODY:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["_termguard.body"] = body
        return body

    @classmethod
    def _peek_form(cls, environ: dict[str, Any]) -> dict[str, list[str]]:
        if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            return {}
        body = cls._read_body(environ)
        if not body:
            return {}
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def termguard_endpoint(self, environ: dict[str, Any], start_response: Any, path: str) -> Any:
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        if path.rstrip("/") == "/_termguard/lifecycle-actions" and environ.get("REQUEST_METHOD") == "GET":
            with LOCK:
                actions = []
                for backend in _REGISTRY:
                    st = backend.__dict__.get("_tg")
                    if st:
                        actions.extend(st.actions.values())
                actions.sort(key=lambda a: a.seq)
                rows = [a.to_json() for a in actions]
            for key, field in (("group", "group"), ("hook", "hook"), ("instance_id", "instance_id"), ("token", "token"), ("state", "state")):
                if key in query:
                    rows = [r for r in rows if r[field] == query[key]]
            body = {
                "time_scale": Config.time_scale,
                "global_timeout_override": Config.global_timeout_override,
                "proceed_seconds": Config.proceed_seconds,
                "notification_shape": Config.notification_shape,
                "lifecycle_actions": rows,
            }
            return self._json(start_response, "200 OK", body)
        if path.rstrip("/") == "/_termguard/faults":
            return self.faults_endpoint(environ, start_response)
        if path.rstrip("/") == "/_termguard/sqs-deletions":
            method = environ.get("REQUEST_METHOD")
            if method == "DELETE":
                SQS_DELETIONS.clear()
                LOG.info("SQS deletion record cleared")
            elif method != "GET":
                return self._json(start_response, "405 Method Not Allowed", {"error": "use GET or DELETE"})
            return self._json(start_response, "200 OK", SQS_DELETIONS.snapshot(query.get("queue")))
        if path.rstrip("/") == "/_termguard/health":
            return self._json(start_response, "200 OK", {"status": "ok", "moto": moto.__version__})
        return self._json(start_response, "404 Not Found", {"error": f"no such endpoint: {path}"})

    def faults_endpoint(self, environ: dict[str, Any], start_response: Any) -> Any:
        """PUT replaces the fault config, GET shows it with the counters, DELETE clears it."""
        method = environ.get("REQUEST_METHOD")
        if method == "PUT":
            raw = self._read_body(environ) or b""
            try:
                FAULTS.put(json.loads(raw.decode("utf-8") or "null"))
            except (ValueError, UnicodeDecodeError) as err:  # FaultConfigError is a ValueError
                return self._json(start_response, "400 Bad Request", {"error": str(err)})
        elif method == "DELETE":
            FAULTS.clear()
            LOG.info("fault config cleared")
        elif method != "GET":
            return self._json(start_response, "405 Method Not Allowed", {"error": "use GET, PUT or DELETE"})
        return self._json(start_response, "200 OK", FAULTS.snapshot())

    @staticmethod
    def _json(start_response: Any, status: str, body: Any) -> list[bytes]:
        data = json.dumps(body, indent=1).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 (default) picks a free one")
    parser.add_argument("--time-scale", type=float, help="factor on every timeout (env TERMGUARD_MOTO_TIME_SCALE)")
    parser.add_argument("--global-timeout", type=float, help="GlobalTimeout override, seconds (env TERMGUARD_MOTO_GLOBAL_TIMEOUT)")
    parser.add_argument("--proceed-seconds", type=float, help="time in Terminating:Proceed (env TERMGUARD_MOTO_PROCEED_SECONDS)")
    parser.add_argument("--notification-shape", choices=["eventbridge", "direct"], help="env TERMGUARD_MOTO_NOTIFICATION_SHAPE")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request (werkzeug)")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s moto_server %(levelname)s %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.access_log else logging.WARNING)

    Config.from_env()
    if args.time_scale is not None:
        Config.time_scale = args.time_scale
    if args.global_timeout is not None:
        Config.global_timeout_override = args.global_timeout
    if args.proceed_seconds is not None:
        Config.proceed_seconds = args.proceed_seconds
    if args.notification_shape is not None:
        Config.notification_shape = args.notification_shape
    Config.validate()

    install_patches()
    # One request thread busy in Python (a SetDesiredCapacity of hundreds of instances) makes
    # every other thread wait the interpreter's switch interval (5 ms) at each socket read and
    # write: a ReceiveMessage then takes tens of milliseconds, which real SQS does not. A short
    # interval keeps the peer's answers quick under a burst.
    sys.setswitchinterval(0.0005)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import BaseWSGIServer, make_server

    # werkzeug listens with a backlog of 128: a client opening a few hundred connections at once
    # (a burst of heartbeats) had the rest wait for TCP's SYN retransmission, 1 s and then 3 s.
    BaseWSGIServer.request_queue_size = 4096

    app = TermguardApp(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True)  # bound and listening
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)  # moto services that call themselves use it

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    SCHEDULER.start()
    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    LOG.info(
        "serving on %s:%d (moto %s, time scale %s, notification shape %s)",
        host, port, moto.__version__, Config.time_scale, Config.notification_shape,
    )
    sys.stdout.write(f"READY http://{host}:{port}\n")
    sys.stdout.flush()
    sys.stdout = sys.stderr  # stdout carries the READY line only (moto prints to stdout at times)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        SCHEDULER.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
