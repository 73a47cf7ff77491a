"""Offline work (features, training, scoring, backtests) on a Dask cluster: docs/dask.md."""
