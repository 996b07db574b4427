variable "cluster_name" {
  description = "The cluster's name, as termguard runs with --cluster-name. Tag each group termguard.io/cluster=NAME (EKS managed node groups carry eks:cluster-name=NAME already): termguard completes the lifecycle actions of its own cluster's groups only."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][0-9A-Za-z_-]*$", var.cluster_name)) && length(var.cluster_name) <= 100
    error_message = "cluster_name: letters, digits, - and _, at most 100."
  }
}

variable "auto_scaling_group_names" {
  description = "The cluster's Auto Scaling groups: each gets the termination hook, and the lifecycle rule takes only their events."
  type        = list(string)

  validation {
    condition     = length(var.auto_scaling_group_names) > 0
    error_message = "auto_scaling_group_names: at least one group."
  }
}

variable "oidc_provider" {
  description = "The cluster's OIDC issuer without https:// (aws eks describe-cluster --query cluster.identity.oidc.issuer). Its IAM OIDC identity provider must exist in the account."
  type        = string

  validation {
    condition     = can(regex("^[^:/]+(/[^/]+)*$", var.oidc_provider))
    error_message = "oidc_provider: the issuer's host and path, without https://."
  }
}

variable "service_account_namespace" {
  description = "Namespace of termguard's ServiceAccount (deploy/manifests/termguard.yaml, or the Helm chart)."
  type        = string
  default     = "termguard"
}

variable "service_account_name" {
  description = "Name of termguard's ServiceAccount."
  type        = string
  default     = "termguard"
}

variable "lifecycle_hook_name" {
  description = "Name of the termination lifecycle hook put on each group."
  type        = string
  default     = "termguard-terminate"
}

variable "heartbeat_timeout" {
  description = "Seconds the hook waits between heartbeats; termguard sends them while it drains. The action lasts at most 100 times this (48 hours at most)."
  type        = number
  default     = 300

  validation {
    condition     = var.heartbeat_timeout >= 30 && var.heartbeat_timeout <= 7200
    error_message = "heartbeat_timeout: 30 to 7200 seconds."
  }
}

variable "max_receive_count" {
  description = "Receives after which a message moves to the dead-letter queue. Every restart or replica handover during a long drain returns its message once (termguard audit wants 5 or more)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_receive_count >= 5
    error_message = "max_receive_count: 5 or more."
  }
}

variable "tags" {
  description = "Tags for the queues, rules and role (termguard.io/cluster is added)."
  type        = map(string)
  default     = {}
}
