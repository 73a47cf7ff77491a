"""Synthetic e-commerce event streams for demos and scale benchmarks.

Generative story (vectorised with numpy over blocks of customers, no outside data):

1. Signup: customers arrive over [start, end] with exponential growth (x1.6 a year, at most x20
   overall).  Country and acquisition channel are categorical draws; the channel shifts both
   the chance of ever buying and the purchase rate.
2. Purchases (BG/NBD): about 2/3 of customers are buyers, the rest prospects who only browse.
   A buyer's first order comes in the signup session (minutes) or after Exp(21 days); repeats
   follow a Poisson process with rate lambda_i ~ Gamma(r, alpha) (one order per ~100 days on
   average), and after each repeat the buyer drops out for good with p_i ~ Beta(a, b).
3. Spend (Gamma-Gamma): order value ~ Gamma(p, nu_i) with nu_i ~ Gamma(q, gamma), so each customer
   has their own mean spend (about $75 overall, right-skewed); values are rounded to cents.
4. Funnel: every order closes a session of ~20 minutes (session, product views, maybe a search or
   page view, add_to_cart, checkout_start, order).  Customers also have a landing session at
   signup and non-converting browsing sessions (some abandon a cart) at a rate tied to lambda_i,
   which continue for a few weeks after dropout and then stop.
5. Refunds: 4 % of orders are refunded 1 day + Exp(6 days) later, in full or in part.
6. Seasonality: signups, purchases and browsing run in "operational time", calendar time warped
   by a diurnal x weekly x yearly intensity (Black Friday and December peaks, summer dip), so the
   rates above hold on average while events bunch where shoppers are busy.

Calibration: a 3-year window gives ~19 events per customer (17 for 2 years, 22 for 5), ~11 % of
them orders, and ~35 % of customers without any order.  String columns are object arrays of
str; amount_cents -1 and order_id "" stand for null.  Randomness is drawn per fixed block of customers from
PCG64 seeded with (seed, block), so the output depends on (customers, seed, start, end) only,
never on chunk_customers, and every id embeds the seed so two demo loads never collide.  Nor does
it depend on the CPU: exp, log1p, expm1 and cos come from Python's `math` (see _portable).

Over 400 lines: one generative story whose steps share each block's random state and arrays;
~60 of the lines are its named parameters.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from app.events.bulk import CustomerColumns, EventColumns

EVENT_TYPES = (
    "order",
    "refund",
    "session",
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout_start",
    "search",
)
COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "ES", "IT", "SE", "PL", "JP", "BR")
CHANNELS = ("organic", "paid_search", "social", "email", "referral")

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR

# Type codes index EVENT_TYPES.
_ORDER, _REFUND, _SESSION, _PAGE_VIEW, _PRODUCT_VIEW, _ADD_TO_CART, _CHECKOUT_START, _SEARCH = (
    range(8)
)
# Funnel stage per type code: breaks time ties so a session opens first and its order closes it.
_STAGE = np.array([6, 7, 0, 2, 3, 4, 5, 1], dtype=np.int8)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Randomness is drawn per block of this many customers so chunk_customers cannot change the data.
_BLOCK_CUSTOMERS = 10_000
_EVENT_DIGITS = 6
_ORDER_DIGITS = 5
_MIN_CUSTOMER_DIGITS = 7

_COUNTRY_WEIGHTS = np.array([40, 10, 10, 7, 6, 4, 4, 4, 4, 3, 3, 3, 2], dtype=np.float64) / 100
_CHANNEL_WEIGHTS = np.array([0.35, 0.25, 0.18, 0.10, 0.12])
# Email and referral customers come in warmer than social ones: more buyers, more orders.
_CHANNEL_BUYER_SHARE = np.array([0.67, 0.64, 0.56, 0.77, 0.74])
_CHANNEL_RATE = np.array([1.0, 0.9, 0.7, 1.3, 1.2])

# Signup growth per year, capped so very long windows do not put everyone at the end.
_GROWTH_PER_YEAR = 1.6
_MAX_GROWTH = 20.0

# BG/NBD: lambda ~ Gamma(shape r, scale 1/alpha) orders/day, p ~ Beta(a, b).
_RATE_SHAPE = 0.9
_RATE_SCALE = 1 / 88
_MAX_RATE = 0.5
_DROPOUT_A = 0.8
_DROPOUT_B = 3.0
_IMMEDIATE_SHARE = 0.45
_IMMEDIATE_MINUTES = 25.0
_FIRST_ORDER_DAYS = 21.0
# Leaves room for the funnel between signup and the first order.
_MIN_FIRST_ORDER_US = 2 * US_PER_MINUTE

# Gamma-Gamma: value ~ Gamma(p, rate nu), nu ~ Gamma(q, rate gamma); mean p*gamma/(q-1) dollars.
_SPEND_P = 6.0
_SPEND_Q = 3.5
_SPEND_GAMMA = 31.25
_MIN_ORDER_CENTS = 50
_MAX_ORDER_CENTS = 5_000_000

_REFUND_SHARE = 0.04
_REFUND_MIN_DAYS = 1.0
_REFUND_MEAN_DAYS = 6.0
_REFUND_FULL_SHARE = 0.65

# Browsing sessions per day: buyers browse in proportion to how often they buy.
_BROWSE_PER_ORDER = 0.5
_BROWSE_BASE = 0.0005
_BROWSE_TAIL_DAYS = 30.0
_PROSPECT_BROWSE = 0.012
_PROSPECT_DAYS = 40.0

_SESSION_MEDIAN_MINUTES = 12.0
_ORDER_SESSION_MEDIAN_MINUTES = 18.0
_SESSION_SIGMA = 0.8
_MAX_SESSION_US = 3 * US_PER_HOUR

# Mean counts per session (order sessions, other sessions).
_PRODUCT_VIEWS = (0.5, 1.3)  # order sessions add one guaranteed view
_PAGE_VIEWS = (0.25, 0.4)
_SEARCHES = (0.3, 0.35)
_EXTRA_CART_SHARE = 0.15
_ABANDONED_CHECKOUT_SHARE = 0.3

# Monday first; weekends shop more.
_WEEKDAY_FACTOR = np.array([1.05, 0.97, 0.95, 0.95, 0.9, 1.03, 1.15])


@dataclass(frozen=True)
class DemoChunk:
    """Customers plus all their events, sorted by (customer, occurred_at)."""

    customers: CustomerColumns
    events: EventColumns


def generate_demo(
    customers: int,
    seed: int,
    *,
    start: dt.datetime,
    end: dt.datetime,
    chunk_customers: int = 50_000,
) -> Iterator[DemoChunk]:
    """Yield chunks covering `customers` customers whose histories lie in [start, end] (aware UTC datetimes)."""
    if customers < 0:
        raise ValueError(f"customers must be >= 0, got {customers}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if chunk_customers <= 0:
        raise ValueError(f"chunk_customers must be > 0, got {chunk_customers}")
    start_us, end_us = to_epoch_us(start), to_epoch_us(end)
    if end_us <= start_us:
        raise ValueError(f"end ({end.isoformat()}) must be after start ({start.isoformat()})")
    # Validate eagerly, then hand back a lazy iterator.
    return _chunks(customers, seed, _Clock(start_us, end_us), chunk_customers)


def to_epoch_us(moment: dt.datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {moment.isoformat()}")
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


class _Clock:
    """Maps calendar time to operational time, in which shopping intensity is constant."""

    def __init__(self, start_us: int, end_us: int) -> None:
        self.start_us = start_us
        self.end_us = end_us
        span_us = end_us - start_us
        self.span_days = span_us / US_PER_DAY
        knots_us = np.append(np.arange(0, span_us, US_PER_HOUR, dtype=np.int64), span_us)
        middles_us = start_us + (knots_us[:-1] + knots_us[1:]) // 2
        weight = _intensity(middles_us) * np.diff(knots_us)
        cumulative = np.concatenate(([0.0], np.cumsum(weight)))
        self.calendar_days = knots_us / US_PER_DAY
        # Normalised so both clocks span the same number of days: rates keep their meaning.
        self.operational_days = cumulative * (self.span_days / cumulative[-1])

    def to_us(self, operational: np.ndarray) -> np.ndarray:
        """Epoch microseconds (clamped to the window) of operational days since start."""
        days = np.interp(operational, self.operational_days, self.calendar_days)
        epoch_us: np.ndarray = np.minimum(
            self.start_us + (days * US_PER_DAY).astype(np.int64), self.end_us
        )
        return epoch_us

    def to_operational(self, epoch_us: np.ndarray) -> np.ndarray:
        """Operational days since start of epoch microseconds."""
        days = (epoch_us - self.start_us) / US_PER_DAY
        operational: np.ndarray = np.interp(days, self.calendar_days, self.operational_days)
        return operational


def _portable(function: Callable[[float], float], values: np.ndarray) -> np.ndarray:
    """`function` from Python's `math` (the C library) applied to every element.

    numpy's own exp, log1p, expm1, cos ... choose SIMD kernels by CPU (AVX2, AVX-512), and their
    last bits differ from one machine to another: the same seed then gave other timestamps on
    another CPU, and the shipped model's data fingerprint no longer matched its regenerated data
    (tests/test_shipped_model.py). Basic arithmetic, cumsum, interp and numpy.random's own C
    code are the same everywhere; only these calls needed replacing. Cost: ~0.1 s per million.
    """
    flat = np.fromiter(map(function, values.ravel().tolist()), np.float64, count=values.size)
    return flat.reshape(values.shape)


def _intensity(epoch_us: np.ndarray) -> np.ndarray:
    """Relative shopping intensity (diurnal x weekly x yearly) at the given instants."""
    hour = (epoch_us // US_PER_HOUR) % 24
    days = epoch_us // US_PER_DAY
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    dates = days.astype("datetime64[D]")
    day_of_year = (dates - dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
    # UTC evening peak: the customer base is mostly Europe and the Americas.
    diurnal = 1.0 + 0.55 * _portable(math.cos, 2 * np.pi * (hour - 20) / 24)
    yearly = (
        1.0
        + 0.6 * _portable(math.exp, -(((day_of_year - 330) / 12.0) ** 2))  # Black Friday / Cyber
        + 0.35 * _portable(math.exp, -(((day_of_year - 350) / 9.0) ** 2))  # Christmas shopping
        - 0.15 * _portable(math.exp, -(((day_of_year - 200) / 35.0) ** 2))  # summer lull
    )
    intensity: np.ndarray = diurnal * _WEEKDAY_FACTOR[weekday] * yearly
    return intensity


@dataclass(frozen=True)
class _Block:
    """Numeric data of a run of customers; events sorted by (customer, occurred_at, stage)."""

    first: int
    size: int
    signup_us: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    customer: np.ndarray  # global customer index
    occurred_us: np.ndarray
    type_code: np.ndarray
    amount_cents: np.ndarray
    order_ordinal: np.ndarray  # own order for orders, refunded order for refunds, else -1
    event_ordinal: np.ndarray  # position in the customer's history

    def slice(self, lo: int, hi: int) -> _Block:
        """The customers with global index in [lo, hi) and their events."""
        a, b = np.searchsorted(self.customer, [lo, hi])
        c, d = lo - self.first, hi - self.first
        if (c, d, a, b) == (0, self.size, 0, len(self.customer)):
            return self
        return _Block(
            first=lo,
            size=hi - lo,
            signup_us=self.signup_us[c:d],
            country=self.country[c:d],
            channel=self.channel[c:d],
            customer=self.customer[a:b],
            occurred_us=self.occurred_us[a:b],
            type_code=self.type_code[a:b],
            amount_cents=self.amount_cents[a:b],
            order_ordinal=self.order_ordinal[a:b],
            event_ordinal=self.event_ordinal[a:b],
        )


def _concat(pieces: Sequence[_Block]) -> _Block:
    """Adjacent blocks joined into one."""
    if len(pieces) == 1:
        return pieces[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(piece, name) for piece in pieces])

    return _Block(
        first=pieces[0].first,
        size=sum(piece.size for piece in pieces),
        signup_us=cat("signup_us"),
        country=cat("country"),
        channel=cat("channel"),
        customer=cat("customer"),
        occurred_us=cat("occurred_us"),
        type_code=cat("type_code"),
        amount_cents=cat("amount_cents"),
        order_ordinal=cat("order_ordinal"),
        event_ordinal=cat("event_ordinal"),
    )


def _block_rng(seed: int, block: int) -> np.random.Generator:
    """The generator for one block: independent streams per (seed, block)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, block))))


