"""Data-quality report over the stored events (CLI `clv data-quality`, `GET /v1/data-quality`)."""
