"""x402 version 2 on Cardano, scheme ``exact``: the wire format and the choice among ``accepts`` (pure, no I/O).

A v2 server answers 402 with a base64 JSON ``PAYMENT-REQUIRED`` header listing ``accepts``;
the client answers with ``PAYMENT-SIGNATURE`` carrying a signed, *unsubmitted* transaction,
and reads ``PAYMENT-RESPONSE``. The older v1 form (the requirements in the 402 JSON body,
``X-PAYMENT`` on the retry) is read as a fallback. The rules are those of
``x402-foundation/x402`` ``specs/schemes/exact/scheme_exact_cardano.md``.

Every input from the server is bounded before it is parsed: the header's length, the JSON's
nesting depth, and the number of ``accepts`` entries looked at, so a hostile 402 costs
bounded time and memory. Names and types come from the official ``x402`` package where they
fit (header names); ``accepted`` is echoed from the raw JSON, verbatim, because the SDK's
models drop unknown keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping, Sequence

from agent.errors import InvoiceError
from agent.x402 import Invoice
from wallets.networks import NETWORKS, NetworkInfo
from wallets.types import LOVELACE, RequiredOutput, is_native_asset

PAYMENT_REQUIRED_HEADER = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE_HEADER = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE_HEADER = "PAYMENT-RESPONSE"
X_PAYMENT_HEADER = "X-PAYMENT"  # v1
X_PAYMENT_RESPONSE_HEADER = "X-PAYMENT-RESPONSE"  # v1

MAX_HEADER_CHARS = 64 * 1024
"""A ``PAYMENT-REQUIRED`` (or ``PAYMENT-RESPONSE``) longer than this is refused unread."""
MAX_JSON_DEPTH = 16
MAX_ACCEPTS = 16
"""Only the first entries are judged; the rest are named as skipped in the refusal line."""
MIN_TIMEOUT_S = 60
"""A ``maxTimeoutSeconds`` below this leaves too little time for the transaction to land."""
TTL_MARGIN_S = 30
"""Seconds kept between the TTL and ``tip + maxTimeoutSeconds`` (the facilitator's tip may lag ours)."""
MAX_CONFIRMATIONS = 20

SCHEME = "exact"
DEFAULT_METHOD = "default"
REFUSED_METHODS = {
    "masumi": "it locks funds in an escrow contract with a datum this agent does not build; "
              "paid as a plain transfer the funds would be stranded",
    "script": "it locks funds at a script address with a datum this agent does not build; "
              "paid as a plain transfer the funds would be stranded",
}
CIP34_ALIASES = {"cip34:1-764824073": "cardano:mainnet", "cip34:0-1": "cardano:preprod",
                 "cip34:0-2": "cardano:preview"}
PAYMENT_IDENTIFIER = "payment-identifier"

# Answers that carry a transaction that may still reach the chain: resend the same payload, never re-sign.
MAY_STILL_LAND = frozenset({
    "settlement_pending", "exact_cardano_settlement_not_confirmed", "duplicate_settlement",
    "exact_cardano_facilitator_chain_lookup_failed", "exact_cardano_settlement_failed",
})
FINAL_FAILURES = frozenset({"exact_cardano_settlement_definitively_rejected"})

_AMOUNT = re.compile(r"[1-9][0-9]{0,29}")
_ASSET = re.compile(r"lovelace|[0-9a-f]{56}\.(?:[0-9a-f]{2}){0,32}")
_PAY_TO = re.compile(r"(?:addr1|addr_test1)[0-9a-z]{20,200}")
_NONCE = re.compile(r"[0-9a-f]{64}#[0-9]{1,5}")
_ID_CHARS = re.compile(r"[A-Za-z0-9_-]{16,128}")


class PaymentRequiredError(InvoiceError):
    """A ``PAYMENT-REQUIRED`` (or v1 402 body) that cannot be read: not base64, not JSON, too big, too deep."""


class NoAcceptableOptionError(InvoiceError):
    """Every ``accepts`` entry was rejected; ``rejections`` maps each entry's index to why."""

    def __init__(self, message: str, *, rejections: Sequence[tuple[int, str, str]]) -> None:
        super().__init__(message)
        self.rejections = tuple(rejections)

    @property
    def reason(self) -> str:
        """The most fundamental reason code (of the first entry), for the ledger row."""
        return self.rejections[0][1] if self.rejections else "no_accepts"


class Rejection(Exception):
    """One ``accepts`` entry cannot be paid: ``code`` (stable) and a human ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- decoding, bounded ------------------------------------------------------------------------


def json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text nests arrays/objects at most ``limit`` deep (strings are skipped)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def decode_b64_json(value: str, *, what: str, max_chars: int = MAX_HEADER_CHARS) -> Any:
    """Decode standard base64 of UTF-8 JSON, refusing oversize, malformed or too deeply nested input."""
    if len(value) > max_chars:
        raise PaymentRequiredError(f"{what} is {len(value)} characters, over the {max_chars} accepted")
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise PaymentRequiredError(f"{what} is not valid base64 of UTF-8 JSON") from None
    return loads_bounded(text, what=what)


def loads_bounded(text: str, *, what: str) -> Any:
    """``json.loads`` after a linear nesting check (deep nesting would cost recursion, not bytes)."""
    if not json_depth_ok(text):
        raise PaymentRequiredError(f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise PaymentRequiredError(f"{what} is not valid JSON") from None


def encode_b64_json(obj: Any) -> str:
    """Standard padded base64 of compact UTF-8 JSON (the header encoding of every v2 header)."""
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode("utf-8")).decode("ascii")


@dataclass(frozen=True)
class PaymentRequired:
    """A decoded 402 in either form: the raw ``accepts`` entries, ``resource`` and ``extensions``."""

    version: int
    accepts: tuple[Mapping[str, Any], ...]
    resource: Mapping[str, Any] | None = None
    extensions: Mapping[str, Any] | None = None
    error: str | None = None
    skipped: int = 0
    """Entries past ``MAX_ACCEPTS`` that were not looked at."""


def detect(headers: Mapping[str, str], body: bytes) -> int | None:
    """The x402 version a 402 speaks: 2 with a ``PAYMENT-REQUIRED`` header, 1 for a v1 body, else None."""
    if _header(headers, PAYMENT_REQUIRED_HEADER) is not None:
        return 2
    if not body or len(body) > MAX_HEADER_CHARS or not body.lstrip().startswith(b"{"):
        return None
    if b'"x402Version"' not in body:
        return None
    try:
        data = loads_bounded(body.decode("utf-8"), what="the 402 body")
    except (PaymentRequiredError, UnicodeError):
        return None
    if isinstance(data, dict) and data.get("x402Version") == 1 and "accepts" in data:
        return 1
    return None


def parse_payment_required(headers: Mapping[str, str], body: bytes) -> PaymentRequired:
    """Read the requirements of a v2 (header) or v1 (body) 402.

    Raises:
        PaymentRequiredError: nothing readable, or malformed.
    """
    value = _header(headers, PAYMENT_REQUIRED_HEADER)
    if value is not None:
        data = decode_b64_json(value, what="the PAYMENT-REQUIRED header")
        expected = 2
    else:
        if len(body) > MAX_HEADER_CHARS:
            raise PaymentRequiredError("the 402 body is too large to be an x402 v1 answer")
        try:
            data = loads_bounded(body.decode("utf-8"), what="the 402 body")
        except UnicodeError:
            raise PaymentRequiredError("the 402 body is not UTF-8 JSON") from None
        expected = 1
    if not isinstance(data, dict):
        raise PaymentRequiredError(f"the x402 v{expected} requirements are not a JSON object")
    version = data.get("x402Version")
    if version != expected:
        raise PaymentRequiredError(f"x402Version is {_show(version)}; expected {expected}")
    accepts = data.get("accepts")
    if not isinstance(accepts, list) or not accepts:
        raise PaymentRequiredError(f"the x402 v{expected} requirements list no accepts")
    resource = data.get("resource")
    extensions = data.get("extensions")
    error = data.get("error")
    return PaymentRequired(
        version=expected,
        accepts=tuple(accepts[:MAX_ACCEPTS]),
        resource=resource if isinstance(resource, dict) else None,
        extensions=extensions if isinstance(extensions, dict) else None,
        error=error if isinstance(error, str) else None,
        skipped=max(0, len(accepts) - MAX_ACCEPTS),
    )


# --- one requirement ------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One payable ``accepts`` entry, checked and normalised; ``raw`` is the entry verbatim."""

    index: int
    network_id: str
    """The canonical id (``cardano:preprod``), aliases normalised."""
    asset: str
    amount: int
    pay_to: str
    max_timeout_s: int
    confirmations: int
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    version: int = 2

    @property
    def key(self) -> str:
        """A stable digest of the entry (its canonical JSON), to tell duplicates and to name the payment."""
        text = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def describe(self) -> str:
        """``1.500000 ADA to addr_test1…xyz`` for messages."""
        what = f"{self.amount / 1e6:.6f} ADA" if self.asset == LOVELACE else f"{self.amount} {self.asset[:12]}…"
        return f"{what} to {self.pay_to[:14]}…{self.pay_to[-6:]}"


def network_v2_id(network: NetworkInfo) -> str:
    """The x402 v2 id of a wallet network: ``cardano:<name>``."""
    return f"cardano:{network.name}"


def normalise_network(value: object) -> str | None:
    """The canonical ``cardano:<name>`` of a v2 id or CIP-34 alias (exact match), else None."""
    if not isinstance(value, str):
        return None
    value = CIP34_ALIASES.get(value, value)
    prefix, _, name = value.partition(":")
    if prefix == "cardano" and name in NETWORKS:
        return value
    return None


def _v1_network(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("cardano-") and value[8:] in NETWORKS:
        return "cardano:" + value[8:]
    return normalise_network(value)


def parse_requirement(raw: object, index: int, *, network: NetworkInfo, version: int = 2) -> Requirement:
    """Check one ``accepts`` entry for a wallet on ``network``.

    Raises:
        Rejection: with a stable code: ``malformed``, ``unsupported_scheme``,
            ``unsupported_transfer_method``, ``wrong_network``, ``bad_amount``, ``bad_asset``,
            ``bad_pay_to``, ``timeout_too_short``, ``bad_extra``.
    """
    if not isinstance(raw, dict):
        raise Rejection("malformed", "is not a JSON object")
    scheme = raw.get("scheme")
    if scheme != SCHEME:
        raise Rejection("unsupported_scheme", f"scheme {_show(scheme)} is not supported (only 'exact')")
    extra = raw.get("extra", {})
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise Rejection("bad_extra", "extra is not an object")
    method = extra.get("assetTransferMethod", DEFAULT_METHOD)
    if method in REFUSED_METHODS:
        raise Rejection("unsupported_transfer_method",
                        f"unsupported assetTransferMethod {method!r}: {REFUSED_METHODS[method]}")
    if method != DEFAULT_METHOD:
        raise Rejection("unsupported_transfer_method", f"unsupported assetTransferMethod {_show(method)}")
    net_raw = raw.get("network")
    net = _v1_network(net_raw) if version == 1 else normalise_network(net_raw)
    if net is None:
        raise Rejection("wrong_network", f"network {_show(net_raw)} is not a Cardano network")
    if net != network_v2_id(network):
        raise Rejection("wrong_network", f"network {net} is not the wallet's {network_v2_id(network)}")
    amount_raw = raw.get("maxAmountRequired") if version == 1 else raw.get("amount")
    if not isinstance(amount_raw, str) or not _AMOUNT.fullmatch(amount_raw):
        raise Rejection("bad_amount", f"amount {_show(amount_raw)} is not a canonical positive decimal string")
    asset = raw.get("asset")
    if not isinstance(asset, str) or not _ASSET.fullmatch(asset) or not (asset == LOVELACE or is_native_asset(asset)):
        raise Rejection("bad_asset", f"asset {_show(asset)} is not 'lovelace' or <policy hex>.<name hex>")
    pay_to = raw.get("payTo")
    if not isinstance(pay_to, str) or not _PAY_TO.fullmatch(pay_to):
        raise Rejection("bad_pay_to", f"payTo {_show(pay_to)} is not a bech32 Shelley address")
    if not pay_to.startswith(network.address_prefix + "1"):
        raise Rejection("bad_pay_to", f"payTo {_show(pay_to)} is an address of another network")
    from wallets.address import parse_address
    from wallets.errors import AddressError

    try:
        parse_address(pay_to)
    except AddressError:
        raise Rejection("bad_pay_to", f"payTo {_show(pay_to)} is not a valid bech32 address") from None
    timeout = raw.get("maxTimeoutSeconds")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise Rejection("bad_timeout", f"maxTimeoutSeconds {_show(timeout)} is not a positive integer")
    if timeout < MIN_TIMEOUT_S:
        raise Rejection("timeout_too_short",
                        f"maxTimeoutSeconds {timeout} is too short to land a transaction (at least {MIN_TIMEOUT_S})")
    policy = extra.get("confirmationPolicy", {"l1Confirmations": 1})
    confirmations = policy.get("l1Confirmations") if isinstance(policy, dict) else None
    if (not isinstance(policy, dict) or set(policy) != {"l1Confirmations"} or isinstance(confirmations, bool)
            or not isinstance(confirmations, int) or not -1 <= confirmations <= MAX_CONFIRMATIONS):
        raise Rejection("bad_extra", f"confirmationPolicy {_show(policy)} is not {{l1Confirmations: -1..20}}")
    if extra.get("areFeesSponsored") not in (None, False):
        raise Rejection("bad_extra", "areFeesSponsored is not false; Cardano payers pay their own fee")
    return Requirement(index=index, network_id=net, asset=asset, amount=int(amount_raw), pay_to=pay_to,
                       max_timeout_s=min(timeout, 7 * 86_400), confirmations=confirmations, raw=raw,
                       version=version)


def as_invoice(req: Requirement, *, invoice_id: str, network: NetworkInfo, now: datetime) -> Invoice:
    """The requirement as an ``Invoice`` for the policy, the budgets and the ledger (one ``payTo`` output)."""
    return Invoice(
        invoice_id=invoice_id, version=str(req.version), chain=network.chain_label, network=network,
        asset=req.asset, amount_units=req.amount, decimals=6 if req.asset == LOVELACE else 0,
        pay_to=req.pay_to, outputs=(RequiredOutput(req.pay_to, req.amount, req.asset, "payTo"),),
        issued_at=now, expires_at=now + timedelta(seconds=req.max_timeout_s - TTL_MARGIN_S), raw=req.raw,
    )


def invoice_id_for(req: Requirement, *, request_id: str) -> str:
    """The ledger's invoice id of a v2 payment: one per call (request id) and requirement."""
    digest = hashlib.sha256(f"{request_id}\n{req.key}".encode()).hexdigest()[:40]
    return f"x402v2:{digest}"


def payment_identifier_for(invoice_id: str) -> str:
    """The payment-identifier extension's id for a payment: ``pay_`` + 32 hex, stable across retries."""
    return "pay_" + hashlib.sha256(invoice_id.encode()).hexdigest()[:32]


def candidates(pr: PaymentRequired, *, network: NetworkInfo) -> tuple[list[Requirement], list[tuple[int, str, str]]]:
    """Split the entries into payable requirements and rejections ``(index, code, message)``; duplicates are dropped."""
    ok: list[Requirement] = []
    rejected: list[tuple[int, str, str]] = []
    first: dict[str, int] = {}
    for i, raw in enumerate(pr.accepts):
        key = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
        if key in first:
            rejected.append((i, "duplicate", f"repeats entry [{first[key]}]"))
            continue
        first[key] = i
        try:
            ok.append(parse_requirement(raw, i, network=network, version=pr.version))
        except Rejection as exc:
            rejected.append((i, exc.code, exc.message))
    return ok, rejected


def cheapest_first(reqs: Iterable[Requirement], cost_lovelace: Callable[[Requirement], int]) -> list[Requirement]:
    """Order by lovelace leaving the wallet (ADA amount or a token's min-ADA), then token amount, then index."""
    return sorted(reqs, key=lambda r: (cost_lovelace(r), 0 if r.asset == LOVELACE else r.amount, r.index))


def refusal_line(rejections: Sequence[tuple[int, str, str]], *, skipped: int = 0) -> str:
    """One line naming why each entry was rejected."""
    parts: list[str] = []
    run: list[int] = []
    last = ""
    for i, _, message in sorted(rejections):
        if message == last and message.startswith("repeats"):
            run.append(i)
            continue
        if run:
            parts[-1] = f"[{run[0]}-{run[-1]}] {last}" if len(run) > 1 else parts[-1]
        run, last = [i], message
        parts.append(f"[{i}] {message}")
    if len(run) > 1:
        parts[-1] = f"[{run[0]}-{run[-1]}] {last}"
    if skipped:
        parts.append(f"{skipped} more entries not looked at (over {MAX_ACCEPTS})")
    return "no acceptable x402 payment option: " + "; ".join(parts)


# --- the paid retry -----------------------------------------------------------------------


def build_payment_payload(pr: PaymentRequired, req: Requirement, *, transaction_cbor: bytes, nonce: str,
                          payment_id: str | None = None) -> dict[str, Any]:
    """The ``PaymentPayload`` of the paid retry: ``accepted`` verbatim, the signed CBOR in base64, the nonce.

    Every advertised extension is echoed; ``payment-identifier`` gets ``info.id`` added.
    """
    if not _NONCE.fullmatch(nonce):
        raise InvoiceError(f"nonce {nonce!r} is not <tx hash>#<index>")
    inner = {"transaction": base64.b64encode(transaction_cbor).decode("ascii"), "nonce": nonce}
    if req.version == 1:
        return {"x402Version": 1, "scheme": SCHEME, "network": req.raw.get("network"), "payload": inner}
    payload: dict[str, Any] = {"x402Version": 2}
    if pr.resource is not None:
        payload["resource"] = pr.resource
    payload["accepted"] = req.raw
    payload["payload"] = inner
    if pr.extensions:
        extensions = dict(pr.extensions)
        ident = extensions.get(PAYMENT_IDENTIFIER)
        if isinstance(ident, dict) and payment_id is not None and _ID_CHARS.fullmatch(payment_id):
            info_raw = ident.get("info")
            info: dict[str, Any] = info_raw if isinstance(info_raw, dict) else {}
            extensions[PAYMENT_IDENTIFIER] = {**ident, "info": {**info, "id": payment_id}}
        payload["extensions"] = extensions
    return payload


def payment_headers(payload: Mapping[str, Any]) -> dict[str, str]:
    """The retry header for a payload: ``PAYMENT-SIGNATURE`` (v2) or ``X-PAYMENT`` (v1)."""
    name = X_PAYMENT_HEADER if payload.get("x402Version") == 1 else PAYMENT_SIGNATURE_HEADER
    return {name: encode_b64_json(payload)}


@dataclass(frozen=True)
class SettleAnswer:
    """A decoded ``PAYMENT-RESPONSE``."""

    success: bool
    transaction: str
    network: str | None
    error_reason: str | None = None
    payer: str | None = None
    status: str | None = None
    confirmations: int | None = None

    @property
    def may_still_land(self) -> bool:
        """A failure that names (or may have) a broadcast transaction: watch and resend, never re-sign."""
        if self.success:
            return False
        if self.error_reason in FINAL_FAILURES or self.status == "expired":
            return False
        return self.error_reason in MAY_STILL_LAND or bool(self.transaction)


def parse_payment_response(headers: Mapping[str, str]) -> SettleAnswer | None:
    """Read ``PAYMENT-RESPONSE`` (or v1 ``X-PAYMENT-RESPONSE``); None when absent or unreadable."""
    value = _header(headers, PAYMENT_RESPONSE_HEADER) or _header(headers, X_PAYMENT_RESPONSE_HEADER)
    if value is None:
        return None
    try:
        data = decode_b64_json(value, what="the PAYMENT-RESPONSE header")
    except PaymentRequiredError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        return None
    extra_raw = data.get("extra")
    extra: dict[str, Any] = extra_raw if isinstance(extra_raw, dict) else {}
    tx = data.get("transaction")
    confirmations = extra.get("confirmations")
    return SettleAnswer(
        success=data["success"],
        transaction=tx.lower() if isinstance(tx, str) and re.fullmatch(r"[0-9a-fA-F]{64}", tx) else "",
        network=data.get("network") if isinstance(data.get("network"), str) else None,
        error_reason=_clip_str(data.get("errorReason")),
        payer=_clip_str(data.get("payer")),
        status=_clip_str(extra.get("status")),
        confirmations=confirmations if isinstance(confirmations, int) and not isinstance(confirmations, bool) else None,
    )


def retry_refusal_reason(headers: Mapping[str, str]) -> str | None:
    """The ``error`` of a fresh ``PAYMENT-REQUIRED`` answering a paid retry (the verifier's invalidReason)."""
    value = _header(headers, PAYMENT_REQUIRED_HEADER)
    if value is None:
        return None
    try:
        data = decode_b64_json(value, what="the PAYMENT-REQUIRED header")
    except PaymentRequiredError:
        return "unreadable PAYMENT-REQUIRED"
    error = data.get("error") if isinstance(data, dict) else None
    return _clip_str(error) or "payment required again"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        for key, v in headers.items():
            if key.lower() == name.lower():
                return v
    return value


def _clip_str(value: object, limit: int = 200) -> str | None:
    if not isinstance(value, str):
        return None
    value = "".join(ch for ch in value if ch.isprintable())
    return value[:limit]


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
