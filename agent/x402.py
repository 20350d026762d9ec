"""x402 on Cardano: turn a 402 body into one normalised, checked ``Invoice`` (pure, no I/O).

Every variant of ``shared/reference/x402-cardano.md`` section 1 is accepted and normalised
before anything else looks at it. Amounts are integers in the asset's smallest unit: an
integer string (``"2000000"``) or a JSON integer (``2000000``, exact by construction). A JSON
float is refused even when integral (``1.0``, ``1e6``): the protocol says never a float, and a
float may already have lost digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from agent.errors import InvoiceError, ServerFlowError
from wallets.networks import NetworkInfo, network_for_chain
from wallets.types import LOVELACE, RequiredOutput, is_native_asset

MAX_SPLIT_OUTPUTS = 20
"""At most this many outputs besides ``payTo``; more is refused (a split to 50 addresses)."""

SPLIT_ADDITIONAL = "additional"
SPLIT_INCLUSIVE = "inclusive"
PENDING_STATUSES = frozenset({"pending", "submitted"})
CIP20_LABEL = 674
MAX_BATCH_TARGET = 1_000_000
"""A prepaid batch of more calls than this is refused (a batchTarget of 10^30 is not a batch)."""
MAX_TIMEOUT_S = 7 * 86_400
"""A longer ``timeout`` is refused: no invoice needs to stay payable for more than a week."""

# Printable ASCII, no spaces: safe in an HTTP header and within CIP-20's 64-byte strings.
_INVOICE_ID = re.compile(r"[\x21-\x7e]{1,64}")
_DIGITS = re.compile(r"[0-9]{1,30}")
_TX_HASH_OR_CBOR = re.compile(r"(?:[0-9a-f]{2})+")
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")


class PaymentStatusError(InvoiceError):
    """A 402 that reports a payment status other than pending (``failed``, ``expired``...), no invoice."""

    def __init__(self, message: str, *, status: str, invoice_id: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.invoice_id = invoice_id


@dataclass(frozen=True, slots=True)
class PaymentPending:
    """The server saw the payment and is verifying it: retry the same proof, never pay again."""

    invoice_id: str | None
    status: str


@dataclass(frozen=True, slots=True)
class Invoice:
    """A payable x402 invoice with every output the payment transaction must contain.

    ``outputs`` has ``payTo`` first, then the split outputs, with the split mode already
    applied: in ``inclusive`` mode ``payTo`` gets ``amount_units`` minus the splits in the
    invoice's asset; in ``additional`` mode it gets ``amount_units`` and the splits come on top.
    """

    invoice_id: str
    version: str | None
    chain: str
    network: NetworkInfo
    asset: str
    amount_units: int
    decimals: int
    pay_to: str
    outputs: tuple[RequiredOutput, ...]
    issued_at: datetime
    expires_at: datetime
    partner: str | None = None
    batch_target: int | None = None
    babel: bool = False
    split_mode: str = SPLIT_ADDITIONAL
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def total_by_asset(self) -> dict[str, int]:
        """Return the sum of every required output per asset (``lovelace`` or ``policy.name``)."""
        totals: dict[str, int] = {}
        for out in self.outputs:
            totals[out.asset] = totals.get(out.asset, 0) + out.amount
        return totals

    @property
    def payees(self) -> frozenset[str]:
        """Every address the invoice pays: ``payTo`` and each split address."""
        return frozenset(out.address for out in self.outputs)

    def metadata(self) -> dict[int, Any]:
        """Return the CIP-20 transaction metadata naming this invoice: ``{674: {"msg": [...]}}``."""
        return {CIP20_LABEL: {"msg": ["x402", self.invoice_id]}}

    def seconds_left(self, now: datetime) -> int:
        """Return the whole seconds until expiry at ``now`` (0 once expired), for the TTL."""
        return max(0, int((self.expires_at - now).total_seconds()))

    def is_expired(self, now: datetime) -> bool:
        """Return True once ``now`` has reached the expiry instant."""
        return now >= self.expires_at


def parse_402(body: object, *, now: datetime) -> Invoice | PaymentPending:
    """Normalise a 402 body into an ``Invoice``, or ``PaymentPending`` for a payment being verified.

    Args:
        body: the decoded JSON body of the 402 answer.
        now: the current instant (timezone-aware; naive is taken as UTC).

    Raises:
        ServerFlowError: ``detail.error`` is ``payment_flow_error``.
        PaymentStatusError: the body reports a payment status that is neither pending nor an invoice.
        InvoiceError: anything malformed, unknown, over the split cap, or already expired.
    """
    now = _utc(now)
    if not isinstance(body, Mapping):
        raise InvoiceError(f"402 body is not a JSON object: {type(body).__name__}")
    detail = body.get("detail")
    if isinstance(detail, Mapping):
        d: Mapping[str, Any] = detail
    elif detail is not None and "invoiceId" not in body and "payTo" not in body:
        raise InvoiceError(f"402 without an invoice: detail {_show(detail)}")
    else:
        d = body
    error = d.get("error")
    if error is not None:
        message = d.get("message") or d.get("detail") or error
        if error == "payment_flow_error":
            raise ServerFlowError(f"server could not issue an invoice: {_show(message)}")
        raise InvoiceError(f"402 reports an error instead of an invoice: {_show(message)}")
    status = d.get("status")
    if status is not None:
        invoice_id = d.get("invoiceId") if isinstance(d.get("invoiceId"), str) else None
        if status in PENDING_STATUSES:
            return PaymentPending(invoice_id=invoice_id, status=str(status))
        if "payTo" not in d:
            raise PaymentStatusError(
                f"402 reports payment status {_show(status)} and carries no invoice",
                status=str(status), invoice_id=invoice_id,
            )
    return _parse_invoice(d, body, now)


def parse_invoice(body: object, *, now: datetime) -> Invoice:
    """Like ``parse_402`` but insist on a payable invoice (``PaymentPending`` is an error)."""
    result = parse_402(body, now=now)
    if isinstance(result, PaymentPending):
        raise InvoiceError(f"402 reports a payment {result.status}, not a new invoice")
    return result


def _parse_invoice(d: Mapping[str, Any], body: Mapping[str, Any], now: datetime) -> Invoice:
    invoice_id = d.get("invoiceId")
    if invoice_id is None or invoice_id == "":
        raise InvoiceError("invoice has no invoiceId")
    if not isinstance(invoice_id, str) or not _INVOICE_ID.fullmatch(invoice_id):
        raise InvoiceError(
            f"invoiceId must be 1-64 printable ASCII characters without spaces, got {_show(invoice_id)}"
        )
    chain = d.get("chain")
    if not isinstance(chain, str):
        raise InvoiceError(f"invoice {invoice_id}: chain missing or not a string: {_show(chain)}")
    try:
        network = network_for_chain(chain)
    except Exception:
        raise InvoiceError(f"invoice {invoice_id}: unknown chain {_show(chain)}") from None
    asset = normalise_asset(_first(d, "asset", "currency"), where=f"invoice {invoice_id}: asset")
    amount = parse_amount(_first(d, "amountUnits", "amount"), where=f"invoice {invoice_id}: amountUnits")
    pay_to_raw = d.get("payTo")
    if pay_to_raw is None or pay_to_raw == "":
        raise InvoiceError(f"invoice {invoice_id} has no payTo")
    pay_to = validate_address(pay_to_raw, network, where=f"invoice {invoice_id}: payTo")
    decimals = _decimals(d.get("decimals"), asset, invoice_id)

    extra = d.get("extra", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping):
        raise InvoiceError(f"invoice {invoice_id}: extra is not an object")
    split_mode = _first(extra, "splitMode") or d.get("splitMode") or SPLIT_ADDITIONAL
    if split_mode not in (SPLIT_ADDITIONAL, SPLIT_INCLUSIVE):
        raise InvoiceError(
            f"invoice {invoice_id}: splitMode must be additional or inclusive, got {_show(split_mode)}"
        )
    splits = _split_outputs(d, extra, asset=asset, network=network, invoice_id=invoice_id)
    if split_mode == SPLIT_INCLUSIVE:
        foreign = [o for o in splits if o.asset != asset]
        if foreign:
            raise InvoiceError(
                f"invoice {invoice_id}: inclusive split output in {foreign[0].asset} cannot be carved "
                f"out of an amount in {asset}"
            )
        pay_amount = amount - sum(o.amount for o in splits)
        if pay_amount <= 0:
            raise InvoiceError(
                f"invoice {invoice_id}: inclusive splits total {amount - pay_amount} leave "
                f"{pay_amount} of {amount} for payTo"
            )
    else:
        pay_amount = amount
        if pay_amount <= 0:
            raise InvoiceError(f"invoice {invoice_id}: amountUnits is 0; nothing to pay to payTo")
    outputs = (RequiredOutput(pay_to, pay_amount, asset, "payTo"), *splits)

    expires_at = _expiry(d, now, invoice_id)
    if expires_at <= now:
        raise InvoiceError(f"invoice {invoice_id} expired at {expires_at.isoformat()}")
    partner = _first(extra, "partner") or d.get("partner")
    if partner is not None and not (isinstance(partner, str) and _HEADER_SAFE.fullmatch(partner)):
        raise InvoiceError(f"invoice {invoice_id}: partner must be a printable string, got {_show(partner)}")
    batch_target = _first(extra, "batchTarget")
    if batch_target is None:
        batch_target = d.get("batchTarget")
    if batch_target is not None and (
        not isinstance(batch_target, int) or isinstance(batch_target, bool)
        or not 1 <= batch_target <= MAX_BATCH_TARGET
    ):
        raise InvoiceError(f"invoice {invoice_id}: batchTarget must be an integer from 1 to {MAX_BATCH_TARGET}, "
                           f"got {_show(batch_target)}")
    babel = _first(extra, "babel")
    if babel is None:
        babel = d.get("babel", False)
    if not isinstance(babel, bool):
        raise InvoiceError(f"invoice {invoice_id}: babel must be true or false, got {_show(babel)}")
    version = d.get("version")
    return Invoice(
        invoice_id=invoice_id,
        version=None if version is None else str(version),
        chain=chain,
        network=network,
        asset=asset,
        amount_units=amount,
        decimals=decimals,
        pay_to=pay_to,
        outputs=outputs,
        issued_at=now,
        expires_at=expires_at,
        partner=partner or None,
        batch_target=batch_target,
        babel=babel,
        split_mode=split_mode,
        raw=body,
    )


def _split_outputs(
    d: Mapping[str, Any], extra: Mapping[str, Any], *, asset: str, network: NetworkInfo, invoice_id: str
) -> tuple[RequiredOutput, ...]:
    sources = [
        (name, value)
        for name, value in (
            ("extra.outputs", extra.get("outputs")),
            ("extra.split", extra.get("split")),
            ("extra.splits", extra.get("splits")),
            ("splits", d.get("splits")),
        )
        if value not in (None, [])
    ]
    if not sources:
        return ()
    if len(sources) > 1:
        names = " and ".join(name for name, _ in sources)
        raise InvoiceError(f"invoice {invoice_id}: ambiguous split outputs, both {names} are given")
    name, entries = sources[0]
    if not isinstance(entries, list):
        raise InvoiceError(f"invoice {invoice_id}: {name} is not a list")
    if len(entries) > MAX_SPLIT_OUTPUTS:
        raise InvoiceError(
            f"invoice {invoice_id} asks for {len(entries)} split outputs; at most {MAX_SPLIT_OUTPUTS} are accepted"
        )
    outputs = []
    for i, entry in enumerate(entries):
        where = f"invoice {invoice_id}: {name}[{i}]"
        if not isinstance(entry, Mapping):
            raise InvoiceError(f"{where} is not an object")
        address = _first(entry, "address", "to")
        if address is None or address == "":
            raise InvoiceError(f"{where} has no address")
        address = validate_address(address, network, where=f"{where}.address")
        amount = parse_amount(_first(entry, "amountUnits", "amount"), where=f"{where}.amount")
        if amount == 0:
            raise InvoiceError(f"{where}.amount is 0")
        raw_asset = _first(entry, "asset", "currency")
        out_asset = asset if raw_asset is None else normalise_asset(raw_asset, where=f"{where}.asset")
        role = entry.get("role")
        if role is not None and not isinstance(role, str):
            raise InvoiceError(f"{where}.role is not a string")
        outputs.append(RequiredOutput(address, amount, out_asset, role))
    return tuple(outputs)


def parse_amount(value: object, *, where: str) -> int:
    """Parse an amount in smallest units: an integer string or JSON integer, non-negative.

    Raises:
        InvoiceError: missing, negative, fractional, exponent form, float, or bool.
    """
    if value is None:
        raise InvoiceError(f"{where} is missing")
    if isinstance(value, bool) or isinstance(value, float):
        raise InvoiceError(f"{where} must be a non-negative integer string, got {_show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise InvoiceError(f"{where} must be a non-negative integer string, got {_show(value)}")
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise InvoiceError(f"{where} must be a non-negative integer string, got {_show(value)}")


def normalise_asset(value: object, *, where: str) -> str:
    """Return ``"lovelace"`` for ADA/lovelace, or ``"<policy>.<name>"`` in lower-case hex.

    ``policy+name`` concatenated without a dot is accepted too (the 56-hex policy is split off).
    """
    if value is None:
        raise InvoiceError(f"{where} is missing")
    if not isinstance(value, str):
        raise InvoiceError(f"{where} must be a string, got {_show(value)}")
    text = value.strip().lower()
    if text in ("ada", LOVELACE):
        return LOVELACE
    if "." not in text and len(text) >= 56:
        text = f"{text[:56]}.{text[56:]}"
    if not is_native_asset(text):
        raise InvoiceError(f"{where}: unknown asset {_show(value)}; expected ADA or <policy hex 56>.<name hex>")
    return text


def validate_address(value: object, network: NetworkInfo, *, where: str) -> str:
    """Return the canonical bech32 form of a payment address on ``network``.

    Raises:
        InvoiceError: not a string, not a bech32 Shelley payment address, or of another network.
    """
    if not isinstance(value, str):
        raise InvoiceError(f"{where} must be a bech32 address string, got {_show(value)}")
    lowered = value.lower()
    if not (lowered.startswith("addr1") or lowered.startswith("addr_test1")):
        raise InvoiceError(f"{where} is not a bech32 payment address: {_show(_clip(value))}")
    if value != lowered and value != value.upper():
        raise InvoiceError(f"{where} mixes upper and lower case, which bech32 forbids: {_show(_clip(value))}")
    key = (lowered, network.address_prefix, network.testnet)
    known = _VALID_ADDRESSES.get(key)
    if known is not None:
        return known  # the same payee, already decoded and judged (decoding is ~10% of a payment's CPU)
    canonical = _validate_decoded(value, lowered, network, where=where)
    if len(_VALID_ADDRESSES) >= _VALID_ADDRESSES_MAX:
        _VALID_ADDRESSES.clear()
    _VALID_ADDRESSES[key] = canonical
    return canonical


_VALID_ADDRESSES: dict[tuple[str, str, bool], str] = {}
"""Addresses that passed :func:`validate_address`, by (lower-case text, network): a pure function's results."""
_VALID_ADDRESSES_MAX = 4096


