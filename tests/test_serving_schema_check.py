"""The compiled schema checks (:mod:`serving.schema_check`) never pass a payload the library's check refuses,
pass the stations' valid messages (the fast path), and leave every error to the library's check."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallResult, MessageType, _validate_payload

from serving.schema_check import Unsupported, check_payload, compile_schema, compiled_check
from stationsim import messages as msg
from stationsim.physics import SimConnector


def _body(payload: Any) -> dict[str, Any]:
    return json.loads(json.dumps(snake_to_camel_case(remove_nones(asdict(payload)))))


def _connector() -> SimConnector:
    return SimConnector(
        0, "S0001", 1, [], session={"energy_kwh": 3.0, "session_id": "v0"}, tx_id="S0001-1-v0", power_kw=-3.2,
        register_wh=1234.5, export_wh=10.0, v2x=True,
    )  # fmt: skip


def _samples() -> list[tuple[str, str, dict[str, Any]]]:
    """(version, action, payload) of what the simulated stations send."""
    c = _connector()
    c16 = _connector()
    c16.tx_id = "17"
    return [
        ("2.1", "TransactionEvent", _body(msg.updated201(c, True))),
        ("2.1", "TransactionEvent", _body(msg.started201(c, "S0001-1-v0", export=True))),
        ("2.0.1", "TransactionEvent", _body(msg.updated201(c, False))),
        ("1.6", "MeterValues", _body(msg.meter_values16(c16))),
        ("1.6", "StatusNotification", _body(msg.status16(c16, "Charging"))),
        ("1.6", "StartTransaction", _body(msg.start16(c16))),
    ]


def _library_ok(message: Call | CallResult, version: str) -> bool:
    try:
        _validate_payload(message, version)
    except OCPPError:
        return False
    return True


@pytest.mark.parametrize("version, action, payload", _samples())
def test_the_stations_valid_messages_pass_the_compiled_check(
    version: str, action: str, payload: dict[str, Any]
) -> None:
    check = compiled_check(MessageType.Call, action, version)
    assert check is not None
    assert _library_ok(Call("1", action, payload), version)
    assert check(payload)


def _paths(x: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(x, dict):
        for k, v in x.items():
            out += _paths(v, (*at, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            out += _paths(v, (*at, i))
    return out


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=6,
)
KEYS = st.sampled_from(
    ["value", "measurand", "eventType", "seqNo", "transactionId", "unit", "extra", "evseId"]
)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    version, action, payload = draw(st.sampled_from(_samples()))
    payload = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(payload)
        path = draw(st.sampled_from(paths[1:] if len(paths) > 1 else paths))
        parent: Any = payload
        for k in path[:-1]:
            parent = parent[k]
        kind = draw(st.sampled_from(["replace", "delete", "add", "stretch"]))
        if kind == "replace":
            parent[path[-1]] = draw(JSON | st.sampled_from([True, 1, 1.0, "Charging", "Wh", ""]))
        elif kind == "delete":
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(KEYS)] = draw(JSON)
        elif kind == "stretch" and isinstance(parent[path[-1]], (str, list)):
            parent[path[-1]] = parent[path[-1]] * draw(st.integers(2, 60))
    return version, action, payload


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_mutated())
def test_the_compiled_check_never_passes_what_the_library_refuses(
    case: tuple[str, str, dict[str, Any]],
) -> None:
    version, action, payload = case
    check = compiled_check(MessageType.Call, action, version)
    assert check is not None
    library = _library_ok(Call("1", action, copy.deepcopy(payload)), version)
    if check(payload):
        assert library, payload
    # and check_payload raises exactly what the library raises
    try:
        _validate_payload(Call("1", action, copy.deepcopy(payload)), version)
        expected: type[Exception] | None = None
    except OCPPError as err:
        expected = type(err)
    if expected is None:
        check_payload(Call("1", action, payload), version)
    else:
        with pytest.raises(expected):
            check_payload(Call("1", action, payload), version)


def test_an_invalid_transaction_event_is_still_refused_with_the_librarys_errors() -> None:
    body = _samples()[0][2]
    bad_type = {**body, "seqNo": "one"}
    extra = {**body, "surprise": 1}
    missing = {k: v for k, v in body.items() if k != "eventType"}
    bad_enum = {**body, "triggerReason": "Whenever"}
    long_id = {**body, "transactionInfo": {"transactionId": "x" * 37}}
    for payload, error in [
        (bad_type, "TypeConstraintViolationError"),
        (extra, "FormatViolationError"),
        (missing, "ProtocolError"),
        (bad_enum, "FormatViolationError"),
        (long_id, "TypeConstraintViolationError"),
    ]:
        with pytest.raises(OCPPError) as raised:
            check_payload(Call("1", "TransactionEvent", payload), "2.1")
        assert type(raised.value).__name__ == error


def test_answers_and_schedules_with_decimals_are_left_to_the_library() -> None:
    heartbeat = compiled_check(MessageType.CallResult, "Heartbeat", "1.6")
    assert heartbeat is not None
    assert heartbeat({"currentTime": "2026-01-01T00:00:00Z"}) and not heartbeat({"currentTime": 12})
    assert compiled_check(MessageType.Call, "SetChargingProfile", "1.6") is None  # read with decimals
    assert compiled_check(MessageType.Call, "NoSuchAction", "2.1") is None
    with pytest.raises(Unsupported):
        compile_schema({"type": "object", "patternProperties": {"^x": {"type": "string"}}})
    with pytest.raises(Unsupported):
        compile_schema({"$ref": "http://example.org/other.json"})
    recursive = compile_schema(
        {
            "definitions": {
                "Node": {"type": "object", "properties": {"next": {"$ref": "#/definitions/Node"}}}
            },
            "$ref": "#/definitions/Node",
        }
    )
    assert recursive({"next": {"next": {}}}) and not recursive({"next": {"next": 3}})


def test_the_compiled_check_keeps_draft_4_whatever_draft_the_schema_names() -> None:
    """The 2.1 schemas name draft 6, where 1.0 is an integer; the library reads them with Draft 4, where it
    is not: the compiled check must not pass it (nor a date the library does not check the format of)."""
    seq = {"$schema": "http://json-schema.org/draft-06/schema#", "type": "integer"}
    check = compile_schema(seq)
    assert check(3) and not check(3.0) and not check(True)
    when = compile_schema({"type": "string", "format": "date-time"})
    assert when("not a date")  # as the library: no format checker
    body = _samples()[0][2]
    assert not check_payload_ok({**body, "seqNo": float(body["seqNo"])})


def check_payload_ok(payload: dict[str, Any]) -> bool:
    check = compiled_check(MessageType.Call, "TransactionEvent", "2.1")
    assert check is not None
    return check(payload)
