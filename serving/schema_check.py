"""The stations' messages checked against the OCPP schemas, fast: each schema compiled once per process by
``fastjsonschema`` (the field's compiler of JSON Schema into Python code).

The library checks a payload with ``jsonschema``'s ``Draft4Validator``, which walks the schema and
resolves every ``$ref`` at each message (1.07 ms of CPU for a 2.1 ``TransactionEvent`` with meter values,
the service's largest cost at 1,000 stations). :func:`check_payload` first runs the compiled check, held to
the library's rules: Draft 4 whatever draft a schema names (the library reads every version's schemas with
``Draft4Validator``: 1.0 is no integer), no ``format`` checks (the library's validator has no format
checker), and only schemas whose keywords are all in :data:`VETTED` (the others, and the 1.6 schedules the
library reads with decimals, are left to the library). Where the compiled check does not pass a payload,
the library's own check runs and raises its own errors. So a message is accepted or refused, with the
same error, exactly as by the library; only the valid ones skip its walk
(``tests/test_serving_schema_check.py`` compares the two over mutated messages).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import fastjsonschema
from ocpp.messages import Call, CallResult, MessageType, _validate_payload, get_validator

Check = Callable[[Any], bool]
"""a compiled schema: True only where the payload is valid (False: not known to be, ask the library)"""

DRAFT4 = "http://json-schema.org/draft-04/schema#"
VETTED = frozenset(
    {
        "type", "$ref", "properties", "additionalProperties", "required", "maxLength", "minLength", "enum",
        "items", "minItems", "maxItems", "additionalItems", "minimum", "maximum", "definitions",
        # annotations (``format`` too: not checked, as by the library)
        "description", "javaType", "comment", "title", "default", "$schema", "$id", "format",
    }
)  # fmt: skip
"""the keywords of the OCPP 1.6, 2.0.1 and 2.1 schemas the compiled check is compared with the library on
(``multipleOf`` is only in the 1.6 schedules, left to the library)"""


class Unsupported(Exception):
    """A schema with a keyword outside :data:`VETTED` (the library checks its messages)."""


def _keywords(schema: Any, out: set[str]) -> set[str]:
    """Every keyword of ``schema`` (names under ``properties`` and ``definitions`` are no keywords); a
    ``$ref`` outside the schema's own document shows as ``$ref <target>`` (never fetched)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            out.add(key)
            if key == "$ref" and not str(value).startswith("#"):
                out.add(f"$ref {value}")
            if key in ("properties", "definitions") and isinstance(value, dict):
                for sub in value.values():
                    _keywords(sub, out)
            else:
                _keywords(value, out)
    elif isinstance(schema, list):
        for sub in schema:
            _keywords(sub, out)
    return out


def compile_schema(schema: dict[str, Any]) -> Check:
    """The check of ``schema`` by Draft 4's rules (raises :class:`Unsupported` for a keyword outside
    :data:`VETTED` or a ``$ref`` to another document, or a schema ``fastjsonschema`` cannot compile)."""
    unknown = _keywords(schema, set()) - VETTED
    if unknown:
        raise Unsupported(", ".join(sorted(unknown)))
    try:
        validate = fastjsonschema.compile({**schema, "$schema": DRAFT4}, use_formats=False)
    except fastjsonschema.JsonSchemaException as err:  # its definition error is one
        raise Unsupported(str(err)) from err

    def check(payload: Any) -> bool:
        try:
            validate(payload)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return check


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
