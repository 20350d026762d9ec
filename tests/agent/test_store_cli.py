"""``[store] url``, CARDANO_AGENT_STORE_URL and ``cardano-agent init --store``: one line, no password."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from agent.config import load_config
from agent.errors import ConfigError
from tests.pgcluster import PASSWORD


def cli(capsys, *argv):
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_store_url_from_file_and_env(tmp_path):
    """[store] url is read; CARDANO_AGENT_STORE_URL overrides it; the repr hides the password."""
    (tmp_path / "agent.toml").write_text('[store]\nurl = "postgresql://agent@db.internal/agent"\n')
    assert load_config(tmp_path, {}).store.url == "postgresql://agent@db.internal/agent"
    env = {"CARDANO_AGENT_STORE_URL": "postgresql://agent:hunter2@db.internal/agent"}
    config = load_config(tmp_path, env)
    assert config.store.url == env["CARDANO_AGENT_STORE_URL"]
    assert "hunter2" not in repr(config.store) and "hunter2" not in repr(config)


def test_default_store_is_sqlite(tmp_path):
    """Without [store] the agent keeps SQLite in its home."""
    assert load_config(tmp_path, {}).store.url is None


@pytest.mark.parametrize("url", ["mysql://x@y/z", "sqlite:///tmp/x.db", ""])
def test_bad_store_url_is_one_line(tmp_path, url):
    """A [store] url that is not postgresql:// is refused with the key and line."""
    (tmp_path / "agent.toml").write_text(f'[store]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {})
    assert "store.url" in str(err.value) and "\n" not in str(err.value)


def test_bad_env_store_url_hides_the_password(tmp_path):
    """A malformed CARDANO_AGENT_STORE_URL is refused without echoing its password."""
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {"CARDANO_AGENT_STORE_URL": "mysql://a:hunter2@h/d"})
    assert "hunter2" not in str(err.value)


def test_init_store_creates_then_migrates(pg_cluster, tmp_path, capsys):
    """init --store writes agent.toml without the password and creates the schema; again: checked."""
    pg_cluster.create_database("init_store")
    url = pg_cluster.tcp_url("init_store")
    home = tmp_path / "home"
    code, out, err = cli(capsys, "init", "--home", str(home), "--store", url, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["created"] and data["wrote_config"] and PASSWORD not in out
    text = (home / "agent.toml").read_text()
    assert PASSWORD not in text and "127.0.0.1" in text
    code, out, err = cli(capsys, "init", "--home", str(home), "--store", url)
    assert code == 0 and "checked the schema" in out and PASSWORD not in out + err
    pg_cluster.drop_database("init_store")


def test_init_store_wrong_password_is_one_line(pg_cluster, tmp_path, capsys):
    """A wrong password: exit non-zero, one line on stderr, no traceback, password not shown."""
    url = pg_cluster.tcp_url("postgres", password="wrong-pw-123")
    code, out, err = cli(capsys, "init", "--home", str(tmp_path / "h"), "--store", url)
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "wrong-pw-123" not in err + out


def test_status_reads_a_postgresql_store(pg_cluster, tmp_path, capsys, monkeypatch):
    """status on a home whose [store] is PostgreSQL reads the shared queue."""
    pg_cluster.create_database("status_store")
    url = pg_cluster.url("status_store")
    home = tmp_path / "home"
    assert cli(capsys, "init", "--home", str(home), "--store", url)[0] == 0
    monkeypatch.setenv("CARDANO_AGENT_STORE_URL", url)
    from agent.app import Agent

    import time

    from agent.workers import ProcessRegistry

    with Agent.open(home) as agent:
        assert agent.db.engine == "postgresql"
        agent.jobs.enqueue("chat", {"message": "hi"}, now=1.0)
        agent.jobs.enqueue("chat", {"message": "there"}, now=1.0)
        ProcessRegistry(agent.db, host="hostB").register("hostB:4242", workers=8, now=time.time(), lease_s=600)
        held = agent.jobs.claim("hostB:4242-5", now=time.time(), lease_s=600)
    code, out, err = cli(capsys, "status", "--home", str(home), "--offline", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["queue"]["queued"] == 1 and data["store"].startswith("postgresql")
    assert [(w["name"], w["workers"], w["jobs"]) for w in data["workers"]] == [("hostB:4242", 8, [held.id])]
    code, out, err = cli(capsys, "status", "--home", str(home), "--offline")
    assert "hostB:4242  8 worker(s)" in out
    pg_cluster.drop_database("status_store")


def test_status_with_the_database_down_is_one_line(tmp_path, capsys, monkeypatch):
    """status against a PostgreSQL that is not running: one line, non-zero, no password, no traceback."""
    from tests.pgcluster import _free_port

    monkeypatch.setenv("CARDANO_AGENT_STORE_URL", f"postgresql://agent:pw-xyz-1@127.0.0.1:{_free_port()}/agent")
    code, out, err = cli(capsys, "status", "--home", str(tmp_path), "--offline")
    assert code != 0 and err.count("\n") == 1 and "unreachable" in err
    assert "pw-xyz-1" not in err + out and "Traceback" not in err


def test_run_waits_for_a_database_that_is_down_at_start(tmp_path):
    """run with its PostgreSQL down: one line per try on stderr, then it connects once the server is up."""
    import os
    import subprocess
    import sys

    from tests.pgcluster import SUPERUSER_PASSWORD, PgCluster, _free_port, find_bindir

    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries")
    port = _free_port()
    # The superuser's password is set by initdb, so it works from the server's first moment.
    url = f"postgresql://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{port}/postgres"
    env = {**os.environ, "CARDANO_AGENT_STORE_URL": url, "T_API_KEY": "test-key"}
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--until-idle", "--home", str(tmp_path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cluster = None
    try:
        first = proc.stderr.readline()
        assert first.startswith("waiting for the database: ") and SUPERUSER_PASSWORD not in first, first
        cluster = PgCluster.start(port=port)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert SUPERUSER_PASSWORD not in out + err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cluster is not None:
            cluster.stop()
