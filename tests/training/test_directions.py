"""Directional sanity through the real API (issue 10): refunds never raise CLV, behaviour counts.

A real model (tests/conftest.py `model_dir`: `clv train` on synthetic orders, refunds, sessions,
views and carts) serves a real app on Postgres. Histories are drawn at random (seeded, so a
failure replays), then changed in one direction only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import numpy as np

from tests.factories import event

AS_OF = "2026-06-30"
END = dt.datetime(2026, 6, 30, 12, tzinfo=dt.UTC)
CASES = 20


def stamp(days_before: float) -> str:
    return (END - dt.timedelta(days=days_before)).isoformat()


def history(rng: np.random.Generator, customer: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A random customer: 1-6 orders over ~15 months, maybe visits and an earlier refund."""
    events, orders = [], []
    for k, age in enumerate(sorted(rng.uniform(20, 450, rng.integers(1, 7)), reverse=True)):
        order_id = f"{customer}-o{k}"
        amount = f"{rng.uniform(5, 300):.2f}"
        events.append(
            event(
                "order",
                customer_id=customer,
                occurred_at=stamp(age),
                amount=amount,
                order_id=order_id,
            )
        )
        orders.append(order_id)
    for kind in ("session", "product_view", "add_to_cart"):
        for age in rng.uniform(1, 200, rng.integers(0, 5)):
            events.append(event(kind, customer_id=customer, occurred_at=stamp(age)))
    return events, orders


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.json()["rejected"] == 0, response.text


async def predict(client: httpx.AsyncClient, customer: str) -> tuple[float, float]:
    response = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": AS_OF})
    assert response.status_code == 200, response.text
    body = response.json()
    return float(body["clv"]["value"]), float(body["churn"]["probability"])


def clone(events: list[dict[str, Any]], customer: str) -> list[dict[str, Any]]:
    """The same history under another customer id (fresh event ids)."""
    out = []
    for e in events:
        copy = {k: v for k, v in e.items() if k not in ("event_id", "customer_id")}
        kind = copy.pop("type")
        if "order_id" in copy:
            copy["order_id"] = copy["order_id"].replace(e["customer_id"], customer)
        out.append(event(kind, customer_id=customer, **copy))
    return out


async def test_a_refund_never_raises_clv(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(10)
    for case in range(CASES):
        customer = f"refund-{case}"
        events, orders = history(rng, customer)
        await post(client, events)
        before, _ = await predict(client, customer)
        order = events[int(rng.integers(len(orders)))]
        share = rng.choice([0.1, 0.5, 1.0])
        refund = event(
            "refund",
            customer_id=customer,
            occurred_at=stamp(rng.uniform(0.5, 15)),
            amount=f"{float(order['amount']) * share:.2f}",
            order_id=order["order_id"],
        )
        await post(client, [refund])
        after, _ = await predict(client, customer)
        assert after <= before, f"case {case}: refund raised CLV {before} -> {after}"


async def test_more_refunded_revenue_never_raises_clv(client: httpx.AsyncClient) -> None:
    rng = np.random.default_rng(11)
    for case in range(CASES // 2):
        base, orders = history(rng, f"more-{case}-base")
        total = sum(float(e["amount"]) for e in base if e["type"] == "order")
        values = []
        for level, share in enumerate((0.0, 0.1, 0.3, 0.6, 1.0)):
            customer = f"more-{case}-{level}"
            events = clone(base, customer)
            if share:
                events.append(
                    event(
                        "refund",
                        customer_id=customer,
                        occurred_at=stamp(3),
                        amount=f"{total * share:.2f}",
                        order_id=f"{customer}-{orders[-1].rsplit('-', 1)[1]}",
                    )
                )
            await post(client, events)
            values.append((await predict(client, customer))[0])
        assert values == sorted(values, reverse=True), f"case {case}: {values}"


async def test_behaviour_events_move_the_score(client: httpx.AsyncClient) -> None:
    """The training data has sessions, views and carts: a customer who browses a lot this month
    is scored differently from the same buyer who does not."""
    buyer = [
        event("order", customer_id="quiet", occurred_at=stamp(120), amount="80.00"),
        event("order", customer_id="quiet", occurred_at=stamp(60), amount="60.00"),
    ]
    await post(client, buyer)
    busy = clone(buyer, "busy")
    for day in range(1, 25, 2):
        busy.append(event("session", customer_id="busy", occurred_at=stamp(day)))
        busy.append(event("product_view", customer_id="busy", occurred_at=stamp(day - 0.01)))
    busy.append(event("add_to_cart", customer_id="busy", occurred_at=stamp(2)))
    await post(client, busy)
    quiet_clv, quiet_churn = await predict(client, "quiet")
    busy_clv, busy_churn = await predict(client, "busy")
    assert (busy_clv, busy_churn) != (quiet_clv, quiet_churn)
    # Browsing right now is a sign of life: it does not make churn more likely.
    assert busy_churn <= quiet_churn
