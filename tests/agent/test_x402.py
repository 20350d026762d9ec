"""Invoice parsing: the canonical 402 body, every variant, split modes and each malformed case."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import InvoiceError, ServerFlowError
from agent.x402 import (
    MAX_SPLIT_OUTPUTS,
    Invoice,
    PaymentPending,
    PaymentStatusError,
    parse_402,
    parse_invoice,
    proof_headers,
)
from wallets.types import RequiredOutput

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
TOKEN = "279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f.534e454b"


@lru_cache(maxsize=None)
def addr(i: int, *, mainnet: bool = False) -> str:
    """A fresh, valid bech32 enterprise address (testnet unless ``mainnet``), cached per index."""
    from pycardano import Address, Network, PaymentSigningKey

    vkey = PaymentSigningKey.generate().to_verification_key()
    return str(Address(vkey.hash(), network=Network.MAINNET if mainnet else Network.TESTNET))


def canonical(**overrides) -> dict:
    detail = {
        "version": "0.1",
        "invoiceId": "inv_7f3c",
        "chain": "cardano-devnet",
        "asset": "ADA",
        "amountUnits": "10000000",
        "decimals": 6,
        "payTo": addr(0),
        "timeout": 300,
        "extra": {
            "lovelace": True, "babel": False, "partner": "acme", "batchTarget": 100,
            "outputs": [{"address": addr(1), "amountUnits": "2000000", "asset": "ADA", "role": "partner"}],
            "splitMode": "additional",
        },
    }
    detail.update(overrides)
    return {"detail": detail}


def test_canonical_invoice_is_normalised():
    """The guide's canonical body becomes an Invoice with payTo first and the split on top."""
    inv = parse_402(canonical(), now=NOW)
    assert isinstance(inv, Invoice)
    assert (inv.invoice_id, inv.version, inv.chain, inv.network.name) == ("inv_7f3c", "0.1", "cardano-devnet", "devnet")
    assert (inv.asset, inv.amount_units, inv.decimals, inv.pay_to) == ("lovelace", 10_000_000, 6, addr(0))
    assert inv.outputs == (
        RequiredOutput(addr(0), 10_000_000, "lovelace", "payTo"),
        RequiredOutput(addr(1), 2_000_000, "lovelace", "partner"),
    )
    assert inv.issued_at == NOW and inv.expires_at == NOW + timedelta(seconds=300)
    assert (inv.partner, inv.batch_target, inv.babel, inv.split_mode) == ("acme", 100, False, "additional")
    assert inv.total_by_asset() == {"lovelace": 12_000_000}
    assert inv.payees == frozenset({addr(0), addr(1)})
    assert inv.metadata() == {674: {"msg": ["x402", "inv_7f3c"]}}
    assert inv.raw == canonical()
    assert inv.seconds_left(NOW + timedelta(seconds=100)) == 200 and not inv.is_expired(NOW)


def test_fields_at_top_level_are_accepted():
    """A body with the invoice fields at the top level parses like the canonical one."""
    assert parse_402(canonical()["detail"], now=NOW).outputs == parse_402(canonical(), now=NOW).outputs


def test_amount_and_currency_aliases():
    """`amount`/`currency` stand for `amountUnits`/`asset`."""
    body = canonical()
    d = body["detail"]
    d["amount"], d["currency"] = d.pop("amountUnits"), d.pop("asset")
    inv = parse_402(body, now=NOW)
    assert (inv.amount_units, inv.asset) == (10_000_000, "lovelace")


def test_expires_at_instead_of_timeout():
    """`expiresAt` (ISO-8601, Z or offset) sets the expiry instead of `timeout`."""
    body = canonical()
    del body["detail"]["timeout"]
    body["detail"]["expiresAt"] = "2026-11-29T12:10:00Z"
    assert parse_402(body, now=NOW).expires_at == NOW + timedelta(minutes=10)
    body["detail"]["expiresAt"] = "2026-11-29T13:05:00+01:00"
    assert parse_402(body, now=NOW).expires_at == NOW + timedelta(minutes=5)


