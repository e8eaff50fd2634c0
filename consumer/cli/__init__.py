"""The `stream-projector` command line."""
