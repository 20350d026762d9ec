"""Ogmios v6.6 JSON shapes for the devnet: values, UTxOs, points, parameters, genesis, eras, errors.

Everything here is pure: the server hands in ledger objects and the devnet's :class:`Genesis`
(start time, slot and epoch lengths) and gets back plain JSON-able dicts. The shapes follow
``shared/ogmios/schemas/v6.6`` and what the ``ogmios`` 1.4 client and pycardano insist on
(see ``shared/reference/ogmios-notes.md``): v6.6 field names only, ratios as ``"n/d"``
strings, lovelace as ``{"ada": {"lovelace": n}}``, seven era summaries each with an ``end``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import cbor2

ERAS = ("byron", "shelley", "allegra", "mary", "alonzo", "babbage", "conway")
GENESIS_ERAS = ("byron", "shelley", "alonzo", "conway")
MAX_LOVELACE_SUPPLY = 45_000_000_000_000_000


@dataclass(frozen=True)
class Genesis:
    """The devnet's fixed chain constants: when slot 0 was, how long slots and epochs are."""

    system_start: int  # unix seconds (whole) of slot 0
    network_magic: int = 42
    epoch_length: int = 432_000
    slot_length_ms: int = 1000
    security_parameter: int = 2160
    active_slots_coefficient: str = "1/20"
    initial_funds: Mapping[str, int] = field(default_factory=dict)

    @property
    def safe_zone(self) -> int:
        """Slots in which no hard fork can happen: 3k/f, as on mainnet."""
        num, den = (int(x) for x in self.active_slots_coefficient.split("/"))
        return 3 * self.security_parameter * den // num

    def slot_at(self, unix_s: float) -> int:
        """The slot that contains the wall-clock instant ``unix_s`` (0 before the start)."""
        return max(0, int((unix_s - self.system_start) * 1000) // self.slot_length_ms)

    def epoch_of(self, slot: int) -> int:
        """The epoch that contains ``slot``."""
        return slot // self.epoch_length


def start_time_text(genesis: Genesis) -> str:
    """The system start as Ogmios prints it: ``%Y-%m-%dT%H:%M:%SZ`` (no fractions)."""
    moment = datetime.fromtimestamp(genesis.system_start, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def lovelace_json(lovelace: int) -> dict[str, Any]:
    """``Value<AdaOnly>``: ``{"ada": {"lovelace": n}}``."""
    return {"ada": {"lovelace": int(lovelace)}}


def value_json(lovelace: int, assets: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``Value``: ada plus ``{policy: {asset name hex: quantity}}`` from ``policy.name`` asset ids."""
    value: dict[str, Any] = lovelace_json(lovelace)
    for asset_id, quantity in sorted((assets or {}).items()):
        policy, _, name = asset_id.partition(".")
        value.setdefault(policy, {})[name] = int(quantity)
    return value


def output_ref_json(tx_id: str, index: int) -> dict[str, Any]:
    """``TransactionOutputReference``."""
    return {"transaction": {"id": tx_id}, "index": int(index)}


def utxo_json(ref: Any, out: Any) -> dict[str, Any]:
    """One ``Utxo`` item from a ledger ``(OutputRef, TxOut)`` pair."""
    item: dict[str, Any] = {
        "transaction": {"id": ref.tx_id},
        "index": ref.index,
        "address": out.address,
        "value": value_json(out.lovelace, out.assets),
    }
    if getattr(out, "datum_hash", None):
        item["datumHash"] = out.datum_hash
    if getattr(out, "datum", None):
        item["datum"] = out.datum
    if getattr(out, "script", None):
        item["script"] = script_json(out.script)
    return item


def native_script_json(script: Any) -> dict[str, Any]:
    """``Script<Native>`` from a decoded native script (CBOR arrays)."""
    kind = script[0]
    if kind == 0:
        return {"clause": "signature", "from": script[1].hex()}
    if kind in (1, 2):
        return {"clause": "all" if kind == 1 else "any", "from": [native_script_json(s) for s in script[1]]}
    if kind == 3:
        return {"clause": "some", "atLeast": script[1], "from": [native_script_json(s) for s in script[2]]}
    return {"clause": "after" if kind == 4 else "before", "slot": script[1]}


def script_json(inner_hex: str) -> dict[str, Any]:
    """``Script`` from a reference script's ``[language, script]`` CBOR hex (native scripts also as JSON)."""
    from sandbox.txcbor import script_ref

    ref = script_ref(inner_hex)
    if ref.language == "native":
        return {"language": "native", "json": native_script_json(cbor2.loads(bytes.fromhex(ref.cbor))),
                "cbor": ref.cbor}
    return {"language": ref.language, "cbor": ref.cbor}


def point_json(block: Any) -> Any:
    """``PointOrOrigin``: exactly ``{"slot", "id"}`` (pycardano refuses extra keys), or ``"origin"``."""
    if block is None:
        return "origin"
    return {"slot": block.slot, "id": block.id}


def tip_json(block: Any) -> Any:
    """``TipOrOrigin``: ``{"slot", "id", "height"}`` of the last block, or ``"origin"``."""
    if block is None:
        return "origin"
    return {"slot": block.slot, "id": block.id, "height": block.height}


def rpc_error(code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error object; ``data`` is left out when there is none."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


def deserialisation_error(reason: str) -> dict[str, Any]:
    """Ogmios's -32602 for CBOR that no era can decode: one reason per era."""
    from sandbox.ogmios_messages import MESSAGES

    per_era = {era: reason for era in ERAS[1:]}
    return rpc_error(-32602, MESSAGES[-32602], per_era)


# --- protocol parameters ---------------------------------------------------------------------------


PLUTUS_V3_COST_MODEL: tuple[int, ...] = (
    100788, 420, 1, 1, 1000, 173, 0, 1, 1000, 59957, 4, 1, 11183, 32, 201305, 8356, 4, 16000, 100,
    16000, 100, 16000, 100, 16000, 100, 16000, 100, 16000, 100, 100, 100, 16000, 100, 94375, 32,
    132994, 32, 61462, 4, 72010, 178, 0, 1, 22151, 32, 91189, 769, 4, 2, 85848, 123203, 7305, -900,
    1716, 549, 57, 85848, 0, 1, 1, 1000, 42921, 4, 2, 24548, 29498, 38, 1, 898148, 27279, 1, 51775,
    558, 1, 39184, 1000, 60594, 1, 141895, 32, 83150, 32, 15299, 32, 76049, 1, 13169, 4, 22100, 10,
    28999, 74, 1, 28999, 74, 1, 43285, 552, 1, 44749, 541, 1, 33852, 32, 68246, 32, 72362, 32, 7243,
    32, 7391, 32, 11546, 32, 85848, 123203, 7305, -900, 1716, 549, 57, 85848, 0, 1, 90434, 519, 0,
    1, 74433, 32, 85848, 123203, 7305, -900, 1716, 549, 57, 85848, 0, 1, 1, 85848, 123203, 7305,
    -900, 1716, 549, 57, 85848, 0, 1, 955506, 213312, 0, 2, 270652, 22588, 4, 1457325, 64566, 4,
    20467, 1, 4, 0, 141992, 32, 100788, 420, 1, 1, 81663, 32, 59498, 32, 20142, 32, 24588, 32,
    20744, 32, 25933, 32, 24623, 32, 43053543, 10, 53384111, 14333, 10, 43574283, 26308, 10, 16000,
    100, 16000, 100, 962335, 18, 2780678, 6, 442008, 1, 52538055, 3756, 18, 267929, 18, 76433006,
    8868, 18, 52948122, 18, 1995836, 36, 3227919, 12, 901022, 1, 166917843, 4307, 36, 284546, 36,
    158221314, 26549, 36, 74698472, 36, 333849714, 1, 254006273, 72, 2174038, 72, 2261318, 64571, 4,
    207616, 8310, 4, 1293828, 28716, 63, 0, 1, 1006041, 43623, 251, 0, 1, 100181, 726, 719, 0, 1,
    100181, 726, 719, 0, 1, 100181, 726, 719, 0, 1, 107878, 680, 0, 1, 95336, 1, 281145, 18848, 0,
    1, 180194, 159, 1, 1, 158519, 8942, 0, 1, 159378, 8813, 0, 1, 107490, 3298, 1, 106057, 655, 1,
    1964219, 24520, 3
)
"""Mainnet's Plutus V3 cost model at protocol version 10 (297 parameters, in the ledger's order)."""


@functools.lru_cache(maxsize=1)
def _cost_models() -> dict[str, list[int]]:
    """Mainnet Plutus V1/V2 (ordered as pycardano reads them back: sorted names) and V3 cost models."""
    from pycardano.plutus import PLUTUS_V1_COST_MODEL, PLUTUS_V2_COST_MODEL

    return {
        "plutus:v1": [PLUTUS_V1_COST_MODEL[k] for k in sorted(PLUTUS_V1_COST_MODEL)],
        "plutus:v2": [PLUTUS_V2_COST_MODEL[k] for k in sorted(PLUTUS_V2_COST_MODEL)],
        "plutus:v3": list(PLUTUS_V3_COST_MODEL),
    }


_STAKE_POOL_THRESHOLDS = {
    "noConfidence": "51/100",
    "constitutionalCommittee": {"default": "51/100", "stateOfNoConfidence": "51/100"},
    "hardForkInitiation": "51/100",
    "protocolParametersUpdate": {"security": "51/100"},
}
_DREP_THRESHOLDS = {
    "noConfidence": "67/100",
    "constitution": "3/4",
    "constitutionalCommittee": {"default": "67/100", "stateOfNoConfidence": "3/5"},
    "hardForkInitiation": "3/5",
    "protocolParametersUpdate": {
        "network": "67/100", "economic": "67/100", "technical": "67/100", "governance": "3/4",
    },
    "treasuryWithdrawals": "67/100",
}
_CONWAY_UPDATABLE = {
    "stakePoolVotingThresholds": _STAKE_POOL_THRESHOLDS,
    "delegateRepresentativeVotingThresholds": _DREP_THRESHOLDS,
    "constitutionalCommitteeMinSize": 7,
    "constitutionalCommitteeMaxTermLength": 146,
    "governanceActionLifetime": 6,
    "governanceActionDeposit": lovelace_json(100_000_000_000),
    "delegateRepresentativeDeposit": lovelace_json(500_000_000),
    "delegateRepresentativeMaxIdleTime": 20,
}
_EXECUTION_PRICES = {"memory": "577/10000", "cpu": "721/10000000"}
_TX_EXECUTION_UNITS = {"memory": 14_000_000, "cpu": 10_000_000_000}
_BLOCK_EXECUTION_UNITS = {"memory": 62_000_000, "cpu": 20_000_000_000}


def protocol_parameters_json(params: Any) -> dict[str, Any]:
    """``ProtocolParameters`` (v6.6 names only) from the ledger's :class:`LedgerParams`.

    The fee, deposit and size values the ledger enforces come from ``params``; the rest are
    mainnet's current values. Fields the schema marks optional but the ``ogmios`` client reads
    (``maxTransactionSize``, ``maxValueSize``, execution prices and limits) are always present.
    """
    return {
        "minFeeCoefficient": params.min_fee_coefficient,
        "minFeeConstant": lovelace_json(params.min_fee_constant),
        "minFeeReferenceScripts": {"range": 25600, "base": float(params.min_fee_ref_script_cost_per_byte),
                                   "multiplier": 1.2},
        "minUtxoDepositCoefficient": params.coins_per_utxo_byte,
        "minUtxoDepositConstant": lovelace_json(0),
        "maxBlockBodySize": {"bytes": params.max_block_body_size},
        "maxBlockHeaderSize": {"bytes": 1100},
        "maxTransactionSize": {"bytes": params.max_tx_size},
        "maxValueSize": {"bytes": params.max_value_size},
        "maxReferenceScriptsSize": {"bytes": params.max_ref_scripts_size},
        "extraEntropy": "neutral",
        "stakeCredentialDeposit": lovelace_json(2_000_000),
        "stakePoolDeposit": lovelace_json(500_000_000),
        "stakePoolRetirementEpochBound": 18,
        "stakePoolPledgeInfluence": "3/10",
        "minStakePoolCost": lovelace_json(170_000_000),
        "desiredNumberOfStakePools": 500,
        "monetaryExpansion": "3/1000",
        "treasuryExpansion": "1/5",
        "collateralPercentage": 150,
        "maxCollateralInputs": 3,
        "plutusCostModels": _cost_models(),
        "scriptExecutionPrices": dict(_EXECUTION_PRICES),
        "maxExecutionUnitsPerTransaction": dict(_TX_EXECUTION_UNITS),
        "maxExecutionUnitsPerBlock": dict(_BLOCK_EXECUTION_UNITS),
        **_CONWAY_UPDATABLE,
        "version": {"major": 10, "minor": 0},
    }


# --- eras and genesis ------------------------------------------------------------------------------


def _bound(genesis: Genesis, slot: int) -> dict[str, Any]:
    return {
        "time": {"seconds": slot * genesis.slot_length_ms // 1000},
        "slot": slot,
        "epoch": genesis.epoch_of(slot),
    }


def era_start_json(genesis: Genesis) -> dict[str, Any]:
    """``Bound`` of the current (Conway) era: every hard fork happened at slot 0."""
    return _bound(genesis, 0)


def era_summaries_json(genesis: Genesis, *, tip_slot: int) -> list[dict[str, Any]]:
    """Seven ``EraSummary`` items, Byron … Conway, each with ``start``, ``end`` and ``parameters``.

    Byron to Babbage are empty eras at slot 0 (a devnet that forks straight into Conway); the
    Conway summary ends at the first epoch boundary past the safe zone ahead of ``tip_slot``,
    which is how far a real node can convert slots to time.
    """
    origin = _bound(genesis, 0)
    horizon_epoch = genesis.epoch_of(tip_slot + genesis.safe_zone) + 1
    conway_end = _bound(genesis, horizon_epoch * genesis.epoch_length)
    summaries = []
    for era in ERAS:
        params = {
            "epochLength": genesis.epoch_length,
            "slotLength": {"milliseconds": genesis.slot_length_ms},
            "safeZone": 2 * genesis.security_parameter if era == "byron" else genesis.safe_zone,
        }
        end = conway_end if era == "conway" else origin
        summaries.append({"start": dict(origin), "end": end, "parameters": params})
    return summaries


def _shelley_initial_parameters(params: Any) -> dict[str, Any]:
    return {
        "minFeeCoefficient": params.min_fee_coefficient,
        "minFeeConstant": lovelace_json(params.min_fee_constant),
        "minUtxoDepositCoefficient": 0,
        "minUtxoDepositConstant": lovelace_json(1_000_000),
        "maxBlockBodySize": {"bytes": 65536},
        "maxBlockHeaderSize": {"bytes": 1100},
        "maxTransactionSize": {"bytes": params.max_tx_size},
        "stakeCredentialDeposit": lovelace_json(2_000_000),
        "stakePoolDeposit": lovelace_json(500_000_000),
        "stakePoolRetirementEpochBound": 18,
        "stakePoolPledgeInfluence": "3/10",
        "minStakePoolCost": lovelace_json(340_000_000),
        "desiredNumberOfStakePools": 150,
        "monetaryExpansion": "3/1000",
        "treasuryExpansion": "1/5",
        "federatedBlockProductionRatio": "1/1",
        "extraEntropy": "neutral",
        "version": {"major": 2, "minor": 0},
    }


def genesis_configuration_json(era: str, genesis: Genesis, params: Any) -> dict[str, Any]:
    """``Genesis<Byron|Shelley|Alonzo|Conway>`` for the devnet.

    Raises:
        ValueError: ``era`` has no genesis configuration.
    """
    start = start_time_text(genesis)
    if era == "byron":
        # The v6.6 schema names ``protocolParameters`` but the server and the client use
        # ``updatableParameters``; Byron is an empty era here, so only the fee rule is given.
        return {
            "era": "byron",
            "genesisKeyHashes": [],
            "genesisDelegations": {},
            "startTime": start,
            "initialFunds": {},
            "initialVouchers": {},
            "securityParameter": genesis.security_parameter,
            "networkMagic": genesis.network_magic,
            "updatableParameters": {
                "heavyDelegationThreshold": "3/10000",
                "maxBlockBodySize": {"bytes": 2_000_000},
                "maxBlockHeaderSize": {"bytes": 2_000_000},
                "maxUpdateProposalSize": {"bytes": 700},
                "maxTransactionSize": {"bytes": 4096},
                "multiPartyComputationThreshold": "1/50",
                "scriptVersion": 0,
                "slotDuration": genesis.slot_length_ms,
                "unlockStakeEpoch": 18_446_744_073_709_551_615,
                "updateProposalThreshold": "1/10",
                "updateProposalTimeToLive": 432,
                "updateVoteThreshold": "1/1000",
                "softForkInitThreshold": "9/10",
                "softForkMinThreshold": "3/5",
                "softForkDecrementThreshold": "1/20",
            },
        }
    if era == "shelley":
        return {
            "era": "shelley",
            "startTime": start,
            "networkMagic": genesis.network_magic,
            "network": "testnet",
            "activeSlotsCoefficient": genesis.active_slots_coefficient,
            "securityParameter": genesis.security_parameter,
            "epochLength": genesis.epoch_length,
            "slotsPerKesPeriod": 129600,
            "maxKesEvolutions": 62,
            "slotLength": {"milliseconds": genesis.slot_length_ms},
            "updateQuorum": 5,
            "maxLovelaceSupply": MAX_LOVELACE_SUPPLY,
            "initialParameters": _shelley_initial_parameters(params),
            "initialDelegates": [],
            "initialFunds": {a: lovelace_json(n) for a, n in sorted(genesis.initial_funds.items())},
            "initialStakePools": {"stakePools": {}, "delegators": {}},
        }
    if era == "alonzo":
        return {
            "era": "alonzo",
            "updatableParameters": {
                "minUtxoDepositCoefficient": 34482,
                "collateralPercentage": 150,
                "plutusCostModels": {"plutus:v1": _cost_models()["plutus:v1"]},
                "maxCollateralInputs": 3,
                "maxExecutionUnitsPerBlock": {"memory": 50_000_000, "cpu": 40_000_000_000},
                "maxExecutionUnitsPerTransaction": {"memory": 10_000_000, "cpu": 10_000_000_000},
                "maxValueSize": {"bytes": 5000},
                "scriptExecutionPrices": dict(_EXECUTION_PRICES),
            },
        }
    if era == "conway":
        return {
            "era": "conway",
            "constitution": constitution_json(),
            "constitutionalCommittee": {"members": [], "quorum": "2/3"},
            "updatableParameters": dict(_CONWAY_UPDATABLE),
        }
    raise ValueError(f"no genesis configuration for era {era!r}")


def constitution_json() -> dict[str, Any]:
    """``Constitution``: mainnet's (anchor and guardrails script hash); the devnet enacts no other."""
    return {
        "metadata": {
            "url": "ipfs://bafkreifnwj6zpu3ixa4siz2lndqybyc5wnnt3jkwyutci4e2tmbnj3xrdm",
            "hash": "ca41a91f399259bcefe57f9858e91f6d00e1a38d6d9c63d4052914ea7bd70cb2",
        },
        "guardrails": {"hash": "fa24fb305126805cf2164c161d852a0e7330cf988f1fe558cf7d4a64"},
    }


SYNCED_WITHIN_S = 120  # a tip this recent counts as fully synchronised


def _utc_text(unix_s: float) -> str:
    moment = datetime.fromtimestamp(unix_s, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def health_json(node: Any, *, started_at: float, version: str, connections: tuple[int, int, int],
                now: float) -> dict[str, Any]:
    """Ogmios's ``GET /health`` body for the devnet node.

    ``connections`` is (active, total, messages). ``networkSynchronization`` is 1 when the tip
    is at most ``SYNCED_WITHIN_S`` behind ``now``, else the tip's share of the time since genesis.
    """
    genesis: Genesis = node.genesis
    tip = node.tip()
    tip_time = genesis.system_start + (tip.slot if tip else 0) * genesis.slot_length_ms / 1000
    elapsed = max(now - genesis.system_start, 1e-9)
    behind = now - tip_time
    sync = 1 if behind <= SYNCED_WITHIN_S else round(max(0.0, tip_time - genesis.system_start) / elapsed, 5)
    current_slot = genesis.slot_at(now)
    active, total, messages = connections
    return {
        "startTime": _utc_text(started_at),
        "lastKnownTip": {"slot": tip.slot, "id": tip.id, "height": tip.height} if tip else "origin",
        "lastTipUpdate": _utc_text(tip_time) if tip else None,
        "networkSynchronization": sync,
        "currentEra": "conway",
        "metrics": {
            "activeConnections": active,
            "runtimeStats": {"cpuTime": 0, "currentHeapSize": 0, "gcCpuTime": 0, "maxHeapSize": 0},
            "sessionDurations": {"max": 0, "mean": 0, "min": 0},
            "totalConnections": total,
            "totalMessages": messages,
            "totalUnrouted": 0,
        },
        "connectionStatus": "connected",
        "currentEpoch": genesis.epoch_of(current_slot),
        "slotInEpoch": current_slot % genesis.epoch_length,
        "version": version,
        "network": "devnet",
    }


# --- transactions (mempool monitor, fields=all) --------------------------------------------------


def _metadatum_json(value: Any) -> Any:
    """The no-schema JSON form of a metadatum, or raise ValueError if it has none (bytes, int keys)."""
    if isinstance(value, bool) or value is None:
        raise ValueError("not a metadatum")
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_metadatum_json(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("map keys are not all text")
        return {k: _metadatum_json(v) for k, v in value.items()}
    raise ValueError("bytes have no plain JSON form")


def _metadata_labels(aux: Any) -> dict[str, Any]:
    if isinstance(aux, cbor2.CBORTag) and aux.tag == 259:  # Alonzo-style {0: metadata, …}
        aux = aux.value.get(0, {}) if isinstance(aux.value, dict) else {}
    elif isinstance(aux, (list, tuple)):  # Shelley-Mary [metadata, scripts]
        aux = aux[0] if aux else {}
    labels: dict[str, Any] = {}
    for label, datum in (aux or {}).items():
        try:
            labels[str(label)] = {"json": _metadatum_json(datum)}
        except ValueError:
            labels[str(label)] = {"cbor": cbor2.dumps(datum).hex()}
    return labels


def transaction_json(tx_id: str, cbor: bytes, *, full: bool) -> dict[str, Any]:
    """A mempool transaction for ``nextTransaction``: ``{"id"}``, or the Ogmios ``Transaction``.

    With ``full`` the result carries id, spends, inputs, outputs (address, value, datumHash),
    fee, validityInterval, metadata (hash and labels), signatories and the raw cbor.
    """
    if not full:
        return {"id": tx_id}
    from sandbox.txcbor import decode_transaction

    tx = decode_transaction(cbor)
    outputs = []
    for out in tx.outputs:
        item: dict[str, Any] = {"address": out.address, "value": value_json(out.lovelace, out.assets)}
        if out.datum_hash:
            item["datumHash"] = out.datum_hash
        if out.datum:
            item["datum"] = out.datum
        outputs.append(item)
    interval: dict[str, int] = {}
    if tx.valid_from is not None:
        interval["invalidBefore"] = tx.valid_from
    if tx.ttl is not None:
        interval["invalidAfter"] = tx.ttl
    result: dict[str, Any] = {
        "id": tx_id,
        "spends": "inputs",
        "inputs": [output_ref_json(t, i) for t, i in tx.inputs],
        "outputs": outputs,
        "fee": lovelace_json(tx.fee),
        "validityInterval": interval,
        "signatories": [{"key": k.hex(), "signature": s.hex()} for k, s in tx.vkey_witnesses],
        "cbor": cbor.hex(),
    }
    if tx.aux_data is not None:
        result["metadata"] = {
            "hash": tx.aux_hash or tx.aux_computed_hash,
            "labels": _metadata_labels(tx.aux_data),
        }
    if tx.network_id is not None:
        result["network"] = "mainnet" if tx.network_id == 1 else "testnet"
    return result


# --- blocks (chain sync) ---------------------------------------------------------------------------

_ISSUER_VKEY = "5d" * 32
"""The devnet's one block issuer (a fixed, meaningless key: the devnet checks no block signatures)."""


def block_json(block: Any, raws: tuple[bytes, ...], *, ancestor: str | None) -> dict[str, Any]:
    """A ``Block<Praos>`` of the conway era for ``nextBlock``, with every transaction in full.

    ``ancestor`` is the previous block's id (None for the first block: ``"genesis"``).
    """
    from sandbox.txcbor import decode_transaction

    return {
        "type": "praos",
        "era": "conway",
        "id": block.id,
        "ancestor": ancestor if ancestor is not None else "genesis",
        "height": block.height,
        "size": {"bytes": sum(len(raw) for raw in raws)},
        "slot": block.slot,
        "transactions": [transaction_json(decode_transaction(raw).tx_id, raw, full=True) for raw in raws],
        "protocol": {"version": {"major": 9, "minor": 0}},
        "issuer": {
            "verificationKey": _ISSUER_VKEY,
            "vrfVerificationKey": _ISSUER_VKEY,
            "operationalCertificate": {"count": 0, "kes": {"period": 0, "verificationKey": _ISSUER_VKEY}},
            "leaderValue": {},
        },
    }