def _chunks(customers: int, seed: int, clock: _Clock, chunk_customers: int) -> Iterator[DemoChunk]:
    """Simulate block by block and regroup the blocks into chunks of chunk_customers."""
    digits = max(_MIN_CUSTOMER_DIGITS, len(str(max(customers - 1, 0))))
    prefix = f"demo-s{seed}-c"
    block: _Block | None = None
    for lo in range(0, customers, chunk_customers):
        hi = min(lo + chunk_customers, customers)
        pieces: list[_Block] = []
        position = lo
        while position < hi:
            first = position // _BLOCK_CUSTOMERS * _BLOCK_CUSTOMERS
            if block is None or block.first != first:
                size = min(_BLOCK_CUSTOMERS, customers - first)
                block = _simulate(_block_rng(seed, first // _BLOCK_CUSTOMERS), first, size, clock)
            stop = min(hi, first + block.size)
            pieces.append(block.slice(position, stop))
            position = stop
        yield _to_chunk(_concat(pieces), prefix, digits)


def _segment_positions(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., counts[i]-1 for each segment i, concatenated."""
    starts = np.cumsum(counts) - counts
    positions: np.ndarray = np.arange(int(counts.sum())) - np.repeat(starts, counts)
    return positions


def _simulate(rng: np.random.Generator, first: int, n: int, clock: _Clock) -> _Block:
    """Simulate customers first..first+n-1 (see the module docstring for the story)."""
    span = clock.span_days
    end_us = clock.end_us

    # Signup, in operational time with exponential growth (inverse-CDF sampling).
    growth = min(math.log(_GROWTH_PER_YEAR) * span / 365.25, math.log(_MAX_GROWTH))
    uniform = rng.random(n)
    signup_u = span * (
        _portable(math.log1p, uniform * math.expm1(growth)) / growth if growth > 1e-9 else uniform
    )
    signup_us = clock.to_us(signup_u)
    country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_WEIGHTS).astype(np.int8)
    channel = rng.choice(len(CHANNELS), size=n, p=_CHANNEL_WEIGHTS).astype(np.int8)

    # Customer-level heterogeneity.
    rate = np.minimum(rng.gamma(_RATE_SHAPE, _RATE_SCALE, n) * _CHANNEL_RATE[channel], _MAX_RATE)
    dropout = rng.beta(_DROPOUT_A, _DROPOUT_B, n)
    spend_rate = rng.gamma(_SPEND_Q, 1.0 / _SPEND_GAMMA, n)
    buyer = rng.random(n) < _CHANNEL_BUYER_SHARE[channel]
    immediate = buyer & (rng.random(n) < _IMMEDIATE_SHARE)

    # First order: in the signup session or some weeks later; end_us + 1 marks "not before end".
    soon_us = signup_us + _MIN_FIRST_ORDER_US
    soon_us += (rng.exponential(_IMMEDIATE_MINUTES, n) * US_PER_MINUTE).astype(np.int64)
    later_u = signup_u + rng.exponential(_FIRST_ORDER_DAYS, n)
    later_us = np.where(later_u <= span, clock.to_us(np.minimum(later_u, span)), end_us + 1)
    first_us = np.maximum(np.where(immediate, soon_us, later_us), signup_us + _MIN_FIRST_ORDER_US)
    ordered = buyer & (first_us <= end_us)
    immediate &= ordered

    # Repeats: the first `repeats` of `arrivals` Poisson points in (first order, end], where the
    # buyer drops out after repeat number `cap`.  Order statistics are drawn sequentially in
    # O(repeats): -log(1 - U_(j)) is a sum of Exp(1) / (arrivals - l), l < j.
    buyers = np.flatnonzero(ordered)
    first_u = clock.to_operational(first_us[buyers])
    horizon = np.maximum(span - first_u, 0.0)
    arrivals = rng.poisson(rate[buyers] * horizon)
    cap = rng.geometric(dropout[buyers])
    repeats = np.minimum(arrivals, cap)
    owner = np.repeat(np.arange(len(buyers)), repeats)
    rank = _segment_positions(repeats)
    steps = rng.standard_exponential(len(owner)) / (arrivals[owner] - rank)
    summed = np.cumsum(steps)
    starts = np.cumsum(repeats) - repeats
    within = summed - np.repeat(np.concatenate(([0.0], summed))[starts], repeats)
    repeat_u = first_u[owner] + horizon[owner] * -_portable(math.expm1, -within)

    death_u = np.full(n, np.inf)
    dropped = cap <= arrivals
    if dropped.any():
        death_u[buyers[dropped]] = repeat_u[(starts + repeats - 1)[dropped]]

    # Orders, sorted per customer so ordinals follow time.
    order_customer = np.concatenate((buyers, buyers[owner]))
    order_us = np.concatenate((first_us[buyers], clock.to_us(repeat_u)))
    first_flag = np.concatenate((np.ones(len(buyers), bool), np.zeros(len(owner), bool)))
    by_time = np.lexsort((order_us, order_customer))
    order_customer, order_us, first_flag = (
        order_customer[by_time],
        order_us[by_time],
        first_flag[by_time],
    )
    order_ordinal = _segment_positions(np.bincount(order_customer, minlength=n))
    n_orders = len(order_customer)
    dollars = rng.gamma(_SPEND_P, 1.0, n_orders) / spend_rate[order_customer]
    order_cents = np.clip(np.rint(dollars * 100), _MIN_ORDER_CENTS, _MAX_ORDER_CENTS).astype(
        np.int64
    )

    # Refunds; those that would land after `end` simply have not happened yet.
    refunded = np.flatnonzero(rng.random(n_orders) < _REFUND_SHARE)
    delay_days = _REFUND_MIN_DAYS + rng.exponential(_REFUND_MEAN_DAYS, len(refunded))
    refund_us = order_us[refunded] + (delay_days * US_PER_DAY).astype(np.int64)
    partial = np.rint(order_cents[refunded] * rng.uniform(0.1, 0.9, len(refunded))).astype(np.int64)
    full = rng.random(len(refunded)) < _REFUND_FULL_SHARE
    refund_cents = np.where(full, order_cents[refunded], np.clip(partial, 1, order_cents[refunded]))
    kept = refund_us <= end_us
    refunded, refund_us, refund_cents = refunded[kept], refund_us[kept], refund_cents[kept]

    # Browsing windows: buyers until a few weeks after dropout, prospects for a few weeks.
    tail = rng.exponential(_BROWSE_TAIL_DAYS, n)
    prospect_days = rng.exponential(_PROSPECT_DAYS, n)
    prospect_rate = rng.gamma(2.0, _PROSPECT_BROWSE / 2, n)
    browse_rate = np.where(buyer, _BROWSE_PER_ORDER * rate + _BROWSE_BASE, prospect_rate)
    window_end = np.minimum(span, np.where(buyer, death_u + tail, signup_u + prospect_days))
    window = np.maximum(window_end - signup_u, 0.0)
    browse_counts = rng.poisson(browse_rate * window)
    browse_customer = np.repeat(np.arange(n), browse_counts)
    browse_u = (
        signup_u[browse_customer] + rng.random(len(browse_customer)) * window[browse_customer]
    )

    # Sessions: one per order (ending in it), a landing session at signup unless the signup
    # session already converted, and the browsing sessions.  Each session is anchored at its
    # last moment and stretches back over its duration, never past signup.
    landing = np.flatnonzero(~immediate)
    landing_us = np.minimum(
        signup_us[landing] + _durations(rng, len(landing), _SESSION_MEDIAN_MINUTES), end_us
    )
    order_duration = _durations(rng, n_orders, _ORDER_SESSION_MEDIAN_MINUTES)
    signup_converted = first_flag & immediate[order_customer]
    order_duration[signup_converted] = _MAX_SESSION_US * 1000  # stretch back to the signup
    session_customer = np.concatenate((order_customer, landing, browse_customer))
    anchor_us = np.concatenate((order_us, landing_us, clock.to_us(browse_u)))
    duration_us = np.concatenate(
        (
            order_duration,
            landing_us - signup_us[landing],
            _durations(rng, len(browse_customer), _SESSION_MEDIAN_MINUTES),
        )
    )
    duration_us = np.minimum(duration_us, anchor_us - signup_us[session_customer])
    n_sessions = len(session_customer)
    converting = np.zeros(n_sessions, dtype=np.int64)
    converting[:n_orders] = 1

    parts: list[tuple[np.ndarray, np.ndarray, int]] = []

    def emit(code: int, counts: np.ndarray, lo: float, hi: float) -> None:
        """Place counts[s] events of one type in each session s, at fractions [lo, hi) of it."""
        session = np.repeat(np.arange(n_sessions), counts)
        fraction = rng.uniform(lo, hi, len(session)) if hi > lo else np.full(len(session), lo)
        offset = (duration_us[session] * (1.0 - fraction)).astype(np.int64)
        parts.append((session_customer[session], anchor_us[session] - offset, code))

    def mean_by_kind(means: tuple[float, float]) -> np.ndarray:
        return np.where(converting == 1, means[0], means[1])

    carts = converting + (rng.random(n_sessions) < _EXTRA_CART_SHARE)
    checkouts = np.where(
        converting == 1, 1, (carts > 0) & (rng.random(n_sessions) < _ABANDONED_CHECKOUT_SHARE)
    )
    emit(_SESSION, np.ones(n_sessions, dtype=np.int64), 0.0, 0.0)
    emit(_SEARCH, rng.poisson(mean_by_kind(_SEARCHES)), 0.02, 0.6)
    emit(_PAGE_VIEW, rng.poisson(mean_by_kind(_PAGE_VIEWS)), 0.02, 0.9)
    emit(_PRODUCT_VIEW, converting + rng.poisson(mean_by_kind(_PRODUCT_VIEWS)), 0.05, 0.85)
    emit(_ADD_TO_CART, carts, 0.4, 0.9)
    emit(_CHECKOUT_START, checkouts.astype(np.int64), 0.9, 0.98)

    customer = np.concatenate([p[0] for p in parts] + [order_customer, order_customer[refunded]])
    occurred = np.concatenate([p[1] for p in parts] + [order_us, refund_us])
    codes = np.concatenate(
        [np.full(len(p[0]), p[2], dtype=np.int8) for p in parts]
        + [np.full(n_orders, _ORDER, dtype=np.int8), np.full(len(refunded), _REFUND, dtype=np.int8)]
    )
    behaviour = len(customer) - n_orders - len(refunded)
    amount = np.concatenate((np.full(behaviour, -1, dtype=np.int64), order_cents, refund_cents))
    ordinal = np.concatenate(
        (np.full(behaviour, -1, dtype=np.int64), order_ordinal, order_ordinal[refunded])
    )

    order = np.lexsort((_STAGE[codes], occurred, customer))
    customer = customer[order]
    counts = np.bincount(customer, minlength=n)
    if counts.max(initial=0) >= 10**_EVENT_DIGITS or (
        n_orders and order_ordinal.max() >= 10**_ORDER_DIGITS
    ):
        raise RuntimeError("a demo customer outgrew the id format; use a shorter window")
    return _Block(
        first=first,
        size=n,
        signup_us=signup_us,
        country=country,
        channel=channel,
        customer=customer + first,
        occurred_us=occurred[order],
        type_code=codes[order],
        amount_cents=amount[order],
        order_ordinal=ordinal[order],
        event_ordinal=_segment_positions(counts),
    )


def _durations(rng: np.random.Generator, n: int, median_minutes: float) -> np.ndarray:
    """Log-normal session lengths in microseconds, capped at a few hours."""
    minutes = rng.lognormal(math.log(median_minutes), _SESSION_SIGMA, n)
    return np.minimum((minutes * US_PER_MINUTE).astype(np.int64), _MAX_SESSION_US)


# ASCII digits of 0..999: ids are built three digits per table lookup, not one divmod per digit.
_TRIPLETS = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)
_NEWLINE = ord("\n")


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ASCII digits of non-negative integers, one row per value."""
    out = np.empty((len(values), width), dtype=np.uint8)
    rest = values.astype(np.int64)
    right = width
    while right > 0:
        take = min(3, right)
        rest, group = np.divmod(rest, 1000)
        out[:, right - take : right] = _TRIPLETS[group, 3 - take :]
        right -= take
    return out


def _strings(n: int, parts: Sequence[bytes | np.ndarray]) -> np.ndarray:
    """Object array of str, row i the concatenation of literals and rows i of ASCII matrices."""
    width = sum(len(part) if isinstance(part, bytes) else part.shape[1] for part in parts)
    ascii_rows = np.empty((n, width + 1), dtype=np.uint8)
    column = 0
    for part in parts:
        if isinstance(part, bytes):
            ascii_rows[:, column : column + len(part)] = np.frombuffer(part, dtype=np.uint8)
            column += len(part)
        else:
            ascii_rows[:, column : column + part.shape[1]] = part
            column += part.shape[1]
    ascii_rows[:, width] = _NEWLINE
    # One decode and one split create all the str objects in C, far faster than per-row casts.
    texts = str(ascii_rows.reshape(-1).data, "ascii").split("\n")
    texts.pop()
    out = np.empty(n, dtype=object)
    out[:] = texts
    return out


_TYPE_NAMES = np.array(EVENT_TYPES, dtype=object)
_COUNTRY_NAMES = np.array(COUNTRIES, dtype=object)
_CHANNEL_NAMES = np.array(CHANNELS, dtype=object)


def _to_chunk(block: _Block, prefix: str, digits: int) -> DemoChunk:
    """Turn a block's numeric columns into the public columns (strings as object arrays of str)."""
    head = prefix.encode("ascii")
    customer_digits = _digits(np.arange(block.first, block.first + block.size), digits)
    external_id = _strings(block.size, [head, customer_digits])
    local = block.customer - block.first
    n_events = len(local)
    event_id = _strings(
        n_events, [head, customer_digits[local], b"-e", _digits(block.event_ordinal, _EVENT_DIGITS)]
    )
    order_rows = np.flatnonzero(block.order_ordinal >= 0)
    order_id = np.full(n_events, "", dtype=object)  # "" = null
    order_id[order_rows] = _strings(
        len(order_rows),
        [
            head,
            customer_digits[local[order_rows]],
            b"-o",
            _digits(block.order_ordinal[order_rows], _ORDER_DIGITS),
        ],
    )
    events = EventColumns(
        event_id=event_id,
        customer_external_id=external_id[local],
        type=_TYPE_NAMES[block.type_code],
        occurred_at_us=block.occurred_us,
        amount_cents=block.amount_cents,
        order_id=order_id,
    )
    customers = CustomerColumns(
        external_id=external_id,
        signup_at_us=block.signup_us,
        country=_COUNTRY_NAMES[block.country],
        acquisition_channel=_CHANNEL_NAMES[block.channel],
    )
    return DemoChunk(customers=customers, events=events)


def _benchmark(customers: int) -> None:
    """Generate `customers` customers over three years and print throughput and peak memory."""
    import resource
    import time

    start = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    began = time.perf_counter()
    events = orders = 0
    for chunk in generate_demo(customers, seed=1, start=start, end=end):
        events += len(chunk.events)
        orders += int((chunk.events.type == "order").sum())
    seconds = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{customers:>9,} customers  {events:>11,} events ({events / customers:.1f}/customer, "
        f"{orders / max(events, 1):.1%} orders)  {seconds:6.2f} s  "
        f"{events / seconds:,.0f} events/s  peak RSS {peak_mb:,.0f} MB"
    )


if __name__ == "__main__":
    import sys

    for count in [int(arg) for arg in sys.argv[1:]] or [100_000]:
        _benchmark(count)
