# Least privilege for the daemon: only the calls it makes, only on its own resources.
# tests/deploy/test_terraform.py checks every action against botocore's service models and
# against the list of calls the daemon makes.

data "aws_iam_policy_document" "projector" {
  statement {
    sid       = "DescribeSourceTable"
    actions   = ["dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.source.arn]
  }

  # A table's stream ARN ends in a label that changes when the stream is re-enabled.
  statement {
    sid = "ReadSourceStream"
    actions = [
      "dynamodb:DescribeStream",
      "dynamodb:GetShardIterator",
      "dynamodb:GetRecords",
      "dynamodb:ListStreams",
    ]
    resources = ["${aws_dynamodb_table.source.arn}/stream/*"]
  }

  statement {
    sid = "Leases"
    actions = [
      "dynamodb:CreateTable",
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Scan",
    ]
    resources = [aws_dynamodb_table.leases.arn]
  }

  statement {
    sid = "ReadModel"
    actions = [
      "dynamodb:UpdateItem",
      "dynamodb:GetItem",
      "dynamodb:Query",
      "dynamodb:DescribeTable",
    ]
    resources = [aws_dynamodb_table.read_model.arn]
  }

  # Searches query the GSI, which IAM authorizes against the index ARN.
  statement {
    sid       = "QueryReadModelIndexes"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.read_model.arn}/index/*"]
  }

  dynamic "statement" {
    for_each = var.allow_migrate ? [aws_dynamodb_table.read_model.arn] : []

    content {
      sid       = "MigrateReadModel"
      actions   = ["dynamodb:CreateTable", "dynamodb:UpdateTable"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.kinesis_stream_arn != "" ? [var.kinesis_stream_arn] : []

    content {
      sid = "ReadKinesisStream"
      actions = [
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "kinesis:DescribeStreamSummary",
      ]
      resources = [statement.value]
    }
  }

  # Send only: reading, redriving and deleting letters is the operator's (below). IAM knows
  # no SendMessageBatch action: sqs:SendMessage authorizes it.
  statement {
    sid       = "DeadLetterQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letter.arn]
  }

  statement {
    sid       = "DeadLetterEnvelopes"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.envelopes.arn}/${var.dead_letter_prefix}*"]
  }

  statement {
    sid = "DeadLetterLedger"
    actions = [
      "dynamodb:CreateTable",
      "dynamodb:DescribeTable",
      "dynamodb:UpdateTimeToLive",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
    ]
    resources = [aws_dynamodb_table.dead_letter_ledger.arn]
  }

  dynamic "statement" {
    for_each = var.signing_key_secret_arn != "" ? [var.signing_key_secret_arn] : []

    content {
      sid       = "DeadLetterSigningKey"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  statement {
    sid       = "Alerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }
}

resource "aws_iam_policy" "projector" {
  name        = "${var.application}-stream-projector"
  description = "stream-projector: read the change stream, own leases, write read models and dead letters."
  policy      = data.aws_iam_policy_document.projector.json
}

# IRSA: only this namespace's service account may assume the role.
data "aws_iam_policy_document" "assume_irsa" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${var.k8s_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

# ECS task role; aws:SourceAccount guards against the confused deputy.
data "aws_iam_policy_document" "assume_ecs" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "projector" {
  name               = "${var.application}-stream-projector"
  assume_role_policy = var.runtime == "irsa" ? data.aws_iam_policy_document.assume_irsa.json : data.aws_iam_policy_document.assume_ecs.json

  lifecycle {
    precondition {
      condition     = var.runtime != "irsa" || (var.oidc_provider_arn != "" && var.oidc_provider_url != "")
      error_message = "runtime = \"irsa\" needs oidc_provider_arn and oidc_provider_url."
    }
  }
}

resource "aws_iam_role_policy_attachment" "projector" {
  role       = aws_iam_role.projector.name
  policy_arn = aws_iam_policy.projector.arn
}

# The operator's tools (`dlq inspect|redrive|purge|delete`, `leases list|reset`, `status`):
# what the daemon may not do (receive and delete letters, read and delete envelopes, move
# checkpoints), plus what a redrive needs to apply letters to the read model.
data "aws_iam_policy_document" "operator" {
  statement {
    sid = "DeadLetterQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.dead_letter.arn]
  }

  statement {
    sid       = "QuarantineQueue"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.quarantine.arn]
  }

  # Only under the prefix: a forged pointer elsewhere is refused by the tools, and by IAM.
  statement {
    sid       = "DeadLetterEnvelopes"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.envelopes.arn}/${var.dead_letter_prefix}*"]
  }

  statement {
    sid = "DeadLetterLedger"
    actions = [
      "dynamodb:DescribeTable",
      "dynamodb:Scan",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:DeleteItem",
    ]
    resources = [aws_dynamodb_table.dead_letter_ledger.arn]
  }

  statement {
    sid       = "Leases"
    actions   = ["dynamodb:Scan", "dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.leases.arn]
  }

  statement {
    sid = "RedriveIntoReadModel"
    actions = [
      "dynamodb:UpdateItem",
      "dynamodb:GetItem",
      "dynamodb:Query",
      "dynamodb:DescribeTable",
    ]
    resources = [aws_dynamodb_table.read_model.arn]
  }

  # The stream's ARN (redrive checks a letter's stream) and `leases reset --to SEQUENCE`.
  statement {
    sid       = "DescribeSourceTable"
    actions   = ["dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.source.arn]
  }

  statement {
    sid       = "CheckSequenceInStream"
    actions   = ["dynamodb:DescribeStream", "dynamodb:GetShardIterator"]
    resources = ["${aws_dynamodb_table.source.arn}/stream/*"]
  }

  dynamic "statement" {
    for_each = var.kinesis_stream_arn != "" ? [var.kinesis_stream_arn] : []

    content {
      sid       = "CheckSequenceInKinesisStream"
      actions   = ["kinesis:GetShardIterator", "kinesis:DescribeStreamSummary"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.signing_key_secret_arn != "" ? [var.signing_key_secret_arn] : []

    content {
      sid       = "DeadLetterSigningKey"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "operator" {
  name        = "${var.application}-stream-projector-operator"
  description = "stream-projector operator tools: inspect, redrive, purge and delete dead letters; list and reset leases."
  policy      = data.aws_iam_policy_document.operator.json
}

data "aws_iam_policy_document" "assume_operator" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.operator_principal_arns
    }
  }
}

# Only when someone may assume it; the policy can also be attached to an SSO permission set.
resource "aws_iam_role" "operator" {
  count              = length(var.operator_principal_arns) > 0 ? 1 : 0
  name               = "${var.application}-stream-projector-operator"
  assume_role_policy = data.aws_iam_policy_document.assume_operator.json
}

resource "aws_iam_role_policy_attachment" "operator" {
  count      = length(var.operator_principal_arns) > 0 ? 1 : 0
  role       = aws_iam_role.operator[0].name
  policy_arn = aws_iam_policy.operator.arn
}
