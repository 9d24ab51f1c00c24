"""The view-event contract (README, Contracts: Events): one place for the schema.

`decode_view` never raises on bad input: it returns an `InvalidRecord` whose
`reason` is one of `INVALID_REASONS`, so consumers can dead-letter it and count
it by a bounded label.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

VIEWS_TOPIC: Final = "recstream.views"
DEAD_LETTER_SUFFIX: Final = ".dlq"
ITEMS_TOPIC: Final = "recstream.items"
USERS_TOPIC: Final = "recstream.users"
REASON_HEADER: Final = "recstream.reason"

MAX_ID_BYTES: Final = 128
MAX_VALUE_BYTES: Final = 16 * 1024

Id = str | int

REQUIRED_FIELDS: Final = ("user", "item")
OPTIONAL_FIELDS: Final = ("ts", "weight", "rating", "context")

INVALID_REASONS: Final = (
    "empty",
    "oversize",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "unknown_field",
    "bad_id",
    "id_too_long",
    "bad_ts",
    "bad_weight",
    "bad_rating",
    "bad_context",
    "key_mismatch",
)


@dataclass(frozen=True, slots=True)
class ViewEvent:
    """One view: `user` watched `item` at `ts` (seconds since the epoch)."""

    user: Id
    item: Id
    ts: float
    weight: float = 1.0
    rating: float | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InvalidRecord:
    """Why a record is not a view event; `reason` is a bounded metric label."""

    reason: str
    detail: str


def id_text(raw: Id) -> str:
    """The canonical text of an id: its Kafka key, its Redis key part, its identity."""
    return raw if isinstance(raw, str) else str(raw)


def encode_key(user: Id) -> bytes:
    return id_text(user).encode("utf-8")


def encode_view(event: ViewEvent) -> bytes:
    """Serialise an event to its wire JSON, leaving out defaults."""
    body: dict[str, Any] = {"user": event.user, "item": event.item, "ts": event.ts}
    if event.weight != 1.0:
        body["weight"] = event.weight
    if event.rating is not None:
        body["rating"] = event.rating
    if event.context:
        body["context"] = event.context
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_id(name: str, value: object) -> InvalidRecord | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return InvalidRecord("bad_id", f"{name} must be a string or an integer")
    text = id_text(value)
    if not text:
        return InvalidRecord("bad_id", f"{name} is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return InvalidRecord("bad_id", f"{name} is not valid Unicode (a lone surrogate)")
    if size > MAX_ID_BYTES:
        return InvalidRecord("id_too_long", f"{name} is over {MAX_ID_BYTES} bytes")
    return None


def decode_view(
    value: bytes | None, key: bytes | None = None, record_ts: float | None = None
) -> ViewEvent | InvalidRecord:
    """Parse and validate one record value; `record_ts` stands in for a missing `ts`."""
    if not value:
        return InvalidRecord("empty", "record has no value")
    if len(value) > MAX_VALUE_BYTES:
        return InvalidRecord("oversize", f"value is {len(value)} bytes, limit {MAX_VALUE_BYTES}")
    try:
        body = orjson.loads(value)  # the fast path; strict JSON, like the fallback
        # orjson reads integers over 64 bits as floats: ids must come out as json's ints
        exact = not (
            isinstance(body, dict) and any(isinstance(body.get(n), float) for n in REQUIRED_FIELDS)
        )
    except orjson.JSONDecodeError:  # what orjson refuses (lone surrogates), or the reason
        exact = False
    if not exact:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as error:
            return InvalidRecord("not_utf8", str(error))
        try:
            body = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            return InvalidRecord("not_json", str(error)[:200])
    if not isinstance(body, dict):
        return InvalidRecord("not_object", f"value is a JSON {type(body).__name__}")
    unknown = set(body) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS)
    if unknown:
        return InvalidRecord("unknown_field", f"unknown fields {sorted(unknown)[:5]}")
    for name in REQUIRED_FIELDS:
        if name not in body:
            return InvalidRecord("missing_field", f"{name} is required")
        problem = _check_id(name, body[name])
        if problem:
            return problem
    user, item = body["user"], body["item"]
    if key is not None and key != encode_key(user):
        return InvalidRecord("key_mismatch", "record key is not the user id")

    ts = body.get("ts", record_ts)
    if ts is None:
        return InvalidRecord("bad_ts", "no ts and no record timestamp")
    if not _is_number(ts) or not math.isfinite(ts) or ts < 0:
        return InvalidRecord("bad_ts", "ts must be a finite number >= 0")
    weight = body.get("weight", 1.0)
    if not _is_number(weight) or not math.isfinite(weight) or weight <= 0:
        return InvalidRecord("bad_weight", "weight must be a finite number > 0")
    rating = body.get("rating")
    if rating is not None and (not _is_number(rating) or not math.isfinite(rating)):
        return InvalidRecord("bad_rating", "rating must be a finite number")
    context = body.get("context", {})
    if not isinstance(context, dict):
        return InvalidRecord("bad_context", "context must be an object")
    return ViewEvent(
        user=user,
        item=item,
        ts=float(ts),
        weight=float(weight),
        rating=None if rating is None else float(rating),
        context=context,
    )
