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