def _validate_decoded(value: str, lowered: str, network: NetworkInfo, *, where: str) -> str:
    from wallets.address import parse_address
    from wallets.errors import AddressError

    try:
        address = parse_address(lowered)
    except AddressError:
        raise InvoiceError(f"{where} is not a valid bech32 address: {_show(_clip(value))}") from None
    # A script may lock what it receives forever; a pointer's stake part is deprecated
    # (Conway) and unverifiable here. Either way the payee is not a plain key holder.
    if address.payment == "script":
        raise InvoiceError(f"{where} is a script address; only key addresses are paid: {_show(_clip(value))}")
    if address.stake == "pointer":
        raise InvoiceError(f"{where} is a pointer address; it is not paid: {_show(_clip(value))}")
    if address.testnet != network.testnet or not lowered.startswith(network.address_prefix + "1"):
        raise InvoiceError(
            f"{where} is an address of the wrong network for {network.chain_label}: {_show(_clip(value))}"
        )
    return address.text


def proof_headers(
    invoice_id: str, payment: str | bytes, *, partner: str | None = None, wallet_address: str | None = None
) -> dict[str, str]:
    """Return the retry headers proving payment: ``X-Invoice-Id``, ``X-Payment`` and partner ones.

    Args:
        invoice_id: the invoice paid.
        payment: the 64-hex transaction hash, or the signed transaction CBOR (bytes or hex).
        partner: the partner name for ``X-Partner``, if partner billing applies.
        wallet_address: the paying wallet's address for ``X-Wallet-Address`` (prepaid batches).
    """
    if not _INVOICE_ID.fullmatch(invoice_id):
        raise InvoiceError(f"invoiceId not usable in a header: {_show(invoice_id)}")
    proof = payment.hex() if isinstance(payment, bytes) else payment.lower()
    if not _TX_HASH_OR_CBOR.fullmatch(proof):
        raise InvoiceError("payment proof must be a transaction hash or signed CBOR in hex")
    headers = {"X-Invoice-Id": invoice_id, "X-Payment": proof}
    for name, value in (("X-Partner", partner), ("X-Wallet-Address", wallet_address)):
        if value is not None:
            if not _HEADER_SAFE.fullmatch(value):
                raise InvoiceError(f"{name} value is not printable ASCII: {_show(value)}")
            headers[name] = value
    return headers


