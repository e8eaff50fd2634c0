"""Idempotent writers for the read stores: DynamoDB, PostgreSQL, SNS."""
