"""Build and sign one payment transaction: coin selection, native tokens, change and the exact minimum fee.

Pure: no I/O. The transaction is encoded with cbor2 directly (pycardano's builder estimates
the fee and overpays; its serializer is slow), in the compact shapes the ledger accepts:

    tx      = [body, {0: [[vkey, signature]]}, true, auxiliary data | null]
    body    = {0: [[tx id, index], ...], 1: [output, ...], 2: fee, 3: ttl, 7: aux data hash}
    output  = [address bytes, lovelace | [lovelace, {policy: {asset name: quantity}}]]
    aux     = {label: metadatum}                      (Shelley-form metadata, e.g. CIP-20 label 674)

The fee is the ledger minimum for the final transaction as the ledger measures it:
``coefficient × (len(cbor) − 1) + constant`` (the one-byte is-valid flag is not counted).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import cbor2

from wallets.address import address_text, parse_address
from wallets.errors import AddressError, AmountError, InsufficientFundsError, WalletError
from wallets.types import LOVELACE, OutputRef, ProtocolParams, RequiredOutput, Utxo, is_native_asset

UTXO_ENTRY_OVERHEAD_BYTES = 160
"""Bytes the ledger adds to an output's serialized size when computing its minimum ADA."""

_WITNESS_SET_BYTES = len(cbor2.dumps({0: [[bytes(32), bytes(64)]]}))
_MAX_METADATA_CHUNK_BYTES = 64


class TransactionBuildError(WalletError):
    """A payment that cannot be built as asked (bad TTL, too many inputs, a misbehaving signer)."""


class MetadataError(TransactionBuildError):
    """Transaction metadata that the ledger would refuse (strings over 64 bytes, bad labels, floats)."""


class Signer(Protocol):
    """Whatever holds the wallet's payment key."""

    address: str

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        """Return ``(verification key 32 bytes, ed25519 signature 64 bytes)`` over ``tx_body_hash``."""
        ...


@dataclass(frozen=True, slots=True)
class SignedPayment:
    """A signed transaction ready to submit, with what it spends and what it costs."""

    tx_id: str
    cbor: bytes = field(repr=False)
    fee_lovelace: int
    inputs: tuple[OutputRef, ...]
    outputs: tuple[RequiredOutput, ...]
    change: tuple[Utxo, ...]
    ttl_slot: int
    cost_lovelace: int
    output_lovelace: tuple[int, ...] = ()
    """Lovelace placed in each required output (token outputs carry their minimum ADA)."""

    @property
    def size_bytes(self) -> int:
        """The size the ledger charges for (the CBOR without its is-valid flag byte)."""
        return len(self.cbor) - 1


def min_fee(size_bytes: int, params: ProtocolParams) -> int:
    """Return the ledger's minimum fee for a transaction of ``size_bytes`` (measured without the is-valid flag)."""
    return params.min_fee_coefficient * size_bytes + params.min_fee_constant


def min_utxo_lovelace(address: str, lovelace: int, assets: Mapping[str, int], params: ProtocolParams) -> int:
    """Return the minimum lovelace the ledger requires of an output to ``address`` holding ``assets``.

    The ledger's rule is ``lovelace ≥ (160 + size of the serialized output) × coinsPerUtxoByte``,
    and the size depends on the lovelace field itself. If ``lovelace`` satisfies the rule, the
    threshold for the output as it stands is returned; otherwise the least amount that does.
    """
    addr = parse_address(address).raw
    base = _output_size_without_coin(addr, _multiasset(assets))

    def needed(coin: int) -> int:
        return (UTXO_ENTRY_OVERHEAD_BYTES + base + _uint_size(coin)) * params.coins_per_utxo_byte

    coin = max(lovelace, 0)
    floor = needed(coin)
    if coin >= floor:
        return floor
    while True:  # climbs at most a few CBOR integer-size steps
        nxt = needed(floor)
        if nxt <= floor:
            return floor
        floor = nxt


@dataclass(frozen=True, slots=True)
class PaymentPlan:
    """A balanced, unsigned payment: inputs chosen, fee settled. Sign it with ``sign_payment``."""

    inputs: tuple[OutputRef, ...]
    fee_lovelace: int
    tx_id: str
    _draft: Any = field(repr=False, compare=False)
    _ctx: Any = field(repr=False, compare=False)
    _outputs: tuple[RequiredOutput, ...] = field(repr=False, compare=False)
    _change_address: str = field(repr=False, compare=False)


