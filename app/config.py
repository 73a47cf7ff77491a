"""Service settings, read once from `CLV_*` environment variables."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root: migrations/ and models/ live next to app/.
ROOT_DIR = Path(__file__).resolve().parent.parent

#: ISO 4217 active codes; the configured currency must be one of them.
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF
    KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR
    MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG
    SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD
    UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL""".split()
)


class Settings(BaseSettings):
    """Every knob of the service; each field is the env var `CLV_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="CLV_", env_file=None, extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{ROOT_DIR / 'var' / 'clv.db'}",
        description="SQLAlchemy URL: postgresql://... or sqlite:///...; the async driver is picked.",
    )
    currency: str = Field(default="USD", description="ISO 4217 code every amount must be in.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Request body limit (413).")
    max_batch_events: int = Field(default=1000, ge=1, description="Events per batch request.")
    max_properties_bytes: int = Field(
        default=8192, ge=0, description="Serialized size of properties."
    )
    max_properties_depth: int = Field(default=8, ge=1, description="Nesting depth of properties.")
    max_future_skew_seconds: int = Field(
        default=300,
        ge=0,
        description="Allowed clock skew: how far in the future occurred_at and as_of may be.",
    )
    db_pool_size: int = Field(default=16, ge=1, description="Connections kept per worker.")
    db_read_pool_size: int = Field(
        default=8, ge=1, description="Postgres connections per worker for predictions/features."
    )
    db_max_overflow: int = Field(
        default=0,
        ge=0,
        description="Extra short-lived connections under load (they churn: keep 0).",
    )
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0, description="0 disables it.")
    model_dir: Path = Field(default=ROOT_DIR / "models", description="Model artifacts directory.")
    model_poll_seconds: float = Field(
        default=10.0, ge=0, description="How often each worker checks models/current (0 = never)."
    )
    onnx_threads: int = Field(
        default=1, ge=1, description="onnxruntime intra-op threads per session."
    )
    max_batch_predictions: int = Field(default=1000, ge=1, description="Ids per batch prediction.")
    at_risk_threshold: float = Field(
        default=0.5, gt=0, lt=1, description="Churn probability above which a customer is at_risk."
    )
    new_customer_days: int = Field(
        default=30, ge=0, description="A first order within this many days makes a customer new."
    )
    value_tier_percentiles: str = Field(
        default="90,70,40",
        description="CLV percentiles (of the model's predictions) starting the top, high and "
        "medium tiers; below the last is low.",
    )
    auth_disabled: bool = Field(
        default=False,
        description="Turn API key checks off (logged as CRITICAL at startup). Never in production.",
    )
    metrics_require_key: bool = Field(
        default=False, description="Require an `admin` key on /metrics."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Level of the JSON logs (and of uvicorn's own loggers)."
    )
    db_pool_pre_ping: bool = Field(
        default=False,
        description="Ping each pooled connection on checkout: no 503 burst after a database "
        "restart, at the price of one extra round trip per request.",
    )
    http_header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time a client has to send a request's head (408/close)."
    )
    http_max_header_bytes: int = Field(
        default=16_384, ge=1024, description="Request line plus headers, in bytes (431 above)."
    )
    http_body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Time a client has to send a request body (408 after)."
    )
    host: str = Field(default="127.0.0.1", description="`clv serve`: interface to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="`clv serve`: TCP port.")
    workers: int = Field(default=1, ge=1, description="`clv serve`: worker processes.")
    keepalive_timeout_seconds: int = Field(
        default=5,
        ge=1,
        description="Idle keep-alive connections close after this; behind a load balancer, "
        "set it above the balancer's idle timeout so the balancer closes first.",
    )
    proxy_headers: bool = Field(
        default=True, description="Trust X-Forwarded-For/-Proto from `forwarded_allow_ips`."
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1", description="Comma-separated proxy IPs/CIDRs trusted, or `*`."
    )
    graceful_shutdown_seconds: int = Field(
        default=30, ge=1, description="SIGTERM: how long in-flight requests may take to finish."
    )
    limit_concurrency: int = Field(
        default=1000,
        ge=0,
        description="Connections + in-flight requests per worker before answering 503 (0 = none).",
    )
    backlog: int = Field(default=2048, ge=1, description="TCP listen backlog.")
    worker_healthcheck_seconds: int = Field(
        default=60,
        ge=1,
        description="Several workers: how long a new worker may take to start (SIGHUP replaces "
        "workers one by one and waits for each) or a worker may go silent before it is replaced.",
    )
    quality_late_hours: float = Field(
        default=24.0,
        gt=0,
        description="Data-quality report: an event received this long after it occurred is late.",
    )
    quality_early_gap_days: float = Field(
        default=730.0,
        gt=0,
        description="Data-quality report: a customer's first event this long before the next "
        "one is flagged as dated far before the customer's other events.",
    )
    quality_warn_share: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Data-quality report: a problem above this share of its population is large "
        "(`clv train` warns about it).",
    )

    alert_churn_threshold: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="`customer.churn_risk_rose` fires when a stored churn probability crosses "
        "this upward.",
    )
    webhooks_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs that resolve to loopback, private or link-local "
        "addresses (local development and tests only).",
    )
    webhooks_deliver_in_serve: bool = Field(
        default=True,
        description="Run the webhook deliverer inside `clv serve` (one active across workers "
        "and replicas); false when `clv deliver` runs as its own service.",
    )
    webhooks_max_attempts: int = Field(
        default=8, ge=1, description="Delivery attempts before a delivery is dead-lettered."
    )
    webhooks_backoff_seconds: float = Field(
        default=10.0, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    webhooks_backoff_max_seconds: float = Field(
        default=3600.0, gt=0, description="Longest delay between two attempts."
    )
    webhooks_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long a receiver has to answer one delivery."
    )
    webhooks_concurrency: int = Field(
        default=16, ge=1, description="Deliveries in flight at once (per active deliverer)."
    )
    webhooks_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often an idle deliverer looks for new work."
    )
    alerts_retention_days: int = Field(
        default=90,
        ge=1,
        description="Alerts (and their deliveries) older than this are deleted by the deliverer.",
    )
    webhooks_secret_grace_hours: float = Field(
        default=24.0,
        ge=0,
        description="After a secret rotation, deliveries are also signed with the old secret "
        "for this long.",
    )

    @field_validator("value_tier_percentiles")
    @classmethod
    def _three_descending_percentiles(cls, value: str) -> str:
        try:
            levels = [int(p) for p in value.split(",")]
        except ValueError as exc:
            raise ValueError("give three integers, e.g. 90,70,40") from exc
        if len(levels) != 3 or not 100 > levels[0] > levels[1] > levels[2] > 0:
            raise ValueError("give three descending percentiles between 0 and 100, e.g. 90,70,40")
        return value

    @property
    def max_future_skew(self) -> dt.timedelta:
        """How far ahead of the server clock an event's `occurred_at` or an `as_of` may be."""
        return dt.timedelta(seconds=self.max_future_skew_seconds)

    @property
    def tier_percentiles(self) -> tuple[int, int, int]:
        """(top, high, medium) starting percentiles."""
        return _tier_percentiles(self.value_tier_percentiles)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.upper()
        if code not in ISO_4217:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return code


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


async def settings_of(request: Request) -> Settings:
    """The settings the running app was built with (tests build apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(settings_of)]


@lru_cache(maxsize=8)
def _tier_percentiles(text: str) -> tuple[int, int, int]:
    """CLV_VALUE_TIER_PERCENTILES parsed once per distinct value (read on every prediction)."""
    top, high, medium = (int(p) for p in text.split(","))
    return top, high, medium
