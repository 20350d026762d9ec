"""The x402 v2 payments table: the stored PAYMENT-SIGNATURE of each v2 payment and its settlement.

Kept apart from ``agent.x402v2_payer`` so that migrating a store (every command does) loads
no HTTP or payment code.
"""

from __future__ import annotations

from agent.store import register_migrations

register_migrations("x402v2", [
    """
    CREATE TABLE x402v2_payments (
        payment_id     INTEGER PRIMARY KEY,
        header_name    TEXT    NOT NULL,
        header_value   TEXT    NOT NULL,
        nonce          TEXT    NOT NULL,
        network        TEXT    NOT NULL,
        pay_to         TEXT    NOT NULL,
        ttl_at         REAL    NOT NULL,
        settle_tx      TEXT,
        settle_status  TEXT,
        confirmations  INTEGER,
        error_reason   TEXT,
        updated_at     REAL    NOT NULL
    );
    """,
])
