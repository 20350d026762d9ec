"""A throwaway PostgreSQL cluster for tests and benchmarks, started with the machine's initdb/pg_ctl.

The cluster lives in a temporary directory, listens on a unix socket in that directory and on
a free loopback port (password auth over TCP, trust over the socket), and is removed by
:meth:`PgCluster.stop`. PostgreSQL refuses to run as root: when we are root, the data
directory is handed to the ``postgres`` user (or ``nobody``) and the server runs as that user.

    with PgCluster.start() as cluster:
        url = cluster.create_database("t1")
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

SUPERUSER = "postgres"
PASSWORD_USER = "agent_pw"
PASSWORD = "s3cret-pg-pw"
SUPERUSER_PASSWORD = "unused-superuser-pw"
"""Set by initdb: the superuser can log in over TCP from the first moment the server runs."""


def find_bindir() -> Path | None:
    """The directory holding PostgreSQL's initdb, pg_ctl and postgres, or None if none is installed."""
    env = os.environ.get("PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             check=True).stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for c in candidates:
        if c and all((Path(c) / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user to run the server as when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def reap_orphans(bindir: Path) -> int:
    """Stop and delete clusters left by test processes that died without stopping them.

    Only clusters made here (an ``owner.pid`` file in their directory) whose owner no longer
    exists are touched; return how many.
    """
    reaped = 0
    for owner_file in glob.glob("/tmp/agentpg-*/owner.pid"):
        root = Path(owner_file).parent
        try:
            pid = int(Path(owner_file).read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            continue  # its owner lives
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        cluster = PgCluster(bindir, root, 0, _run_as())
        cluster.stop()
        reaped += 1
    return reaped


class PgCluster:
    """A running throwaway cluster; use :meth:`start`, then :meth:`stop` (or ``with``)."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.port = port
        self.user = user
        self._n = 0

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, bindir: Path | None = None, *, port: int | None = None) -> "PgCluster":
        """initdb a new cluster in a temp directory and start it (on ``port``, default a free one)."""
        bindir = bindir or find_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl, postgres) found")
        reap_orphans(bindir)
        root = Path(tempfile.mkdtemp(prefix="agentpg-", dir="/tmp"))
        (root / "owner.pid").write_text(str(os.getpid()))
        user = _run_as()
        cluster = cls(bindir, root, port or _free_port(), user)
        try:
            cluster._init()
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _init(self) -> None:
        self.socket_dir.mkdir()
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(self.socket_dir, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        subprocess.run(
            self._cmd("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust",
                      "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                      "--locale=C", "--no-sync"),
            check=True, capture_output=True, cwd=self.root,
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
            )

    def _start(self) -> None:
        out = subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start"),
            capture_output=True, text=True, cwd=self.root,
        )
        if out.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {out.stderr.strip()} {log[-2000:]}")
        self.admin_execute(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")

    def stop(self) -> None:
        """Stop the server (immediately) and delete its directory."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                           capture_output=True, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PgCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """A URL reaching ``dbname`` over the unix socket as the superuser (trust, no password)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, dbname: str = "postgres", *, password: str | None = PASSWORD) -> str:
        """A URL reaching ``dbname`` over loopback TCP as a role with a password."""
        auth = f"{PASSWORD_USER}:{password}" if password is not None else PASSWORD_USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def admin_execute(self, sql: str) -> None:
        """Run one statement as the superuser in autocommit (CREATE/DROP DATABASE, ...)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its socket URL."""
        if name is None:
            self._n += 1
            name = f"t{os.getpid()}_{self._n}_{int(time.monotonic_ns() % 1_000_000)}"
        self.admin_execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url_or_name: str) -> None:
        """Drop a database made by :meth:`create_database`, closing its sessions."""
        name = url_or_name.split("?")[0].rsplit("/", 1)[-1]
        self.admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def databases(self) -> Iterator[str]:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            for (name,) in conn.execute("SELECT datname FROM pg_database"):
                yield name
