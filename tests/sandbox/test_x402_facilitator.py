"""The sandbox's x402 v2 facilitator: every invalidReason, settlement, pending, dedup; its HTTP API."""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Callable

import cbor2
import httpx
import pytest

from sandbox.devnet import DEVNET_TOKEN
from sandbox.facilitator import CardanoExactFacilitator, DevnetPort
from tests.fixtures.devnet import new_key
from wallets.payment import address_bytes

PAY_TO = "addr_test1vqdk7va2smuy49qhlws6k83mlnrlcetn0ha4z4qcqf0j3fcs3dc8d"
FEE = 200_000
FUNDS = 50_000_000
NET = "cardano:devnet"


class World:
    def __init__(self, devnet: Any) -> None:
        self.devnet = devnet
        self.key = new_key()
        devnet.fund(self.key.address, FUNDS, {DEVNET_TOKEN: 100})
        utxos = devnet.node.utxos_at([self.key.address])
        self.utxo_ref, self.utxo = utxos[0]
        self.fac = CardanoExactFacilitator(DevnetPort(devnet.node), network=NET)

    def slot(self) -> int:
        return self.fac.port.current_slot()

    def tx(self, *, pay: int = 1_500_000, to: str = PAY_TO, fee: int = FEE, ttl: int | None = 0,
           inputs: list | None = None, body_extra: dict | None = None, sign: Callable[[bytes], Any] | None = None,
           is_valid: bool = True, token: int = 0, change_delta: int = 0, witnesses: dict | None = None) -> bytes:
        ins = inputs if inputs is not None else [[bytes.fromhex(self.utxo_ref.tx_id), self.utxo_ref.index]]
        have = self.utxo.lovelace
        pay_value: Any = pay if not token else [pay, {bytes.fromhex(DEVNET_TOKEN.split(".")[0]): {
            bytes.fromhex(DEVNET_TOKEN.split(".")[1]): token}}]
        left = self.utxo.assets.get(DEVNET_TOKEN, 0) - token
        change: Any = have - pay - fee + change_delta
        if left:
            change = [change, {bytes.fromhex(DEVNET_TOKEN.split(".")[0]): {bytes.fromhex(DEVNET_TOKEN.split(".")[1]): left}}]
        body: dict = {0: ins, 1: [[address_bytes(to), pay_value], [address_bytes(self.key.address), change]], 2: fee}
        if ttl is not None:
            body[3] = ttl or self.slot() + 300
        body.update(body_extra or {})
        body_bytes = cbor2.dumps(body)
        digest = hashlib.blake2b(body_bytes, digest_size=32).digest()
        vkey = self.key.verification_key.payload
        sig = self.key.signing_key.sign(digest) if sign is None else sign(digest)
        wit = {0: [[vkey, sig]]} if witnesses is None else witnesses
        return _assemble(body_bytes, wit, is_valid)

    def payload(self, tx: bytes, *, nonce: str | None = None, **over: Any) -> dict:
        req = self.req()
        p = {"x402Version": 2, "accepted": req,
             "payload": {"transaction": base64.b64encode(tx).decode(), "nonce": nonce or str(self.utxo_ref)}}
        p.update(over)
        return p

    @staticmethod
    def req(**over: Any) -> dict:
        r = {"scheme": "exact", "network": NET, "amount": "1500000", "asset": "lovelace", "payTo": PAY_TO,
             "maxTimeoutSeconds": 600, "extra": {"assetTransferMethod": "default",
                                                 "confirmationPolicy": {"l1Confirmations": 0}}}
        r.update(over)
        return r

    def reason(self, payload: dict, req: dict | None = None) -> str | None:
        return self.fac.verify_dict(payload, req or self.req()).get("invalidReason")


def _assemble(body_bytes: bytes, witnesses: dict, is_valid: bool) -> bytes:
    return b"\x84" + body_bytes + cbor2.dumps(witnesses) + cbor2.dumps(is_valid) + b"\xf6"


@pytest.fixture
def world(devnet_factory: Callable[..., Any]) -> World:
    return World(devnet_factory())


