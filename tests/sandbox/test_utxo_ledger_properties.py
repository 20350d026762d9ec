"""Properties of the devnet ledger (hypothesis): value conservation, fee arithmetic, robust decoding."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pycardano import MultiAsset, TransactionBody, TransactionOutput, Value

from sandbox.errors import LedgerRejection
from sandbox.utxo_ledger import Ledger, LedgerParams
from tests.sandbox.test_utxo_ledger import Wallet, assert_ogmios_shape, sign, tx_input
from wallets.types import OutputRef

POLICY = "cd" * 28
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALICE = Wallet.new()
BOB = Wallet.new()


def _multiasset(assets: dict[str, int]) -> MultiAsset:
    grouped: dict[bytes, dict[bytes, int]] = {}
    for asset, qty in assets.items():
        policy, name = asset.split(".")
        grouped.setdefault(bytes.fromhex(policy), {})[bytes.fromhex(name)] = qty
    return MultiAsset.from_primitive(grouped)


def _split(total: int, weights: list[int]) -> list[int]:
    parts = [total * w // sum(weights) for w in weights]
    parts[-1] += total - sum(parts)
    return parts


@SETTINGS
@given(
    inputs=st.lists(st.integers(10_000_000, 10**12), min_size=1, max_size=4),
    weights=st.lists(st.integers(1, 100), min_size=1, max_size=5),
    token=st.integers(0, 10**9),
    lovelace_delta=st.integers(-3, 3).map(lambda d: d * 999_983),
    token_delta=st.integers(-2, 2),
)
def test_value_is_conserved_exactly(inputs, weights, token, lovelace_delta, token_delta):
    """Accepted iff outputs + fee equal inputs per asset; otherwise 3123 with both totals."""
    assume(token + token_delta >= 0)
    ledger = Ledger(slot=10)
    asset = f"{POLICY}.746f6b"
    refs = [ledger.add_genesis_utxo(ALICE.addr, amount, {asset: token} if i == 0 and token else None)
            for i, amount in enumerate(inputs)]
    fee = 2_000_000  # above the minimum for any transaction built here
    amounts = _split(sum(inputs) - fee, weights)
    assume(all(a >= 5_000_000 for a in amounts))
    amounts[-1] += lovelace_delta
    out_tokens = token + token_delta
    outputs = [TransactionOutput(BOB.address, a) for a in amounts[:-1]]
    last = Value(amounts[-1], _multiasset({asset: out_tokens})) if out_tokens else amounts[-1]
    outputs.append(TransactionOutput(ALICE.address, last))
    body = TransactionBody(inputs=[tx_input(r) for r in refs], outputs=outputs, fee=fee)
    raw = sign(body, [ALICE.key])
    if lovelace_delta == 0 and token_delta == 0:
        tx_id = ledger.submit(raw)
        ledger.produce_block()
        total = sum(ledger.balance(w.addr)["lovelace"] for w in (ALICE, BOB))
        assert total == sum(inputs) - fee and ledger.tip is not None and ledger.tip.tx_ids == (tx_id,)
        assert ledger.balance(ALICE.addr).get(asset, 0) == token
        return
    try:
        ledger.submit(raw)
    except LedgerRejection as err:
        assert_ogmios_shape(err)
        assert err.code == 3123
        consumed = {"ada": {"lovelace": sum(inputs)}}
        produced = {"ada": {"lovelace": sum(amounts) + fee}}
        if token:
            consumed[POLICY] = {"746f6b": token}
        if out_tokens:
            produced[POLICY] = {"746f6b": out_tokens}
        assert err.data == {"valueConsumed": consumed, "valueProduced": produced}
    else:
        raise AssertionError("an unbalanced transaction was accepted")


@SETTINGS
@given(
    coefficient=st.integers(0, 100),
    constant=st.integers(1, 400_000),
    outputs=st.integers(1, 6),
    fee_offset=st.integers(-200, 200),
)
def test_fee_rule_is_coefficient_times_size_minus_flag_plus_constant(coefficient, constant, outputs, fee_offset):
    """A fee is enough iff fee >= coefficient × (len(cbor) − 1) + constant for that very transaction."""
    params = LedgerParams(min_fee_coefficient=coefficient, min_fee_constant=constant)
    ledger = Ledger(params, slot=10)
    ref = ledger.add_genesis_utxo(ALICE.addr, 100_000_000)

    def build(fee: int) -> bytes:
        outs = [TransactionOutput(BOB.address, 2_000_000) for _ in range(outputs)]
        outs.append(TransactionOutput(ALICE.address, 100_000_000 - 2_000_000 * outputs - fee))
        return sign(TransactionBody(inputs=[tx_input(ref)], outputs=outs, fee=fee), [ALICE.key])

    fee = 0
    for _ in range(6):
        fee = coefficient * (len(build(fee)) - 1) + constant
    fee = max(0, fee + fee_offset)
    raw = build(fee)
    required = coefficient * (len(raw) - 1) + constant
    if fee >= required:
        assert ledger.submit(raw)
    else:
        try:
            ledger.submit(raw)
        except LedgerRejection as err:
            assert_ogmios_shape(err)
            assert err.code == 3122
            assert err.data == {"minimumRequiredFee": {"ada": {"lovelace": required}},
                                "providedFee": {"ada": {"lovelace": fee}}}
        else:
            raise AssertionError("a fee below the minimum was accepted")


@SETTINGS
@given(payments=st.lists(st.tuples(st.booleans(), st.integers(1_000_000, 30_000_000)), min_size=1, max_size=12),
       block_every=st.integers(1, 5))
def test_lovelace_total_drops_only_by_fees(payments, block_every):
    """Across chained payments and blocks, the UTxO total is genesis minus the fees paid."""
    ledger = Ledger(slot=10)
    wallets = {True: ALICE, False: BOB}
    coins = {True: (ledger.add_genesis_utxo(ALICE.addr, 200_000_000), 200_000_000),
             False: (ledger.add_genesis_utxo(BOB.addr, 200_000_000), 200_000_000)}
    fees = 0
    for n, (from_alice, amount) in enumerate(payments):
        payer, payee = wallets[from_alice], wallets[not from_alice]
        ref, held = coins[from_alice]
        fee = 200_000
        if held - amount - fee < 1_000_000:
            continue
        body = TransactionBody(inputs=[tx_input(ref)], fee=fee, outputs=[
            TransactionOutput(payee.address, amount), TransactionOutput(payer.address, held - amount - fee)])
        tx_id = ledger.submit(sign(body, [payer.key]))
        coins[from_alice] = (OutputRef(tx_id, 1), held - amount - fee)
        fees += fee
        if n % block_every == 0:
            ledger.produce_block()
    ledger.produce_block()
    total = sum(ledger.balance(w.addr)["lovelace"] for w in wallets.values())
    assert total == 400_000_000 - fees and ledger.mempool() == []


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_ledger(data):
    """Any bytes are either a rejection (Ogmios shape) or nothing at all; never another exception."""
    ledger = Ledger(slot=10)
    try:
        ledger.submit(data)
    except LedgerRejection as err:
        assert_ogmios_shape(err)
    assert ledger.mempool() == []


_VALID_LEDGER = Ledger(slot=10)
_VALID_REF = _VALID_LEDGER.add_genesis_utxo(ALICE.addr, 100_000_000)
_VALID_RAW = sign(TransactionBody(inputs=[tx_input(_VALID_REF)], fee=300_000, ttl=1000,
                                  outputs=[TransactionOutput(BOB.address, 99_700_000)]), [ALICE.key])


@SETTINGS
@given(position=st.integers(0, len(_VALID_RAW) - 1), byte=st.integers(0, 255))
def test_corrupted_transactions_are_rejected_cleanly(position, byte):
    """A valid transaction with one byte changed is refused with an Ogmios error, or still valid."""
    ledger = Ledger.from_state(_VALID_LEDGER.to_state())
    raw = bytearray(_VALID_RAW)
    raw[position] = byte
    try:
        ledger.submit(bytes(raw))
    except LedgerRejection as err:
        assert_ogmios_shape(err)
        assert err.code == -32602 or 3100 <= err.code < 4000


_CBOR_VALUES = st.recursive(
    st.one_of(st.integers(-(2**64), 2**64), st.booleans(), st.none(), st.binary(max_size=40),
              st.sampled_from([b"\x60" + b"\x01" * 28, b"\x00" * 32, b"\x00" * 28]), st.text(max_size=70)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.integers(0, 8), inner, max_size=3)),
    max_leaves=12,
)


@SETTINGS
@given(fields=st.dictionaries(st.integers(3, 24), _CBOR_VALUES, min_size=1, max_size=3),
       witness_fields=st.dictionaries(st.integers(1, 8), _CBOR_VALUES, max_size=2),
       aux=st.one_of(st.none(), _CBOR_VALUES))
def test_signed_bodies_with_arbitrary_fields_never_crash(fields, witness_fields, aux):
    """A correctly signed body with random extra fields is accepted or refused with an Ogmios error."""
    import hashlib

    import cbor2

    ledger = Ledger.from_state(_VALID_LEDGER.to_state())
    body = {**cbor2.loads(_VALID_RAW)[0], **fields}
    body_bytes = cbor2.dumps(body)
    signature = ALICE.key.sign(hashlib.blake2b(body_bytes, digest_size=32).digest())
    witnesses = {**witness_fields, 0: [[ALICE.key.to_verification_key().payload, signature]]}
    raw = b"\x84" + body_bytes + cbor2.dumps(witnesses) + b"\xf5" + cbor2.dumps(aux)
    try:
        ledger.submit(raw)
    except LedgerRejection as err:
        assert_ogmios_shape(err)
