"""The twin's x402 settlement over a fake chain: every refusal leaves the invoice as it was."""

from __future__ import annotations

import pytest

from sandbox.billing import Faults, TwinConfig
from tests.fixtures.twin import address_of, make_key, required_outputs, signed_tx

KEY = make_key("unit-payer")
WALLET = str(address_of(KEY))


def _invoice(twin, path="/chat", body=None, headers=None) -> dict:
    r = twin.client.post(path, json=body or {"message": "hi"}, headers=headers or {})
    assert r.status_code == 402, r.text
    return r.json()["detail"]


def _retry(twin, detail, proof, path="/chat", body=None, headers=None):
    h = {"X-Invoice-Id": detail["invoiceId"], "X-Payment": proof, **(headers or {})}
    return twin.client.post(path, json=body or {"message": "hi"}, headers=h)


def _state(twin, detail) -> dict:
    return twin.status(detail["invoiceId"])


def test_hash_proof_on_the_ledger_is_consumed_once(unit_twin) -> None:
    """A tx on the ledger with every output settles the invoice: 200, then the invoice is consumed."""
    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail), invoice_id=detail["invoiceId"]))
    r = _retry(unit_twin, detail, tx_id)
    assert r.status_code == 200 and r.headers["x-billing"] == "x402"
    status = _state(unit_twin, detail)
    assert status["status"] == "consumed" and status["txHash"] == tx_id and status["settledAt"]


def test_cbor_proof_that_pays_is_submitted_by_the_twin(unit_twin) -> None:
    """Signed CBOR carrying the outputs is submitted by the twin and settles the invoice."""
    detail = _invoice(unit_twin)
    tx = signed_tx(KEY, required_outputs(detail), invoice_id=detail["invoiceId"])
    r = _retry(unit_twin, detail, tx.to_cbor_hex())
    assert r.status_code == 200
    assert unit_twin.reader.submitted == [str(tx.id)]
    assert _state(unit_twin, detail)["status"] == "consumed"


def _refused(twin, detail, proof, code, **kw) -> None:
    before = _state(twin, detail)
    r = _retry(twin, detail, proof, **kw)
    assert r.status_code == 402, r.text
    assert r.json()["detail"].startswith(code), r.json()
    assert _state(twin, detail) == before


def test_cbor_that_does_not_pay_is_refused_and_not_submitted(unit_twin) -> None:
    """Signed CBOR short of the price is refused and never submitted."""
    detail = _invoice(unit_twin)
    outs = [(a, amt - 1, asset) for a, amt, asset in required_outputs(detail)]
    _refused(unit_twin, detail, signed_tx(KEY, outs).to_cbor_hex(), "short_output")
    assert unit_twin.reader.submitted == []


def test_short_output_is_refused(unit_twin) -> None:
    """A tx paying payTo one lovelace short is refused; the invoice stays pending."""
    detail = _invoice(unit_twin)
    outs = [(a, amt - 1, asset) for a, amt, asset in required_outputs(detail)]
    _refused(unit_twin, detail, unit_twin.reader.put(signed_tx(KEY, outs)), "short_output")


def test_missing_split_output_is_refused(unit_twin) -> None:
    """A partner invoice paid without its revenue-share output is refused."""
    headers = {"X-Partner": "acme"}
    detail = _invoice(unit_twin, headers=headers)
    outs = required_outputs(detail)[:1]
    _refused(unit_twin, detail, unit_twin.reader.put(signed_tx(KEY, outs)), "missing_output", headers=headers)


def test_expired_invoice_is_refused_even_if_paid(unit_twin) -> None:
    """Past its timeout an invoice is expired and a payment no longer settles it."""
    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    unit_twin.clock.advance(detail["timeout"])
    assert _state(unit_twin, detail)["status"] == "expired"
    _refused(unit_twin, detail, tx_id, "invoice_expired")


def test_replayed_invoice_is_refused(unit_twin) -> None:
    """A consumed invoice cannot be used again, even with the same tx."""
    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    assert _retry(unit_twin, detail, tx_id).status_code == 200
    _refused(unit_twin, detail, tx_id, "invoice_consumed")


def test_replayed_transaction_is_refused_for_a_second_invoice(unit_twin) -> None:
    """A tx that settled one invoice cannot settle another of the same price."""
    first = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(first)))
    assert _retry(unit_twin, first, tx_id).status_code == 200
    second = _invoice(unit_twin)
    _refused(unit_twin, second, tx_id, "transaction_already_used")


def test_wrong_network_cbor_is_refused(unit_twin) -> None:
    """CBOR paying the mainnet twin of payTo (network id 1) is refused as wrong_network, not submitted."""
    from pycardano import Address, Network

    detail = _invoice(unit_twin)
    outs = [(Address(Address.from_primitive(a).payment_part, network=Network.MAINNET), amt, asset)
            for a, amt, asset in required_outputs(detail)]
    _refused(unit_twin, detail, signed_tx(KEY, outs, network_id=1).to_cbor_hex(), "wrong_network")
    assert unit_twin.reader.submitted == []


