"""Blockfrost API v0 JSON shapes for the devnet: blocks, epochs, parameters, UTxOs, transactions, errors.

Pure functions from ledger objects to the dicts Blockfrost answers with (field names and types
as its OpenAPI spec gives them: lovelace and big quantities as decimal strings, times in unix
seconds, hex in lower case). Submission failures are rendered as Blockfrost does: a 400 whose
``message`` is cardano-submit-api's JSON text naming the ledger's failure constructor
(``BadInputsUTxO``, ``FeeTooSmallUTxO`` …), which clients match on.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Iterable, Mapping

from sandbox.ogmios_json import MAX_LOVELACE_SUPPLY, Genesis

REASONS = {400: "Bad Request", 402: "Project Over Limit", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 418: "Requested Banned", 425: "Mempool Full", 429: "Project Over Limit",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
MESSAGES = {
    402: "Usage is over limit.",
    404: "The requested component has not been found.",
    418: "IP has been auto-banned for extensive sending of requests after usage limit has been reached.",
    425: "Mempool is full, please try resubmitting again later.",
    429: "Project over limit.",
    500: "An unexpected response was received from the backend.",
}

# The ledger failure constructor a node reports for each Ogmios submission error code.
NODE_FAILURES = {
    3100: "InvalidWitnessesUTXOW",
    3101: "MissingVKeyWitnessesUTXOW",
    3102: "MissingScriptWitnessesUTXOW",
    3103: "ScriptWitnessNotValidatingUTXOW",
    3104: "ExtraneousScriptWitnessesUTXOW",
    3105: "MissingTxBodyMetadataHash",
    3106: "MissingTxMetadata",
    3107: "ConflictingMetadataHash",
    3108: "InvalidMetadata",
    3110: "ExtraRedeemers",
    3112: "NotAllowedSupplementalDatums",
    3113: "PPViewHashesDontMatch",
    3117: "BadInputsUTxO",
    3118: "OutsideValidityIntervalUTxO",
    3119: "MaxTxSizeUTxO",
    3120: "OutputTooBigUTxO",
    3121: "InputSetEmptyUTxO",
    3122: "FeeTooSmallUTxO",
    3123: "ValueNotConservedUTxO",
    3124: "WrongNetwork",
    3125: "BabbageOutputTooSmallUTxO",
    3141: "ConwayWdrlNotDelegatedToDRep",
}


def error_json(status: int, message: str | None = None) -> dict[str, Any]:
    """Blockfrost's error body: ``{"status_code", "error", "message"}``."""
    return {"status_code": status, "error": REASONS.get(status, "Error"),
            "message": message if message is not None else MESSAGES.get(status, REASONS.get(status, "Error"))}


def amount_json(lovelace: int, assets: Mapping[str, int] | None = None) -> list[dict[str, str]]:
    """``[{"unit": "lovelace", "quantity": "n"}, {"unit": <policy><name hex>, ...}]`` (lovelace first)."""
    items = [{"unit": "lovelace", "quantity": str(int(lovelace))}]
    for asset_id, qty in sorted((assets or {}).items()):
        items.append({"unit": asset_id.replace(".", ""), "quantity": str(int(qty))})
    return items


def unit_to_asset(unit: str) -> str:
    """A Blockfrost ``unit`` (policy id hex then asset name hex) as the ``policy.name`` asset id."""
    return unit if unit == "lovelace" else f"{unit[:56]}.{unit[56:]}"


def block_time(genesis: Genesis, slot: int) -> int:
    """Unix seconds at the start of ``slot``."""
    return genesis.system_start + slot * genesis.slot_length_ms // 1000


def _pseudo(tag: str, block_id: str) -> str:
    return hashlib.blake2b(f"{tag}:{block_id}".encode(), digest_size=32).hexdigest()


