"""clv-service: customer lifetime value and churn predictions over HTTP."""

__version__ = "0.1.0"
