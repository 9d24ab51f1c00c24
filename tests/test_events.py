"""The event contract: encode/decode round trips, precise reasons, and no crash on any bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.events import (
    INVALID_REASONS,
    MAX_ID_BYTES,
    MAX_VALUE_BYTES,
    InvalidRecord,
    ViewEvent,
    decode_view,
    encode_key,
    encode_view,
)


def test_round_trip_keeps_every_field() -> None:
    event = ViewEvent("u1", 42, 1700000000.5, weight=0.5, rating=4.0, context={"device": "tv"})
    assert decode_view(encode_view(event), encode_key("u1")) == event


def test_record_timestamp_stands_in_for_missing_ts() -> None:
    decoded = decode_view(b'{"user": 1, "item": "a"}', record_ts=12.5)
    assert isinstance(decoded, ViewEvent)
    assert decoded.ts == 12.5
    assert decoded.weight == 1.0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\xff\xfe", "not_utf8"),
        (b"{nope", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"item": 1, "ts": 1}', "missing_field"),
        (b'{"user": 1, "ts": 1}', "missing_field"),
        (b'{"user": 1, "item": 2, "ts": 1, "extra": 0}', "unknown_field"),
        (b'{"user": 1.5, "item": 2, "ts": 1}', "bad_id"),
        (b'{"user": true, "item": 2, "ts": 1}', "bad_id"),
        (b'{"user": "", "item": 2, "ts": 1}', "bad_id"),
        (b'{"user": null, "item": 2, "ts": 1}', "bad_id"),
        (
            json.dumps({"user": "x" * (MAX_ID_BYTES + 1), "item": 1, "ts": 1}).encode(),
            "id_too_long",
        ),
        (b'{"user": 1, "item": 2, "ts": "now"}', "bad_ts"),
        (b'{"user": 1, "item": 2, "ts": NaN}', "not_json"),
        (b'{"user": 1, "item": 2, "ts": Infinity}', "not_json"),
        (b'{"user": 1, "item": 2, "ts": 1e400}', "bad_ts"),
        (b'{"user": 1, "item": 2, "ts": -1}', "bad_ts"),
        (b'{"user": 1, "item": 2}', "bad_ts"),
        (b'{"user": 1, "item": 2, "ts": 1, "weight": 0}', "bad_weight"),
        (b'{"user": 1, "item": 2, "ts": 1, "weight": "1"}', "bad_weight"),
        (b'{"user": 1, "item": 2, "ts": 1, "rating": "5"}', "bad_rating"),
        (b'{"user": 1, "item": 2, "ts": 1, "context": []}', "bad_context"),
        (b"{" + b" " * MAX_VALUE_BYTES + b"}", "oversize"),
    ],
)
def test_invalid_records_name_their_reason(value: bytes | None, reason: str) -> None:
    decoded = decode_view(value)
    assert isinstance(decoded, InvalidRecord)
    assert decoded.reason == reason
    assert decoded.reason in INVALID_REASONS


def test_what_the_fast_parser_refuses_is_parsed_as_before() -> None:
    big = decode_view(b'{"user": 18446744073709551617, "item": "i", "ts": 1}')
    assert isinstance(big, ViewEvent) and big.user == 2**64 + 1
    surrogate = decode_view(b'{"user": "u", "item": "\\ud800", "ts": 1}')
    assert isinstance(surrogate, InvalidRecord) and surrogate.reason == "bad_id"


def test_key_must_be_the_user() -> None:
    decoded = decode_view(b'{"user": "a", "item": 1, "ts": 1}', key=b"b")
    assert isinstance(decoded, InvalidRecord)
    assert decoded.reason == "key_mismatch"


def test_deeply_nested_json_is_rejected_not_raised() -> None:
    decoded = decode_view(b"[" * 5000 + b"]" * 5000)
    assert isinstance(decoded, InvalidRecord)


@given(st.binary(max_size=512), st.one_of(st.none(), st.binary(max_size=64)))
def test_decode_never_raises_on_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    decoded = decode_view(value, key, record_ts=1.0)
    assert isinstance(decoded, ViewEvent | InvalidRecord)
    if isinstance(decoded, InvalidRecord):
        assert decoded.reason in INVALID_REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["user", "item", "ts", "weight", "rating", "context", "other"]),
        json_values,
    )
)
def test_decode_never_raises_on_arbitrary_objects(body: dict[str, object]) -> None:
    value = json.dumps(body).encode()
    decoded = decode_view(value, record_ts=1.0)
    assert isinstance(decoded, ViewEvent | InvalidRecord)
