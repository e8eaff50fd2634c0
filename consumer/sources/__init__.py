"""Where records come from: shard listing and readers for DynamoDB Streams and Kinesis, decoding."""
