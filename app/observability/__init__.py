"""Operating the service: JSON logs, Prometheus metrics, request ids, readiness."""