def block_json(block: Any, *, genesis: Genesis, txs: Iterable[Any], previous: str | None,
               next_block: str | None, tip_height: int) -> dict[str, Any]:
    """``/blocks/{hash_or_number}`` for a ledger ``Block`` and its decoded transactions."""
    decoded = list(txs)
    output = sum(o.lovelace for tx in decoded for o in tx.outputs)
    fees = sum(tx.fee for tx in decoded)
    epoch = genesis.epoch_of(block.slot)
    return {
        "time": block_time(genesis, block.slot), "height": block.height, "hash": block.id, "slot": block.slot,
        "epoch": epoch, "epoch_slot": block.slot - epoch * genesis.epoch_length,
        "slot_leader": "devnet-leader", "size": sum(len(tx.raw) for tx in decoded), "tx_count": len(decoded),
        "output": str(output) if decoded else None, "fees": str(fees) if decoded else None,
        "block_vrf": None, "op_cert": _pseudo("opcert", block.id), "op_cert_counter": "0",
        "previous_block": previous, "next_block": next_block,
        "confirmations": max(0, tip_height - block.height),
    }


def epoch_json(genesis: Genesis, *, slot: int, tip: Any, first_block_slot: int | None) -> dict[str, Any]:
    """``/epochs/latest`` for the epoch that holds ``slot``."""
    epoch = genesis.epoch_of(slot)
    start = block_time(genesis, epoch * genesis.epoch_length)
    return {
        "epoch": epoch, "start_time": start,
        "end_time": start + genesis.epoch_length * genesis.slot_length_ms // 1000,
        "first_block_time": block_time(genesis, first_block_slot) if first_block_slot is not None else start,
        "last_block_time": block_time(genesis, tip.slot) if tip is not None else start,
        "block_count": tip.height if tip is not None else 0, "tx_count": 0,
        "output": "0", "fees": "0", "active_stake": None,
    }


@functools.lru_cache(maxsize=1)
def _cost_models() -> tuple[dict[str, dict[str, int]], dict[str, list[int]]]:
    from pycardano.plutus import PLUTUS_V1_COST_MODEL, PLUTUS_V2_COST_MODEL

    named = {"PlutusV1": dict(sorted(PLUTUS_V1_COST_MODEL.items())),
             "PlutusV2": dict(sorted(PLUTUS_V2_COST_MODEL.items()))}
    raw = {name: list(model.values()) for name, model in named.items()}
    return named, raw


def parameters_json(params: Any, *, epoch: int) -> dict[str, Any]:
    """``/epochs/latest/parameters``: the ledger's enforced values, mainnet's for the rest."""
    named, raw = _cost_models()
    return {
        "epoch": epoch, "min_fee_a": params.min_fee_coefficient, "min_fee_b": params.min_fee_constant,
        "max_block_size": 90112, "max_tx_size": params.max_tx_size, "max_block_header_size": 1100,
        "key_deposit": "2000000", "pool_deposit": "500000000", "e_max": 18, "n_opt": 500,
        "a0": 0.3, "rho": 0.003, "tau": 0.2, "decentralisation_param": 0, "extra_entropy": None,
        "protocol_major_ver": 10, "protocol_minor_ver": 0, "min_utxo": str(params.coins_per_utxo_byte),
        "min_pool_cost": "170000000", "nonce": hashlib.blake2b(b"devnet nonce", digest_size=32).hexdigest(),
        "cost_models": named, "cost_models_raw": raw, "price_mem": 0.0577, "price_step": 0.0000721,
        "max_tx_ex_mem": "14000000", "max_tx_ex_steps": "10000000000", "max_block_ex_mem": "62000000",
        "max_block_ex_steps": "20000000000", "max_val_size": str(params.max_value_size),
        "collateral_percent": 150, "max_collateral_inputs": 3,
        "coins_per_utxo_size": str(params.coins_per_utxo_byte), "coins_per_utxo_word": str(params.coins_per_utxo_byte),
        "pvt_motion_no_confidence": 0.51, "pvt_committee_normal": 0.51, "pvt_committee_no_confidence": 0.51,
        "pvt_hard_fork_initiation": 0.51, "dvt_motion_no_confidence": 0.67, "dvt_committee_normal": 0.67,
        "dvt_committee_no_confidence": 0.6, "dvt_update_to_constitution": 0.75, "dvt_hard_fork_initiation": 0.6,
        "dvt_p_p_network_group": 0.67, "dvt_p_p_economic_group": 0.67, "dvt_p_p_technical_group": 0.67,
        "dvt_p_p_gov_group": 0.75, "dvt_treasury_withdrawal": 0.67, "committee_min_size": "7",
        "committee_max_term_length": "146", "gov_action_lifetime": "6", "gov_action_deposit": "100000000000",
        "drep_deposit": "500000000", "drep_activity": "20", "pvtpp_security_group": 0.51,
        "pvt_p_p_security_group": 0.51, "min_fee_ref_script_cost_per_byte": 15,
    }