def test_valid_payment_verifies_and_settles_once(world: World) -> None:
    """A well-formed payment verifies; settle submits it once and reports the tx id; a repeat never rebroadcasts."""
    tx = world.tx()
    payload = world.payload(tx)
    assert world.fac.verify_dict(payload, world.req()) == {"isValid": True, "payer": world.key.address}
    before = world.devnet.ledger.balance(PAY_TO).get("lovelace", 0)
    answer = world.fac.settle_dict(payload, world.req())
    assert answer["success"] is True and answer["payer"] == world.key.address
    assert answer["extra"]["status"] == "confirmed" and len(answer["transaction"]) == 64
    assert world.devnet.ledger.balance(PAY_TO)["lovelace"] == before + 1_500_000
    again = world.fac.settle_dict(payload, world.req())
    assert again["success"] is True and again["transaction"] == answer["transaction"]
    assert world.fac.submissions == 1


def test_settlement_pending_below_depth_then_success(world: World) -> None:
    """With l1Confirmations 1 the first settle is settlement_pending; after a newer block the same payload succeeds."""
    req = world.req(extra={"confirmationPolicy": {"l1Confirmations": 1}})
    payload = world.payload(world.tx())
    first = world.fac.settle_dict(payload, req)
    assert first["success"] is False and first["errorReason"] == "settlement_pending"
    assert first["extra"]["status"] == "pending" and first["extra"]["transactionId"] == first["transaction"]
    world.devnet.node.produce_block(force=True)
    second = world.fac.settle_dict(payload, req)
    assert second["success"] is True and second["extra"]["confirmations"] == 1
    assert world.fac.submissions == 1


def _reasons(world: World) -> dict[str, tuple[dict, dict | None]]:
    slot = world.slot()
    tx = world.tx()
    other = new_key()
    bad = world.payload(tx)
    return {
        "invalid_exact_cardano_payload_unsupported_version": (world.payload(tx, x402Version=1), None),
        "unsupported_scheme": (world.payload(tx), world.req(scheme="upto")),
        "network_mismatch": (world.payload(tx), world.req(network="cardano:preprod")),
        "invalid_exact_cardano_requirements": (world.payload(tx), world.req(amount="01500000")),
        "invalid_exact_cardano_payload": ({**bad, "payload": {"transaction": bad["payload"]["transaction"]}}, None),
        "invalid_exact_cardano_payload_transaction_decode_failed":
            (world.payload(tx, payload={"transaction": base64.b64encode(tx).decode().rstrip("=") + "A",
                                        "nonce": str(world.utxo_ref)}), None),
        "invalid_exact_cardano_requirements_policy":
            (world.payload(tx), world.req(extra={"confirmationPolicy": {"l1Confirmations": True}})),
        "invalid_exact_cardano_payload_nonce_invalid": (world.payload(tx, nonce="xyz#0"), None),
        "invalid_exact_cardano_payload_network_id_mismatch": (world.payload(world.tx(body_extra={15: 1})), None),
        "invalid_exact_cardano_payload_unsigned": (world.payload(world.tx(witnesses={})), None),
        "invalid_exact_cardano_payload_invalid_signature":
            (world.payload(world.tx(sign=lambda d: bytes(64))), None),
        "invalid_exact_cardano_payload_phase1_invalid": (world.payload(world.tx(inputs=[
            [bytes.fromhex(world.utxo_ref.tx_id), world.utxo_ref.index]] * 2)), None),
        "invalid_exact_cardano_payload_nonce_not_in_inputs": (world.payload(tx, nonce="ab" * 32 + "#0"), None),
        "invalid_exact_cardano_payload_phase2_invalid": (world.payload(world.tx(is_valid=False)), None),
        "invalid_exact_cardano_payload_ttl_expired": (world.payload(world.tx(ttl=max(1, slot - 1))), None),
        "invalid_exact_cardano_payload_ttl_too_far": (world.payload(world.tx(ttl=slot + 5000)), None),
        "invalid_exact_cardano_payload_not_yet_valid": (world.payload(world.tx(body_extra={8: slot + 100})), None),
        "invalid_exact_cardano_payload_nonce_not_on_chain": (world.payload(world.tx(inputs=[
            [bytes(32), 0]]), nonce="00" * 32 + "#0"), None),
        "invalid_exact_cardano_payload_input_not_available": (world.payload(world.tx(inputs=[
            [bytes.fromhex(world.utxo_ref.tx_id), world.utxo_ref.index], [bytes(32), 1]])), None),
        "invalid_exact_cardano_payload_value_not_conserved": (world.payload(world.tx(change_delta=1)), None),
        "invalid_exact_cardano_payload_fee_below_minimum": (world.payload(world.tx(fee=1000)), None),
        "invalid_exact_cardano_payload_recipient_mismatch": (world.payload(world.tx(to=other.address)), None),
        "invalid_exact_cardano_payload_asset_mismatch":
            (world.payload(tx), world.req(asset=DEVNET_TOKEN, amount="5")),
        "invalid_exact_cardano_payload_amount_insufficient": (world.payload(world.tx(pay=1_000_000)), None),
        "invalid_exact_cardano_payload_min_utxo_insufficient":
            (world.payload(world.tx(pay=100_000)), world.req(amount="100000")),
    }


