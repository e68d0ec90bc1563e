"""The limits on input, defined once for every participant (pure: plain constants, pydantic types and
small check functions; callers pass `now`).

Every HTTP edge applies them: the BAP client API and the ledger API through the types below and
beckn/webapp.py `add_body_guard` (body size, JSON depth, NUL/control characters, numbers out of range,
before the body is parsed); the Beckn endpoints through the pipeline steps `json_depth` and
`clean_values` (beckn/steps.py) and the typed context (schemas/core.py); the registry through
schemas/registry.py and the body guard; the metering CSV import through `check_text` and
`check_historical`.

| limit | value |
|---|---|
| body | 1 MiB (`MAX_BODY_BYTES`), 413 before it is buffered |
| rows per bulk request (ledger prices, readings) | 5,000 (`MAX_ROWS_PER_REQUEST`); the widest rows fit one body |
| JSON nesting | 32 levels (`MAX_JSON_DEPTH`) |
| identifiers (transaction, message, order ids; city codes) | 1-64 printable ASCII characters, no space |
| names (subscriber, provider, item, meter ids; domain; key ids) | 1-255 printable ASCII characters, no space |
| URIs | 1-1024 printable ASCII characters, no space |
| country codes | 1-8 printable ASCII characters |
| free text (reasons, memos, descriptions) | up to 500 characters; no NUL or control character but tab and newline |
| every string in a JSON body | no NUL or control character but tab, newline and carriage return |
| JSON numbers | finite, magnitude ≤ 2**53 - 1 |
| power | 0 < kW ≤ 1,000,000 (1 GW: far beyond any single site) |
| metered energy per half-hour | signed kWh (negative = net export), magnitude ≤ 500,000 (a half-hour at 1 GW) |
| price | -100,000 ≤ £/MWh ≤ 100,000 (GB imbalance prices have stayed within ±£10,000) |
| market windows (search, select, init, confirm, update) | end after start and not yet past; start at most |
|   | `FLEXMARKET_MAX_WINDOW_AHEAD_DAYS` (90) days ahead of the market clock; at most 31 days long |
| Beckn `context.ttl` / `context.timestamp` | ≤ one day (`MAX_MESSAGE_TTL_S`) / not ahead beyond the clock skew |
| historical instants (prices, metering) | from 2000-01-01 to the market clock's now (+ one day, day-ahead) |
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

# -- sizes ----------------------------------------------------------------------------------------------
MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 32

MAX_ID_CHARS = 64
MAX_NAME_CHARS = 255
MAX_URI_CHARS = 1024
MAX_COUNTRY_CODE_CHARS = 8
MAX_TEXT_CHARS = 500
MAX_PAGE_SIZE = 1000  # rows one list request may ask for (`limit`)
# Rows one bulk request may carry (the ledger's prices and metering readings: 104 days of half-hours): sized so
# that this many of the widest legal rows fit in MAX_BODY_BYTES as compact JSON (tests/ledger/test_hostile_input.py
# builds that body), so a request within the row limit is never refused for its size.
MAX_ROWS_PER_REQUEST = 5_000
MAX_ROWS_PER_IMPORT = 20_000  # readings of one meter stored in one transaction by a CSV import (416 days)

# -- quantities -----------------------------------------------------------------------------------------
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer a JSON number carries exactly (and fits bigint)
MAX_KW = 1_000_000.0  # 1 GW
MAX_PRICE_GBP_PER_MWH = 100_000.0
MAX_ENERGY_KWH_PER_PERIOD = MAX_KW / 2  # a half-hour at MAX_KW
# The same bound in whole Wh: metered energy is signed (negative = net export, a battery discharging
# beyond its site's load), so a reading lies in [-MAX_ENERGY_WH_PER_PERIOD, MAX_ENERGY_WH_PER_PERIOD].
MAX_ENERGY_WH_PER_PERIOD = int(MAX_ENERGY_KWH_PER_PERIOD) * 1000

# -- time -----------------------------------------------------------------------------------------------
MAX_MESSAGE_TTL_S = 86_400  # a Beckn context.ttl longer than a day is refused (the protocol's are seconds)
DEFAULT_MAX_WINDOW_AHEAD_DAYS = 90
MAX_WINDOW_DAYS = 31
EARLIEST_HISTORY = datetime(2000, 1, 1, tzinfo=UTC)
HISTORY_FUTURE_SLACK = timedelta(days=1)

# -- characters -----------------------------------------------------------------------------------------
PRINTABLE_PATTERN = r"^[!-~]+$"  # printable ASCII, no space, no control character
# Control characters, and lone UTF-16 surrogates (JSON can carry "\ud800"; UTF-8 cannot encode it).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")  # all but tab, newline, CR
_CONTROL_OR_CR = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")  # free text: all but tab, newline
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # one-line text: none at all


def check_text(value: str, what: str = "value", *, one_line: bool = False) -> str:
    """`value` unless it holds NUL or a control character (free text may hold tab and newline)."""
    bad = (_CONTROL_OR_NEWLINE if one_line else _CONTROL_OR_CR).search(value)
    if bad:
        raise ValueError(f"{what} contains the character U+{ord(bad.group()):04X} (control or lone surrogate)")
    return value


def free_text(value: str) -> str:
    """A pydantic AfterValidator: no NUL or control character but tab and newline."""
    return check_text(value, "text")


def one_line(value: str) -> str:
    """A pydantic AfterValidator: no NUL or control character at all."""
    return check_text(value, "text", one_line=True)


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=PRINTABLE_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=PRINTABLE_PATTERN)]
Uri = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URI_CHARS, pattern=PRINTABLE_PATTERN)]
CountryCode = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_COUNTRY_CODE_CHARS, pattern=PRINTABLE_PATTERN)
]
FreeText = Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(free_text)]


Kilowatts = Annotated[float, Field(gt=0, le=MAX_KW, allow_inf_nan=False)]
PriceGbpPerMwh = Annotated[float, Field(ge=-MAX_PRICE_GBP_PER_MWH, le=MAX_PRICE_GBP_PER_MWH, allow_inf_nan=False)]
PositivePriceGbpPerMwh = Annotated[float, Field(gt=0, le=MAX_PRICE_GBP_PER_MWH, allow_inf_nan=False)]
# Decimal quantities bounded in magnitude (their sign is a domain rule with its own error code).
KilowattsDecimal = Annotated[Decimal, Field(ge=Decimal(-int(MAX_KW)), le=Decimal(int(MAX_KW)), allow_inf_nan=False)]
PriceDecimal = Annotated[
    Decimal,
    Field(ge=Decimal(-int(MAX_PRICE_GBP_PER_MWH)), le=Decimal(int(MAX_PRICE_GBP_PER_MWH)), allow_inf_nan=False),
]
EnergyKwhDecimal = Annotated[
    Decimal,
    Field(ge=Decimal(-int(MAX_ENERGY_KWH_PER_PERIOD)), le=Decimal(int(MAX_ENERGY_KWH_PER_PERIOD)), allow_inf_nan=False),
]
SafeInt = Annotated[int, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]


# -- time checks ----------------------------------------------------------------------------------------
def check_market_window(
    start: datetime, end: datetime, now: datetime, max_ahead_days: float = DEFAULT_MAX_WINDOW_AHEAD_DAYS
) -> tuple[str, str] | None:
    """(field, reason) when a window to trade is out of reach of the market clock's `now`, else None."""
    if end <= start:
        return "window_end", "must be after window_start"
    if end <= now:
        return "window_end", f"is already past (market time is {now.isoformat()})"
    if start > now + timedelta(days=max_ahead_days):
        return "window_start", f"is more than {max_ahead_days:g} days ahead of market time {now.isoformat()}"
    if end - start > timedelta(days=MAX_WINDOW_DAYS):
        return "window_end", f"the window is longer than {MAX_WINDOW_DAYS} days"
    return None


