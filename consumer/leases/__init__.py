"""The KCL-compatible lease table: who owns which shard, and how far it got."""
