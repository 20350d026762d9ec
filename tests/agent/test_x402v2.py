"""The x402 v2 wire format and the choice among accepts (pure)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from agent import x402v2 as v2
from wallets.networks import NETWORKS

PREPROD = NETWORKS["preprod"]
DEVNET = NETWORKS["devnet"]
PAY_TO = "addr_test1vpzgxa4t388ryka85n6uxms0zqsgvg9e5jr4tqelj5gxljqlzxmhq"
TOKEN = "e675b46e4d2242c991a8932a99db3044e80515ae14b4c4ccf6b3f4c9.0014df10745553444d"
EXTRA = {"assetTransferMethod": "default", "confirmationPolicy": {"l1Confirmations": 1}, "areFeesSponsored": False}
RESOURCE = {"url": "http://127.0.0.1:8402/report", "description": "Daily report", "mimeType": "application/json"}
PID_SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"required": {"type": "boolean"},
                             "id": {"type": "string", "minLength": 16, "maxLength": 128}},
              "required": ["required"]}
# The worked example of scheme_exact_cardano (reference section 8): a signed 1.5 ADA payment on preprod.
EXAMPLE_TX_B64 = (
    "hKQAgYJYIDT7NGygRBKcHBT4e9Kxm7xnxWBh1NPJsV8ubaDDt3lLAAGCglgdYESDdquJzjJbp6T1w24PECCGILmkh1WDP5UQb8gaABbjYIJY"
    "HWAbbzOqhvhKlBf7oaseO/zH/GVzfftRVBgCXyinGgB/K/MCGgAChy0DGge+KVyhAIGCWCCTGP+SIOex0QA+mO00k8u1xUK4tj7rdtGxfahF"
    "10UqOVhAz29XmOC4vgDksySofwmezpC3mKyvun9h9GAHkuLD0JxkMbdQrYPrMi0Ydzoe38/27CeuUTyBzfoOiSkjqkr1BPX2"
)
EXAMPLE_NONCE = "34fb346ca044129c1c14f87bd2b19bbc67c56061d4d3c9b15f2e6da0c3b7794b#0"


def entry(**over: object) -> dict:
    e = {"scheme": "exact", "network": "cardano:preprod", "amount": "1500000", "asset": "lovelace",
         "payTo": PAY_TO, "maxTimeoutSeconds": 600, "extra": dict(EXTRA)}
    e.update(over)
    return {k: v for k, v in e.items() if v is not None}


def header(accepts: list, **over: object) -> dict[str, str]:
    pr = {"x402Version": 2, "error": "Payment required", "resource": RESOURCE, "accepts": accepts,
          "extensions": {"payment-identifier": {"info": {"required": False}, "schema": PID_SCHEMA}}}
    pr.update(over)
    return {"PAYMENT-REQUIRED": v2.encode_b64_json(pr)}


def test_payload_matches_the_spec_worked_example() -> None:
    """The PAYMENT-SIGNATURE payload is the spec's example: accepted verbatim, base64 CBOR, nonce, extension echoed."""
    pr = v2.parse_payment_required(header([entry()]), b"{}")
    req = v2.parse_requirement(pr.accepts[0], 0, network=PREPROD)
    payload = v2.build_payment_payload(pr, req, transaction_cbor=base64.b64decode(EXAMPLE_TX_B64),
                                       nonce=EXAMPLE_NONCE, payment_id="pay_6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a3b")
    assert payload == {
        "x402Version": 2, "resource": RESOURCE, "accepted": entry(),
        "payload": {"transaction": EXAMPLE_TX_B64, "nonce": EXAMPLE_NONCE},
        "extensions": {"payment-identifier": {"schema": PID_SCHEMA, "info": {
            "required": False, "id": "pay_6f1c2a9e4b7d4e0f8a3b5c7d9e1f2a3b"}}},
    }
    sent = v2.payment_headers(payload)["PAYMENT-SIGNATURE"]
    assert json.loads(base64.b64decode(sent)) == payload
    assert base64.b64encode(base64.b64decode(sent)).decode() == sent  # canonical padded base64


def test_sdk_decodes_our_header() -> None:
    """The official SDK reads our PAYMENT-SIGNATURE and agrees on the accepted requirement."""
    from x402.http.utils import decode_payment_signature_header

    pr = v2.parse_payment_required(header([entry()]), b"{}")
    req = v2.parse_requirement(pr.accepts[0], 0, network=PREPROD)
    payload = v2.build_payment_payload(pr, req, transaction_cbor=b"\x84", nonce=EXAMPLE_NONCE)
    decoded = decode_payment_signature_header(v2.payment_headers(payload)["PAYMENT-SIGNATURE"])
    assert decoded.accepted.pay_to == PAY_TO and decoded.accepted.amount == "1500000"
    assert decoded.payload["nonce"] == EXAMPLE_NONCE