def check_historical(t: datetime, now: datetime, what: str = "period_start") -> str | None:
    """A reason when an instant of history (a price, a meter reading) is not between 2000 and now."""
    if t < EARLIEST_HISTORY:
        return f"{what} {t.isoformat()} is before {EARLIEST_HISTORY.date().isoformat()}"
    if t > now + HISTORY_FUTURE_SLACK:
        return f"{what} {t.isoformat()} is in the future (market time is {now.isoformat()})"
    return None


# -- raw JSON -------------------------------------------------------------------------------------------
# These run on every message before it is parsed, so they stay in C: bytes.split/translate/replace and
# substring tests (a regex over the whole body costs more than json.loads itself).
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_ONLY_BRACKETS = bytes(i for i in range(256) if i not in b"[]{}")
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_SUSPECT_RAW = (b"\\u000", b"\\u001", b"\\u007f", b"\\u007F", b"\\ud", b"\\uD", b"NaN", b"Infinity")
_SUSPECT_NUMBERS = (b"0" * 16, b"e00", b"e+00", b"e-00")


def _outside_strings(raw: bytes) -> bytes:
    if b'\\"' in raw:  # an escaped quote: find the strings exactly (slower)
        return _STRINGS.sub(b"", raw)
    return b"".join(raw.split(b'"')[0::2])


