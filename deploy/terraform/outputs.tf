output "source_table_name" {
  description = "The source table (config [source] table)."
  value       = aws_dynamodb_table.source.name
}

output "source_stream_arn" {
  description = "The source table's current stream ARN (config [source] stream_arn, optional)."
  value       = aws_dynamodb_table.source.stream_arn
}

output "lease_table_name" {
  description = "The lease table (config [leases] table)."
  value       = aws_dynamodb_table.leases.name
}

output "read_model_table_name" {
  description = "The read model (projection settings table)."
  value       = aws_dynamodb_table.read_model.name
}

output "dead_letter_queue_url" {
  description = "Config [dead_letter] queue_url."
  value       = aws_sqs_queue.dead_letter.url
}

output "dead_letter_bucket" {
  description = "Config [dead_letter] bucket."
  value       = aws_s3_bucket.envelopes.bucket
}

output "alert_topic_arn" {
  description = "SNS topic for the dead-letter alarm and alert projections."
  value       = aws_sns_topic.alerts.arn
}

output "policy_arn" {
  description = "The daemon's least-privilege policy."
  value       = aws_iam_policy.projector.arn
}

output "role_arn" {
  description = "IRSA annotation eks.amazonaws.com/role-arn, or the ECS taskRoleArn."
  value       = aws_iam_role.projector.arn
}

output "dead_letter_ledger_table_name" {
  description = "The dead-letter ledger (config [dead_letter] ledger_table; the default name matches)."
  value       = aws_dynamodb_table.dead_letter_ledger.name
}

output "quarantine_queue_url" {
  description = "For `dlq inspect|redrive --quarantine`."
  value       = aws_sqs_queue.quarantine.url
}

output "operator_policy_arn" {
  description = "The operator tools' policy (attach it to an SSO permission set, or use the role)."
  value       = aws_iam_policy.operator.arn
}

output "operator_role_arn" {
  description = "The operator role, when operator_principal_arns is set."
  value       = length(aws_iam_role.operator) > 0 ? aws_iam_role.operator[0].arn : ""
}
