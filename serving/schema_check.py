"""The stations' messages checked against the OCPP schemas, fast: each schema compiled once per process into
plain Python checks, its ``$ref`` s resolved at compile time.

The library checks a payload with ``jsonschema``'s ``Draft4Validator``, which walks the schema and
resolves every ``$ref`` at each message (1.07 ms of CPU for a 2.1 ``TransactionEvent`` with meter values,
the service's largest cost at 1,000 stations). :func:`check_payload` first runs the compiled check, which
only says "valid" where the library's check would pass (the same Draft 4 rules, never looser); where it
does not say so, or where a schema uses a keyword it does not compile, the library's own check runs and
raises its own errors. So a message is accepted or refused, with the same error, exactly as by the
library; only the valid ones skip its walk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ocpp.messages import Call, CallResult, MessageType, _validate_payload, get_validator

Check = Callable[[Any], bool]
"""a compiled schema: True only where the payload is valid (False: not known to be, ask the library)"""

ANNOTATIONS = frozenset(
    {"description", "javaType", "comment", "title", "default", "$schema", "$id", "definitions"}
)
"""keywords that constrain nothing (``format`` too: the library's validator has no format checker)"""
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),  # Draft 4: 1.0 is no integer
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


class Unsupported(Exception):
    """A schema this module does not compile (the library checks its messages)."""


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _enum(values: list[Any]) -> Check:
    if all(isinstance(v, str) for v in values):
        strings = frozenset(values)
        return lambda x: isinstance(x, str) and x in strings
    return lambda x: any(type(x) is type(v) and x == v for v in values)  # 1 == True is no match here


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    return lambda x: all(c(x) for c in checks)


class _Compiler:
    """One schema file's compiler: ``#/definitions/...`` references resolved against its root, once each."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs: dict[str, Check] = {}

    def ref(self, ref: str) -> Check:
        if ref in self.refs:
            return self.refs[ref]
        if not ref.startswith("#/definitions/") or "/" in ref[len("#/definitions/") :]:
            raise Unsupported(ref)
        target = self.root.get("definitions", {}).get(ref[len("#/definitions/") :])
        if not isinstance(target, dict):
            raise Unsupported(ref)
        cell: list[Check] = []
        self.refs[ref] = lambda x: cell[0](x)  # a definition that refers to itself
        compiled = self.compile(target)
        cell.append(compiled)
        self.refs[ref] = compiled
        return compiled

    def compile(self, schema: Any) -> Check:
        if not isinstance(schema, dict):
            raise Unsupported(repr(schema))
        if "$ref" in schema:  # Draft 4: a reference stands for its whole object
            return self.ref(schema["$ref"])
        checks: list[Check] = []
        for key, value in schema.items():
            if key in ANNOTATIONS or key == "format":
                continue
            if key in ("properties", "additionalProperties", "required", "additionalItems"):
                continue  # with the object's (and array's) other keywords below
            checks.append(self._keyword(key, value, schema))
        if any(k in schema for k in ("properties", "additionalProperties", "required")):
            checks.append(self._object(schema))
        if "additionalItems" in schema and isinstance(schema.get("items"), list):
            raise Unsupported("additionalItems")  # only applies beside an array of items: none in OCPP
        return _all(checks)

    def _keyword(self, key: str, value: Any, schema: dict[str, Any]) -> Check:
        if key == "type":
            names = value if isinstance(value, list) else [value]
            if not all(isinstance(n, str) and n in _TYPES for n in names):
                raise Unsupported(f"type {value!r}")
            tests = [_TYPES[n] for n in names]
            return tests[0] if len(tests) == 1 else (lambda x: any(t(x) for t in tests))
        if key == "enum" and isinstance(value, list):
            return _enum(value)
        if key in ("maxLength", "minLength") and isinstance(value, int):
            if key == "maxLength":
                return lambda x: not isinstance(x, str) or len(x) <= value
            return lambda x: not isinstance(x, str) or len(x) >= value
        if key in ("minimum", "maximum") and _number(value):
            if "exclusiveMinimum" in schema or "exclusiveMaximum" in schema:
                raise Unsupported("exclusive bounds")
            if key == "minimum":
                return lambda x: not _number(x) or x >= value  # NaN: not known valid
            return lambda x: not _number(x) or x <= value
        if key in ("minItems", "maxItems") and isinstance(value, int):
            if key == "minItems":
                return lambda x: not isinstance(x, list) or len(x) >= value
            return lambda x: not isinstance(x, list) or len(x) <= value
        if key == "items" and isinstance(value, dict):
            item = self.compile(value)
            return lambda x: not isinstance(x, list) or all(item(v) for v in x)
        raise Unsupported(key)

    def _object(self, schema: dict[str, Any]) -> Check:
        props = {k: self.compile(v) for k, v in schema.get("properties", {}).items()}
        required = tuple(schema.get("required", ()))
        extra = schema.get("additionalProperties", True)
        if schema.get("patternProperties"):
            raise Unsupported("patternProperties")
        other: Check | None = None
        if extra is False:
            other = lambda x: False  # noqa: E731
        elif isinstance(extra, dict):
            other = self.compile(extra)
        elif extra is not True:
            raise Unsupported("additionalProperties")

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for k in required:
                if k not in x:
                    return False
            for k, v in x.items():
                sub = props.get(k)
                if sub is None:
                    if other is not None and not other(v):
                        return False
                elif not sub(v):
                    return False
            return True

        return check


def compile_schema(schema: dict[str, Any]) -> Check:
    """The check of ``schema`` (raises :class:`Unsupported` for a keyword it does not compile)."""
    return _Compiler(schema).compile(schema)


@functools.cache
def compiled_check(message_type_id: int, action: str, ocpp_version: str) -> Check | None:
    """The compiled check of an action's request (``MessageType.Call``) or answer (``CallResult``), made
    once per process; None where the library's own check must run (a schema it does not compile, the 1.6
    schedules it reads with decimals, an action without a schema: the library raises)."""
    decimals = ocpp_version == "1.6" and (
        (message_type_id == MessageType.Call and action in ("SetChargingProfile", "RemoteStartTransaction"))
        or (message_type_id == MessageType.CallResult and action == "GetCompositeSchedule")
    )
    if decimals:
        return None
    try:
        return compile_schema(get_validator(message_type_id, action, ocpp_version).schema)
    except (OSError, ValueError, Unsupported):
        return None


def check_payload(message: Call | CallResult, ocpp_version: str) -> None:
    """As the library's ``_validate_payload`` (the same errors): the compiled check where it passes, else
    the library's."""
    check = compiled_check(message.message_type_id, message.action, ocpp_version)
    if check is not None and check(message.payload):
        return
    _validate_payload(message, ocpp_version)
