"""Transaction logs (CDNOW, CSV) parsed into order/refund event columns with deterministic ids."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from app.events.bulk import EventColumns
from app.ids import ID_PATTERN

_ID = re.compile(ID_PATTERN)
_MAX_CENTS = 100_000_000_000  # amounts stay below 10^9
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TransactionLogError(ValueError):
    """A line of the log cannot be loaded; the message names the file, line and column."""


def _us(moment: dt.datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_Row = tuple[str, str, str, int, int, str, int]  # ..., line number in the file


def _columns(rows: list[_Row]) -> EventColumns:
    event_id, customer, kind, occurred, cents, order, line = (
        zip(*rows, strict=True) if rows else ((),) * 7
    )
    return EventColumns(
        event_id=np.array(event_id, dtype=object),
        customer_external_id=np.array(customer, dtype=object),
        type=np.array(kind, dtype=object),
        occurred_at_us=np.array(occurred, dtype=np.int64),
        amount_cents=np.array(cents, dtype=np.int64),
        order_id=np.array(order, dtype=object),
        source_line=np.array(line, dtype=np.int64),
    )


def read_cdnow(path: Path, chunk_rows: int = 25_000) -> Iterator[EventColumns]:
    """CDNOW_master.txt: `customer_id date(YYYYMMDD) number_of_cds dollar_value`, one order a line.

    Event ids are `cdnow:<customer>:<date>:<k>`, k counting same-customer same-day lines in file
    order, so a re-import of the same file maps every line to the same id.
    """
    seen: Counter[tuple[str, str]] = Counter()
    day_us: dict[str, int] = {}  # ~600 distinct days: parse each once
    rows: list[_Row] = []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts or (number == 1 and not parts[0].isdigit()):
                continue  # blank line or header
            if len(parts) != 4:
                raise TransactionLogError(f"{path}:{number}: expected 4 columns, got {len(parts)}")
            customer, day, _cds, dollars = parts
            try:
                when = day_us.get(day)
                if when is None:
                    when = day_us[day] = _us(
                        dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.UTC)
                    )
                cents = _cents(dollars)
            except ValueError as exc:
                raise TransactionLogError(f"{path}:{number}: {exc}") from exc
            if not _ID.match(customer):
                raise TransactionLogError(f"{path}:{number}: bad customer id {customer!r}")
            key = (customer, day)
            k = seen[key]
            seen[key] = k + 1
            rows.append((f"cdnow:{customer}:{day}:{k}", customer, "order", when, cents, "", number))
            if len(rows) >= chunk_rows:
                yield _columns(rows)
                rows = []
    if rows:
        yield _columns(rows)


_DOLLARS = re.compile(r"^(\d{1,9})(?:\.(\d{1,2}))?$")


def _cents(dollars: str) -> int:
    """Exact cents of a non-negative amount with at most 2 decimals ("11.77" -> 1177)."""
    match = _DOLLARS.match(dollars)
    if match is None:
        raise ValueError(f"amount {dollars!r} must be >= 0 with at most 2 decimals")
    whole, fraction = match.groups()
    return int(whole) * 100 + int((fraction or "0").ljust(2, "0"))


def _parse_time(value: str) -> dt.datetime:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp without offset; give Z or +hh:mm (or a plain YYYY-MM-DD date)")
    return moment.astimezone(dt.UTC)


def read_csv(path: Path, currency: str, chunk_rows: int = 25_000) -> Iterator[EventColumns]:
    """A CSV with header `customer_id,occurred_at,amount` and optional `event_id,order_id,type,currency`.

    `occurred_at` is RFC 3339 with offset or a YYYY-MM-DD date (midnight UTC); `type` is order
    (default) or refund. Without an `event_id` column the id is derived from the line's customer,
    time and amount plus a counter for identical lines, so re-imports are no-ops.
    """
    seen: Counter[tuple[str, int, int, str]] = Counter()
    given: dict[str, tuple[int, tuple[str, str, int, int, str]]] = {}  # explicit ids: line, content
    rows: list[_Row] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"customer_id", "occurred_at", "amount"} - set(reader.fieldnames or [])
        if missing:
            raise TransactionLogError(
                f"{path}: header lacks column(s) {', '.join(sorted(missing))}"
            )
        for record in reader:
            where = f"{path}:{reader.line_num}"
            customer = (record.get("customer_id") or "").strip()
            if not _ID.match(customer):
                raise TransactionLogError(
                    f"{where}: customer_id {customer!r} must be 1-128 of [A-Za-z0-9._:@-]"
                )
            kind = (record.get("type") or "order").strip()
            if kind not in ("order", "refund"):
                raise TransactionLogError(f"{where}: type must be order or refund, got {kind!r}")
            row_currency = (record.get("currency") or currency).strip()
            if row_currency != currency:
                raise TransactionLogError(
                    f"{where}: currency {row_currency!r} is not {currency}; nothing is converted"
                )
            try:
                when = _parse_time((record.get("occurred_at") or "").strip())
                amount = Decimal((record.get("amount") or "").strip())
            except (ValueError, InvalidOperation) as exc:
                raise TransactionLogError(f"{where}: {exc}") from exc
            if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")) or amount < 0:
                raise TransactionLogError(
                    f"{where}: amount {amount} must be >= 0 with at most 2 decimals"
                )
            cents = int(amount * 100)
            if cents >= _MAX_CENTS or (kind == "refund" and cents == 0):
                raise TransactionLogError(f"{where}: amount {amount} out of range")
            order = (record.get("order_id") or "").strip()
            if order and not _ID.match(order):
                raise TransactionLogError(
                    f"{where}: order_id {order!r} must be 1-128 of [A-Za-z0-9._:@-]"
                )
            event_id = (record.get("event_id") or "").strip()
            if event_id:
                if not _ID.match(event_id):
                    raise TransactionLogError(
                        f"{where}: event_id {event_id!r} must be 1-128 of [A-Za-z0-9._:@-]"
                    )
                content = (customer, kind, _us(when), cents, order)
                first = given.setdefault(event_id, (reader.line_num, content))
                if first[1] != content:
                    raise TransactionLogError(
                        f"{where}: event_id {event_id!r} was used on line {first[0]} for "
                        "different content; event ids are idempotency keys"
                    )
            else:
                key = (customer, _us(when), cents, order)
                k = seen[key]
                seen[key] += 1
                digest = hashlib.sha256(
                    f"{customer}|{key[1]}|{cents}|{order}|{kind}|{k}".encode()
                ).hexdigest()
                event_id = f"csv:{digest[:40]}"
            rows.append((event_id, customer, kind, _us(when), cents, order, reader.line_num))
            if len(rows) >= chunk_rows:
                yield _columns(rows)
                rows = []
    if rows:
        yield _columns(rows)