def genesis_json(genesis: Genesis) -> dict[str, Any]:
    """``/genesis``: exactly the ten fields pycardano's ``GenesisParameters`` takes."""
    num, den = (int(x) for x in genesis.active_slots_coefficient.split("/"))
    return {
        "active_slots_coefficient": num / den, "update_quorum": 5, "max_lovelace_supply": str(MAX_LOVELACE_SUPPLY),
        "network_magic": genesis.network_magic, "epoch_length": genesis.epoch_length,
        "system_start": genesis.system_start, "slots_per_kes_period": 129600,
        "slot_length": genesis.slot_length_ms // 1000 or 1, "max_kes_evolutions": 62,
        "security_param": genesis.security_parameter,
    }


def utxo_json(ref: Any, out: Any, *, block_id: str | None) -> dict[str, Any]:
    """One item of ``/addresses/{address}/utxos``."""
    return {
        "address": out.address, "tx_hash": ref.tx_id, "tx_index": ref.index, "output_index": ref.index,
        "amount": amount_json(out.lovelace, out.assets), "block": block_id,
        "data_hash": out.datum_hash, "inline_datum": out.datum, "reference_script_hash": None,
    }


def _tx_common(tx: Any) -> dict[str, Any]:
    totals: dict[str, int] = {}
    lovelace = 0
    for o in tx.outputs:
        lovelace += o.lovelace
        for asset, qty in o.assets.items():
            totals[asset] = totals.get(asset, 0) + qty
    return {
        "hash": tx.tx_id, "output_amount": amount_json(lovelace, totals), "fees": str(tx.fee), "deposit": "0",
        "size": len(tx.raw), "invalid_before": None if tx.valid_from is None else str(tx.valid_from),
        "invalid_hereafter": None if tx.ttl is None else str(tx.ttl),
        "utxo_count": len(tx.inputs) + len(tx.outputs), "withdrawal_count": len(tx.withdrawals),
        "mir_cert_count": 0, "delegation_count": 0, "stake_cert_count": 0, "pool_update_count": 0,
        "pool_retire_count": 0, "asset_mint_or_burn_count": len(tx.mint), "redeemer_count": len(tx.redeemers),
        "valid_contract": True,
    }


def tx_json(tx: Any, *, block: Any, index: int, genesis: Genesis) -> dict[str, Any]:
    """``/txs/{hash}`` of a confirmed transaction at position ``index`` of ``block``."""
    common = _tx_common(tx)
    return {"hash": tx.tx_id, "block": block.id, "block_height": block.height,
            "block_time": block_time(genesis, block.slot), "slot": block.slot, "index": index,
            **{k: v for k, v in common.items() if k != "hash"}}


def output_json(tx_id: str, index: int, out: Any, *, consumed_by: str | None = None,
                mempool: bool = False) -> dict[str, Any]:
    """One output of ``/txs/{hash}/utxos`` (or of ``/mempool/{hash}`` with ``mempool``)."""
    item = {"address": out.address, "amount": amount_json(out.lovelace, out.assets), "output_index": index,
            "data_hash": out.datum_hash, "inline_datum": out.datum, "collateral": False,
            "reference_script_hash": None}
    if not mempool:
        item["consumed_by_tx"] = consumed_by
    return item


