"""Which agent processes are alive, on every host that shares the database: leases, not PIDs.

Each ``cardano-agent run`` registers its process (``host:pid``) with a lease it renews every
third of its length. Another host cannot ask whether a PID is alive, but it can read the lease:
a process whose lease ran out is gone, and its jobs and payments may be taken over. On one
host a process that no longer exists is gone at once. ``status`` lists the live processes
and the jobs their workers hold, whichever host runs them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.store import Database, register_migrations

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0

register_migrations("workers", [
    """
    CREATE TABLE agent_processes (
        name        TEXT    PRIMARY KEY,
        host        TEXT    NOT NULL,
        pid         INTEGER NOT NULL,
        workers     INTEGER NOT NULL,
        started_at  REAL    NOT NULL,
        beat_at     REAL    NOT NULL,
        lease_until REAL    NOT NULL,
        store_error TEXT
    );
    """,
])


def this_host() -> str:
    """This machine's name as leases record it (``CARDANO_AGENT_HOST`` overrides, e.g. in containers)."""
    return os.environ.get("CARDANO_AGENT_HOST") or socket.gethostname()


def process_name(host: str | None = None, pid: int | None = None) -> str:
    """``host:pid``: the prefix of every worker and payment owner of this process."""
    return f"{host or this_host()}:{os.getpid() if pid is None else pid}"


def split_owner(owner: str) -> tuple[str, int] | None:
    """``(host, pid)`` of a worker or owner name (``host:pid``, ``host:pid-n``, ``host:pid:n``)."""
    host, sep, rest = owner.partition(":")
    if not sep:
        return None
    pid_text = rest.split(":", 1)[0].split("-", 1)[0]
    if not pid_text.isdigit():
        return None
    return host, int(pid_text)


