"""Paying through a misbehaving Blockfrost: it waits and retries, or fails in one line; never pays twice."""

from __future__ import annotations

import pytest

from agent.tapi import TClient
from sandbox.billing import DEFAULT_PAY_TO
from wallets.errors import ChainUnavailableError
from wallets.types import OutputRef


@pytest.fixture
def chain_backend() -> str:
    """Every home here pays through the sandbox's Blockfrost API."""
    return "blockfrost"


def test_429_bursts_and_5xx_mid_payment_are_waited_out_and_paid_once(agent_home):
    """A burst of 429s, a 429 on the submission and a 503 on a query while paying: paid once and answered."""
    before = agent_home.balance()
    faults = agent_home.blockfrost.faults
    faults.fail_next(429, 4)
    faults.fail_next(503, 1, path="/addresses/")
    faults.fail_next(429, 1, path="/tx/submit")  # a 429 is refused before the node: sent again
    with agent_home.open() as agent, TClient(agent) as t:
        agent.chain._backoff_s = 0.001  # the schedule is tested in tests/wallets/test_blockfrost.py
        assert t.chat("hello through a flaky Blockfrost").reply
        rows = agent.ledger.rows()
    assert [r.state for r in rows] == ["settled"]
    assert before - agent_home.balance() == 2_000_000 + rows[0].fee_lovelace


def test_a_submission_whose_answer_is_lost_is_recovered_from_the_chain_not_paid_again(agent_home):
    """The node took the payment but Blockfrost answered 500: the row stays signed, recovery finds it landed."""
    payee_before = agent_home.balance(DEFAULT_PAY_TO)
    agent_home.blockfrost.faults.fail_next(500, path="/tx/submit", after=True)
    with agent_home.open() as agent, TClient(agent) as t:
        with pytest.raises(ChainUnavailableError, match="outcome is unknown"):
            t.chat("is this paid?")
        [row] = agent.ledger.rows()
        assert row.state == "signed" and row.tx_id
    with agent_home.open() as agent:  # as after a restart
        agent.recover()
        [row] = agent.ledger.rows()
        assert row.state in ("submitted", "settled")
    assert agent_home.devnet.ledger.utxos_by_refs([OutputRef(row.tx_id, 0)])
    assert agent_home.balance(DEFAULT_PAY_TO) - payee_before == 2_000_000  # paid once


def test_wrong_project_id_is_one_line_and_nothing_is_paid(agent_home, capsys, monkeypatch):
    """`cardano-agent call` with a wrong BLOCKFROST_PROJECT_ID: exit 1, one line naming devnet and the variable."""
    from agent.cli import main
    from tests.fixtures.agent_home import PASSPHRASE

    before = agent_home.balance()
    monkeypatch.setenv("BLOCKFROST_PROJECT_ID", "devnet" + "7" * 32)
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    code = main(["call", "chat", "--message", "hi", "--home", str(agent_home.home)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "devnet" in err and "BLOCKFROST_PROJECT_ID" in err and "7" * 32 not in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert agent_home.balance() == before