def test_detect_v2_header_and_v1_body() -> None:
    """A PAYMENT-REQUIRED header means v2; a body with x402Version 1 means v1; a T body is neither."""
    assert v2.detect(header([entry()]), b"{}") == 2
    assert v2.detect({}, json.dumps({"x402Version": 1, "accepts": []}).encode()) == 1
    assert v2.detect({}, json.dumps({"detail": {"invoiceId": "x", "payTo": PAY_TO}}).encode()) is None
    assert v2.detect({"payment-required": "e30="}, b"") == 2  # header names are case-insensitive


def test_v1_body_is_read_with_its_names() -> None:
    """A v1 entry uses maxAmountRequired and dash network names; its retry goes in X-PAYMENT."""
    body = {"x402Version": 1, "error": "", "accepts": [
        {"scheme": "exact", "network": "cardano-preprod", "maxAmountRequired": "2000000", "asset": "lovelace",
         "payTo": PAY_TO, "maxTimeoutSeconds": 300, "resource": "http://x/y"}]}
    pr = v2.parse_payment_required({}, json.dumps(body).encode())
    req = v2.parse_requirement(pr.accepts[0], 0, network=PREPROD, version=1)
    assert req.amount == 2_000_000 and req.network_id == "cardano:preprod"
    payload = v2.build_payment_payload(pr, req, transaction_cbor=b"\x84", nonce=EXAMPLE_NONCE)
    assert set(v2.payment_headers(payload)) == {"X-PAYMENT"} and payload["scheme"] == "exact"


@pytest.mark.parametrize("network", ["cardano:preprod", "cip34:0-1"])
def test_network_and_cip34_alias_accepted(network: str) -> None:
    """The canonical id and its CIP-34 alias name the same network."""
    assert v2.parse_requirement(entry(network=network), 0, network=PREPROD).network_id == "cardano:preprod"


@pytest.mark.parametrize("over, code, words", [
    ({"extra": {"assetTransferMethod": "masumi"}}, "unsupported_transfer_method", "stranded"),
    ({"extra": {"assetTransferMethod": "script"}}, "unsupported_transfer_method", "stranded"),
    ({"extra": {"assetTransferMethod": "teleport"}}, "unsupported_transfer_method", "teleport"),
    ({"scheme": "upto"}, "unsupported_scheme", "upto"),
    ({"network": "cardano:mainnet"}, "wrong_network", "cardano:mainnet"),
    ({"network": "CARDANO:PREPROD"}, "wrong_network", "not a Cardano network"),
    ({"network": "eip155:8453"}, "wrong_network", "eip155"),
    ({"amount": 1500000}, "bad_amount", "canonical"),
    ({"amount": "01500000"}, "bad_amount", "canonical"),
    ({"amount": "1.5"}, "bad_amount", "canonical"),
    ({"amount": "-1"}, "bad_amount", "canonical"),
    ({"amount": "0"}, "bad_amount", "canonical"),
    ({"asset": "ADA"}, "bad_asset", "ADA"),
    ({"asset": TOKEN.upper()}, "bad_asset", "policy"),
    ({"payTo": "addr1vpzgxa4t388ryka85n6uxms0zqsgvg9e5jr4tqelj5gxljqlzxmhq"}, "bad_pay_to", "another network"),
    ({"payTo": "stake_test1uq"}, "bad_pay_to", "bech32"),
    ({"payTo": "addr_test1vqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"}, "bad_pay_to", "not a valid bech32"),
    ({"maxTimeoutSeconds": 10}, "timeout_too_short", "too short"),
    ({"maxTimeoutSeconds": "600"}, "bad_timeout", "positive integer"),
    ({"extra": {"confirmationPolicy": {"l1Confirmations": 50}}}, "bad_extra", "confirmationPolicy"),
    ({"extra": {"confirmationPolicy": None}}, "bad_extra", "confirmationPolicy"),
    ({"extra": {"areFeesSponsored": True}}, "bad_extra", "areFeesSponsored"),
])
def test_each_refusal_has_a_code_and_a_clear_message(over: dict, code: str, words: str) -> None:
    """Every entry the agent cannot pay safely is rejected with a stable code and a message naming why."""
    with pytest.raises(v2.Rejection) as info:
        v2.parse_requirement(entry(**over), 0, network=PREPROD)
    assert info.value.code == code
    assert words in info.value.message


@pytest.mark.parametrize("value", ["not base64!!", base64.b64encode(b"not json").decode(),
                                   base64.b64encode(b"\xff\xfe").decode(), v2.encode_b64_json([1, 2])])
def test_unreadable_payment_required_is_one_clear_error(value: str) -> None:
    """A PAYMENT-REQUIRED that is not base64 JSON of an object is refused with PaymentRequiredError."""
    with pytest.raises(v2.PaymentRequiredError):
        v2.parse_payment_required({"PAYMENT-REQUIRED": value}, b"")


