"""The image built and run by a real Docker engine (scripts/container-test.sh prepares it)."""
