"""The twin end to end on a real devnet: invoices paid with pycardano directly, verified through Ogmios."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.billing import ACME_ADDRESS, DEFAULT_PAY_TO, GLOBEX_ADDRESS, TwinConfig
from sandbox.devnet import DEVNET_TOKEN
from tests.fixtures.twin import address_of, make_key, required_outputs

CHAT = {"message": "What is Cardano?", "session_id": "pay-1"}


def _invoice(c: httpx.Client, path: str = "/chat", body: Any = CHAT, headers: dict | None = None) -> dict:
    r = c.post(path, json=body, headers=headers or {})
    assert r.status_code == 402, r.text
    return r.json()["detail"]


def _retry(c: httpx.Client, detail: dict, proof: str, path: str = "/chat", body: Any = CHAT,
           headers: dict | None = None) -> httpx.Response:
    return c.post(path, json=body, headers={"X-Invoice-Id": detail["invoiceId"], "X-Payment": proof, **(headers or {})})


def test_pay_by_hash_round_trip(twin) -> None:
    """402 → pycardano pays payTo with the x402 label → retry with the tx hash → 200, invoice consumed."""
    payer = twin.payer("hash")
    with twin.client() as c:
        detail = _invoice(c)
        assert detail["chain"] == "cardano-devnet" and detail["payTo"] == DEFAULT_PAY_TO
        tx = payer.pay(detail)
        r = _retry(c, detail, str(tx.id))
    assert r.status_code == 200 and r.json()["reply"].startswith("T twin")
    assert twin.status(detail["invoiceId"])["status"] == "consumed"
    assert twin.devnet.ledger.balance(DEFAULT_PAY_TO)["lovelace"] == 2_000_000


def test_additional_split_pays_partner_on_top(twin) -> None:
    """acme (additional): payTo gets the full price and the partner output comes on top, in one tx."""
    payer = twin.payer("additional")
    headers = {"X-Partner": "acme"}
    with twin.client() as c:
        detail = _invoice(c, headers=headers)
        assert detail["extra"]["splitMode"] == "additional"
        assert detail["extra"]["outputs"] == [{"address": ACME_ADDRESS, "amountUnits": "1000000",
                                               "asset": "ADA", "role": "partner"}]
        tx = payer.pay(detail)
        assert _retry(c, detail, str(tx.id), headers=headers).status_code == 200
    assert twin.devnet.ledger.balance(DEFAULT_PAY_TO)["lovelace"] == 2_000_000
    assert twin.devnet.ledger.balance(ACME_ADDRESS)["lovelace"] == 1_000_000


def test_inclusive_split_and_prepaid_batch(twin) -> None:
    """globex (inclusive, batch 5): one payment splits 6/4 ADA and buys 5 calls for that wallet only."""
    payer = twin.payer("batch")
    headers = {"X-Partner": "globex", "X-Wallet-Address": str(payer.address)}
    with twin.client() as c:
        detail = _invoice(c, headers=headers)
        assert detail["amountUnits"] == "10000000" and detail["extra"]["splitMode"] == "inclusive"
        tx = payer.pay(detail)
        first = _retry(c, detail, str(tx.id), headers=headers)
        assert first.status_code == 200 and first.headers["x-billing"] == "x402"
        for _ in range(4):
            r = c.post("/chat", json=CHAT, headers=headers)
            assert r.status_code == 200 and r.headers["x-billing"] == "prepaid"
        balance = c.get("/payments/balance", params={"partner": "globex", "wallet": str(payer.address)}).json()
        assert (balance["remaining"], balance["total"]) == (0, 5)
        assert c.post("/chat", json=CHAT, headers=headers).status_code == 402
    assert twin.devnet.ledger.balance(DEFAULT_PAY_TO)["lovelace"] == 6_000_000
    assert twin.devnet.ledger.balance(GLOBEX_ADDRESS)["lovelace"] == 4_000_000


def test_native_token_invoice(twin_factory) -> None:
    """An invoice in DEVNET_TOKEN is paid in that token (payTo and partner) and settles."""
    prices = {r: 100 for r in ("chat", "token-analysis", "images/generate", "images/edit", "images/upload-and-edit")}
    handle = twin_factory(TwinConfig().with_(asset=DEVNET_TOKEN, decimals=0, prices=prices))
    payer = handle.payer("token", assets={DEVNET_TOKEN: 1_000})
    headers = {"X-Partner": "acme"}
    with handle.client() as c:
        detail = _invoice(c, headers=headers)
        assert detail["asset"] == DEVNET_TOKEN and detail["amountUnits"] == "100" and detail["decimals"] == 0
        assert detail["extra"]["lovelace"] is False and detail["extra"]["outputs"][0]["amountUnits"] == "50"
        tx = payer.pay(detail)
        assert _retry(c, detail, str(tx.id), headers=headers).status_code == 200
    assert handle.devnet.ledger.balance(DEFAULT_PAY_TO)[DEVNET_TOKEN] == 100
    assert handle.devnet.ledger.balance(ACME_ADDRESS)[DEVNET_TOKEN] == 50


def test_cbor_proof_is_submitted_by_the_twin(twin) -> None:
    """The payer sends signed CBOR without submitting; the twin submits it and serves the call."""
    payer = twin.payer("cbor")
    body = {"prompt": "a validator in space", "n": 1}
    with twin.client() as c:
        detail = _invoice(c, "/images/generate", body)
        tx = payer.pay(detail, submit=False)
        assert twin.devnet.ledger.balance(DEFAULT_PAY_TO).get("lovelace", 0) == 0
        r = _retry(c, detail, tx.to_cbor_hex(), "/images/generate", body)
    assert r.status_code == 200 and r.json()["success"]
    assert twin.status(detail["invoiceId"])["txHash"] == str(tx.id)
    assert twin.devnet.ledger.balance(DEFAULT_PAY_TO)["lovelace"] == 4_000_000


def test_pending_until_a_block_confirms(devnet_factory, twin_factory) -> None:
    """With a long block time, hash and CBOR proofs get 402 pending until produce_block, then 200."""
    key = make_key("pending")
    net = devnet_factory(block_time_s=3600, fund={str(address_of(key)): 100_000_000})
    handle = twin_factory(on=net)
    from tests.fixtures.twin import Payer

    payer = Payer(key, net.ogmios_url)
    with handle.client() as c:
        detail = _invoice(c)
        tx = payer.pay(detail)
        r = _retry(c, detail, str(tx.id))
        assert r.status_code == 402 and r.json()["detail"]["status"] == "pending"
        assert handle.status(detail["invoiceId"])["status"] == "submitted"
        assert _retry(c, detail, str(tx.id)).json()["detail"]["status"] == "pending"
        net.produce_block()
        assert handle.status(detail["invoiceId"])["status"] == "confirmed"
        assert _retry(c, detail, str(tx.id)).status_code == 200
        assert handle.status(detail["invoiceId"])["status"] == "consumed"

        second = _invoice(c, body={"message": "again", "session_id": "pay-2"})
        tx2 = payer.pay(second, submit=False)
        r = _retry(c, second, tx2.to_cbor_hex(), body={"message": "again", "session_id": "pay-2"})
        assert r.status_code == 402 and r.json()["detail"]["status"] == "pending"
        net.produce_block()
        r = _retry(c, second, tx2.to_cbor_hex(), body={"message": "again", "session_id": "pay-2"})
        assert r.status_code == 200


def _refused(handle, c: httpx.Client, detail: dict, proof: str, code: str, **kw: Any) -> None:
    before = handle.status(detail["invoiceId"])
    r = _retry(c, detail, proof, **kw)
    assert r.status_code == 402, r.text
    assert r.json()["detail"].startswith(code), r.json()
    assert handle.status(detail["invoiceId"]) == before


def test_refused_short_output(twin) -> None:
    """A tx one lovelace short of payTo's amount is refused; the invoice stays pending."""
    payer = twin.payer("short")
    with twin.client() as c:
        detail = _invoice(c)
        tx = payer.pay(detail, tweak=lambda outs: [(a, n - 1, s) for a, n, s in outs])
        _refused(twin, c, detail, str(tx.id), "short_output")
        assert twin.status(detail["invoiceId"])["status"] == "pending"


