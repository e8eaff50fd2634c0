"""What operators see: Prometheus metrics, health endpoints, JSON logs and `status`."""