def json_depth(raw: bytes, cap: int = MAX_JSON_DEPTH + 1) -> int:
    """How deeply the JSON document `raw` nests arrays and objects (at most `cap`: counting stops there),
    without parsing it — the parser recurses, so thousands of levels would end in a RecursionError.
    Malformed bracketing counts as far as it pairs up; the parser then refuses it."""
    brackets = _outside_strings(raw).translate(None, _ONLY_BRACKETS)
    depth = 0
    while brackets and depth < cap:
        inner = brackets.replace(b"{}", b"").replace(b"[]", b"")
        if inner == brackets:
            break
        brackets, depth = inner, depth + 1
    return depth


class BodyTooLarge(ValueError):
    """A request body over MAX_BODY_BYTES (answered 413)."""


async def read_within_limit(chunks: AsyncIterable[bytes], declared: str | bytes | None) -> bytes:
    """The whole body, or BodyTooLarge as soon as its declared length or the bytes received so far pass
    MAX_BODY_BYTES: nothing beyond the limit is buffered (the Beckn endpoints and the JSON APIs alike)."""
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"body of {int(declared)} bytes exceeds {MAX_BODY_BYTES}")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"body exceeds {MAX_BODY_BYTES} bytes")
        parts.append(chunk)
    return b"".join(parts)


def depth_error(raw: bytes) -> str | None:
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        return f"body: JSON nested more than {MAX_JSON_DEPTH} levels deep"
    return None


def maybe_bad(raw: bytes) -> bool:
    """False when `raw` certainly holds no value `find_bad_value` would refuse: no escaped control
    character (raw ones are invalid JSON), no run of 16 digits, no exponent of 2 digits, no NaN/Infinity.
    True means "walk the parsed value", which decides."""
    if any(s in raw for s in _SUSPECT_RAW):
        return True
    numbers = raw.translate(_DIGITS_TO_ZERO)
    return any(s in numbers for s in _SUSPECT_NUMBERS)


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        p, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((f"{p}.{k}" if p else str(k), x) for k, x in reversed(list(v.items())))
            stack.extend((f"{p}.{k}" if p else str(k), k) for k in v if isinstance(k, str))
        elif isinstance(v, list):
            stack.extend((f"{p}.{i}", x) for i, x in reversed(list(enumerate(v))))
        else:
            yield p, v


def find_bad_value(value: Any, path: str = "") -> tuple[str, str] | None:
    """(path, reason) of the first string with NUL or a control character (tab, newline and carriage
    return are allowed), or number that is not finite or beyond ±MAX_SAFE_INTEGER; None when clean."""
    for p, v in _walk(value, path):
        if isinstance(v, str):
            bad = _CONTROL.search(v)
            if bad:
                return p, f"contains the character U+{ord(bad.group()):04X} (control or lone surrogate)"
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if abs(v) > MAX_SAFE_INTEGER:
                return p, f"number out of range (at most {MAX_SAFE_INTEGER} in magnitude)"
        elif isinstance(v, float) and (not math.isfinite(v) or abs(v) > MAX_SAFE_INTEGER):
            return p, f"number out of range (finite, at most {MAX_SAFE_INTEGER} in magnitude)"
    return None