@pytest.mark.parametrize("proof", ["zz", "deadbeef" * 3, "00" * 40, "hello world", "ab" * 20_000])
def test_garbage_proof_is_refused(unit_twin, proof: str) -> None:
    """Proofs that are not a tx hash or a signed tx are refused with invalid_payment_proof."""
    detail = _invoice(unit_twin)
    _refused(unit_twin, detail, proof, "invalid_payment_proof")


def test_unknown_tx_hash_and_unknown_invoice_are_refused(unit_twin) -> None:
    """A hash the chain never saw, or an invoice id from another server, is refused."""
    detail = _invoice(unit_twin)
    _refused(unit_twin, detail, "ab" * 32, "payment_not_found")
    r = unit_twin.client.post("/chat", json={"message": "hi"},
                              headers={"X-Invoice-Id": "inv_from_elsewhere", "X-Payment": "ab" * 32})
    assert r.status_code == 402 and r.json()["detail"].startswith("unknown_invoice")
    assert unit_twin.client.get("/payments/status/inv_from_elsewhere").status_code == 404


def test_invoice_for_another_route_is_refused(unit_twin) -> None:
    """An invoice issued for /chat does not pay for /images/generate."""
    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    _refused(unit_twin, detail, tx_id, "invoice_route_mismatch", path="/images/generate", body={"prompt": "p"})


def test_half_the_payment_headers_is_refused(unit_twin) -> None:
    """X-Payment without X-Invoice-Id is refused; no invoice is consumed."""
    r = unit_twin.client.post("/chat", json={"message": "hi"}, headers={"X-Payment": "ab" * 32})
    assert r.status_code == 402 and r.json()["detail"].startswith("payment_headers_incomplete")


def test_mempool_payment_is_pending_until_confirmed(unit_twin) -> None:
    """With accept_mempool false, a mempool tx gets 402 status pending; after a block the retry is served."""
    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)), where="mempool")
    r = _retry(unit_twin, detail, tx_id)
    assert r.status_code == 402 and r.json()["detail"]["status"] == "pending"
    assert _state(unit_twin, detail)["status"] == "submitted"
    unit_twin.reader.confirm(tx_id)
    assert _state(unit_twin, detail)["status"] == "confirmed"
    assert _retry(unit_twin, detail, tx_id).status_code == 200
    assert _state(unit_twin, detail)["status"] == "consumed"


def test_mempool_payment_is_enough_when_accepted(unit_twin_factory) -> None:
    """With accept_mempool true, a mempool tx settles the invoice at once."""
    twin = unit_twin_factory(TwinConfig().with_(accept_mempool=True))
    detail = _invoice(twin)
    tx_id = twin.reader.put(signed_tx(KEY, required_outputs(detail)), where="mempool")
    assert _retry(twin, detail, tx_id).status_code == 200


def test_submitted_invoice_fails_when_its_tx_vanishes_after_expiry(unit_twin) -> None:
    """A tx seen in the mempool that never confirms leaves the invoice failed once it has expired."""
    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)), where="mempool")
    assert _retry(unit_twin, detail, tx_id).status_code == 402
    unit_twin.reader.mempool.clear()
    unit_twin.clock.advance(detail["timeout"] + 1)
    r = _retry(unit_twin, detail, tx_id)
    assert r.status_code == 402 and r.json()["detail"].startswith("invoice_failed")
    assert _state(unit_twin, detail)["status"] == "failed"


def test_partner_billing_applies_even_with_an_api_key(unit_twin) -> None:
    """X-Partner forces an invoice although a valid api-key is present."""
    r = unit_twin.client.post("/chat", json={"message": "x"}, headers={"api-key": "twin-admin-key", "X-Partner": "acme"})
    assert r.status_code == 402 and r.json()["detail"]["extra"]["partner"] == "acme"
    unknown = unit_twin.client.post("/chat", json={"message": "x"}, headers={"X-Partner": "nobody"})
    assert unknown.status_code == 403


def test_prepaid_batch_credits_calls_per_partner_and_wallet(unit_twin) -> None:
    """One globex payment buys 5 calls for that wallet: 4 more succeed without a 402, the 6th gets one."""
    headers = {"X-Partner": "globex", "X-Wallet-Address": WALLET}
    assert unit_twin.client.post("/chat", json={"message": "x"}, headers={"X-Partner": "globex"}).json() == {
        "detail": "wallet_address_required_for_prepaid_batches"}
    detail = _invoice(unit_twin, headers=headers)
    assert detail["extra"]["batchTarget"] == 5 and detail["amountUnits"] == "10000000"
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    assert _retry(unit_twin, detail, tx_id, headers=headers).status_code == 200
    bal = unit_twin.client.get("/payments/balance", params={"partner": "globex", "wallet": WALLET}).json()
    assert (bal["remaining"], bal["total"]) == (4, 5) and bal["expiresAt"]
    assert unit_twin.client.get("/payments/credits", params={"partner": "globex", "wallet": WALLET}).json() == bal
    for _ in range(4):
        r = unit_twin.client.post("/chat", json={"message": "x"}, headers=headers)
        assert r.status_code == 200 and r.headers["x-billing"] == "prepaid"
    assert unit_twin.client.post("/chat", json={"message": "x"}, headers=headers).status_code == 402
    other = str(address_of(make_key("someone-else")))
    assert unit_twin.client.post("/chat", json={"message": "x"},
                                 headers={"X-Partner": "globex", "X-Wallet-Address": other}).status_code == 402