def input_json(tx_id: str, index: int, out: Any | None) -> dict[str, Any]:
    """One input of ``/txs/{hash}/utxos``; ``out`` is the output it spends, if known."""
    return {"address": out.address if out is not None else None,
            "amount": amount_json(out.lovelace, out.assets) if out is not None else [],
            "tx_hash": tx_id, "output_index": index,
            "data_hash": out.datum_hash if out is not None else None,
            "inline_datum": out.datum if out is not None else None,
            "reference_script_hash": None, "collateral": False, "reference": False}


def mempool_tx_json(tx: Any, *, resolve: Any) -> dict[str, Any]:
    """``/mempool/{hash}``: the waiting transaction, its inputs and outputs."""
    from wallets.types import OutputRef

    inputs = []
    for tx_id, index in tx.inputs:
        out = resolve(OutputRef(tx_id, index))
        inputs.append({"address": out.address if out is not None else None, "tx_hash": tx_id,
                       "output_index": index, "collateral": False, "reference": False})
    return {"tx": _tx_common(tx), "inputs": inputs,
            "outputs": [output_json(tx.tx_id, i, o, mempool=True) for i, o in enumerate(tx.outputs)],
            "redeemers": []}


def fingerprint(policy_hex: str, name_hex: str) -> str:
    """CIP-14 asset fingerprint (``asset1…``)."""
    from pycardano.crypto.bech32 import Encoding, bech32_encode, convertbits

    digest = hashlib.blake2b(bytes.fromhex(policy_hex + name_hex), digest_size=20).digest()
    return bech32_encode("asset", convertbits(digest, 8, 5), Encoding.BECH32)


def submit_failure_message(code: int, message: str, data: Any) -> str:
    """cardano-submit-api's failure text for an Ogmios rejection, as Blockfrost's 400 ``message`` carries it."""
    if code == -32602:
        return json.dumps({"tag": "TxSubmitFail", "contents": {
            "tag": "TxCmdTxReadError", "contents": [f"DeserialiseFailure 0 \"{message}\""]}})
    name = NODE_FAILURES.get(code, "DevnetUnsupported")
    detail = _failure_detail(code, data)
    text = f"ConwayUtxowFailure (UtxoFailure ({name}{detail}))"
    return json.dumps({"tag": "TxSubmitFail", "contents": {"tag": "TxCmdTxSubmitValidationError", "contents": {
        "tag": "TxValidationErrorInCardanoMode", "contents": {
            "kind": "ShelleyTxValidationError", "era": "ShelleyBasedEraConway", "error": [text],
            "reason": message}}}})


def _failure_detail(code: int, data: Any) -> str:
    """The constructor's argument as the node prints it, where clients read it (spent inputs, fees)."""
    if not isinstance(data, dict):
        return ""
    if code == 3117:
        refs = [f'TxIn (TxId {{unTxId = SafeHash "{r["transaction"]["id"]}"}}) (TxIx {{unTxIx = {r["index"]}}})'
                for r in data.get("unknownOutputReferences", []) if isinstance(r, dict)]
        return f" (fromList [{','.join(refs)}])"
    if code == 3122:
        need = data.get("minimumRequiredFee", {}).get("ada", {}).get("lovelace")
        got = data.get("providedFee", {}).get("ada", {}).get("lovelace")
        return f" (Mismatch {{mismatchSupplied = Coin {got}, mismatchExpected = Coin {need}}})"
    if code == 3118:
        interval = data.get("validityInterval", {})
        return (f" (ValidityInterval {{invalidBefore = {interval.get('invalidBefore')}, "
                f"invalidHereafter = {interval.get('invalidAfter')}}}) (SlotNo {data.get('currentSlot')})")
    return ""
