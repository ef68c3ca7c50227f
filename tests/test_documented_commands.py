"""The documented commands work as written: the fenced shell blocks of README.md and docs/*.md that are marked
runnable run in order, one temporary folder per document, and a block that fails fails the suite.

Markers (docs/documented-commands.md): ``<!-- runnable -->`` on the line before a fenced ``bash`` block runs
that block as written; a multi-line ``<!-- runnable-small ... -->`` comment before a block runs its own lines
instead (the documented small-size variant of a block that takes minutes, or one that starts a server). The
folder holds a copy of ``configs/``; ``evdlm`` and ``python`` on the PATH are this checkout's; MLflow uses the
folder's ``.evdlm/mlflow.db``, as for a user; ``$PORT1``..``$PORT3`` are free TCP ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
RUNNABLE = "<!-- runnable -->"
SMALL = "<!-- runnable-small"
SHELLS = ("bash", "sh", "shell", "console")
BLOCK_TIMEOUT_S = 300.0


class MarkerError(ValueError):
    """A marker that is not followed by a fenced shell block."""


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    """1-based line of the block's opening fence"""
    script: str
    small: bool
    """the script is the documented small-size variant, not the block's own text"""

    def where(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}" + (" (small variant)" if self.small else "")


def collect(path: Path) -> list[Block]:
    """The marked blocks of one Markdown file, in order; a misplaced marker raises :class:`MarkerError`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[str] | None = None  # [] = run as written, else the small variant
    marked_at = 0
    i = 0
    while i < len(lines):
        text = lines[i].rstrip()  # markers and fences start a line: an indented example is no marker
        if text == RUNNABLE:
            pending, marked_at = [], i + 1
        elif text.startswith(SMALL):
            marked_at = i + 1
            variant: list[str] = []
            i += 1
            while i < len(lines) and lines[i].rstrip() != "-->":
                variant.append(lines[i])
                i += 1
            if i == len(lines):
                raise MarkerError(f"{path}:{marked_at}: {SMALL} is not closed by a '-->' line")
            if not any(v.strip() for v in variant):
                raise MarkerError(f"{path}:{marked_at}: empty small variant")
            pending = variant
        elif text.startswith("```"):
            fence, language = text[:3], text[3:].strip()
            start = i + 1
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(fence):
                body.append(lines[i])
                i += 1
            if pending is not None:
                if language not in SHELLS:
                    raise MarkerError(
                        f"{path}:{marked_at}: marker before a '{language}' block, not a shell one"
                    )
                script = "\n".join(pending or body)
                blocks.append(Block(path, start, script, small=bool(pending)))
            pending = None
        elif text.strip() and pending is not None:
            raise MarkerError(f"{path}:{marked_at}: the marker is not followed by a fenced block")
        i += 1
    if pending is not None:
        raise MarkerError(f"{path}:{marked_at}: the marker is not followed by a fenced block")
    return blocks


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _environment(folder: Path) -> dict[str, str]:
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    evdlm = bin_dir / "evdlm"
    evdlm.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m evdlm.cli "$@"\n')
    evdlm.chmod(0o755)
    for name in ("python", "python3"):
        (bin_dir / name).symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_"))}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    ports = _free_ports(3)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=path,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PORT1=str(ports[0]),
        PORT2=str(ports[1]),
        PORT3=str(ports[2]),
    )
    return env


def _run(block: Block, folder: Path, env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block.script],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a server the block starts in the background goes with it
    )
    t0 = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(
            f"{block.where()} ran over {BLOCK_TIMEOUT_S:g} s:\n{block.script}\n--- output\n{out[-3000:]}"
        )
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    took = time.monotonic() - t0
    assert proc.returncode == 0, (
        f"{block.where()} failed (exit {proc.returncode}, {took:.0f} s):\n{block.script}\n"
        f"--- output\n{out[-3000:]}"
    )
    assert "Traceback (most recent call last)" not in out, (
        f"{block.where()} printed a traceback:\n{out[-3000:]}"
    )


def test_markers_precede_shell_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n<!-- runnable -->\n```bash\necho one\n```\n\n```bash\nnot run\n```\n"
        "<!-- runnable-small\necho small\n-->\n\n```bash\nevdlm takes an hour\n```\n"
    )
    blocks = collect(doc)
    assert [(b.script, b.small, b.line) for b in blocks] == [("echo one", False, 3), ("echo small", True, 14)]
    doc.write_text("<!-- runnable -->\nsome prose\n```bash\necho\n```\n")
    with pytest.raises(MarkerError, match="not followed"):
        collect(doc)
    doc.write_text("<!-- runnable -->\n```python\nprint()\n```\n")
    with pytest.raises(MarkerError, match="not a shell one"):
        collect(doc)


def test_the_readme_and_docs_mark_their_commands() -> None:
    blocks = {path.name: collect(path) for path in DOCUMENTS}
    assert len(blocks["README.md"]) >= 5
    assert blocks["serving.md"], "docs/serving.md: the demo and the serving YAML's secrets"
    assert not blocks["documented-commands.md"], "its examples are indented: shown, not run"


@pytest.mark.parametrize("document", [p for p in DOCUMENTS if collect(p)], ids=lambda p: p.name)
def test_documented_commands_run(document: Path, tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copytree(REPO / "configs", folder / "configs", ignore=shutil.ignore_patterns("__pycache__"))
    env = _environment(folder)
    for block in collect(document):
        _run(block, folder, env)