def test_hostile_payment_required_costs_bounded_time() -> None:
    """Huge, deeply nested, 100-entry and duplicate-laden headers are refused or trimmed quickly."""
    started = time.process_time()
    with pytest.raises(v2.PaymentRequiredError, match="over the"):
        v2.parse_payment_required({"PAYMENT-REQUIRED": "A" * 10_000_000}, b"")
    deep = base64.b64encode(("[" * 50_000 + "]" * 50_000).encode()).decode()[: v2.MAX_HEADER_CHARS]
    with pytest.raises(v2.PaymentRequiredError):
        v2.parse_payment_required({"PAYMENT-REQUIRED": deep}, b"")
    nested = v2.encode_b64_json({"x402Version": 2, "accepts": [entry()], "extensions": {"a": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}})
    with pytest.raises(v2.PaymentRequiredError, match="deeper"):
        v2.parse_payment_required({"PAYMENT-REQUIRED": nested}, b"")
    many = header([entry(amount=str(1_000_000 + i)) for i in range(100)])
    pr = v2.parse_payment_required(many, b"")
    assert len(pr.accepts) == v2.MAX_ACCEPTS and pr.skipped == 100 - v2.MAX_ACCEPTS
    dupes = v2.parse_payment_required(header([entry()] * 100), b"")
    ok, rejected = v2.candidates(dupes, network=PREPROD)
    assert len(ok) == 1 and all(code == "duplicate" for _, code, _ in rejected)
    assert v2.refusal_line(rejected) == "no acceptable x402 payment option: [1-15] repeats entry [0]"
    assert time.process_time() - started < 5  # generous: the point is no blow-up, not speed


def test_refusal_line_names_every_entry() -> None:
    """The refusal is one line naming why each entry was rejected."""
    pr = v2.parse_payment_required(header([entry(extra={"assetTransferMethod": "masumi"}),
                                           entry(network="cardano:mainnet")]), b"")
    ok, rejected = v2.candidates(pr, network=PREPROD)
    line = v2.refusal_line(rejected)
    assert not ok and "\n" not in line
    assert "[0] unsupported assetTransferMethod 'masumi'" in line and "[1] network cardano:mainnet" in line


def test_cheapest_first_prefers_less_ada_then_fewer_tokens() -> None:
    """Entries are tried cheapest first by lovelace leaving the wallet."""
    pr = v2.parse_payment_required(header([entry(amount="3000000"), entry(amount="2000000"),
                                           entry(asset=TOKEN, amount="5")]), b"")
    ok, _ = v2.candidates(pr, network=PREPROD)
    order = v2.cheapest_first(ok, lambda r: r.amount if r.asset == "lovelace" else 1_300_000)
    assert [r.index for r in order] == [2, 1, 0]


def test_settle_answer_may_still_land() -> None:
    """Pending and not-confirmed answers carrying a tx id mean 'may still land'; a definitive rejection does not."""
    def answer(**fields: object) -> v2.SettleAnswer:
        body = {"success": False, "transaction": "ab" * 32, "network": "cardano:preprod", **fields}
        parsed = v2.parse_payment_response({"PAYMENT-RESPONSE": v2.encode_b64_json(body)})
        assert parsed is not None
        return parsed

    assert answer(errorReason="settlement_pending", extra={"status": "pending"}).may_still_land
    assert answer(errorReason="exact_cardano_settlement_not_confirmed").may_still_land
    assert not answer(errorReason="exact_cardano_settlement_definitively_rejected").may_still_land
    assert not answer(errorReason="exact_cardano_settlement_failed", extra={"status": "expired"}).may_still_land
    ok = v2.parse_payment_response({"payment-response": v2.encode_b64_json(
        {"success": True, "transaction": "AB" * 32, "network": "cardano:preprod",
         "extra": {"status": "confirmed", "confirmations": 1}})})
    assert ok is not None and ok.success and ok.transaction == "ab" * 32 and ok.confirmations == 1
    assert v2.parse_payment_response({"PAYMENT-RESPONSE": "garbage"}) is None


def test_invoice_view_feeds_policy_and_ledger() -> None:
    """A requirement becomes an invoice with one payTo output and an expiry inside maxTimeoutSeconds."""
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    req = v2.parse_requirement(entry(network="cardano:devnet"), 0, network=DEVNET)
    inv = v2.as_invoice(req, invoice_id=v2.invoice_id_for(req, request_id="r1"), network=DEVNET, now=now)
    assert inv.outputs[0].address == PAY_TO and inv.total_by_asset() == {"lovelace": 1_500_000}
    assert (inv.expires_at - now).total_seconds() == 600 - v2.TTL_MARGIN_S
    assert inv.invoice_id.startswith("x402v2:")
    assert v2.invoice_id_for(req, request_id="r1") != v2.invoice_id_for(req, request_id="r2")
