"""Cardano phase-1 rules over a decoded transaction, failing with Ogmios v6.6 error codes and data.

Only one error is reported when several rules fail, in Ogmios's priority order: validity
interval, empty inputs and network first, then unknown inputs, then witnesses (signatures,
scripts, metadata), then output too small, size, fee, and value conservation last.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox.errors import LedgerRejection
from sandbox.ogmios_messages import MESSAGES
from sandbox.txcbor import (
    ASSET_SEP,
    Credential,
    DecodedOutput,
    DecodedTx,
    address_network,
    blake2b_224,
    byron_is_mainnet,
    reward_account_to_str,
)
from wallets.types import OutputRef

UTXO_ENTRY_OVERHEAD_BYTES = 160
METADATUM_MAX_BYTES = 64


@dataclass(frozen=True, slots=True)
class RuleParams:
    """The protocol parameters the rules read (a view of the ledger's parameters)."""

    network_id: int
    min_fee_coefficient: int
    min_fee_constant: int
    coins_per_utxo_byte: int
    max_tx_size: int
    max_value_size: int
    min_fee_ref_script_cost_per_byte: int = 15
    max_ref_scripts_size: int = 204800


@dataclass(frozen=True, slots=True)
class Spent:
    """What an input resolves to: its value and who must authorise spending it."""

    lovelace: int
    assets: Mapping[str, int]
    credential: Credential
    script_size: int = 0  # size of the reference script the output carries (0: none)


# --- Ogmios JSON shapes ---------------------------------------------------------------------


def value_json(lovelace: int, assets: Mapping[str, int]) -> dict[str, Any]:
    """An Ogmios ``Value``: ``{"ada": {"lovelace": n}, "<policy>": {"<name>": qty}}``."""
    value: dict[str, Any] = {"ada": {"lovelace": lovelace}}
    for asset, qty in sorted(assets.items()):
        policy, _, name = asset.partition(ASSET_SEP)
        value.setdefault(policy, {})[name] = qty
    return value


def ada_json(lovelace: int) -> dict[str, Any]:
    """An Ogmios ``Value<AdaOnly>``."""
    return {"ada": {"lovelace": lovelace}}


def ref_json(tx_id: str, index: int) -> dict[str, Any]:
    """An Ogmios ``TransactionOutputReference``."""
    return {"transaction": {"id": tx_id}, "index": index}


def output_json(out: DecodedOutput) -> dict[str, Any]:
    """An Ogmios ``TransactionOutput`` for a decoded output."""
    obj: dict[str, Any] = {"address": out.address, "value": value_json(out.lovelace, out.assets)}
    if out.datum_hash is not None:
        obj["datumHash"] = out.datum_hash
    if out.datum is not None:
        obj["datum"] = out.datum
    return obj


def min_utxo_lovelace(output_size: int, coins_per_utxo_byte: int) -> int:
    """The minimum lovelace an output of ``output_size`` serialized bytes must hold."""
    return (UTXO_ENTRY_OVERHEAD_BYTES + output_size) * coins_per_utxo_byte


REF_SCRIPT_FEE_RANGE_BYTES = 25_600
REF_SCRIPT_FEE_MULTIPLIER = Fraction(6, 5)


def ref_script_fee(total_size: int, cost_per_byte: int) -> int:
    """Conway's tiered reference-script fee: each 25,600-byte tier costs 1.2x the one before.

    ``total_size`` counts every reference script of the inputs and reference inputs, with
    repeats; the result is rounded down, as the ledger does.
    """
    price, fee, left = Fraction(cost_per_byte), Fraction(0), total_size
    while left >= REF_SCRIPT_FEE_RANGE_BYTES:
        fee += REF_SCRIPT_FEE_RANGE_BYTES * price
        price *= REF_SCRIPT_FEE_MULTIPLIER
        left -= REF_SCRIPT_FEE_RANGE_BYTES
    return int(fee + left * price)  # int() floors a non-negative Fraction


def min_fee(size: int, params: RuleParams, ref_scripts_size: int = 0) -> int:
    """The minimum fee of a transaction of ``size`` bytes (without its is-valid flag) and its reference scripts."""
    fee = params.min_fee_coefficient * size + params.min_fee_constant
    if ref_scripts_size:
        fee += ref_script_fee(ref_scripts_size, params.min_fee_ref_script_cost_per_byte)
    return fee


# --- the rules ------------------------------------------------------------------------------


def validate(
    tx: DecodedTx,
    *,
    resolve: Callable[[OutputRef], Spent | None],
    slot: int,
    params: RuleParams,
) -> None:
    """Raise :class:`LedgerRejection` for the first failing rule; return if ``tx`` is valid."""
    check_validity_interval(tx, slot)
    if not tx.inputs:
        raise LedgerRejection(3121, MESSAGES[3121])
    check_network(tx, params)
    check_unsupported(tx)
    spent, collateral, ref_scripts_size = resolve_inputs(tx, resolve)
    check_witnesses(tx, spent + collateral)
    check_metadata(tx)
    check_outputs(tx, params)
    if tx.size > params.max_tx_size:
        raise LedgerRejection(
            3119,
            MESSAGES[3119],
            {"measuredTransactionSize": {"bytes": tx.size}, "maximumTransactionSize": {"bytes": params.max_tx_size}},
        )
    if ref_scripts_size > params.max_ref_scripts_size:
        raise LedgerRejection(
            3166,
            MESSAGES[3166],
            {"measuredReferenceScriptsSize": {"bytes": ref_scripts_size},
             "maximumReferenceScriptsSize": {"bytes": params.max_ref_scripts_size}},
        )
    required = min_fee(tx.size, params, ref_scripts_size)
    if tx.fee < required:
        raise LedgerRejection(
            3122,
            MESSAGES[3122],
            {"minimumRequiredFee": ada_json(required), "providedFee": ada_json(tx.fee)},
        )
    check_value_conserved(tx, spent)


def check_validity_interval(tx: DecodedTx, slot: int) -> None:
    """3118 unless ``invalidBefore <= slot < ttl``."""
    if (tx.valid_from is None or tx.valid_from <= slot) and (tx.ttl is None or slot < tx.ttl):
        return
    interval: dict[str, int] = {}
    if tx.valid_from is not None:
        interval["invalidBefore"] = tx.valid_from
    if tx.ttl is not None:
        interval["invalidAfter"] = tx.ttl
    raise LedgerRejection(
        3118,
        MESSAGES[3118],
        {"validityInterval": interval, "currentSlot": slot},
    )


def _network_name(network_id: int) -> str:
    return "mainnet" if network_id == 1 else "testnet"


def check_network(tx: DecodedTx, params: RuleParams) -> None:
    """3124 for output addresses, reward accounts or a body network id of another network."""
    expected = _network_name(params.network_id)
    wrong = []
    for out in tx.outputs:
        net = address_network(out.address_bytes)
        if net is None:
            net = 1 if byron_is_mainnet(out.address_bytes) else 0
        if net != params.network_id:
            wrong.append(out.address)
    if wrong:
        raise LedgerRejection(
            3124,
            MESSAGES[3124],
            {"expectedNetwork": expected, "discriminatedType": "address", "invalidEntities": wrong},
        )
    accounts = [reward_account_to_str(a) for a in tx.withdrawals if a[0] & 0x0F != params.network_id]
    if accounts:
        raise LedgerRejection(
            3124,
            MESSAGES[3124],
            {"expectedNetwork": expected, "discriminatedType": "rewardAccount", "invalidEntities": accounts},
        )
    if tx.network_id is not None and tx.network_id != params.network_id:
        raise LedgerRejection(
            3124,
            MESSAGES[3124],
            {"expectedNetwork": expected, "discriminatedType": "transaction"},
        )


def check_unsupported(tx: DecodedTx) -> None:
    """Refuse what the devnet does not model: certificates, withdrawals, governance, Plutus."""
    if tx.has_certificates:
        raise LedgerRejection(3997, MESSAGES[3997],
                              {"error": "the devnet does not model certificates (no stake or pool state)"})
    if tx.unsupported:
        raise LedgerRejection(3997, MESSAGES[3997],
                              {"error": f"the devnet does not model {', '.join(tx.unsupported)}"})
    if tx.withdrawals:
        raise LedgerRejection(
            3141,
            MESSAGES[3141],
            {"incompleteWithdrawals": {reward_account_to_str(a): ada_json(0) for a in tx.withdrawals}},
        )


def resolve_inputs(
    tx: DecodedTx, resolve: Callable[[OutputRef], Spent | None]
) -> tuple[list[Spent], list[Spent], int]:
    """3117 for inputs, reference or collateral inputs that are unknown or already spent.

    Returns:
        What the spent inputs and the collateral inputs resolve to, and the total size of the
        reference scripts carried by the inputs and reference inputs (Conway counts both).
    """
    spent: list[Spent] = []
    collateral: list[Spent] = []
    unknown: list[dict[str, Any]] = []
    ref_scripts_size = 0
    for tx_id, index in tx.inputs:
        entry = resolve(OutputRef(tx_id, index))
        if entry is None:
            unknown.append(ref_json(tx_id, index))
        else:
            spent.append(entry)
            ref_scripts_size += entry.script_size
    for tx_id, index in tx.reference_inputs:
        entry = resolve(OutputRef(tx_id, index))
        if entry is None:
            unknown.append(ref_json(tx_id, index))
        else:
            ref_scripts_size += entry.script_size
    for tx_id, index in tx.collateral_inputs:
        entry = resolve(OutputRef(tx_id, index))
        if entry is None:
            unknown.append(ref_json(tx_id, index))
        else:
            collateral.append(entry)
    if unknown:
        raise LedgerRejection(
            3117,
            MESSAGES[3117],
            {"unknownOutputReferences": sorted(unknown, key=lambda r: (r["transaction"]["id"], r["index"]))},
        )
    return spent, collateral, ref_scripts_size


def _verifies(vkey: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(vkey).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def eval_native_script(script: Any, signers: set[str], tx: DecodedTx, depth: int = 0) -> bool:
    """Whether a native (timelock) script is satisfied by the signers and the validity interval."""
    if not isinstance(script, list) or not script or type(script[0]) is not int or depth > 64:
        return False
    kind = script[0]
    if kind == 0 and len(script) == 2 and isinstance(script[1], bytes):
        return script[1].hex() in signers
    if kind in (1, 2) and len(script) == 2 and isinstance(script[1], list):
        results = (eval_native_script(s, signers, tx, depth + 1) for s in script[1])
        return all(results) if kind == 1 else any(results)
    if kind == 3 and len(script) == 3 and type(script[1]) is int and isinstance(script[2], list):
        return sum(eval_native_script(s, signers, tx, depth + 1) for s in script[2]) >= script[1]
    if kind == 4 and len(script) == 2 and type(script[1]) is int:
        return tx.valid_from is not None and tx.valid_from >= script[1]
    if kind == 5 and len(script) == 2 and type(script[1]) is int:
        return tx.ttl is not None and tx.ttl <= script[1]
    return False


def check_witnesses(tx: DecodedTx, spent: Iterable[Spent]) -> None:
    """3100 bad signatures, 3101 missing ones, 3102–3104 scripts, 3110/3112/3113 Plutus leftovers."""
    body_hash = bytes.fromhex(tx.tx_id)
    invalid = [vk.hex() for vk, sig in tx.vkey_witnesses if not _verifies(vk, sig, body_hash)]
    invalid += [vk.hex() for vk, sig, _root in tx.bootstrap_witnesses if not _verifies(vk, sig, body_hash)]
    if invalid:
        raise LedgerRejection(
            3100,
            MESSAGES[3100],
            {"invalidSignatories": sorted(set(invalid))},
        )
    signers = {blake2b_224(vk).hex() for vk, _sig in tx.vkey_witnesses}
    roots = {root for _vk, _sig, root in tx.bootstrap_witnesses}
    needed_keys: set[str] = set(tx.required_signers)
    needed_scripts: set[str] = {asset.partition(ASSET_SEP)[0] for asset in tx.mint}
    for entry in spent:
        cred = entry.credential
        if cred.kind == "key":
            needed_keys.add(cred.hash)
        elif cred.kind == "script":
            needed_scripts.add(cred.hash)
        elif cred.hash not in roots:
            needed_keys.add(cred.hash)
    missing = sorted(needed_keys - signers - roots)
    if missing:
        raise LedgerRejection(3101, MESSAGES[3101], {"missingSignatories": missing})
    provided = set(tx.native_scripts) | set(tx.plutus_scripts)
    missing_scripts = sorted(needed_scripts - provided)
    if missing_scripts:
        raise LedgerRejection(3102, MESSAGES[3102], {"missingScripts": missing_scripts})
    extraneous = sorted(provided - needed_scripts)
    if extraneous:
        raise LedgerRejection(3104, MESSAGES[3104], {"extraneousScripts": extraneous}
        )
    if tx.plutus_scripts:
        raise LedgerRejection(3997, MESSAGES[3997], {"error": "the devnet does not run Plutus scripts"})
    failing = sorted(h for h, s in tx.native_scripts.items() if not eval_native_script(s, signers, tx))
    if failing:
        raise LedgerRejection(3103, MESSAGES[3103], {"failingNativeScripts": failing})
    if tx.redeemers:
        pointers = [{"purpose": purpose, "index": index} for purpose, index in tx.redeemers]
        raise LedgerRejection(3110, MESSAGES[3110], {"extraneousRedeemers": pointers})
    if tx.datums:
        raise LedgerRejection(3112, MESSAGES[3112], {"extraneousDatums": sorted(tx.datums)})
    if tx.script_data_hash is not None:
        raise LedgerRejection(
            3113,
            MESSAGES[3113],
            {"providedScriptIntegrity": tx.script_data_hash, "computedScriptIntegrity": None},
        )


def _metadatum_ok(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if isinstance(value, bytes):
        return len(value) <= METADATUM_MAX_BYTES
    if isinstance(value, str):
        return len(value.encode("utf-8")) <= METADATUM_MAX_BYTES
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**64) <= value < 2**64
    if isinstance(value, (list, tuple)):
        return all(_metadatum_ok(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_metadatum_ok(k, depth + 1) and _metadatum_ok(v, depth + 1) for k, v in value.items())
    return False


def _metadata_of(aux: Any) -> Any:
    """The metadata map of auxiliary data in any of its three shapes (map, array, tag 259)."""
    if isinstance(aux, dict):
        return aux
    if isinstance(aux, (list, tuple)) and aux:
        return aux[0]
    tag_value = getattr(aux, "value", None)
    if getattr(aux, "tag", None) == 259 and isinstance(tag_value, dict):
        return tag_value.get(0, {})
    return None


def check_metadata(tx: DecodedTx) -> None:
    """3105–3108: the auxiliary data hash in the body must match the auxiliary data as received."""
    if tx.aux_computed_hash is not None and tx.aux_hash is None:
        raise LedgerRejection(
            3105,
            MESSAGES[3105],
            {"metadata": {"hash": tx.aux_computed_hash}},
        )
    if tx.aux_hash is not None and tx.aux_computed_hash is None:
        raise LedgerRejection(
            3106,
            MESSAGES[3106],
            {"metadata": {"hash": tx.aux_hash}},
        )
    if tx.aux_hash != tx.aux_computed_hash:
        raise LedgerRejection(
            3107,
            MESSAGES[3107],
            {"provided": {"hash": tx.aux_hash}, "computed": {"hash": tx.aux_computed_hash}},
        )
    if tx.aux_data is not None:
        metadata = _metadata_of(tx.aux_data)
        if not isinstance(metadata, dict) or not all(
            type(k) is int and 0 <= k < 2**64 and _metadatum_ok(v) for k, v in metadata.items()
        ):
            raise LedgerRejection(3108, MESSAGES[3108])


def check_outputs(tx: DecodedTx, params: RuleParams) -> None:
    """3125 outputs below the minimum deposit, 3120 values above the maximum value size."""
    poor = []
    for out in tx.outputs:
        minimum = min_utxo_lovelace(out.size, params.coins_per_utxo_byte)
        if out.lovelace < minimum:
            poor.append({"output": output_json(out), "minimumRequiredValue": ada_json(minimum)})
    if poor:
        raise LedgerRejection(3125, MESSAGES[3125], {"insufficientlyFundedOutputs": poor}
        )
    large = [output_json(out) for out in tx.outputs if out.value_size > params.max_value_size]
    if large:
        raise LedgerRejection(3120, MESSAGES[3120], {"excessivelyLargeOutputs": large})


def _add(total: dict[str, int], assets: Mapping[str, int], sign: int = 1) -> None:
    for asset, qty in assets.items():
        new = total.get(asset, 0) + sign * qty
        if new:
            total[asset] = new
        else:
            total.pop(asset, None)


def check_value_conserved(tx: DecodedTx, spent: Iterable[Spent]) -> None:
    """3123 unless inputs + mint = outputs + fee + donation, for ADA and every asset."""
    consumed_ada, consumed = 0, dict[str, int]()
    for entry in spent:
        consumed_ada += entry.lovelace
        _add(consumed, entry.assets)
    _add(consumed, tx.mint)
    produced_ada, produced = tx.fee + tx.donation, dict[str, int]()
    for out in tx.outputs:
        produced_ada += out.lovelace
        _add(produced, out.assets)
    if consumed_ada != produced_ada or consumed != produced:
        raise LedgerRejection(
            3123,
            MESSAGES[3123],
            {"valueConsumed": value_json(consumed_ada, consumed), "valueProduced": value_json(produced_ada, produced)},
        )


def _decode_data(reason: str) -> dict[str, str]:
    return {era: reason for era in ("shelley", "allegra", "mary", "alonzo", "babbage", "conway")}


def decode_rejection(reason: str) -> LedgerRejection:
    """The -32602 rejection Ogmios sends for bytes that decode as no transaction."""
    return LedgerRejection(
        -32602, MESSAGES[-32602], _decode_data(reason)
    )
