"""Service settings, read once from `CLV_*` environment variables."""

from __future__ import annotations

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
        default=300, ge=0, description="How far in the future occurred_at may be."
    )
    db_pool_size: int = Field(default=10, ge=1, description="Connections kept per worker.")
    db_max_overflow: int = Field(default=10, ge=0, description="Extra connections under load.")
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0, description="0 disables it.")
    model_dir: Path = Field(default=ROOT_DIR / "models", description="Model artifacts directory.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

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


def settings_of(request: Request) -> Settings:
    """The settings the running app was built with (tests build apps with their own)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(settings_of)]
