"""An x402 v2 facilitator for scheme ``exact`` on the devnet: verify, settle (submit + wait), supported.

The rules and their ``invalidReason`` strings follow ``scheme_exact_cardano`` (section 3.3 of
the project's reference), in the SDK's order. :class:`CardanoExactFacilitator` implements the
official SDK's ``SchemeNetworkFacilitator`` protocol, so it plugs into ``x402.x402Facilitator``
(which the resource server uses in process, and which the HTTP routes ``/verify``, ``/settle``
and ``/supported`` expose). It holds no keys and signs nothing; it reads and submits through
:class:`DevnetPort` (the devnet node, in process).

Settlement claims each transaction id once (in flight, submitted, rejected): a second
``/settle`` of a submitted transaction resumes watching it and never rebroadcasts. Faults for
tests: ``pending_forever`` (never report the depth reached), ``verify_flakes`` (that many
verifications answer ``exact_cardano_facilitator_chain_lookup_failed``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import cbor2

from sandbox.errors import LedgerRejection
from sandbox.rules import _verifies, min_fee, min_utxo_lovelace
from sandbox.txcbor import (Credential, DecodedTx, DecodeError, address_from_str, blake2b_224, decode_transaction,
                            payment_credential)
from wallets.types import LOVELACE, OutputRef

log = logging.getLogger(__name__)

SCHEME = "exact"
CIP34 = {"cip34:1-764824073": "cardano:mainnet", "cip34:0-1": "cardano:preprod", "cip34:0-2": "cardano:preview"}
MAX_TX_BYTES = 64 * 1024
MAX_INPUTS = 256
_AMOUNT = re.compile(r"[1-9][0-9]*")
_ASSET = re.compile(r"lovelace|[0-9a-f]{56}\.(?:[0-9a-f]{2}){0,32}")
_NONCE = re.compile(r"[0-9a-fA-F]{64}#[0-9]+")
_FORBIDDEN = {9: "mint", 5: "withdrawals", 4: "certificates", 20: "proposals", 22: "donation"}


class Invalid(Exception):
    """A verification rule failed: ``reason`` is the spec's ``invalidReason``."""

    def __init__(self, reason: str, message: str = "", payer: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason
        self.payer = payer


class DevnetPort:
    """What the facilitator reads and submits, over the in-process devnet node."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.params = node.params
        self._landed: dict[str, int] = {}  # tx id -> height first seen in a block
        self._lock = threading.Lock()

    def current_slot(self) -> int:
        """The slot the ledger validates against: the wall-clock slot, never behind the tip."""
        return int(self.node.current_slot())

    def utxos(self, refs: list[OutputRef]) -> dict[OutputRef, Any]:
        return dict(self.node.utxos_by_refs(refs))

    def submit(self, cbor: bytes) -> str:
        return str(self.node.submit(cbor))

    def depth(self, tx_id: str, n_outputs: int) -> int | None:
        """-1 in the mempool, else newer blocks above its block (0 = in the tip), None if unseen."""
        with self._lock:
            tip = self.node.tip()
            height = tip.height if tip is not None else 0
            if tip is not None and tx_id in tip.tx_ids:
                self._landed.setdefault(tx_id, tip.height)
            if tx_id in self._landed:
                return height - self._landed[tx_id]
            if any(t == tx_id for t, _ in self.node.mempool()):
                return -1
            if self.node.utxos_by_refs([OutputRef(tx_id, i) for i in range(max(1, n_outputs))]):
                self._landed[tx_id] = height  # seen late: counted from now (never overstates depth)
                return 0
            return None

    def in_ledger(self, tx_id: str, n_outputs: int) -> bool:
        depth = self.depth(tx_id, n_outputs)
        return depth is not None


def normalise_network(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = CIP34.get(value, value)
    return value if value.startswith("cardano:") and len(value) > 8 else None


@dataclass
class Faults:
    """Fault injection for tests (mutable while serving)."""

    pending_forever: bool = False
    verify_flakes: int = 0
    error_after_settle: int = 0
    """The next this many paid calls answer 500 after settling (the resource server's own fault)."""
    verify_reason: str | None = None
    """Every verification answers this invalidReason (a client's handling of each verdict)."""


@dataclass
class _Claim:
    state: str  # "in-flight" | "submitted" | "rejected"
    payer: str = ""
    ttl: int | None = None


@dataclass
class Verdict:
    """A successful verification: the payer and the decoded transaction."""

    payer: str
    tx: DecodedTx


@dataclass
class _Raw:
    raw: bytes
    top: list[Any] = field(repr=False)


def _decode_payload_tx(payload: Mapping[str, Any]) -> tuple[_Raw, str]:
    inner = payload.get("payload")
    if not isinstance(inner, Mapping):
        raise Invalid("invalid_exact_cardano_payload", "payload is not an object")
    tx_b64, nonce = inner.get("transaction"), inner.get("nonce")
    if not isinstance(tx_b64, str) or not isinstance(nonce, str) or not tx_b64 or not nonce:
        raise Invalid("invalid_exact_cardano_payload", "payload.transaction and payload.nonce are required strings")
    if len(tx_b64) > (MAX_TX_BYTES * 4) // 3 + 4:
        raise Invalid("invalid_exact_cardano_payload", "transaction over the 64 KiB cap")
    try:
        raw = base64.b64decode(tx_b64, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed", "transaction is not base64") from None
    if base64.b64encode(raw).decode() != tx_b64:
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed", "transaction base64 is not canonical")
    try:
        top = cbor2.loads(raw)
    except Exception:  # noqa: BLE001 - any CBOR failure is a decode failure
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed", "transaction is not CBOR") from None
    if not isinstance(top, list) or len(top) != 4 or not isinstance(top[2], bool) or not isinstance(top[0], dict):
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed",
                      "not a 4-element transaction array with a bool flag")
    if not all(k in top[0] for k in (0, 1, 2)):
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed", "body lacks inputs, outputs or fee")
    return _Raw(raw, top), nonce


def verify_payment(payload: Mapping[str, Any], requirements: Mapping[str, Any], port: DevnetPort, *,
                   network: str, network_id: int, already_broadcast: bool = False) -> Verdict:
    """Apply every rule of the reference's section 3.3, in order; raise :class:`Invalid` on the first failure."""
    if payload.get("x402Version") != 2:
        raise Invalid("invalid_exact_cardano_payload_unsupported_version")
    accepted_raw = payload.get("accepted")
    accepted: Mapping[str, Any] = accepted_raw if isinstance(accepted_raw, Mapping) else {}
    extra = requirements.get("extra") or {}
    if not isinstance(extra, Mapping):
        raise Invalid("invalid_exact_cardano_requirements", "extra is not an object")
    if accepted.get("scheme") != SCHEME or requirements.get("scheme") != SCHEME:
        raise Invalid("unsupported_scheme")
    if extra.get("assetTransferMethod", "default") != "default":
        raise Invalid("unsupported_scheme", f"assetTransferMethod {extra.get('assetTransferMethod')!r} not supported")
    req_net, acc_net = normalise_network(requirements.get("network")), normalise_network(accepted.get("network"))
    if req_net is None or req_net != acc_net or req_net != network:
        raise Invalid("network_mismatch")
    amount, asset, pay_to = requirements.get("amount"), requirements.get("asset"), requirements.get("payTo")
    if not isinstance(amount, str) or not _AMOUNT.fullmatch(amount) or not isinstance(asset, str) \
            or not _ASSET.fullmatch(asset) or not isinstance(pay_to, str):
        raise Invalid("invalid_exact_cardano_requirements", "amount or asset not canonical")
    parsed, nonce = _decode_payload_tx(payload)
    raw, top = parsed.raw, parsed.top
    policy = extra.get("confirmationPolicy", {"l1Confirmations": 1})
    conf = policy.get("l1Confirmations") if isinstance(policy, Mapping) else None
    if not isinstance(policy, Mapping) or set(policy) != {"l1Confirmations"} or isinstance(conf, bool) \
            or not isinstance(conf, int) or not -1 <= conf <= 20:
        raise Invalid("invalid_exact_cardano_requirements_policy")
    if not _NONCE.fullmatch(nonce):
        raise Invalid("invalid_exact_cardano_payload_nonce_invalid")
    body = top[0]
    inputs_raw = body.get(0)
    if not isinstance(inputs_raw, (list, set, frozenset)) and not hasattr(inputs_raw, "__iter__"):
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed")
    inputs_list = list(inputs_raw)
    if len(inputs_list) > MAX_INPUTS:
        raise Invalid("invalid_exact_cardano_payload_phase1_invalid", "more than 256 inputs")
    if body.get(15) is not None and body.get(15) != network_id:
        raise Invalid("invalid_exact_cardano_payload_network_id_mismatch")
    witnesses = top[1] if isinstance(top[1], dict) else {}
    if not any(witnesses.get(k) for k in (0, 1, 2)):
        raise Invalid("invalid_exact_cardano_payload_unsigned")
    body_hash = _body_hash(raw)
    for pair in witnesses.get(0) or []:
        vkey, sig = (pair[0], pair[1]) if isinstance(pair, list) and len(pair) == 2 else (b"", b"")
        if not (isinstance(vkey, bytes) and isinstance(sig, bytes) and _verifies(vkey, sig, body_hash)):
            raise Invalid("invalid_exact_cardano_payload_invalid_signature")
    refs = []
    for item in inputs_list:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and isinstance(item[1], int)):
            raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed", "malformed input")
        refs.append(f"{item[0].hex()}#{item[1]}")
    if len(set(refs)) != len(refs):
        raise Invalid("invalid_exact_cardano_payload_phase1_invalid", "duplicate inputs")
    if nonce.lower() not in refs:
        raise Invalid("invalid_exact_cardano_payload_nonce_not_in_inputs")
    if top[2] is not True:
        raise Invalid("invalid_exact_cardano_payload_phase2_invalid")
    forbidden = [name for key, name in _FORBIDDEN.items() if key in body]
    try:
        tx = decode_transaction(raw)
    except DecodeError as exc:
        if forbidden:
            raise Invalid("invalid_exact_cardano_payload_phase1_invalid", f"forbidden body fields: {forbidden}") from None
        raise Invalid("invalid_exact_cardano_payload_transaction_decode_failed", str(exc)) from None
    try:
        slot = port.current_slot()
    except Exception:  # noqa: BLE001 - the provider failed: retryable
        raise Invalid("exact_cardano_facilitator_chain_lookup_failed") from None
    on_ledger = already_broadcast or port.in_ledger(tx.tx_id, len(tx.outputs))
    if tx.ttl is None:
        raise Invalid("invalid_exact_cardano_payload_ttl_too_far", "the transaction has no TTL")
    if tx.ttl <= slot and not on_ledger:
        raise Invalid("invalid_exact_cardano_payload_ttl_expired")
    timeout = requirements.get("maxTimeoutSeconds")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or tx.ttl > slot + timeout:  # 1 s slots
        raise Invalid("invalid_exact_cardano_payload_ttl_too_far")
    if tx.valid_from is not None and tx.valid_from > slot:
        raise Invalid("invalid_exact_cardano_payload_not_yet_valid")
    out_refs = [OutputRef(r.split("#")[0], int(r.split("#")[1])) for r in refs]
    try:
        found = port.utxos(out_refs)
    except Exception:  # noqa: BLE001
        raise Invalid("exact_cardano_facilitator_chain_lookup_failed") from None
    nonce_ref = OutputRef(nonce.split("#")[0].lower(), int(nonce.split("#")[1]))
    nonce_out = found.get(nonce_ref)
    payer = nonce_out.address if nonce_out is not None else ""
    if not on_ledger:
        if nonce_out is None:
            raise Invalid("invalid_exact_cardano_payload_nonce_not_on_chain")
        if len(found) != len(out_refs):
            raise Invalid("invalid_exact_cardano_payload_input_not_available", payer=payer)
        signers = {blake2b_224(vk).hex() for vk, _ in tx.vkey_witnesses}
        for out in found.values():
            cred: Credential = payment_credential(address_from_str(out.address))
            if cred.kind != "key" or cred.hash not in signers:
                raise Invalid("invalid_exact_cardano_payload_phase1_invalid", "an input's owner did not sign",
                              payer=payer)
        if any(h not in signers for h in tx.required_signers):
            raise Invalid("invalid_exact_cardano_payload_phase1_invalid", "required signer without witness",
                          payer=payer)
        if forbidden or tx.mint or tx.withdrawals or tx.has_certificates or tx.donation or tx.unsupported:
            raise Invalid("invalid_exact_cardano_payload_phase1_invalid", "forbidden body fields", payer=payer)
        totals: dict[str, int] = {}
        for out in found.values():
            totals[LOVELACE] = totals.get(LOVELACE, 0) + out.lovelace
            for a, q in out.assets.items():
                totals[a] = totals.get(a, 0) + q
        totals[LOVELACE] = totals.get(LOVELACE, 0) - tx.fee
        for o in tx.outputs:
            totals[LOVELACE] = totals.get(LOVELACE, 0) - o.lovelace
            for a, q in o.assets.items():
                totals[a] = totals.get(a, 0) - q
        if any(totals.values()):
            raise Invalid("invalid_exact_cardano_payload_value_not_conserved", payer=payer)
    if tx.fee < min_fee(tx.size, port.params.rule_params()):
        raise Invalid("invalid_exact_cardano_payload_fee_below_minimum", payer=payer)
    to_pay = [o for o in tx.outputs if o.address == pay_to]
    if not to_pay:
        raise Invalid("invalid_exact_cardano_payload_recipient_mismatch", payer=payer)
    holding = [o for o in to_pay if asset == LOVELACE or o.assets.get(asset, 0) > 0]
    if not holding:
        raise Invalid("invalid_exact_cardano_payload_asset_mismatch", payer=payer)
    enough = [o for o in holding if (o.lovelace if asset == LOVELACE else o.assets.get(asset, 0)) >= int(amount)]
    if not enough:
        raise Invalid("invalid_exact_cardano_payload_amount_insufficient", payer=payer)
    if all(o.lovelace < min_utxo_lovelace(o.size, port.params.coins_per_utxo_byte) for o in enough):
        raise Invalid("invalid_exact_cardano_payload_min_utxo_insufficient", payer=payer)
    return Verdict(payer=payer, tx=tx)


def _body_hash(raw: bytes) -> bytes:
    from sandbox.txcbor import blake2b_256, container_items

    items, _ = container_items(raw, 0, 4)
    return blake2b_256(raw[items[0][0]:items[0][1]])


class CardanoExactFacilitator:
    """The SDK's ``SchemeNetworkFacilitator`` for ``exact`` on a devnet, over :class:`DevnetPort`.

    Args:
        port: chain access.
        network: the v2 network id served (``cardano:devnet``).
        confirmation_timeout_s: how long ``settle`` waits for the requested depth before ``settlement_pending``.
        poll_s: how often it looks while waiting.
        sleep: injected for tests.
        on_wait: called on each poll while waiting (the sandbox produces blocks there when the devnet is idle).
    """

    scheme = SCHEME
    caip_family = "cardano:*"

    def __init__(self, port: DevnetPort, *, network: str = "cardano:devnet", confirmation_timeout_s: float = 0.0,
                 poll_s: float = 0.25, sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[], None] | None = None, faults: Faults | None = None) -> None:
        self.port = port
        self.network = network
        self.network_id = 1 if network == "cardano:mainnet" else 0
        self.confirmation_timeout_s = confirmation_timeout_s
        self.poll_s = poll_s
        self.sleep = sleep
        self.on_wait = on_wait
        self.faults = faults or Faults()
        self._claims: dict[str, _Claim] = {}
        self._lock = threading.Lock()
        self.submissions = 0

    def get_extra(self, network: str) -> dict[str, Any]:
        return {"assetTransferMethods": ["default"], "areFeesSponsored": False,
                "l1Confirmations": {"minimum": 0, "maximum": 20}}

    def get_signers(self, network: str) -> list[str]:
        return []

    # The SDK passes pydantic models; the HTTP routes pass dicts.
    def verify(self, payload: Any, requirements: Any, context: Any = None) -> Any:
        from x402.schemas import VerifyResponse

        result = self.verify_dict(_as_dict(payload), _as_dict(requirements))
        return VerifyResponse.model_validate(result)

    def settle(self, payload: Any, requirements: Any, context: Any = None) -> Any:
        from x402.schemas import SettleResponse

        return SettleResponse.model_validate(self.settle_dict(_as_dict(payload), _as_dict(requirements)))

    def verify_dict(self, payload: Mapping[str, Any], requirements: Mapping[str, Any]) -> dict[str, Any]:
        """``/verify``: ``{isValid, invalidReason?, invalidMessage?, payer}``."""
        if self.faults.verify_flakes > 0:
            self.faults.verify_flakes -= 1
            return {"isValid": False, "invalidReason": "exact_cardano_facilitator_chain_lookup_failed",
                    "invalidMessage": "injected fault", "payer": ""}
        if self.faults.verify_reason:
            return {"isValid": False, "invalidReason": self.faults.verify_reason,
                    "invalidMessage": "injected fault", "payer": ""}
        try:
            verdict = verify_payment(payload, requirements, self.port, network=self.network,
                                     network_id=self.network_id)
        except Invalid as exc:
            return {"isValid": False, "invalidReason": exc.reason, "invalidMessage": exc.message, "payer": exc.payer}
        except Exception as exc:  # noqa: BLE001 - rule 23
            log.warning("verification error: %s", exc)
            return {"isValid": False, "invalidReason": "invalid_exact_cardano_payload_verification_error", "payer": ""}
        return {"isValid": True, "payer": verdict.payer}

    def settle_dict(self, payload: Mapping[str, Any], requirements: Mapping[str, Any]) -> dict[str, Any]:
        """``/settle``: claim the tx id, verify, submit once, wait (bounded) for the requested depth."""
        try:
            parsed, _ = _decode_payload_tx(payload)
            tx_id = _body_hash(parsed.raw).hex()
            n_outputs = len(parsed.top[0].get(1) or [])
        except Invalid as exc:
            return self._fail(exc.reason, "", exc.message)
        except Exception:  # noqa: BLE001
            return self._fail("invalid_exact_cardano_payload_transaction_decode_failed", "")
        extra = requirements.get("extra") if isinstance(requirements.get("extra"), Mapping) else {}
        policy = extra.get("confirmationPolicy", {"l1Confirmations": 1}) if extra else {"l1Confirmations": 1}
        wanted = policy.get("l1Confirmations", 1) if isinstance(policy, Mapping) else 1
        with self._lock:
            claim = self._claims.get(tx_id)
            if claim is not None and claim.state == "in-flight":
                return self._fail("duplicate_settlement", tx_id, payer=claim.payer)
            if claim is not None and claim.state == "rejected":
                return self._fail("exact_cardano_settlement_definitively_rejected", tx_id, payer=claim.payer)
            resume = claim is not None and claim.state == "submitted"
            if claim is None:
                claim = self._claims[tx_id] = _Claim("in-flight")
        if resume:
            try:
                verdict = verify_payment(payload, requirements, self.port, network=self.network,
                                         network_id=self.network_id, already_broadcast=True)
            except Invalid as exc:
                return self._fail(exc.reason, tx_id, exc.message, payer=claim.payer)
            return self._watch(tx_id, n_outputs, wanted, claim.payer or verdict.payer, verdict.tx.ttl)
        try:
            verdict = verify_payment(payload, requirements, self.port, network=self.network,
                                     network_id=self.network_id)
        except Invalid as exc:
            with self._lock:
                self._claims.pop(tx_id, None)  # nothing submitted: release the claim
            return self._fail(exc.reason, "", exc.message, payer=exc.payer)
        try:
            self.port.submit(parsed.raw)
            self.submissions += 1
        except LedgerRejection as exc:
            if self.port.in_ledger(tx_id, n_outputs):
                pass  # it landed anyway
            else:
                with self._lock:
                    claim.state = "rejected"
                return self._fail("exact_cardano_settlement_definitively_rejected", tx_id, str(exc),
                                  payer=verdict.payer)
        except Exception as exc:  # noqa: BLE001 - unknown outcome: keep the claim, it may land
            with self._lock:
                claim.state = "submitted"
            return self._fail("exact_cardano_settlement_failed", tx_id, str(exc), payer=verdict.payer)
        with self._lock:
            claim.state, claim.payer, claim.ttl = "submitted", verdict.payer, verdict.tx.ttl
        return self._watch(tx_id, n_outputs, wanted, verdict.payer, verdict.tx.ttl)

    def _watch(self, tx_id: str, n_outputs: int, wanted: int, payer: str, ttl: int | None) -> dict[str, Any]:
        deadline = time.monotonic() + self.confirmation_timeout_s
        while True:
            depth = self.port.depth(tx_id, n_outputs)
            if depth is not None and depth >= wanted and not self.faults.pending_forever:
                status = "mempool" if depth < 0 else "confirmed"
                return {"success": True, "transaction": tx_id, "network": self.network, "payer": payer,
                        "extra": {"status": status, "confirmations": depth}}
            if depth is None and ttl is not None and self.port.current_slot() >= ttl:
                return self._fail("exact_cardano_settlement_failed", tx_id, "the transaction expired unseen",
                                  payer=payer, extra={"status": "expired"})
            if time.monotonic() >= deadline:
                extra: dict[str, Any] = {"status": "pending", "transactionId": tx_id}
                if depth is not None:
                    extra["confirmations"] = depth
                return self._fail("settlement_pending", tx_id, payer=payer, extra=extra)
            if self.on_wait is not None:
                self.on_wait()
            self.sleep(self.poll_s)

    def _fail(self, reason: str, tx_id: str, message: str = "", *, payer: str = "",
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"success": False, "errorReason": reason, "transaction": tx_id,
                               "network": self.network, "payer": payer}
        if message:
            out["errorMessage"] = message[:300]
        if extra:
            out["extra"] = extra
        return out


def _as_dict(model: Any) -> dict[str, Any]:
    if isinstance(model, Mapping):
        return dict(model)
    return dict(model.model_dump(by_alias=True, exclude_none=True))