def test_both_timeout_and_expires_at_take_the_earlier():
    """Given both, the earlier expiry wins so the TTL never outlives either."""
    inv = parse_402(canonical(timeout=600, expiresAt="2026-11-29T12:02:00Z"), now=NOW)
    assert inv.expires_at == NOW + timedelta(minutes=2)


def test_extra_split_variant():
    """`extra.split` entries `{to, amount, role?, currency?}` become required outputs."""
    body = canonical()
    body["detail"]["extra"] = {"split": [{"to": addr(2), "amount": "1500000", "role": "partner"},
                                         {"to": addr(3), "amount": "7", "currency": TOKEN.upper()}]}
    inv = parse_402(body, now=NOW)
    assert inv.outputs[1:] == (RequiredOutput(addr(2), 1_500_000, "lovelace", "partner"),
                               RequiredOutput(addr(3), 7, TOKEN, None))
    assert inv.total_by_asset() == {"lovelace": 11_500_000, TOKEN: 7}


def test_top_level_splits_variant():
    """Top-level `splits` work too, each split's asset defaulting to the invoice's."""
    body = canonical()["detail"]
    body["extra"] = {}
    body["asset"], body["amountUnits"] = TOKEN, "1000"
    body["splits"] = [{"to": addr(2), "amount": 250}]
    inv = parse_402(body, now=NOW)
    assert inv.outputs[1] == RequiredOutput(addr(2), 250, TOKEN, None)
    assert inv.decimals == 6  # as given; tokens default to 0 only when absent


def test_inclusive_split_is_carved_out_of_the_amount():
    """In inclusive mode payTo receives amountUnits minus the splits; the total stays amountUnits."""
    body = canonical()
    body["detail"]["extra"]["splitMode"] = "inclusive"
    inv = parse_402(body, now=NOW)
    assert inv.outputs[0].amount == 8_000_000
    assert inv.total_by_asset() == {"lovelace": 10_000_000}


@pytest.mark.parametrize("split", ["10000000", "12000000"])
def test_inclusive_split_leaving_nothing_for_pay_to_is_refused(split):
    """Inclusive splits that use up the whole amount (or more) are refused."""
    body = canonical()
    body["detail"]["extra"].update(splitMode="inclusive", outputs=[{"address": addr(1), "amountUnits": split}])
    with pytest.raises(InvoiceError, match="leave .* for payTo"):
        parse_402(body, now=NOW)


@pytest.mark.parametrize("status", ["pending", "submitted"])
def test_pending_status_means_wait_not_pay(status):
    """`detail.status` pending/submitted yields PaymentPending, never an invoice."""
    result = parse_402({"detail": {"status": status, "invoiceId": "inv_1"}}, now=NOW)
    assert result == PaymentPending(invoice_id="inv_1", status=status)
    with pytest.raises(InvoiceError, match="not a new invoice"):
        parse_invoice({"detail": {"status": status}}, now=NOW)


def test_payment_flow_error_is_a_server_error():
    """`detail.error = payment_flow_error` raises ServerFlowError (a server fault, not a price)."""
    with pytest.raises(ServerFlowError, match="could not issue"):
        parse_402({"detail": {"error": "payment_flow_error", "message": "db down"}}, now=NOW)


def test_final_status_without_invoice_is_typed():
    """A 402 reporting `failed` with no invoice raises PaymentStatusError carrying the status."""
    with pytest.raises(PaymentStatusError) as exc:
        parse_402({"detail": {"status": "failed", "invoiceId": "inv_9"}}, now=NOW)
    assert (exc.value.status, exc.value.invoice_id) == ("failed", "inv_9")


def test_json_integer_amount_is_accepted_and_assets_are_normalised():
    """A JSON integer amount is exact and accepted; token ids are lower-cased, policy+name split."""
    inv = parse_402(canonical(amountUnits=5_000_000, asset=TOKEN.replace(".", "").upper(), extra={}), now=NOW)
    assert (inv.amount_units, inv.asset, inv.outputs[0].asset) == (5_000_000, TOKEN, TOKEN)


def test_pay_to_is_canonicalised():
    """An upper-case bech32 payTo is accepted and stored in canonical lower case."""
    assert parse_402(canonical(payTo=addr(0).upper()), now=NOW).pay_to == addr(0)


