variable "region" {
  description = "AWS region of every resource."
  type        = string
  default     = "us-east-1"
}

variable "application" {
  description = "The daemon's application name (config `application`); prefixes resource names."
  type        = string
  default     = "trip-search"
}

variable "source_table_name" {
  description = "The write model: the stream-enabled source table."
  type        = string
  default     = "TripTable"
}

variable "read_model_table_name" {
  description = "The denormalized read model the projection writes."
  type        = string
  default     = "TripSearchTable"
}

variable "lease_table_name" {
  description = "KCL-compatible lease table; empty means \"<application>-leases\", the daemon's default."
  type        = string
  default     = ""
}

variable "kinesis_stream_arn" {
  description = "ARN of a Kinesis stream to read instead of (or besides) the table's stream; empty for none."
  type        = string
  default     = ""
}

variable "allow_migrate" {
  description = "Grant CreateTable/UpdateTable on the read-model table, for `stream-projector migrate`."
  type        = bool
  default     = false
}

variable "envelope_retention_days" {
  description = "Days before dead-letter envelopes in S3 expire."
  type        = number
  default     = 30
}

variable "dlq_retention_seconds" {
  description = "How long SQS keeps a dead letter (max 14 days)."
  type        = number
  default     = 1209600
}

variable "dead_letter_prefix" {
  description = "Key prefix of envelopes in the bucket (config dead_letter.prefix); IAM on objects is limited to it."
  type        = string
  default     = "dead-letters/"
}

variable "signing_key_secret_arn" {
  description = "Secrets Manager ARN of the dead-letter HMAC key (config dead_letter.signing_key = \"secretsmanager:<arn>\"); empty for none."
  type        = string
  default     = ""
}

variable "operator_principal_arns" {
  description = "IAM principals (SSO roles, users) allowed to assume the operator role for the dlq and leases tools."
  type        = list(string)
  default     = []
}

variable "runtime" {
  description = "Who assumes the daemon's role: \"irsa\" (EKS service account) or \"ecs\" (task role)."
  type        = string
  default     = "irsa"

  validation {
    condition     = contains(["irsa", "ecs"], var.runtime)
    error_message = "runtime must be \"irsa\" or \"ecs\"."
  }
}

variable "oidc_provider_arn" {
  description = "IRSA: ARN of the EKS cluster's IAM OIDC provider."
  type        = string
  default     = ""
}

variable "oidc_provider_url" {
  description = "IRSA: the OIDC issuer without https:// (oidc.eks.REGION.amazonaws.com/id/XXXX)."
  type        = string
  default     = ""
}

variable "k8s_namespace" {
  description = "IRSA: namespace of the service account (deploy/k8s uses stream-projector)."
  type        = string
  default     = "stream-projector"
}

variable "k8s_service_account" {
  description = "IRSA: name of the service account (deploy/k8s uses stream-projector)."
  type        = string
  default     = "stream-projector"
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default = {
    app = "stream-projector"
  }
}
