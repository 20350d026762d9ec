"""The agent end to end on the sandbox: a 402 is paid from the wallet and the call answered."""

from __future__ import annotations

import pytest

from agent.tapi import TClient
from sandbox.billing import DEFAULT_PAY_TO
from tests.fixtures.agent_home import CHAIN_BACKENDS


@pytest.fixture(params=CHAIN_BACKENDS)
def chain_backend(request: pytest.FixtureRequest) -> str:
    """Runs over Ogmios and over Blockfrost."""
    return request.param


def test_chat_pays_the_invoice_and_gets_the_reply(agent_home):
    """A chat call meets a 402, pays 2 ADA from the wallet in one transaction, and gets its reply."""
    before = agent_home.balance()
    payee_before = agent_home.balance(DEFAULT_PAY_TO)
    with agent_home.open() as agent, TClient(agent) as t:
        reply = t.chat("What is Cardano?", session_id="s1")
        rows = agent.ledger.rows()
        chain = type(agent.chain).__name__
    assert chain == {"ogmios": "OgmiosChain", "blockfrost": "BlockfrostChain"}[agent_home.backend]
    if agent_home.blockfrost is not None:
        assert agent_home.blockfrost.requests > 0  # the payment went through the Blockfrost API
    assert reply.reply
    assert [r.state for r in rows] == ["settled"]
    row = rows[0]
    assert agent_home.balance(DEFAULT_PAY_TO) - payee_before == 2_000_000
    assert before - agent_home.balance() == 2_000_000 + row.fee_lovelace
    assert row.cost_lovelace == 2_000_000 + row.fee_lovelace
