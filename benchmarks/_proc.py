"""Run ``cardano-agent`` as a subprocess: find the entry point, time it, read its peak RSS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from benchmarks.errors import BenchError


def agent_command() -> list[str]:
    """The installed ``cardano-agent`` next to this interpreter, else on PATH, else ``python -m agent.cli``."""
    beside = Path(sys.executable).with_name("cardano-agent")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cardano-agent")
    return [found] if found else [sys.executable, "-m", "agent.cli"]


@dataclass(frozen=True, slots=True)
class Finished:
    """A finished subprocess: exit code, wall time, peak RSS in kB (0 unless from :func:`peak_rss`), output."""

    returncode: int
    wall_s: float
    peak_rss_kb: int
    stdout: str
    stderr: str


def run(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout_s: float = 600,
        check: bool = True) -> Finished:
    """Run ``cardano-agent args`` to the end and time it; raise BenchError on a non-zero exit if ``check``."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen([*agent_command(), *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"cardano-agent {' '.join(args)} did not finish in {timeout_s:.0f} s") from None
    wall = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise BenchError(f"cardano-agent {' '.join(args)} exited {proc.returncode}: {err.strip()[-300:]}")
    return Finished(proc.returncode, wall, 0, out, err)


def _vm_hwm_kb(pid: int) -> int:
    """The process's resident-set high-water mark (``VmHWM``) in kB, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


def peak_rss(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout_s: float = 900,
             log_path: Path | None = None, poll_s: float = 0.02) -> Finished:
    """Run ``cardano-agent args`` and return it with its own peak RSS in kB.

    The peak is ``VmHWM`` from ``/proc/<pid>/status``, read until the process exits (it only
    grows, so the last read is the peak up to the exit). Not ``ru_maxrss``: after fork+exec
    Linux keeps the parent's pre-exec high-water mark in it, which here is this whole bench.
    Output goes to ``log_path`` (or is discarded), so pipes never fill while we wait.
    """
    full_env = {**os.environ, **(env or {})}
    peak = 0
    sink = open(log_path, "w", encoding="utf-8") if log_path else open(os.devnull, "w")
    with sink:
        start = time.perf_counter()
        proc = subprocess.Popen([*agent_command(), *args], env=full_env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = start + timeout_s
        while True:
            peak = max(peak, _vm_hwm_kb(proc.pid))
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise BenchError(f"cardano-agent {' '.join(args)} did not finish in {timeout_s:.0f} s")
            time.sleep(poll_s)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log_path.read_text(encoding="utf-8")[-300:] if log_path else ""
    return Finished(proc.returncode, wall, peak, "", tail)
