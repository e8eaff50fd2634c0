"""Tests of the deploy/ files: Prometheus rules and config, the Grafana dashboard."""