def test_failed_attempts_credit_nothing(unit_twin) -> None:
    """A refused batch payment leaves the (partner, wallet) balance at zero."""
    headers = {"X-Partner": "globex", "X-Wallet-Address": WALLET}
    detail = _invoice(unit_twin, headers=headers)
    outs = [(a, amt - 1, asset) for a, amt, asset in required_outputs(detail)]
    _refused(unit_twin, detail, unit_twin.reader.put(signed_tx(KEY, outs)), "short_output", headers=headers)
    bal = unit_twin.client.get("/payments/balance", params={"partner": "globex", "wallet": WALLET}).json()
    assert bal["remaining"] == 0 and bal["total"] == 0


def test_402_after_payment_fault_leaves_the_invoice_payable_by_the_same_tx(unit_twin_factory) -> None:
    """The after-payment fault answers 402 submitted; retrying the same headers then succeeds."""
    twin = unit_twin_factory(TwinConfig().with_(faults=Faults(after_payment_402_rate=1.0)))
    detail = _invoice(twin)
    tx_id = twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    r = _retry(twin, detail, tx_id)
    assert r.status_code == 402 and r.json()["detail"]["status"] == "submitted"
    assert _state(twin, detail)["status"] == "confirmed"
    twin.app.state.twin.gate.config = TwinConfig()  # the fault clears
    assert _retry(twin, detail, tx_id).status_code == 200


def test_node_rejection_of_a_cbor_proof_is_refused(unit_twin) -> None:
    """CBOR that pays but that the node refuses (e.g. spent inputs) is a 402 refusal; invoice unchanged."""
    detail = _invoice(unit_twin)
    unit_twin.reader.reject = (3117, "unknown inputs")
    tx = signed_tx(KEY, required_outputs(detail))
    _refused(unit_twin, detail, tx.to_cbor_hex(), "payment_rejected_by_node")


def test_chain_unreachable_is_503_and_changes_nothing(unit_twin) -> None:
    """When Ogmios cannot be read the retry is a transient 503 with Retry-After; the invoice stays pending."""
    from sandbox.verifier import OgmiosUnreachableError

    detail = _invoice(unit_twin)

    def down(tx_id: str):
        raise OgmiosUnreachableError("cannot reach Ogmios")

    unit_twin.reader.ledger_outputs = down  # type: ignore[method-assign]
    before = _state(unit_twin, detail)
    r = _retry(unit_twin, detail, "ab" * 32)
    assert r.status_code == 503 and r.json()["detail"].startswith("chain_unavailable") and r.headers["retry-after"]
    assert _state(unit_twin, detail) == before


def test_bad_wallet_address_is_400(unit_twin) -> None:
    """An X-Wallet-Address that is not a devnet address is 400 before any invoice is issued."""
    mainnet = "addr1vx53fltufhm5evcsa5wa4a6t9w48ruapm8zf9dy8hdnqcsqh54v25"
    for wallet in ("nonsense", mainnet):
        r = unit_twin.client.post("/chat", json={"message": "x"},
                                  headers={"X-Partner": "globex", "X-Wallet-Address": wallet})
        assert r.status_code == 400 and r.json()["detail"].startswith("invalid_wallet_address")


def test_concurrent_retries_consume_an_invoice_once(unit_twin) -> None:
    """Eight simultaneous retries with one paid invoice: exactly one is served."""
    from concurrent.futures import ThreadPoolExecutor

    detail = _invoice(unit_twin)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: _retry(unit_twin, detail, tx_id).status_code, range(8)))
    assert codes == [200] + [402] * 7


def test_resent_batch_proof_draws_on_the_batch(unit_twin) -> None:
    """Re-sending a consumed batch invoice's proof draws a prepaid call while any remain, then is refused."""
    headers = {"X-Partner": "globex", "X-Wallet-Address": WALLET}
    detail = _invoice(unit_twin, headers=headers)
    tx_id = unit_twin.reader.put(signed_tx(KEY, required_outputs(detail)))
    assert _retry(unit_twin, detail, tx_id, headers=headers).headers["x-billing"] == "x402"
    for _ in range(4):
        assert _retry(unit_twin, detail, tx_id, headers=headers).headers["x-billing"] == "prepaid"
    r = _retry(unit_twin, detail, tx_id, headers=headers)
    assert r.status_code == 402 and r.json()["detail"].startswith("invoice_consumed")
