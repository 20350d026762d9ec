"""The payment policy: each refusal reason, approval threshold and payee pinning."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from agent.errors import PolicyError
from agent.policy import (
    ASSET_NOT_ALLOWED,
    BABEL,
    EXPIRED,
    OVER_MAX_PER_CALL,
    PAYEE_CHANGED,
    PAYEE_NOT_ALLOWED,
    WRONG_NETWORK,
    Decision,
    PayeeChangedError,
    PaymentPolicy,
    check_invoice,
)
from agent.x402 import parse_invoice
from tests.agent.test_x402 import NOW, TOKEN, addr, canonical
from wallets.networks import get_network

DEVNET = get_network("devnet")


def invoice(**overrides):
    return parse_invoice(canonical(**overrides), now=NOW)


def check(inv, policy=PaymentPolicy(), *, network=DEVNET, host="api.example.com", now=NOW,
          cost=12_200_000, pinned=None) -> Decision:
    return check_invoice(inv, policy, network=network, host=host, now=now, cost_lovelace=cost, pinned=pinned)


def refusal(inv, policy=PaymentPolicy(), **kwargs) -> PolicyError:
    with pytest.raises(PolicyError) as exc:
        check(inv, policy, **kwargs)
    return exc.value


def test_sound_invoice_passes_and_pins_its_payees_on_first_use():
    """A sound invoice is allowed; with no pins yet, its payees are returned to pin."""
    decision = check(invoice())
    assert decision == Decision(approval_required=False, pin=frozenset({addr(0), addr(1)}), cost_lovelace=12_200_000)


def test_wrong_network_is_refused():
    """An invoice whose chain differs from the wallet's network is refused."""
    assert refusal(invoice(), network=get_network("preprod")).reason == WRONG_NETWORK


def test_expired_invoice_is_refused():
    """An invoice checked at or after its expiry is refused."""
    inv = invoice()
    assert refusal(inv, now=inv.expires_at).reason == EXPIRED
    assert check(inv, now=inv.expires_at - timedelta(seconds=1)).approval_required is False


def test_babel_is_refused():
    """An invoice demanding babel fees is refused: fees are paid in ADA only."""
    assert refusal(invoice(extra={"babel": True})).reason == BABEL


def test_asset_not_allowed_is_refused_unless_configured():
    """A token invoice is refused unless the token is an allowed asset."""
    inv = invoice(asset=TOKEN, amountUnits="100", extra={})
    assert refusal(inv).reason == ASSET_NOT_ALLOWED
    assert check(inv, PaymentPolicy(allowed_assets=frozenset({"lovelace", TOKEN})), cost=1_200_000).pin


def test_token_split_in_a_disallowed_asset_is_refused():
    """Every asset of every output must be allowed, not only the invoice's."""
    inv = invoice(extra={"outputs": [{"address": addr(1), "amountUnits": "5", "asset": TOKEN}]})
    assert refusal(inv).reason == ASSET_NOT_ALLOWED


def test_payee_outside_the_host_allowlist_is_refused():
    """With an allowlist for the host, payTo and every split address must be on it."""
    policy = PaymentPolicy(payees={"api.example.com": frozenset({addr(0)})})
    err = refusal(invoice(), policy)
    assert err.reason == PAYEE_NOT_ALLOWED and addr(1) in str(err)
    allowed = PaymentPolicy(payees={"api.example.com": frozenset({addr(0), addr(1)})})
    assert check(invoice(), allowed, host="API.example.com:443").pin == frozenset()  # the allowlist stands in for pins


def test_other_hosts_and_empty_allowlists_are_unrestricted():
    """A host without an allowlist (or with an empty one) is not restricted by it."""
    policy = PaymentPolicy(payees={"other.example.com": frozenset({addr(5)}), "api.example.com": frozenset()})
    assert check(invoice(), policy).approval_required is False


def test_payee_change_is_refused_until_approved():
    """A payee not pinned for the host is refused with reason payee_changed and the new addresses."""
    with pytest.raises(PayeeChangedError) as exc:
        check(invoice(), pinned=frozenset({addr(0), addr(2)}))
    err = exc.value
    assert err.reason == PAYEE_CHANGED and err.new_payees == {addr(1)} and err.host == "api.example.com"


def test_pinned_payees_keyword_is_an_alias():
    """`pinned_payees=` (the contracts.md name) works like `pinned=`."""
    inv = invoice()
    with pytest.raises(PayeeChangedError):
        check_invoice(inv, PaymentPolicy(), network=DEVNET, host="h", now=NOW, cost_lovelace=1,
                      pinned_payees=frozenset({addr(0)}))
    with pytest.raises(TypeError):
        check_invoice(inv, PaymentPolicy(), network=DEVNET, host="h", now=NOW, cost_lovelace=1,
                      pinned=frozenset(), pinned_payees=frozenset())


def test_known_payees_pin_nothing_new():
    """Payees already pinned (a subset is fine) pass and nothing new is pinned."""
    assert check(invoice(), pinned=frozenset({addr(0), addr(1), addr(2)})).pin == frozenset()


def test_pinning_can_be_switched_off():
    """With pin_payees false, a payee change passes and nothing is pinned."""
    decision = check(invoice(), PaymentPolicy(pin_payees=False), pinned=frozenset({addr(9)}))
    assert decision.pin == frozenset()


def test_cost_over_the_per_call_maximum_is_refused():
    """A cost above max_per_call_lovelace is refused; exactly at it passes."""
    policy = PaymentPolicy(max_per_call_lovelace=12_200_000)
    assert check(invoice(), policy, cost=12_200_000)
    assert refusal(invoice(), policy, cost=12_200_001).reason == OVER_MAX_PER_CALL


def test_approval_threshold():
    """A cost above approve_above_lovelace needs approval; at or below it does not."""
    policy = PaymentPolicy(approve_above_lovelace=12_000_000)
    assert check(invoice(), policy, cost=12_200_000).approval_required is True
    assert check(invoice(), policy, cost=12_000_000).approval_required is False


def test_reason_order_reports_the_most_fundamental_problem():
    """A wrong-network invoice that is also too dear is refused for the network."""
    policy = PaymentPolicy(max_per_call_lovelace=1)
    assert refusal(invoice(extra={"babel": True}), policy, network=get_network("mainnet")).reason == WRONG_NETWORK


def test_naive_now_is_utc():
    """A naive `now` is taken as UTC when comparing with the expiry."""
    inv = invoice()
    assert refusal(inv, now=inv.expires_at.replace(tzinfo=None)).reason == EXPIRED
    assert check(inv, now=datetime(2026, 11, 29, 12, 1)).pin
    assert inv.expires_at.tzinfo == timezone.utc


def test_an_allowlist_replaces_pinning_for_its_host():
    """A payee the user allowlisted for a host is paid even if a different payee was pinned before."""
    inv = invoice()
    policy = PaymentPolicy(payees={"api.example.com": frozenset(inv.payees)})
    decision = check(inv, policy, pinned=frozenset({"addr_test1_some_other_payee"}))
    assert decision.pin == frozenset()
