# Dead letters: an SQS queue for envelopes, an S3 bucket for envelopes over the SQS limit,
# and an alarm as soon as one dead letter is waiting.

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.application}-dlq"
  message_retention_seconds = var.dlq_retention_seconds
  sqs_managed_sse_enabled   = true
}

# Where `dlq inspect|redrive --quarantine` moves messages that are not dead letters of this
# application, so they neither block the queue's alarm nor get lost.
resource "aws_sqs_queue" "quarantine" {
  name                      = "${var.application}-dlq-quarantine"
  message_retention_seconds = var.dlq_retention_seconds
  sqs_managed_sse_enabled   = true
}

resource "aws_sns_topic" "alerts" {
  name = "${var.application}-stream-projector-alerts"
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.application}-dead-letters-waiting"
  alarm_description   = "stream-projector dead-lettered at least one record: inspect with `stream-projector dlq inspect`."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]

  dimensions = {
    QueueName = aws_sqs_queue.dead_letter.name
  }
}

resource "aws_s3_bucket" "envelopes" {
  bucket = "${var.application}-dead-letters-${data.aws_caller_identity.current.account_id}"
}

resource "aws_s3_bucket_ownership_controls" "envelopes" {
  bucket = aws_s3_bucket.envelopes.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "envelopes" {
  bucket                  = aws_s3_bucket.envelopes.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# SSE-S3, so writers need no KMS permissions.
resource "aws_s3_bucket_server_side_encryption_configuration" "envelopes" {
  bucket = aws_s3_bucket.envelopes.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "envelopes" {
  bucket = aws_s3_bucket.envelopes.id

  rule {
    id     = "expire-envelopes"
    status = "Enabled"

    filter {}

    expiration {
      days = var.envelope_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "envelopes_tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.envelopes.arn,
      "${aws_s3_bucket.envelopes.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "envelopes" {
  bucket = aws_s3_bucket.envelopes.id
  policy = data.aws_iam_policy_document.envelopes_tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.envelopes]
}
