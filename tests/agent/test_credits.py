"""Prepaid partner batches: the batch cost is spread over its calls, and the remaining credits shown."""

from __future__ import annotations

import json

from agent.cli import main
from agent.tapi import TClient
from tests.fixtures.agent_home import PASSPHRASE


def test_credits_attribute_batch_cost_and_show_remaining(agent_home_factory, capsys, monkeypatch):
    """Two calls on a globex batch of 5: one payment, 5 calls bought, cost per call = cost / 5, 3 left."""
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    home = agent_home_factory(max_per_call_ada="11")
    with home.open() as agent, TClient(agent, partner="globex") as t:
        t.chat("one")
        t.chat("two")
        [row] = [r for r in agent.ledger.rows() if r.paid]
    assert row.partner == "globex" and row.batch_target == 5
    assert main(["credits", "--home", str(home.home), "--json"]) == 0
    [globex] = json.loads(capsys.readouterr().out)
    assert globex["payments"] == 1 and globex["calls_bought"] == 5
    assert globex["cost_per_call_lovelace"] == row.cost_lovelace // 5
    assert globex["remaining"] == 3 and globex["total"] == 5
    assert main(["credits", "--home", str(home.home)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["PARTNER", "PAYMENTS", "CALLS"]
    assert "globex" in out
