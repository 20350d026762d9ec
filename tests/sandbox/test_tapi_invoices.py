"""The twin's invoice state machine and prepaid credit book."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox.invoices import CreditBook, InvoiceStateError, InvoiceStore, Output
from tests.fixtures.twin import START


def _issue(store: InvoiceStore, timeout_s: int = 300):
    return store.issue(route="chat", fingerprint="f", chain="cardano-devnet", asset_label="ADA",
                       amount_units=2_000_000, decimals=6,
                       outputs=(Output("addr_test1pay", 2_000_000, "lovelace", "payTo"),
                                Output("addr_test1partner", 1_000_000, "lovelace", "partner")),
                       split_mode="additional", partner="acme", batch_target=1, wallet=None,
                       issued_at=START, expires_at=START + timedelta(seconds=timeout_s))


def test_issued_invoice_renders_the_canonical_402_detail() -> None:
    """to_402 gives the section-1 shape: string amounts, timeout in seconds, split outputs under extra."""
    inv = _issue(InvoiceStore())
    detail = inv.to_402()
    assert detail["invoiceId"].startswith("inv_") and detail["amountUnits"] == "2000000"
    assert detail["timeout"] == 300 and detail["payTo"] == "addr_test1pay"
    assert detail["extra"] == {"lovelace": True, "babel": False, "partner": "acme", "batchTarget": 1,
                               "outputs": [{"address": "addr_test1partner", "amountUnits": "1000000",
                                            "asset": "ADA", "role": "partner"}],
                               "splitMode": "additional"}


def test_ids_are_unique() -> None:
    """Every issued invoice gets a fresh id."""
    store = InvoiceStore()
    assert len({_issue(store).invoice_id for _ in range(50)}) == 50


def test_pending_invoice_expires_by_the_clock() -> None:
    """A pending invoice read at or after its expiry is expired, with an error."""
    store = InvoiceStore()
    inv = _issue(store, timeout_s=10)
    assert store.get(inv.invoice_id, now=START + timedelta(seconds=9)).status == "pending"
    expired = store.get(inv.invoice_id, now=START + timedelta(seconds=10))
    assert expired.status == "expired" and expired.to_status()["error"]


def test_submitted_invoice_does_not_expire_by_the_clock() -> None:
    """Once a payment was seen, the clock alone never expires the invoice."""
    store = InvoiceStore()
    inv = _issue(store, timeout_s=10)
    store.advance(inv.invoice_id, "submitted", tx_hash="aa" * 32, now=START)
    assert store.get(inv.invoice_id, now=START + timedelta(days=1)).status == "submitted"


def test_consume_once_and_bind_each_tx_to_one_invoice() -> None:
    """An invoice is consumed once; a tx that paid one invoice cannot pay another."""
    store = InvoiceStore()
    a, b = _issue(store), _issue(store)
    done = store.advance(a.invoice_id, "consumed", tx_hash="aa" * 32, now=START)
    assert done.settled_at == START and done.to_status()["txHash"] == "aa" * 32
    with pytest.raises(InvoiceStateError) as err:
        store.advance(a.invoice_id, "consumed", tx_hash="aa" * 32, now=START)
    assert err.value.code == "invoice_consumed"
    with pytest.raises(InvoiceStateError) as err:
        store.advance(b.invoice_id, "consumed", tx_hash="aa" * 32, now=START)
    assert err.value.code == "transaction_already_used"
    assert store.get(b.invoice_id, now=START).status == "pending"


def test_submitted_invoice_keeps_its_transaction() -> None:
    """An invoice being paid by one tx refuses a different tx."""
    store = InvoiceStore()
    inv = _issue(store)
    store.advance(inv.invoice_id, "submitted", tx_hash="aa" * 32, now=START)
    with pytest.raises(InvoiceStateError) as err:
        store.advance(inv.invoice_id, "consumed", tx_hash="bb" * 32, now=START)
    assert err.value.code == "invoice_bound_to_other_transaction"
    assert store.owner_of("bb" * 32) is None


def test_credit_book_credits_draws_and_expires() -> None:
    """A batch credits N calls per (partner, wallet), draws one at a time and lapses at its expiry."""
    book = CreditBook()
    book.credit("globex", "w1", 3, now=START, validity_s=60)
    assert [book.draw("globex", "w1", now=START) for _ in range(4)] == [True, True, True, False]
    assert not book.draw("globex", "w2", now=START)
    bal = book.balance("globex", "w1", now=START)
    assert (bal.remaining, bal.total) == (0, 3)
    book.credit("globex", "w1", 2, now=START, validity_s=60)
    assert book.balance("globex", "w1", now=START + timedelta(seconds=60)).to_json() == {
        "partner": "globex", "wallet": "w1", "remaining": 0, "total": 0, "expiresAt": None}


def test_old_invoices_are_forgotten_but_their_txs_stay_used() -> None:
    """Invoices expired longer than the retention are dropped; a tx that paid one still cannot pay again."""
    store = InvoiceStore(retention_s=60)
    old = _issue(store, timeout_s=10)
    store.advance(old.invoice_id, "consumed", tx_hash="cc" * 32, now=START)
    later = START + timedelta(seconds=200)
    for _ in range(255):
        store.issue(**{**_fields(), "issued_at": later, "expires_at": later + timedelta(seconds=300)})
    assert store.get(old.invoice_id, now=later) is None and len(store) == 255
    assert store.owner_of("cc" * 32) == old.invoice_id


def _fields() -> dict:
    return dict(route="chat", fingerprint="f", chain="cardano-devnet", asset_label="ADA", amount_units=1,
                decimals=6, outputs=(Output("addr_test1pay", 1, "lovelace", "payTo"),), split_mode=None,
                partner=None, batch_target=1, wallet=None, issued_at=START, expires_at=START)
