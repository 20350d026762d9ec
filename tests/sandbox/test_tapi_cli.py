"""``cardano-agent sandbox up`` serves the T API twin next to the devnet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx


def _start(*extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "sandbox", "up", "--ogmios-port", "0", "--api-port", "0",
         "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _first_line(proc: subprocess.Popen, timeout_s: float = 60.0) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines[0] if lines else ""


def test_sandbox_up_serves_the_twin_and_prints_both_urls(tmp_path: Path) -> None:
    """The one ready line carries the Ogmios and api URLs; the twin bills per --api-config; SIGINT stops it."""
    config = tmp_path / "billing.toml"
    config.write_text("[prices]\nchat = 3000000\n")
    proc = _start("--api-config", str(config))
    try:
        ready = json.loads(_first_line(proc))
        assert ready["ready"] is True and ready["ogmios"].startswith("ws://127.0.0.1:")
        assert ready["api"].startswith("http://127.0.0.1:")
        r = httpx.post(f"{ready['api']}/chat", json={"message": "hi"}, timeout=30)
        assert r.status_code == 402 and r.json()["detail"]["amountUnits"] == "3000000"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_sandbox_up_refuses_a_bad_api_config(tmp_path: Path) -> None:
    """A broken billing config is one error line and a non-zero exit, never a traceback."""
    config = tmp_path / "billing.toml"
    config.write_text("[prices]\nchat = 1\n")
    proc = _start("--api-config", str(config))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert err.startswith("error: ") and "below 1000000" in err and "Traceback" not in err