def plan_payment(
    outputs: Sequence[RequiredOutput],
    *,
    utxos: Sequence[Utxo],
    change_address: str,
    params: ProtocolParams,
    ttl_slot: int,
    metadata: Mapping[int, Any] | None = None,
) -> PaymentPlan:
    """Select inputs from ``utxos`` and balance the payment, without signing (see ``build_payment``)."""
    if not isinstance(ttl_slot, int) or isinstance(ttl_slot, bool) or ttl_slot < 0:
        raise TransactionBuildError(f"ttl_slot must be a non-negative integer slot, got {ttl_slot!r}")
    if not outputs:
        raise AmountError("a payment needs at least one output")
    change = parse_address(change_address)
    change_addr, network_id = change.raw, change.network_id
    planned = [_plan_output(i, o, network_id, params) for i, o in enumerate(outputs)]
    aux_bytes = _encode_metadata(metadata) if metadata else None
    ctx = _Context(planned, change_addr, params, ttl_slot, aux_bytes)

    pool = _dedupe(utxos)
    selected = _initial_selection(pool, ctx)
    chosen = {u.ref for u in selected}
    remaining = sorted((u for u in pool if u.ref not in chosen),
                       key=lambda u: (-u.lovelace, u.ref.tx_id, u.ref.index))
    while True:
        draft = ctx.assemble(selected)
        if isinstance(draft, _Draft):
            break
        if remaining:
            selected.append(remaining.pop(0))
            continue
        if draft.fold is not None:
            draft = draft.fold
            break
        raise _insufficient(pool, ctx, draft.short_lovelace, need_lovelace=draft.need_lovelace)
    inputs = tuple(sorted((u.ref for u in draft.inputs), key=lambda r: (r.tx_id, r.index)))
    tx_id = hashlib.blake2b(draft.body, digest_size=32).hexdigest()
    return PaymentPlan(inputs, draft.fee, tx_id, draft, ctx, tuple(outputs), change_address)


def sign_payment(plan: PaymentPlan, signer: Signer) -> SignedPayment:
    """Sign a planned payment; the transaction id and fee are the plan's."""
    return _sign(plan._draft, plan._ctx, plan._outputs, signer, plan._change_address)


def build_payment(
    outputs: Sequence[RequiredOutput],
    *,
    utxos: Sequence[Utxo],
    change_address: str,
    signer: Signer,
    params: ProtocolParams,
    ttl_slot: int,
    metadata: Mapping[int, Any] | None = None,
) -> SignedPayment:
    """Select inputs from ``utxos``, pay ``outputs`` in order, send change back, and sign.

    Args:
        outputs: required outputs, in the order they appear in the transaction (payTo first).
        utxos: the inputs available to this payment (already without other payments' reservations).
        change_address: the wallet's address; also fixes which network every output must be on.
        signer: signs the body hash.
        params: protocol parameters for the fee and minimum-UTxO rules.
        ttl_slot: the transaction's TTL: the ledger accepts it while the slot is below this.
        metadata: transaction metadata by label, e.g. ``{674: {"msg": ["x402", invoice_id]}}``.

    Raises:
        AmountError: a bad amount or asset, or an output below its minimum UTxO value.
        AddressError: an address that does not parse or is on another network.
        InsufficientFundsError: the UTxOs cannot cover the outputs and the fee.
        TransactionBuildError: bad TTL, metadata, a transaction past the size limit, a bad signature shape.
    """
    plan = plan_payment(outputs, utxos=utxos, change_address=change_address, params=params,
                        ttl_slot=ttl_slot, metadata=metadata)
    return sign_payment(plan, signer)


# --- addresses ---------------------------------------------------------------------------

def address_bytes(address: str) -> bytes:
    """Return the raw bytes of a bech32 payment address (AddressError if it does not parse)."""
    return parse_address(address).raw


def address_from_bytes(raw: bytes) -> str:
    """Return the bech32 form of raw Shelley address bytes (``addr`` or ``addr_test`` by network id)."""
    return address_text(raw)


# --- values and outputs ------------------------------------------------------------------


def _uint_size(n: int) -> int:
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _multiasset(assets: Mapping[str, int]) -> dict[bytes, dict[bytes, int]]:
    """Group ``policy.name`` quantities into the ledger's sorted multi-asset map (zero quantities dropped)."""
    grouped: dict[bytes, dict[bytes, int]] = {}
    for asset in sorted(assets):
        qty = assets[asset]
        if qty == 0:
            continue
        policy, _, name = asset.partition(".")
        grouped.setdefault(bytes.fromhex(policy), {})[bytes.fromhex(name)] = qty
    return {p: dict(sorted(names.items(), key=lambda kv: (len(kv[0]), kv[0]))) for p, names in grouped.items()}