def test_refused_missing_split(twin) -> None:
    """A partner invoice paid to payTo only (no partner output) is refused."""
    payer = twin.payer("nosplit")
    headers = {"X-Partner": "acme"}
    with twin.client() as c:
        detail = _invoice(c, headers=headers)
        tx = payer.pay(detail, tweak=lambda outs: outs[:1])
        _refused(twin, c, detail, str(tx.id), "missing_output", headers=headers)


def test_refused_expired(twin) -> None:
    """A payment made after the invoice's timeout (twin clock moved, no sleeping) is refused."""
    payer = twin.payer("expired")
    with twin.client() as c:
        detail = _invoice(c)
        tx = payer.pay(detail)
        twin.clock.advance(detail["timeout"] + 1)
        assert twin.status(detail["invoiceId"])["status"] == "expired"
        _refused(twin, c, detail, str(tx.id), "invoice_expired")


def test_refused_replayed_invoice(twin) -> None:
    """Retrying a consumed invoice with its own tx is refused."""
    payer = twin.payer("replay-inv")
    with twin.client() as c:
        detail = _invoice(c)
        tx = payer.pay(detail)
        assert _retry(c, detail, str(tx.id)).status_code == 200
        _refused(twin, c, detail, str(tx.id), "invoice_consumed")


def test_refused_replayed_transaction(twin) -> None:
    """A tx that paid one invoice is refused for a second invoice of the same price."""
    payer = twin.payer("replay-tx")
    with twin.client() as c:
        first = _invoice(c)
        tx = payer.pay(first)
        assert _retry(c, first, str(tx.id)).status_code == 200
        second = _invoice(c)
        _refused(twin, c, second, str(tx.id), "transaction_already_used")


def test_refused_wrong_network(twin) -> None:
    """Signed CBOR paying mainnet addresses is refused as wrong_network and never submitted."""
    from pycardano import Address, Network

    payer = twin.payer("mainnet")
    before = twin.devnet.ledger.balance(str(payer.address))
    with twin.client() as c:
        detail = _invoice(c)
        outs = [(Address(Address.from_primitive(a).payment_part, network=Network.MAINNET), n, s)
                for a, n, s in required_outputs(detail)]
        tx = payer.build(outs, invoice_id=detail["invoiceId"])
        _refused(twin, c, detail, tx.to_cbor_hex(), "wrong_network")
    assert twin.devnet.ledger.balance(str(payer.address)) == before


def test_refused_garbage_proofs(twin) -> None:
    """Garbage in X-Payment (not hex, short hex, undecodable CBOR, unknown hash) is refused."""
    with twin.client() as c:
        detail = _invoice(c)
        for proof, code in [("not-a-proof", "invalid_payment_proof"), ("abcd", "invalid_payment_proof"),
                            ("84" + "ff" * 100, "invalid_payment_proof"), ("00" * 32, "payment_not_found")]:
            _refused(twin, c, detail, proof, code)
        r = c.post("/chat", json=CHAT, headers={"X-Invoice-Id": "inv_other_server", "X-Payment": "00" * 32})
        assert r.status_code == 402 and r.json()["detail"].startswith("unknown_invoice")
