"""The event contract (README, Contracts: Events): one place for the schemas of views
and of the item and user feature records.

`decode_view` and `decode_features` never raise on bad input: they return an
`InvalidRecord` whose `reason` is one of `INVALID_REASONS`, so consumers can
dead-letter it and count it by a bounded label.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

VIEWS_TOPIC: Final = "recstream.views"
DEAD_LETTER_SUFFIX: Final = ".dlq"
ITEMS_TOPIC: Final = "recstream.items"
USERS_TOPIC: Final = "recstream.users"
REASON_HEADER: Final = "recstream.reason"

MAX_ID_BYTES: Final = 128
MAX_VALUE_BYTES: Final = 16 * 1024
MAX_FEATURES: Final = 64  # names per record, and values per list
MAX_FEATURE_BYTES: Final = 256  # a feature's name or one string value, as UTF-8
MAX_TEXT_BYTES: Final = 4096

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
    "bad_features",
    "bad_text",
)
# What only a feature record (the items and users topics) can be dead-lettered for.
FEATURE_REASONS: Final = ("bad_features", "bad_text")

EntityKind = Literal["user", "item"]
FeatureValue = str | int | float | bool | None | list[str | int | float]


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


@dataclass(frozen=True, slots=True)
class EntityFeatures:
    """What is known of an item (on `recstream.items`) or a user (on `recstream.users`)
    besides its views: named features and, for items, free text (title, description)."""

    kind: EntityKind
    id: Id
    features: dict[str, FeatureValue] = field(default_factory=dict)
    text: str = ""


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


def encode_features(record: EntityFeatures) -> bytes:
    """Serialise a feature record to its wire JSON (`{"item"|"user": id, "features", "text"}`)."""
    body: dict[str, Any] = {record.kind: record.id, "features": record.features}
    if record.text:
        body["text"] = record.text
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


def _json_object(
    value: bytes | None, ids: tuple[str, ...], allowed: tuple[str, ...]
) -> dict[str, Any] | InvalidRecord:
    """The record's JSON object, its `ids` present and valid and no field beyond `allowed`."""
    if not value:
        return InvalidRecord("empty", "record has no value")
    if len(value) > MAX_VALUE_BYTES:
        return InvalidRecord("oversize", f"value is {len(value)} bytes, limit {MAX_VALUE_BYTES}")
    try:
        body = orjson.loads(value)  # the fast path; strict JSON, like the fallback
        # orjson reads integers over 64 bits as floats: ids must come out as json's ints
        exact = not (isinstance(body, dict) and any(isinstance(body.get(n), float) for n in ids))
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
    unknown = set(body) - set(allowed)
    if unknown:
        return InvalidRecord("unknown_field", f"unknown fields {sorted(unknown)[:5]}")
    for name in ids:
        if name not in body:
            return InvalidRecord("missing_field", f"{name} is required")
        problem = _check_id(name, body[name])
        if problem:
            return problem
    return body


def decode_view(
    value: bytes | None, key: bytes | None = None, record_ts: float | None = None
) -> ViewEvent | InvalidRecord:
    """Parse and validate one record value; `record_ts` stands in for a missing `ts`."""
    body = _json_object(value, REQUIRED_FIELDS, REQUIRED_FIELDS + OPTIONAL_FIELDS)
    if isinstance(body, InvalidRecord):
        return body
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


def _short_text(value: object) -> bool:
    return isinstance(value, str) and 0 < _utf8_size(value) <= MAX_FEATURE_BYTES


def _utf8_size(text: str) -> int:
    """Bytes as UTF-8; over any limit for text that is not valid Unicode (a lone surrogate)."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return MAX_VALUE_BYTES + 1


def _scalar(value: object) -> bool:
    if isinstance(value, str):
        return _short_text(value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _feature_problem(features: object) -> str | None:
    """Why `features` is not an object of named features; None if it is."""
    if not isinstance(features, dict):
        return "features must be an object"
    if len(features) > MAX_FEATURES:
        return f"more than {MAX_FEATURES} features"
    for name, value in features.items():
        if not _short_text(name):
            return f"feature names must be 1 to {MAX_FEATURE_BYTES} bytes"
        if value is None or isinstance(value, bool) or _scalar(value):
            continue
        if not isinstance(value, list) or len(value) > MAX_FEATURES:
            return f"{name}: a value is null, a boolean, a finite number, a string or a list"
        if not all(_scalar(element) for element in value):
            return f"{name}: list elements must be finite numbers or strings"
    return None


def decode_features(
    value: bytes | None, kind: EntityKind, key: bytes | None = None
) -> EntityFeatures | InvalidRecord:
    """Parse and validate a feature record of the items (`kind="item"`) or users topic.

    The value is `{kind: id, "features": {name: value}, "text": "..."}`; a value is
    null (unknown), a boolean, a finite number, a string of at most
    `MAX_FEATURE_BYTES`, or a list of at most `MAX_FEATURES` numbers and strings.
    """
    body = _json_object(value, (kind,), (kind, "features", "text"))
    if isinstance(body, InvalidRecord):
        return body
    raw = body[kind]
    if key is not None and key != encode_key(raw):
        return InvalidRecord("key_mismatch", f"record key is not the {kind} id")
    features = body.get("features", {})
    problem = _feature_problem(features)
    if problem:
        return InvalidRecord("bad_features", problem)
    text = body.get("text", "")
    if not isinstance(text, str) or _utf8_size(text) > MAX_TEXT_BYTES:
        return InvalidRecord("bad_text", f"text must be a string of at most {MAX_TEXT_BYTES} bytes")
    return EntityFeatures(kind, raw, features, text)
