# termguard queue mode: the SQS queue and its dead-letter queue, the EventBridge rules for every
# notice termguard handles, the IRSA role with termguard's IAM policy, and a termination
# lifecycle hook on each of the cluster's groups. The same resources as
# deploy/cloudformation/termguard.yaml; tests/iac/test_iac.py fails when the two (or
# deploy/aws/iam-policy.json and eventbridge-rules.json) drift apart.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  tags = merge(var.tags, { "termguard.io/cluster" = var.cluster_name })

  # deploy/aws/eventbridge-rules.json. Only the lifecycle rule can be scoped to the cluster's
  # groups: the EC2 and AWS Health events name the instance, not its group.
  event_patterns = {
    "asg-lifecycle" = {
      source        = ["aws.autoscaling"]
      "detail-type" = ["EC2 Instance-terminate Lifecycle Action"]
      detail        = { AutoScalingGroupName = var.auto_scaling_group_names }
    }
    "spot-interruption" = {
      source        = ["aws.ec2"]
      "detail-type" = ["EC2 Spot Instance Interruption Warning"]
    }
    "rebalance-recommendation" = {
      source        = ["aws.ec2"]
      "detail-type" = ["EC2 Instance Rebalance Recommendation"]
    }
    "state-change" = {
      source        = ["aws.ec2"]
      "detail-type" = ["EC2 Instance State-change Notification"]
      detail        = { state = ["stopping", "shutting-down"] }
    }
    "scheduled-change" = {
      source        = ["aws.health"]
      "detail-type" = ["AWS Health Event"]
      detail        = { service = ["EC2"], eventTypeCategory = ["scheduledChange"] }
    }
  }
  rule_descriptions = {
    "asg-lifecycle"            = "terminate lifecycle actions of the cluster's groups"
    "spot-interruption"        = "Spot interruption warnings"
    "rebalance-recommendation" = "EC2 rebalance recommendations"
    "state-change"             = "instances stopping or shutting down"
    "scheduled-change"         = "EC2 scheduled changes (AWS Health)"
  }
}

resource "aws_sqs_queue" "dead_letter" {
  name = "${var.cluster_name}-termguard-dlq"
  # The longest SQS keeps a message, to read it with termguard explain.
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_sqs_queue" "queue" {
  name = "${var.cluster_name}-termguard"
  # A lifecycle action lasts 48 hours at most; a day beyond that before a notice is dropped.
  message_retention_seconds = 259200
  # termguard sets its own visibility on receive (--visibility-timeout) and renews it.
  visibility_timeout_seconds = 90
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = local.tags
}

resource "aws_cloudwatch_event_rule" "rule" {
  for_each = local.event_patterns

  name          = "${var.cluster_name}-termguard-${each.key}"
  description   = "termguard (${var.cluster_name}): ${local.rule_descriptions[each.key]}"
  state         = "ENABLED"
  event_pattern = jsonencode(each.value)
  tags          = local.tags
}

resource "aws_cloudwatch_event_target" "queue" {
  for_each = local.event_patterns

  rule      = aws_cloudwatch_event_rule.rule[each.key].name
  target_id = "termguard"
  arn       = aws_sqs_queue.queue.arn
}

resource "aws_sqs_queue_policy" "queue" {
  queue_url = aws_sqs_queue.queue.url
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "EventBridgeRulesSend"
      Effect    = "Allow"
      Principal = { Service = "events.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.queue.arn
      Condition = {
        ArnEquals = { "aws:SourceArn" = [for key in keys(local.event_patterns) : aws_cloudwatch_event_rule.rule[key].arn] }
      }
    }]
  })
}

# IRSA: termguard's ServiceAccount assumes this role through the cluster's OIDC provider.
resource "aws_iam_role" "termguard" {
  name_prefix = "termguard-"
  description = "termguard (${var.cluster_name}) through IRSA"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:oidc-provider/${var.oidc_provider}" }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${var.oidc_provider}:sub" = "system:serviceaccount:${var.service_account_namespace}:${var.service_account_name}"
          "${var.oidc_provider}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })
  tags = local.tags
}

# deploy/aws/iam-policy.json, its queue ARN replaced by this module's queue.
resource "aws_iam_role_policy" "termguard" {
  name = "termguard"
  role = aws_iam_role.termguard.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "ConsumeTheQueue"
        Effect = "Allow"
        Action = [
          "sqs:ReceiveMessage",
          "sqs:DeleteMessage",
          "sqs:ChangeMessageVisibility",
          "sqs:GetQueueAttributes",
        ]
        Resource = aws_sqs_queue.queue.arn
      },
      # Heartbeats and completions only for groups tagged for this cluster (the two tags
      # termguard and EKS set; Describe* calls take no resource-level scoping).
      {
        Sid    = "LifecycleActionsOfTheClustersGroups"
        Effect = "Allow"
        Action = [
          "autoscaling:RecordLifecycleActionHeartbeat",
          "autoscaling:CompleteLifecycleAction",
        ]
        Resource  = "*"
        Condition = { StringEquals = { "autoscaling:ResourceTag/termguard.io/cluster" = var.cluster_name } }
      },
      {
        Sid    = "LifecycleActionsOfTheClustersEksGroups"
        Effect = "Allow"
        Action = [
          "autoscaling:RecordLifecycleActionHeartbeat",
          "autoscaling:CompleteLifecycleAction",
        ]
        Resource  = "*"
        Condition = { StringEquals = { "autoscaling:ResourceTag/eks:cluster-name" = var.cluster_name } }
      },
      {
        Sid    = "ReadHooksAndWhy"
        Effect = "Allow"
        Action = [
          "autoscaling:DescribeLifecycleHooks",
          "autoscaling:DescribeScalingActivities",
          "autoscaling:DescribeAutoScalingGroups",
        ]
        Resource = "*"
      },
      {
        Sid    = "AuditReadOnly"
        Effect = "Allow"
        Action = [
          "autoscaling:DescribeAutoScalingGroups",
          "autoscaling:DescribeLifecycleHooks",
          "autoscaling:DescribeWarmPool",
          "autoscaling:DescribeScalingActivities",
          "events:ListRules",
          "events:ListTargetsByRule",
          "sqs:GetQueueAttributes",
        ]
        Resource = "*"
      },
    ]
  })
}

# One termination hook per group. No notification target: the hook's events reach the queue
# through the asg-lifecycle rule.
resource "aws_autoscaling_lifecycle_hook" "terminate" {
  for_each = toset(var.auto_scaling_group_names)

  name                   = var.lifecycle_hook_name
  autoscaling_group_name = each.value
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.heartbeat_timeout
  default_result         = "CONTINUE"
}