def pid_exists(pid: int) -> bool:
    """True while process ``pid`` runs on this host (one we may not signal counts as running).

    A process that has exited but not been reaped by its parent (a zombie) still has its PID,
    yet holds nothing and will do nothing more: it counts as gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """True if /proc says ``pid`` has exited, unreaped (Linux; elsewhere, False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    # pid (comm) state ...: comm may hold spaces and parentheses, so read past its last ')'.
    fields = stat[stat.rfind(b")") + 1:].split()
    return bool(fields) and fields[0] in (b"Z", b"X")


_pid_exists = pid_exists


@dataclass(frozen=True)
class ProcessInfo:
    """One registered agent process and its lease."""

    name: str
    host: str
    pid: int
    workers: int
    started_at: float
    beat_at: float
    lease_until: float
    store_error: str | None = None

    def alive(self, now: float) -> bool:
        """True while the lease runs."""
        return self.lease_until > now


def _info(r: Any) -> ProcessInfo:
    return ProcessInfo(name=r["name"], host=r["host"], pid=int(r["pid"]), workers=int(r["workers"]),
                       started_at=r["started_at"], beat_at=r["beat_at"], lease_until=r["lease_until"],
                       store_error=r["store_error"])


class ProcessRegistry:
    """The agent processes of every host sharing ``db``, each with a renewable lease.

    Args:
        db: the agent database (migrated).
        host: this host's name (default :func:`this_host`).
        pid_exists: asks whether a PID of this host is alive (injected for tests).
    """

    def __init__(self, db: Database, *, host: str | None = None,
                 pid_exists: Callable[[int], bool] = _pid_exists) -> None:
        self.db = db
        self.host = host or this_host()
        self._pid_exists = pid_exists

    def register(self, name: str, *, workers: int, now: float, lease_s: float = DEFAULT_LEASE_S) -> None:
        """Record process ``name`` (``host:pid``) as alive until ``now + lease_s``."""
        parsed = split_owner(name)
        host, pid = parsed if parsed else (self.host, os.getpid())
        with self.db.atomic() as conn:
            conn.execute(
                "INSERT INTO agent_processes (name, host, pid, workers, started_at, beat_at, lease_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET workers = excluded.workers,"
                " started_at = excluded.started_at, beat_at = excluded.beat_at,"
                " lease_until = excluded.lease_until, store_error = NULL",
                (name, host, pid, workers, now, now, now + lease_s))

    def beat(self, name: str, *, now: float, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Renew ``name``'s lease; False if its row is gone (then register again)."""
        cur = self.db.execute(
            "UPDATE agent_processes SET beat_at = ?, lease_until = ?, store_error = NULL WHERE name = ?",
            (now, now + lease_s, name))
        return bool(cur.rowcount)

    def unregister(self, name: str) -> None:
        """Process ``name`` stops: its row goes (its leases on jobs end with it)."""
        self.db.execute("DELETE FROM agent_processes WHERE name = ?", (name,))

    def processes(self) -> list[ProcessInfo]:
        """Every registered process, live or not, by host then name."""
        return [_info(r) for r in self.db.execute("SELECT * FROM agent_processes ORDER BY host, name")]

    def live(self, now: float) -> list[ProcessInfo]:
        """The processes whose lease runs at ``now`` (and, on this host, whose PID exists)."""
        return [p for p in self.processes() if not self._gone(p, now)]

    def _gone(self, p: ProcessInfo, now: float) -> bool:
        if not p.alive(now):
            return True
        return p.host == self.host and p.pid != os.getpid() and not self._pid_exists(p.pid)

    def is_gone(self, owner: str, *, now: float) -> bool:
        """True if the process behind worker or payment owner ``owner`` is known to be gone.

        Its lease ran out (any host), or it is a process of this host that no longer exists.
        A process of another host that never registered is not judged here (False).
        """
        parsed = split_owner(owner)
        if parsed is None:
            return False
        host, pid = parsed
        r = self.db.execute("SELECT * FROM agent_processes WHERE name = ?", (f"{host}:{pid}",)).fetchone()
        if r is not None:
            return self._gone(_info(r), now)
        if host == self.host and pid != os.getpid():
            return not self._pid_exists(pid)
        return False

    def judge(self, owner: str, *, now: float) -> bool | None:
        """Gone (True) or alive (False) by the lease of ``owner``'s process; None if it holds none."""
        parsed = split_owner(owner)
        if parsed is None:
            return None
        r = self.db.execute("SELECT * FROM agent_processes WHERE name = ?",
                            (f"{parsed[0]}:{parsed[1]}",)).fetchone()
        return None if r is None else self._gone(_info(r), now)

    def prune(self, now: float, *, keep_s: float = 86_400.0) -> int:
        """Forget processes whose lease ended more than ``keep_s`` ago; return how many."""
        cur = self.db.execute("DELETE FROM agent_processes WHERE lease_until < ?", (now - keep_s,))
        return int(cur.rowcount or 0)


class ProcessLease:
    """Keeps this process registered while it runs: a thread renews the lease every third of it.

    A renewal that fails (the database lost) is logged and retried at the next beat; the lease
    only lapses if the database stays unreachable longer than the lease itself.
    """

    def __init__(self, registry: ProcessRegistry, name: str, *, workers: int,
                 lease_s: float = DEFAULT_LEASE_S, clock: Callable[[], float]) -> None:
        self.registry = registry
        self.name = name
        self.workers = workers
        self.lease_s = lease_s
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None

    def __enter__(self) -> "ProcessLease":
        self.registry.register(self.name, workers=self.workers, now=self.clock(), lease_s=self.lease_s)
        self._thread = threading.Thread(target=self._beat, name="process-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                if not self.registry.beat(self.name, now=self.clock(), lease_s=self.lease_s):
                    self.registry.register(self.name, workers=self.workers, now=self.clock(),
                                           lease_s=self.lease_s)
                if self.last_error:
                    log.warning("database reachable again; lease of %s renewed", self.name)
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - retried at the next beat
                self.last_error = str(exc)
                log.warning("could not renew the lease of %s: %s", self.name, exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.registry.unregister(self.name)
        except Exception as err:  # noqa: BLE001 - the lease simply runs out
            log.warning("could not unregister %s: %s", self.name, err)
