"""The central system checks the stations' requests and its own answers against the OCPP schemas on its event
loop, not on the library's thread pool (whose threads took the GIL from the control cycle at 1,000
stations): the same requests are refused with the same errors, and an answer that breaks its schema is
not sent."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16

from serving.csms import Station16
from tests.test_serving import _FakeConnection, _FakeService


class _NoThreads(ThreadPoolExecutor):
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a schema check went to a thread")


class _BadAnswer(Station16):
    @on(Action16.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return result16.Heartbeat(current_time=12)  # a string in the schema


def _replies(cp: Station16, conn: _FakeConnection, frames: list[list[Any]]) -> list[list[Any]]:
    async def go() -> None:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        for frame in frames:
            await cp.route_message(json.dumps(frame))

    asyncio.run(go())
    return [json.loads(m) for m in conn.sent]


def test_requests_are_checked_on_the_event_loop_with_the_librarys_errors() -> None:
    conn = _FakeConnection()
    cp = Station16("CP1", conn, _FakeService())  # type: ignore[arg-type]
    status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    replies = _replies(
        cp, conn,
        [
            [2, "a1", "StatusNotification", {**status, "connectorId": "one"}],
            [2, "a2", "StatusNotification", {**status, "extra": 1}],
            [2, "a3", "StatusNotification", {"connectorId": 1}],
            [2, "a4", "NoSuchAction", {}],
            [2, "a5", "StatusNotification", status],
            [2, "a6", "Heartbeat", {}],
        ],
    )  # fmt: skip
    assert [r[:2] for r in replies] == [[4, "a1"], [4, "a2"], [4, "a3"], [4, "a4"], [3, "a5"], [3, "a6"]]
    assert [r[2] for r in replies[:4]] == [
        "TypeConstraintViolation", "FormatViolation", "ProtocolError", "NotSupported",
    ]  # fmt: skip
    assert "currentTime" in replies[5][2]


def test_an_answer_that_breaks_its_schema_is_not_sent() -> None:
    conn = _FakeConnection()
    cp = _BadAnswer("CP1", conn, _FakeService())  # type: ignore[arg-type]
    replies = _replies(cp, conn, [[2, "b1", "Heartbeat", {}], [2, "b2", "StatusNotification", {}]])
    assert [r[:3] for r in replies] == [[4, "b1", "TypeConstraintViolation"], [4, "b2", "ProtocolError"]]
