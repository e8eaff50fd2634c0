"""Poison records: the dead-letter envelope, the SQS sink, and the tools to inspect and redrive."""