MALFORMED = [
    ("missing invoiceId", {"invoiceId": None}, "has no invoiceId"),
    ("invoiceId with spaces", {"invoiceId": "inv 1"}, "invoiceId must be"),
    ("invoiceId too long", {"invoiceId": "i" * 65}, "invoiceId must be"),
    ("missing payTo", {"payTo": None}, "has no payTo"),
    ("fractional string", {"amountUnits": "1.5"}, "non-negative integer string, got '1.5'"),
    ("float", {"amountUnits": 1.5}, "non-negative integer string, got 1.5"),
    ("integral float", {"amountUnits": 1.0}, "non-negative integer string"),
    ("negative int", {"amountUnits": -1}, "non-negative integer string, got -1"),
    ("negative string", {"amountUnits": "-1"}, "non-negative integer string"),
    ("exponent", {"amountUnits": "1e6"}, "non-negative integer string, got '1e6'"),
    ("padded", {"amountUnits": " 10"}, "non-negative integer string"),
    ("bool", {"amountUnits": True}, "non-negative integer string"),
    ("missing amount", {"amountUnits": None}, "amountUnits is missing"),
    ("zero", {"amountUnits": "0", "extra": {}}, "nothing to pay"),
    ("unknown chain", {"chain": "cardano-moon"}, "unknown chain 'cardano-moon'"),
    ("unknown asset", {"asset": "DOGE"}, "unknown asset 'DOGE'"),
    ("malformed asset", {"asset": "abc.12"}, "unknown asset"),
    ("odd asset name", {"asset": TOKEN + "5"}, "unknown asset"),
    ("missing asset", {"asset": None}, "asset is missing"),
    ("not bech32", {"payTo": "DdzFFzCqrhsw3prhfMFDNFowbzUku3QmrMwarfjUbWXRisodn97R436"}, "not a bech32 payment address"),
    ("bad checksum", {"payTo": "addr_test1vqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"}, "not a valid bech32"),
    ("stake address", {"payTo": "stake_test1uryrdgw5ne5rms9ep5y95pzml8qm4s3aprcm6zmlhh0qtaqz0z5jr"}, "not a bech32 payment"),
    ("no expiry", {"timeout": None}, "neither timeout nor expiresAt"),
    ("bad timeout", {"timeout": 1.5}, "timeout must be whole seconds"),
    ("huge timeout", {"timeout": 10**12}, "is longer than"),
    ("bad expiresAt", {"timeout": None, "expiresAt": "tomorrow"}, "not ISO-8601"),
    ("expired timeout", {"timeout": 0}, "expired at"),
    ("expired expiresAt", {"timeout": None, "expiresAt": "2026-11-29T11:59:59Z"}, "expired at"),
    ("bad split mode", {"extra": {"splitMode": "both"}}, "splitMode must be"),
    ("babel not bool", {"extra": {"babel": "yes"}}, "babel must be"),
    ("batch target zero", {"extra": {"batchTarget": 0}}, "batchTarget must be"),
    ("extra not object", {"extra": [1]}, "extra is not an object"),
    ("split bad address", {"extra": {"outputs": [{"address": "x", "amountUnits": "1"}]}}, r"outputs\[0\].address"),
    ("split without address", {"extra": {"split": [{"to": None, "amount": "1"}]}}, r"split\[0\] has no address"),
    ("splits not list", {"extra": {"outputs": {"a": 1}}}, "is not a list"),
]


