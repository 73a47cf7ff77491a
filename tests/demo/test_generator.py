"""Properties of the synthetic demo data generator."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, fields

import numpy as np
import pytest

from app.demo.generator import (
    EVENT_TYPES,
    US_PER_DAY,
    US_PER_HOUR,
    DemoChunk,
    generate_demo,
    to_epoch_us,
)

START = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
CUSTOMERS = 4_000


@dataclass(frozen=True)
class Flat:
    """All chunks of one run concatenated, column by column."""

    chunks: list[DemoChunk]
    external_id: np.ndarray
    signup_at_us: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    event_id: np.ndarray
    customer: np.ndarray
    type: np.ndarray
    occurred_at_us: np.ndarray
    amount_cents: np.ndarray
    order_id: np.ndarray


def run(
    customers: int,
    seed: int,
    start: dt.datetime = START,
    end: dt.datetime = END,
    chunk_customers: int = 1_500,
) -> Flat:
    """Generate and flatten one demo."""
    chunks = list(
        generate_demo(customers, seed, start=start, end=end, chunk_customers=chunk_customers)
    )

    def cat(part: str, name: str) -> np.ndarray:
        return np.concatenate([getattr(getattr(chunk, part), name) for chunk in chunks])

    return Flat(
        chunks=chunks,
        external_id=cat("customers", "external_id"),
        signup_at_us=cat("customers", "signup_at_us"),
        country=cat("customers", "country"),
        channel=cat("customers", "acquisition_channel"),
        event_id=cat("events", "event_id"),
        customer=cat("events", "customer_external_id"),
        type=cat("events", "type"),
        occurred_at_us=cat("events", "occurred_at_us"),
        amount_cents=cat("events", "amount_cents"),
        order_id=cat("events", "order_id"),
    )


def columns(flat: Flat) -> dict[str, np.ndarray]:
    """The data columns of a run, for whole-run comparisons."""
    return {f.name: getattr(flat, f.name) for f in fields(flat) if f.name != "chunks"}


@pytest.fixture(scope="module")
def demo() -> Flat:
    """Three years of 4,000 customers in chunks of 1,500."""
    return run(CUSTOMERS, seed=7)


@pytest.fixture(scope="module")
def orders_per_customer(demo: Flat) -> np.ndarray:
    """Order count of every customer, zeros included."""
    names, counts = np.unique(demo.customer[demo.type == "order"], return_counts=True)
    per_customer = dict(zip(names.tolist(), counts.tolist(), strict=True))
    return np.array([per_customer.get(name, 0) for name in demo.external_id.tolist()])


def test_same_arguments_give_identical_output(demo: Flat) -> None:
    again = run(CUSTOMERS, seed=7)
    for name, column in columns(demo).items():
        assert np.array_equal(column, getattr(again, name)), name


def test_chunk_size_does_not_change_the_data() -> None:
    # More customers than one internal block, so chunks straddle block boundaries.
    year_end = dt.datetime(2021, 7, 1, tzinfo=dt.UTC)
    whole = run(10_300, seed=3, end=year_end, chunk_customers=50_000)
    sliced = run(10_300, seed=3, end=year_end, chunk_customers=777)
    for name, column in columns(whole).items():
        assert np.array_equal(column, getattr(sliced, name)), name


def test_chunked_run_yields_the_requested_customers() -> None:
    flat = run(2_500, seed=11, chunk_customers=1_000)
    assert [len(chunk.customers.external_id) for chunk in flat.chunks] == [1_000, 1_000, 500]
    assert len(set(flat.external_id.tolist())) == 2_500
    for chunk in flat.chunks:
        assert set(chunk.events.customer_external_id.tolist()) <= set(
            chunk.customers.external_id.tolist()
        )
        assert len(chunk.events) == len(chunk.events.event_id)


def test_zero_customers_yield_nothing() -> None:
    assert list(generate_demo(0, 1, start=START, end=END)) == []


def test_different_seeds_never_share_ids(demo: Flat) -> None:
    other = run(CUSTOMERS, seed=8)
    assert not set(demo.external_id.tolist()) & set(other.external_id.tolist())
    assert not set(demo.event_id.tolist()) & set(other.event_id.tolist())
    orders, other_orders = set(demo.order_id.tolist()), set(other.order_id.tolist())
    assert orders & other_orders == {""}


def test_ids_are_unique_and_well_formed(demo: Flat) -> None:
    assert len(set(demo.event_id.tolist())) == len(demo.event_id)
    assert len(set(demo.external_id.tolist())) == CUSTOMERS
    for ids in (demo.event_id, demo.external_id, demo.order_id[demo.order_id != ""]):
        assert all(ID_PATTERN.match(value) for value in ids.tolist())
    assert set(demo.type.tolist()) == set(EVENT_TYPES)
    assert all(len(code) == 2 and code.isupper() for code in set(demo.country.tolist()))
    assert set(demo.channel.tolist()) <= {"organic", "paid_search", "social", "email", "referral"}


def test_events_lie_between_signup_and_end(demo: Flat) -> None:
    start_us, end_us = to_epoch_us(START), to_epoch_us(END)
    signup = dict(zip(demo.external_id.tolist(), demo.signup_at_us.tolist(), strict=True))
    signup_of_event = np.array([signup[name] for name in demo.customer.tolist()])
    assert demo.signup_at_us.dtype == np.int64
    assert demo.occurred_at_us.dtype == np.int64
    assert ((demo.signup_at_us >= start_us) & (demo.signup_at_us <= end_us)).all()
    assert (demo.occurred_at_us >= signup_of_event).all()
    assert (demo.occurred_at_us <= end_us).all()


def test_events_are_sorted_by_customer_then_time(demo: Flat) -> None:
    for chunk in demo.chunks:
        events = chunk.events
        position = {name: i for i, name in enumerate(chunk.customers.external_id.tolist())}
        rank = np.array([position[name] for name in events.customer_external_id.tolist()])
        assert (np.diff(rank) >= 0).all()
        same = np.diff(rank) == 0
        assert (np.diff(events.occurred_at_us)[same] >= 0).all()


def test_money_only_on_orders_and_refunds(demo: Flat) -> None:
    monetary = (demo.type == "order") | (demo.type == "refund")
    assert demo.amount_cents.dtype == np.int64
    assert (demo.amount_cents[monetary] > 0).all()
    assert (demo.amount_cents[~monetary] == -1).all()
    assert (demo.order_id[monetary] != "").all()
    assert (demo.order_id[~monetary] == "").all()


def test_refunds_reference_an_earlier_order_of_the_same_customer(demo: Flat) -> None:
    is_order = demo.type == "order"
    order_ids = demo.order_id[is_order].tolist()
    assert len(set(order_ids)) == len(order_ids)
    orders = dict(
        zip(
            order_ids,
            zip(
                demo.customer[is_order].tolist(),
                demo.occurred_at_us[is_order].tolist(),
                demo.amount_cents[is_order].tolist(),
                strict=True,
            ),
            strict=True,
        )
    )
    refunds = np.flatnonzero(demo.type == "refund")
    assert 0.01 < len(refunds) / len(order_ids) < 0.08
    full = 0
    for i in refunds.tolist():
        customer, ordered_at, amount = orders[demo.order_id[i]]
        assert customer == demo.customer[i]
        assert ordered_at < demo.occurred_at_us[i]
        assert demo.amount_cents[i] <= amount
        full += int(demo.amount_cents[i] == amount)
    assert 0 < full < len(refunds)  # mostly full refunds, some partial


def test_every_order_follows_a_checkout_of_the_same_customer(demo: Flat) -> None:
    checkouts: dict[str, list[int]] = defaultdict(list)
    for name, at in zip(
        demo.customer[demo.type == "checkout_start"].tolist(),
        demo.occurred_at_us[demo.type == "checkout_start"].tolist(),
        strict=True,
    ):
        checkouts[name].append(at)
    sorted_checkouts = {name: np.sort(times) for name, times in checkouts.items()}
    is_order = demo.type == "order"
    for name, at in zip(
        demo.customer[is_order].tolist(), demo.occurred_at_us[is_order].tolist(), strict=True
    ):
        times = sorted_checkouts[name]
        before = np.searchsorted(times, at, side="left") - 1  # strictly earlier
        assert before >= 0, f"order of {name} at {at} has no earlier checkout_start"
        assert at - times[before] <= 6 * US_PER_HOUR


def test_orders_are_a_plausible_share_of_many_events(demo: Flat) -> None:
    per_customer = len(demo.event_id) / CUSTOMERS
    assert 14 <= per_customer <= 28
    order_share = float(np.mean(demo.type == "order"))
    assert 0.08 <= order_share <= 0.16
    browsing = np.isin(demo.type, ["session", "page_view", "product_view", "search"])
    assert browsing.mean() > 0.4


def test_a_third_of_customers_never_order(orders_per_customer: np.ndarray) -> None:
    assert 0.25 <= float(np.mean(orders_per_customer == 0)) <= 0.45


def test_order_counts_are_overdispersed(orders_per_customer: np.ndarray) -> None:
    buyers = orders_per_customer[orders_per_customer > 0]
    assert orders_per_customer.var() > 2 * orders_per_customer.mean()
    assert np.percentile(buyers, 99) >= 4 * np.median(buyers)


def test_order_values_are_typical_with_a_heavy_tail(demo: Flat) -> None:
    dollars = demo.amount_cents[demo.type == "order"] / 100
    median = float(np.median(dollars))
    assert 30 <= median <= 100
    assert 0.7 <= float(np.mean((dollars >= 20) & (dollars <= 200)))
    assert np.percentile(dollars, 99.5) > 5 * median


def test_holiday_season_peaks(demo: Flat) -> None:
    at = demo.occurred_at_us[demo.type == "order"].astype("datetime64[us]")
    month = at.astype("datetime64[M]").astype(np.int64) % 12 + 1
    nov_dec = float(np.mean(month >= 11))
    assert nov_dec > 61 / 365 + 0.04
    # Against the neighbouring months too, so growth over the year cannot explain it.
    per_day_nov_dec = np.sum(month >= 11) / 61
    per_day_sep_oct = np.sum((month == 9) | (month == 10)) / 61
    assert per_day_nov_dec > 1.2 * per_day_sep_oct


def test_shoppers_prefer_evenings(demo: Flat) -> None:
    hour = (demo.occurred_at_us // US_PER_HOUR) % 24
    assert np.sum(hour == 20) > 2 * np.sum(hour == 8)


def test_short_window_still_respects_signup_and_end() -> None:
    start = dt.datetime(2023, 11, 24, 12, tzinfo=dt.UTC)
    end = start + dt.timedelta(hours=6)
    flat = run(800, seed=5, start=start, end=end)
    signup = dict(zip(flat.external_id.tolist(), flat.signup_at_us.tolist(), strict=True))
    signup_of_event = np.array([signup[name] for name in flat.customer.tolist()])
    assert len(flat.event_id) > 800
    assert (flat.occurred_at_us >= signup_of_event).all()
    assert (flat.occurred_at_us <= to_epoch_us(end)).all()
    assert flat.occurred_at_us.max() - flat.occurred_at_us.min() < US_PER_DAY


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": dt.datetime(2021, 1, 1)}, "timezone-aware"),
        ({"end": START}, "must be after"),
        ({"chunk_customers": 0}, "chunk_customers"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"start": START, "end": END, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_demo(10, 1, **arguments)  # type: ignore[arg-type]


_DIGEST = """
import dataclasses, datetime as dt, hashlib, numpy as np
from app.demo.generator import generate_demo
digest = hashlib.sha256()
for chunk in generate_demo(1_500, 3, start=dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
                           end=dt.datetime(2024, 6, 30, tzinfo=dt.UTC)):
    for part in (chunk.events, chunk.customers):
        for field in dataclasses.fields(part):
            value = getattr(part, field.name)
            if value is not None:
                digest.update(np.asarray(value).astype(str).tobytes())
print(digest.hexdigest())
"""


def test_the_same_seed_gives_the_same_data_whatever_the_cpu() -> None:
    """numpy picks SIMD kernels by CPU (AVX2, AVX-512); the demo data must not depend on them
    (the shipped model's data is regenerated on other machines and fingerprinted). Here the
    data is generated twice: with every SIMD extension this CPU offers above numpy's baseline,
    and with all of them switched off, as on an older CPU."""
    import importlib
    import os
    import subprocess
    import sys

    umath = importlib.import_module("numpy._core._multiarray_umath")  # where numpy keeps them

    extra = [
        name
        for name in umath.__cpu_dispatch__
        if umath.__cpu_features__.get(name) and name not in umath.__cpu_baseline__
    ]

    def digest(disabled: list[str]) -> str:
        env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
        if disabled:
            env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disabled)
        out = subprocess.run(
            [sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    full, plain = digest([]), digest(extra)
    assert len(full) == 64
    assert full == plain, f"demo data differs with {extra} switched off"