def _output_obj(addr: bytes, lovelace: int, multiasset: dict[bytes, dict[bytes, int]]) -> list[Any]:
    return [addr, [lovelace, multiasset] if multiasset else lovelace]


def _output_size_without_coin(addr: bytes, multiasset: dict[bytes, dict[bytes, int]]) -> int:
    return len(cbor2.dumps(_output_obj(addr, 0, multiasset))) - 1


@dataclass(slots=True)
class _Planned:
    index: int
    addr: bytes
    lovelace: int
    assets: dict[str, int]
    obj: list[Any]


def _plan_output(i: int, out: RequiredOutput, network_id: int, params: ProtocolParams) -> _Planned:
    amount, asset = out.amount, out.asset
    what = f"output {i} ({out.role or 'payment'} to {out.address})"
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise AmountError(f"{what}: amount must be a whole number of the smallest unit, got {amount!r}")
    if amount <= 0:
        raise AmountError(f"{what}: amount must be positive, got {amount}")
    if asset != LOVELACE and not is_native_asset(asset):
        raise AmountError(f"{what}: unknown asset {asset!r}")
    parsed = parse_address(out.address)
    addr, net = parsed.raw, parsed.network_id
    if net != network_id:
        raise AddressError(f"{what}: address is for network id {net}, the wallet is on network id {network_id}")
    if asset == LOVELACE:
        need = min_utxo_lovelace(out.address, amount, {}, params)
        if amount < need:
            raise AmountError(f"{what}: {_units(LOVELACE, amount)} is below the ledger minimum UTxO value of "
                              f"{_units(LOVELACE, need)}")
        return _Planned(i, addr, amount, {}, _output_obj(addr, amount, {}))
    assets = {asset: amount}
    coin = min_utxo_lovelace(out.address, 0, assets, params)
    return _Planned(i, addr, coin, assets, _output_obj(addr, coin, _multiasset(assets)))


# --- metadata ----------------------------------------------------------------------------


