"""The manual is true by construction: docs/serving.md's config tables are the pydantic models'."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from envs.config import ConfigError, dump_site
from serving.config import check_auth
from serving.config_table import END, MODELS, START, config_tables, replace_block
from serving.service import Service
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

ROOT = Path(__file__).resolve().parents[1]


def test_the_manual_config_tables_are_the_models() -> None:
    doc = (ROOT / "docs" / "serving.md").read_text()
    block = doc[doc.index(START) : doc.index(END) + len(END)]
    assert block == f"{START}\n{config_tables()}\n{END}", (
        "docs/serving.md is out of date: run python -m serving.config_table --write docs/serving.md"
    )
    assert replace_block(doc, config_tables()) == doc


def test_every_config_field_is_described_in_the_manual() -> None:
    tables = config_tables()
    for _, model in MODELS:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            assert f"| `{field.alias or name}` |" in tables


def test_require_auth_without_passwords_is_refused_at_start(tmp_path: Path) -> None:
    cfg = serving_config(tmp_path)  # require_auth defaults to true
    check_auth(cfg, PASSWORDS)
    with pytest.raises(ConfigError, match="station\\(s\\) 'CP2' have no password"):
        check_auth(cfg, {"CP1": "x"})
    check_auth(serving_config(tmp_path, require_auth=False), {})
    # the command line: exit 2 with the reason, before listening
    from evdlm.cli import app

    dump_site(small_site(), tmp_path / "site.yaml")
    data = {"site": "site.yaml", "stations": [{"id": "CP1"}, {"id": "CP2"}], "ocpp_port": 0, "http_port": 0}
    data["database_url"] = f"sqlite:///{tmp_path / 'db.sqlite'}"
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["serve", "--config", str(tmp_path / "serve.yaml")])
    assert result.exit_code == 2
    assert "require_auth is on (the default) but station(s) 'CP1', 'CP2' have no password" in result.output


async def test_a_frame_over_max_frame_bytes_closes_the_connection(tmp_path: Path) -> None:
    svc = Service(serving_config(tmp_path, max_frame_bytes=2048), small_site(), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    auth = {"Authorization": "Basic " + base64.b64encode(f"CP1:{PASSWORDS['CP1']}".encode()).decode()}
    try:
        async with connect(
            f"ws://127.0.0.1:{svc.ocpp_port}/CP1",
            subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=auth,
        ) as ws:
            await ws.send('[2, "1", "Heartbeat", {}]')
            # a small frame is answered (the station is now registered: its failsafe may come first)
            while json.loads(await asyncio.wait_for(ws.recv(), 5.0))[:2] != [3, "1"]:
                pass
            await ws.send('[2, "2", "DataTransfer", {"data": "' + "x" * 4096 + '"}]')
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # whatever the service still sends, then the close
                    await asyncio.wait_for(ws.recv(), 5.0)
    finally:
        await svc.stop()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
