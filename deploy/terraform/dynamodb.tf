locals {
  lease_table_name  = var.lease_table_name != "" ? var.lease_table_name : "${var.application}-leases"
  ledger_table_name = "${var.application}-dead-letters"
}

# The write model. The daemon reads its stream; NEW_AND_OLD_IMAGES gives projections both
# images (audit trail, threshold crossings, guards on the source sequence number).
resource "aws_dynamodb_table" "source" {
  name             = var.source_table_name
  billing_mode     = "PAY_PER_REQUEST"
  hash_key         = "PK"
  range_key        = "SK"
  stream_enabled   = true
  stream_view_type = "NEW_AND_OLD_IMAGES"

  attribute {
    name = "PK"
    type = "S"
  }

  attribute {
    name = "SK"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# KCL-compatible lease table: one item per shard, keyed by leaseKey.
resource "aws_dynamodb_table" "leases" {
  name         = local.lease_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "leaseKey"

  attribute {
    name = "leaseKey"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }
}

# The dead-letter ledger: letters sent (so a replay or a race does not send one twice) and
# each shard's furthest checkpoint (for redrive's checks). Not in the lease table: the KCL reads
# every item there as a lease. Items expire with the letters they describe.
resource "aws_dynamodb_table" "dead_letter_ledger" {
  name         = local.ledger_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"

  attribute {
    name = "id"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  server_side_encryption {
    enabled = true
  }
}

# The trip search read model: one document per trip, searched by status and departure.
resource "aws_dynamodb_table" "read_model" {
  name         = var.read_model_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "trip_id"

  attribute {
    name = "trip_id"
    type = "S"
  }

  attribute {
    name = "flight_status"
    type = "S"
  }

  attribute {
    name = "departure_time"
    type = "S"
  }

  global_secondary_index {
    name            = "flight_status-departure_time-index"
    hash_key        = "flight_status"
    range_key       = "departure_time"
    projection_type = "ALL"
  }

  server_side_encryption {
    enabled = true
  }
}
