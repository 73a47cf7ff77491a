"""Fixtures of the campaign tests."""

from tests.alerts.conftest import demo

__all__ = ["demo"]