def test_every_invalid_reason(world: World) -> None:
    """Each rule of the reference gives its exact invalidReason; settle refuses too and nothing moves."""
    before = world.devnet.ledger.balance(world.key.address)
    for expected, (payload, req) in _reasons(world).items():
        assert world.reason(payload, req) == expected, expected
        settled = world.fac.settle_dict(payload, req or world.req())
        assert settled["success"] is False and settled["errorReason"] == expected, expected
    assert world.devnet.ledger.balance(world.key.address) == before
    assert world.fac.submissions == 0


def test_forbidden_body_fields_are_phase1_invalid(world: World) -> None:
    """Withdrawals, certificates, donation in the body are refused (no full phase-1 validator here)."""
    assert world.reason(world.payload(world.tx(body_extra={22: 5}))) == "invalid_exact_cardano_payload_phase1_invalid"


def test_verify_flake_fault(world: World) -> None:
    """Injected flakes answer chain_lookup_failed (retryable), then the real verdict."""
    world.fac.faults.verify_flakes = 1
    payload = world.payload(world.tx())
    assert world.reason(payload) == "exact_cardano_facilitator_chain_lookup_failed"
    assert world.reason(payload) is None


def test_http_api(devnet_factory: Callable[..., Any]) -> None:
    """/supported advertises default only with empty signers; /verify answers 200 with a verdict; 400 when malformed."""
    from sandbox.x402_server import X402Server

    devnet = devnet_factory()
    with X402Server.start(devnet) as server, httpx.Client(base_url=server.url) as http:
        supported = http.get("/facilitator/supported").json()
        assert supported["kinds"][0]["network"] == NET
        assert supported["kinds"][0]["extra"]["assetTransferMethods"] == ["default"]
        assert supported["signers"] == {"cardano:*": []}
        assert http.post("/facilitator/verify", json={"x402Version": 2}).status_code == 400
        answer = http.post("/facilitator/verify", json={"x402Version": 2, "paymentPayload": {"x402Version": 2},
                                                         "paymentRequirements": World.req()})
        assert answer.status_code == 200 and answer.json()["isValid"] is False
        paywall = http.get("/premium")
        assert paywall.status_code == 402 and "payment-required" in paywall.headers
        assert http.get("/free").status_code == 200


def test_sandbox_up_serves_the_v2_server() -> None:
    """`sandbox up --x402-port` adds the v2 server's URL to the ready line; its paid route answers 402."""
    import json
    import signal

    from tests.sandbox.test_tapi_cli import _first_line, _start

    proc = _start("--x402-port", "0")
    try:
        ready = json.loads(_first_line(proc))
        assert ready["x402"].startswith("http://127.0.0.1:")
        r = httpx.get(f"{ready['x402']}/premium", timeout=30)
        assert r.status_code == 402 and "payment-required" in r.headers
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
