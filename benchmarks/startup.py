"""Time ``evdlm serve`` from launch to service: ``python -m benchmarks.startup [--json] [--fresh]``.

Starts ``evdlm serve --site configs/sites/depot_20.yaml`` (the rule-based DLM, no secrets) as a new process
and prints two figures per start: the time until the OCPP port accepts a TCP connection (**listen**, with
the CPU time the service had used by then: on a shared machine the wall time mostly measures the others) and
the time until a station that starts connecting at launch has its BootNotification answered ``Accepted``
(**first accepted boot**, OCPP 1.6J). ``--fresh`` points ``NUMBA_CACHE_DIR`` at an empty folder, as a
fresh clone whose kernels were never compiled; ``--fresh --warmup`` runs ``python -m evdlm.warmup`` (what
``make install`` runs) into that empty cache first, timed apart; without ``--fresh`` the cache of earlier
runs is used (a warm machine). Targets (issue 16): listening in under 5 s warm and under 15 s on a fresh
clone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "configs" / "sites" / "depot_20.yaml"
TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far, s (0 where /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def _first_boot(port: int, station: str, t0: float) -> float:
    """Seconds from ``t0`` until a BootNotification of ``station`` is answered Accepted (retrying the
    connection until the service listens)."""
    from websockets.asyncio.client import connect

    while time.perf_counter() - t0 < TIMEOUT_S:
        try:
            async with connect(f"ws://127.0.0.1:{port}/{station}", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
                boot = {"chargePointVendor": "evdlm", "chargePointModel": "startup-bench"}
                await ws.send(json.dumps([2, "boot-1", "BootNotification", boot]))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
                    if msg[0] == 3 and msg[1] == "boot-1":
                        if msg[2].get("status") == "Accepted":
                            return time.perf_counter() - t0
                        break  # Pending or Rejected: boot again
                    if msg[0] == 2:  # a request of the service (after the boot): answer it
                        await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))
        except Exception:  # not up yet (refused, closed, timed out): try again
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no accepted BootNotification within {TIMEOUT_S:g} s")


def measure(fresh: bool, warmup: bool = False) -> dict[str, float]:
    """One start of the service: ``{"listen_s", "first_boot_s"}`` from launch (and ``warmup_s``, the
    time of ``python -m evdlm.warmup`` into the empty cache before it, with ``fresh`` and ``warmup``)."""
    station = yaml.safe_load(SITE.read_text())["chargers"][0]["id"]
    ocpp, http = _free_port(), _free_port()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        out: dict[str, float] = {}
        if fresh:
            env["NUMBA_CACHE_DIR"] = str(Path(tmp) / "numba-cache")
            if warmup:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "evdlm.warmup"], cwd=tmp, env=env, check=True)
                out["warmup_s"] = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "evdlm.cli", "serve", "--site", str(SITE), "--ocpp-port", str(ocpp)]
        cmd += ["--http-port", str(http), "--log-level", "WARNING"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=(Path(tmp) / "serve.log").open("w")
        )
        try:
            out.update(asyncio.run(_boot_and_listen(ocpp, station, t0, proc)))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


async def _boot_and_listen(
    port: int, station: str, t0: float, proc: subprocess.Popen[bytes]
) -> dict[str, float]:
    async def listen() -> tuple[float, float]:
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"evdlm serve exited with {proc.returncode} before it listened")
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0, _cpu_s(proc.pid)

    (listen_s, cpu_s), boot_s = await asyncio.gather(listen(), _first_boot(port, station, t0))
    return {"listen_s": listen_s, "listen_cpu_s": cpu_s, "first_boot_s": boot_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--fresh", action="store_true", help="an empty numba cache (a fresh clone)")
    parser.add_argument("--warmup", action="store_true", help="with --fresh: python -m evdlm.warmup first")
    parser.add_argument("--repeat", type=int, default=1, help="starts to time (each fresh with --fresh)")
    args = parser.parse_args(argv)
    runs = [measure(args.fresh, args.warmup) for _ in range(max(args.repeat, 1))]
    cache = ("empty + warmup" if args.warmup else "empty") if args.fresh else "warm"
    result: dict[str, Any] = {
        "cache": cache,
        "listen_s": [round(r["listen_s"], 3) for r in runs],
        "listen_cpu_s": [round(r["listen_cpu_s"], 3) for r in runs],
        "first_boot_s": [round(r["first_boot_s"], 3) for r in runs],
    }
    if args.fresh and args.warmup:
        result["warmup_s"] = [round(r["warmup_s"], 3) for r in runs]
    if args.json:
        print(json.dumps(result))
        return
    for r in runs:
        warm = f" (warm-up {r['warmup_s']:.1f} s before)" if "warmup_s" in r else ""
        print(
            f"{cache} numba cache: listening after {r['listen_s']:.2f} s ({r['listen_cpu_s']:.2f} s CPU), "
            f"first BootNotification accepted after {r['first_boot_s']:.2f} s{warm}"
        )


if __name__ == "__main__":
    main()
