"""The data-quality report: which rules the stored events break, how often, with examples."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Engine

from app.config import Settings
from app.quality.repository import QualityRepository
from app.quality.schemas import DataQualityReport, QualityCheck, QualityExample

EXAMPLES = 5


@dataclass(frozen=True)
class Rule:
    """A check's name, meaning, severity and the population its share is taken of."""

    name: str
    description: str
    severity: Literal["warning", "info"]
    population: str


RULES = (
    Rule(
        "orphan_refunds",
        "Refunds without an order of the same customer and order_id by as_of (no order_id, "
        "or an order the service never saw). Accepted: history before the service is real.",
        "warning",
        "refunds",
    ),
    Rule(
        "refunds_exceeding_order",
        "Orders whose refunds add up to more than the order itself.",
        "warning",
        "refunded_orders",
    ),
    Rule(
        "negative_net_revenue",
        "Customers whose refunds add up to more than their orders (by as_of): negative net "
        "revenue, mostly from orphan refunds.",
        "warning",
        "paying_customers",
    ),
    Rule(
        "zero_amount_orders",
        "Orders with amount 0 (free orders, or a lost price).",
        "warning",
        "orders",
    ),
    Rule(
        "duplicate_orders",
        "Likely duplicates: an order with the same customer, amount and UTC minute as an "
        "earlier one under another event_id (counts the extra copies).",
        "warning",
        "orders",
    ),
    Rule(
        "early_events",
        "A customer's first event dated more than CLV_QUALITY_EARLY_GAP_DAYS before the next one "
        "(a mistyped year, or a stray record).",
        "warning",
        "customers_with_history",
    ),
    Rule(
        "future_events",
        "Events stamped later than their arrival plus CLV_MAX_FUTURE_SKEW_SECONDS (clock or "
        "time-zone errors at the source; bulk imports are not checked for skew on load).",
        "warning",
        "events",
    ),
    Rule(
        "events_without_customer",
        "Events whose customer row is gone (erasure must take them along).",
        "warning",
        "events",
    ),
    Rule(
        "late_events",
        "Events received more than CLV_QUALITY_LATE_HOURS after they occurred: every event of an "
        "imported history, or a delayed feed. Models trained as of a date assume they were known.",
        "info",
        "events",
    ),
    Rule(
        "money_events_without_order_id",
        "Orders and refunds without an order_id (refunds cannot be matched to their order).",
        "info",
        "money_events",
    ),
    Rule(
        "customers_without_events",
        "Customers (profiles) without any event: not scored until they act.",
        "info",
        "customers",
    ),
)


def build_report(
    connection: Connection, settings: Settings, as_of: dt.datetime
) -> DataQualityReport:
    """Run every check as of `as_of` (events with occurred_at <= as_of) on one connection."""
    repository = QualityRepository(connection)
    populations = repository.populations(as_of)
    populations["money_events"] = populations["orders"] + populations["refunds"]
    thresholds = {
        "late_seconds": settings.quality_late_hours * 3600.0,
        "early_gap_seconds": settings.quality_early_gap_days * 86400.0,
        "future_skew_seconds": float(settings.max_future_skew_seconds),
    }
    checks = []
    for rule in RULES:
        found = repository.offending(rule.name, as_of, EXAMPLES, **thresholds)
        population = populations[rule.population]
        share = found.count / population if population else 0.0
        checks.append(
            QualityCheck(
                name=rule.name,
                description=rule.description,
                severity=rule.severity,
                count=found.count,
                population=population,
                population_name=rule.population,
                share=share,
                amount=found.amount,
                large=rule.severity == "warning" and share > settings.quality_warn_share,
                examples=[
                    QualityExample(
                        customer_id=customer,
                        event_id=event_id,
                        order_id=order_id,
                        occurred_at=occurred_at,
                        amount=amount,
                        related_event_id=related_event,
                        related_amount=related_amount,
                    )
                    for customer, event_id, order_id, occurred_at, amount, related_event, related_amount in found.examples
                ],
            )
        )
    return DataQualityReport(
        as_of=as_of,
        currency=settings.currency,
        events=populations["events"],
        customers=populations["customers"],
        late_hours=settings.quality_late_hours,
        early_gap_days=settings.quality_early_gap_days,
        future_skew_seconds=settings.max_future_skew_seconds,
        warn_share=settings.quality_warn_share,
        checks=checks,
    )


def report_lines(report: DataQualityReport, examples: bool = True) -> list[str]:
    """The report as plain text lines (what `clv data-quality` prints)."""
    lines = [
        f"data quality as of {report.as_of:%Y-%m-%d %H:%M:%S} UTC: {report.events:,} events, "
        f"{report.customers:,} customers"
    ]
    for check in report.checks:
        flag = "LARGE " if check.large else ""
        money = f", {check.amount:,} {report.currency}" if check.amount is not None else ""
        lines.append(
            f"{flag}{check.severity:<7} {check.name:<30} {check.count:>9,} of {check.population:>9,} "
            f"{check.population_name} ({check.share:.2%}){money}"
        )
        if examples:
            for e in check.examples:
                parts = [
                    f"customer {e.customer_id}" if e.customer_id else None,
                    f"event {e.event_id}" if e.event_id else None,
                    f"order {e.order_id}" if e.order_id else None,
                    f"{e.occurred_at:%Y-%m-%dT%H:%M:%S.%fZ}" if e.occurred_at else None,
                    f"amount {e.amount}" if e.amount is not None else None,
                    f"related {e.related_event_id}" if e.related_event_id else None,
                    f"vs {e.related_amount}" if e.related_amount is not None else None,
                ]
                lines.append("        e.g. " + ", ".join(p for p in parts if p))
    return lines


def summary_lines(engine: Engine, as_of: dt.datetime, settings: Settings) -> list[str]:
    """A short data-quality summary for `clv train`: one line, plus a warning per large issue."""
    with engine.connect() as connection:
        report = build_report(connection, settings, as_of)
    large = [c for c in report.checks if c.large]
    lines = [
        f"data quality as of {report.as_of:%Y-%m-%d}: {report.events:,} events, "
        f"{len(large)} large issue(s) (details: clv data-quality --as-of {report.as_of:%Y-%m-%d})"
    ]
    lines += [
        f"warning: {c.name}: {c.count:,} of {c.population:,} {c.population_name} ({c.share:.1%})"
        for c in large
    ]
    return lines
