"""From fetched pages to checkpoints: prefetch, apply, the shard consumer, the worker."""
