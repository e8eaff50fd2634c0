"""stream-projector: a shard-by-shard consumer of DynamoDB Streams and Kinesis."""

__version__ = "0.1.0"