def _expiry(d: Mapping[str, Any], now: datetime, invoice_id: str) -> datetime:
    timeout, expires_raw = d.get("timeout"), d.get("expiresAt")
    if timeout is None and expires_raw is None:
        raise InvoiceError(f"invoice {invoice_id} has neither timeout nor expiresAt")
    candidates = []
    if timeout is not None:
        if isinstance(timeout, str) and _DIGITS.fullmatch(timeout):
            timeout = int(timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise InvoiceError(f"invoice {invoice_id}: timeout must be whole seconds, got {_show(timeout)}")
        if timeout > MAX_TIMEOUT_S:
            raise InvoiceError(f"invoice {invoice_id}: timeout {timeout}s is longer than {MAX_TIMEOUT_S}s")
        candidates.append(now + timedelta(seconds=timeout))
    if expires_raw is not None:
        if not isinstance(expires_raw, str):
            raise InvoiceError(f"invoice {invoice_id}: expiresAt must be an ISO-8601 string")
        try:
            candidates.append(_utc(datetime.fromisoformat(expires_raw.strip())))
        except ValueError:
            raise InvoiceError(f"invoice {invoice_id}: expiresAt is not ISO-8601: {_show(expires_raw)}") from None
    # Both given: trust the earlier, so the transaction never outlives either.
    expires_at = min(candidates)
    if (expires_at - now).total_seconds() > MAX_TIMEOUT_S:
        raise InvoiceError(
            f"invoice {invoice_id}: expiresAt {expires_at.isoformat()} is more than {MAX_TIMEOUT_S}s away"
        )
    return expires_at


def _decimals(value: object, asset: str, invoice_id: str) -> int:
    if value is None:
        return 6 if asset == LOVELACE else 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InvoiceError(f"invoice {invoice_id}: decimals must be an integer 0-255, got {_show(value)}")
    return value


def _first(d: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(_clip(value))
    return _clip(repr(value))