def _check_metadatum(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise MetadataError("metadata nested too deeply")
    if isinstance(value, bool) or isinstance(value, float):
        raise MetadataError(f"metadata cannot hold {type(value).__name__} values")
    if isinstance(value, int):
        if not -(2**64) < value < 2**64:
            raise MetadataError("metadata integers must fit in 64 bits")
    elif isinstance(value, str):
        if len(value.encode()) > _MAX_METADATA_CHUNK_BYTES:
            raise MetadataError(f"metadata strings are limited to 64 bytes: {value[:20]!r}…")
    elif isinstance(value, bytes):
        if len(value) > _MAX_METADATA_CHUNK_BYTES:
            raise MetadataError("metadata byte strings are limited to 64 bytes")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_metadatum(item, depth + 1)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_metadatum(k, depth + 1)
            _check_metadatum(v, depth + 1)
    else:
        raise MetadataError(f"metadata cannot hold {type(value).__name__} values")


def _encode_metadata(metadata: Mapping[int, Any]) -> bytes:
    for label, value in metadata.items():
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < 2**64:
            raise MetadataError(f"metadata labels are unsigned integers, got {label!r}")
        _check_metadatum(value)
    return cbor2.dumps(dict(metadata))


# --- selection and balancing -------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    inputs: list[Utxo]
    body: bytes
    fee: int
    change_lovelace: int
    change_assets: dict[str, int]


@dataclass(slots=True)
class _Short:
    short_lovelace: int
    fold: _Draft | None = None
    need_lovelace: int | None = None
    """Least lovelace these inputs would need to pay with no change output (the rest as fee)."""


class _Context:
    """What stays fixed while inputs are added: outputs, change address, params, TTL, metadata."""

    def __init__(self, planned: list[_Planned], change_addr: bytes, params: ProtocolParams,
                 ttl_slot: int, aux_bytes: bytes | None) -> None:
        self.planned = planned
        self.change_addr = change_addr
        self.params = params
        self.ttl_slot = ttl_slot
        self.aux_bytes = aux_bytes
        self.aux_hash = hashlib.blake2b(aux_bytes, digest_size=32).digest() if aux_bytes else None
        self.out_objs = [p.obj for p in planned]
        self.out_lovelace = sum(p.lovelace for p in planned)
        self.out_assets: Counter[str] = Counter()
        for p in planned:
            self.out_assets.update(p.assets)
        # tx = array header + body + witness set + is-valid flag + aux data (or null)
        self.overhead = 1 + _WITNESS_SET_BYTES + 1 + (len(aux_bytes) if aux_bytes else 1)

    def body(self, inputs: list[Any], fee: int, change: list[Any] | None) -> bytes:
        body: dict[int, Any] = {0: inputs, 1: self.out_objs + [change] if change else self.out_objs,
                                2: fee, 3: self.ttl_slot}
        if self.aux_hash is not None:
            body[7] = self.aux_hash
        return cbor2.dumps(body)

    def _settle_fee(self, inputs: list[Any], change_for: Any) -> tuple[int, bytes]:
        """Find the least fee ≥ the minimum for the size the body has with that very fee."""
        fee, seen = 0, []
        for _ in range(12):
            body = self.body(inputs, fee, change_for(fee))
            need = min_fee(len(body) + self.overhead - 1, self.params)
            if need == fee:
                return fee, body
            seen.append(need)
            fee = need
        # No exact fixed point: the change crosses a CBOR integer-size boundary as the fee moves.
        for fee in sorted(set(seen)):
            body = self.body(inputs, fee, change_for(fee))
            if fee >= min_fee(len(body) + self.overhead - 1, self.params):
                return fee, body
        raise TransactionBuildError("fee did not converge")  # unreachable: the largest candidate always suffices

    def assemble(self, selected: list[Utxo]) -> _Draft | _Short:
        in_lovelace = sum(u.lovelace for u in selected)
        in_assets: Counter[str] = Counter()
        for u in selected:
            in_assets.update(u.assets)
        change_assets = {a: q - self.out_assets.get(a, 0) for a, q in in_assets.items()}
        if any(q < 0 for q in change_assets.values()):
            return _Short(0)  # cannot happen after token selection; add inputs anyway
        change_assets = {a: q for a, q in change_assets.items() if q}
        for a in self.out_assets:
            if in_assets.get(a, 0) < self.out_assets[a]:
                return _Short(0)
        leftover = in_lovelace - self.out_lovelace
        inputs = sorted(([bytes.fromhex(u.ref.tx_id), u.ref.index] for u in selected))
        ma = _multiasset(change_assets)
        fee, body = self._settle_fee(inputs, lambda f: _output_obj(self.change_addr, max(leftover - f, 0), ma))
        change = leftover - fee
        change_min = (UTXO_ENTRY_OVERHEAD_BYTES + _output_size_without_coin(self.change_addr, ma)
                      + _uint_size(max(change, 0))) * self.params.coins_per_utxo_byte
        if change >= change_min:
            self._check_size(body, change_assets)
            return _Draft(list(selected), body, fee, change, change_assets)
        short = change_min - change
        if change_assets:
            return _Short(short)
        # ADA-only change below its minimum: without a change output, is the leftover exactly the fee?
        fee_nc, body_nc = self._settle_fee(inputs, lambda f: None)
        if leftover == fee_nc:
            return _Draft(list(selected), body_nc, fee_nc, 0, {})
        if leftover > fee_nc:  # last resort if no input is left: the dust goes to the fee
            body_fold = self.body(inputs, leftover, None)
            if leftover >= min_fee(len(body_fold) + self.overhead - 1, self.params):
                return _Short(short, fold=_Draft(list(selected), body_fold, leftover, 0, {}))
        return _Short(short, need_lovelace=self.out_lovelace + fee_nc)

    def _check_size(self, body: bytes, change_assets: Mapping[str, int]) -> None:
        size = len(body) + self.overhead - 1
        if size > self.params.max_tx_size:
            raise TransactionBuildError(f"transaction would be {size} bytes, above the {self.params.max_tx_size}-byte limit "
                               "(too many inputs: consolidate the wallet's UTxOs)")
        if change_assets:
            value_size = len(cbor2.dumps([0, _multiasset(change_assets)]))
            if value_size > self.params.max_value_size:
                raise TransactionBuildError(f"change would hold {len(change_assets)} assets, past the value size limit")


def _dedupe(utxos: Sequence[Utxo]) -> list[Utxo]:
    seen: dict[OutputRef, Utxo] = {}
    for u in utxos:
        seen.setdefault(u.ref, u)
    return list(seen.values())


def _initial_selection(pool: list[Utxo], ctx: _Context) -> list[Utxo]:
    """Largest-first: enough of every required token, then lovelace for the outputs and a fee guess."""
    chosen: dict[OutputRef, Utxo] = {}
    for asset, qty in sorted(ctx.out_assets.items()):
        have = sum(u.assets.get(asset, 0) for u in chosen.values())
        for u in sorted(pool, key=lambda u: (-u.assets.get(asset, 0), u.ref.tx_id, u.ref.index)):
            if have >= qty or u.assets.get(asset, 0) <= 0:
                break
            if u.ref not in chosen:
                chosen[u.ref] = u
                have += u.assets[asset]
        if have < qty:
            raise _insufficient(pool, ctx, 0)
    guess = ctx.out_lovelace + min_fee(200 + 80 * len(ctx.planned) + ctx.overhead, ctx.params)
    have = sum(u.lovelace for u in chosen.values())
    for u in sorted(pool, key=lambda u: (-u.lovelace, u.ref.tx_id, u.ref.index)):
        if have >= guess:
            break
        if u.ref not in chosen:
            chosen[u.ref] = u
            have += u.lovelace
    return list(chosen.values())


def _units(asset: str, quantity: int) -> str:
    """A quantity for a person: ADA with six decimals for lovelace, smallest units for a token."""
    if asset == LOVELACE:
        whole, frac = divmod(int(quantity), 1_000_000)
        return f"{whole}.{frac:06d} ADA"
    return f"{quantity} of {asset}"


def _insufficient(pool: list[Utxo], ctx: _Context, short_lovelace: int, *,
                  need_lovelace: int | None = None) -> InsufficientFundsError:
    available: Counter[str] = Counter({LOVELACE: sum(u.lovelace for u in pool)})
    for u in pool:
        available.update(u.assets)
    fee_guess = min_fee(200 + 80 * len(ctx.planned) + ctx.overhead, ctx.params)
    with_change = max(ctx.out_lovelace + fee_guess, available[LOVELACE] + short_lovelace)
    # The figure is what the builder can do: without a change output when that is possible.
    least = need_lovelace if need_lovelace is not None else with_change
    needed = {LOVELACE: least, **dict(ctx.out_assets)}
    aside = f" ({_units(LOVELACE, with_change)} to get change back)" if with_change > least else ""
    missing = [f"need {_units(a, q)}{aside if a == LOVELACE else ''}, have {_units(a, available.get(a, 0))}"
               for a, q in needed.items() if q > available.get(a, 0)]
    return InsufficientFundsError("not enough funds for this payment (" + "; ".join(missing) + ")",
                                  needed=needed, available=dict(available))


def _sign(draft: _Draft, ctx: _Context, outputs: Sequence[RequiredOutput], signer: Signer,
          change_address: str) -> SignedPayment:
    body_hash = hashlib.blake2b(draft.body, digest_size=32).digest()
    vkey, signature = signer.sign(body_hash)
    if len(vkey) != 32 or len(signature) != 64:
        raise TransactionBuildError("signer returned a key or signature of the wrong size")
    witness = cbor2.dumps({0: [[bytes(vkey), bytes(signature)]]})
    tx = b"\x84" + draft.body + witness + b"\xf5" + (ctx.aux_bytes if ctx.aux_bytes else b"\xf6")
    tx_id = body_hash.hex()
    change: tuple[Utxo, ...] = ()
    if draft.change_lovelace:
        change = (Utxo(OutputRef(tx_id, len(ctx.planned)), change_address, draft.change_lovelace,
                       dict(draft.change_assets)),)
    cost = draft.fee + sum(p.lovelace for p in ctx.planned if p.addr != ctx.change_addr)
    return SignedPayment(
        tx_id=tx_id,
        cbor=tx,
        fee_lovelace=draft.fee,
        inputs=tuple(sorted((u.ref for u in draft.inputs), key=lambda r: (r.tx_id, r.index))),
        outputs=tuple(outputs),
        change=change,
        ttl_slot=ctx.ttl_slot,
        cost_lovelace=cost,
        output_lovelace=tuple(p.lovelace for p in ctx.planned),
    )


def __getattr__(name: str) -> Any:
    # PaymentSender lives in wallets.sender (it needs threading and a Chain); keep the contract's import path.
    if name == "PaymentSender":
        from wallets.sender import PaymentSender

        return PaymentSender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