@pytest.mark.parametrize("case,overrides,message", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_invoices_are_refused_precisely(case, overrides, message):
    """Each malformed invoice raises InvoiceError with a message naming the problem."""
    body = canonical(**overrides)
    body["detail"] = {k: v for k, v in body["detail"].items() if v is not None}
    with pytest.raises(InvoiceError, match=message) as exc:
        parse_402(body, now=NOW)
    assert not isinstance(exc.value, ServerFlowError)


def test_wrong_network_addresses_are_refused():
    """A mainnet payTo on a devnet invoice, or a testnet one on mainnet, is refused."""
    with pytest.raises(InvoiceError, match="wrong network for cardano-devnet"):
        parse_402(canonical(payTo=addr(0, mainnet=True)), now=NOW)
    with pytest.raises(InvoiceError, match="wrong network for cardano-mainnet"):
        parse_402(canonical(chain="cardano-mainnet", extra={}), now=NOW)
    body = canonical()
    body["detail"]["extra"]["outputs"][0]["address"] = addr(1, mainnet=True)
    with pytest.raises(InvoiceError, match=r"outputs\[0\].address is an address of the wrong network"):
        parse_402(body, now=NOW)


def test_split_to_fifty_addresses_is_refused():
    """More than MAX_SPLIT_OUTPUTS split outputs are refused before any address is checked."""
    body = canonical()
    body["detail"]["extra"]["outputs"] = [{"address": addr(1), "amountUnits": "1000000"}] * 50
    with pytest.raises(InvoiceError, match=f"50 split outputs; at most {MAX_SPLIT_OUTPUTS}"):
        parse_402(body, now=NOW)


def test_ambiguous_and_foreign_inclusive_splits_are_refused():
    """Two split lists at once, or an inclusive split in another asset, are refused."""
    body = canonical()
    body["detail"]["extra"]["split"] = [{"to": addr(2), "amount": "1"}]
    with pytest.raises(InvoiceError, match="ambiguous split outputs"):
        parse_402(body, now=NOW)
    body = canonical()
    body["detail"]["extra"].update(splitMode="inclusive", outputs=[{"address": addr(1), "amountUnits": "5", "asset": TOKEN}])
    with pytest.raises(InvoiceError, match="cannot be carved"):
        parse_402(body, now=NOW)


@pytest.mark.parametrize("body", [None, [], "402", {"detail": "wallet_address_required_for_prepaid_batches"}])
def test_bodies_without_an_invoice_are_refused(body):
    """Non-objects and string details are not invoices."""
    with pytest.raises(InvoiceError):
        parse_402(body, now=NOW)


def test_proof_headers():
    """Proof headers carry the invoice id, the hash or CBOR hex, and the partner headers when given."""
    tx = "AB" * 32
    assert proof_headers("inv_1", tx) == {"X-Invoice-Id": "inv_1", "X-Payment": "ab" * 32}
    headers = proof_headers("inv_1", b"\x84\x01", partner="acme", wallet_address=addr(0))
    assert headers == {"X-Invoice-Id": "inv_1", "X-Payment": "8401", "X-Partner": "acme", "X-Wallet-Address": addr(0)}
    for bad in ("xyz", "abc", ""):
        with pytest.raises(InvoiceError):
            proof_headers("inv_1", bad)
    with pytest.raises(InvoiceError):
        proof_headers("inv\r\n1", tx)


def test_import_stays_light():
    """Importing agent.x402 (and parsing nothing) does not import pycardano."""
    code = "import sys, agent.x402, agent.policy, agent.config; print('pycardano' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@settings(max_examples=60, deadline=None)
@given(
    amount=st.integers(min_value=1, max_value=45_000_000_000_000_000),
    splits=st.lists(st.integers(min_value=1, max_value=10**12), max_size=MAX_SPLIT_OUTPUTS),
    inclusive=st.booleans(),
)
def test_split_arithmetic(amount, splits, inclusive):
    """Σ outputs = amountUnits (inclusive) or amountUnits + Σ splits (additional), payTo first."""
    body = canonical(amountUnits=str(amount), extra={
        "splitMode": "inclusive" if inclusive else "additional",
        "outputs": [{"address": addr(1 + i % 3), "amountUnits": str(s)} for i, s in enumerate(splits)],
    })
    if inclusive and sum(splits) >= amount:
        with pytest.raises(InvoiceError):
            parse_402(body, now=NOW)
        return
    inv = parse_402(body, now=NOW)
    total = sum(o.amount for o in inv.outputs)
    assert total == (amount if inclusive else amount + sum(splits))
    assert inv.outputs[0].address == addr(0) and inv.outputs[0].amount > 0
    assert [o.amount for o in inv.outputs[1:]] == splits
