"""A payee that spends what it receives: the twin sweeps each payment it accepts (``sweep = true``)."""

from __future__ import annotations

import httpx
import pytest

from sandbox.billing import DEFAULT_PAY_TO, TwinConfig, parse_twin_config
from sandbox.errors import SandboxConfigError
from sandbox.sweep import PAYEE_LABEL, TREASURY_LABEL, key_address, label_signing_key

CHAT = {"message": "What is Cardano?"}


def test_the_sweeping_payee_spends_each_payment_it_accepted(twin_factory) -> None:
    """Paid and consumed: the payment's output at pay_to is spent to the treasury; the call still succeeded."""
    twin = twin_factory(TwinConfig(sweep=True))
    payer = twin.payer("hash")
    treasury = key_address(label_signing_key(TREASURY_LABEL))
    with twin.client() as c:
        detail = c.post("/chat", json=CHAT).json()["detail"]
        tx = payer.pay(detail)
        r = c.post("/chat", json=CHAT, headers={"X-Invoice-Id": detail["invoiceId"], "X-Payment": str(tx.id)})
        assert r.status_code == 200, r.text
        status = twin.status(detail["invoiceId"])
    assert status["status"] == "consumed" and status["txHash"] == str(tx.id)
    ledger = twin.devnet.ledger
    assert ledger.balance(DEFAULT_PAY_TO)["lovelace"] == 0  # nothing left at the payee
    assert 1_500_000 < ledger.balance(treasury)["lovelace"] < 2_000_000  # 2 ADA less the sweep's fee
    assert not ledger.utxos_by_refs([_ref(str(tx.id), 0)])


def test_an_unpresented_payment_is_not_swept(twin_factory) -> None:
    """The payee sweeps only payments it accepted: one never presented stays where it landed."""
    twin = twin_factory(TwinConfig(sweep=True))
    with twin.client() as c:
        detail = c.post("/chat", json=CHAT).json()["detail"]
    tx = twin.payer("hash").pay(detail)
    assert twin.devnet.ledger.utxos_by_refs([_ref(str(tx.id), 0)])


def test_sweep_config_is_checked() -> None:
    """`sweep` is a boolean and needs the default pay_to (the only payee key the sandbox holds)."""
    assert parse_twin_config({"sweep": True}).sweep is True
    with pytest.raises(SandboxConfigError, match="sweep"):
        parse_twin_config({"sweep": "yes"})
    with pytest.raises(SandboxConfigError, match="sweep"):
        parse_twin_config({"sweep": True, "pay_to": key_address(label_signing_key(TREASURY_LABEL))})
    assert key_address(label_signing_key(PAYEE_LABEL)) == DEFAULT_PAY_TO


def _ref(tx_id: str, index: int):
    from wallets.types import OutputRef

    return OutputRef(tx_id, index)
