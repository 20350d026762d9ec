"""The pure payment builder: exact minimum fee, min-UTxO rule, coin selection, tokens, refusals."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.memchain import MemoryChain
from wallets.chain import MAINNET_PARAMS
from wallets.errors import AddressError, AmountError, InsufficientFundsError
from wallets.payment import (
    MetadataError,
    TransactionBuildError,
    SignedPayment,
    address_bytes,
    address_from_bytes,
    build_payment,
    min_fee,
    min_utxo_lovelace,
    plan_payment,
    sign_payment,
)
from wallets.types import LOVELACE, OutputRef, ProtocolParams, RequiredOutput, Utxo

TOKEN = "aa" * 28 + ".746f6b656e"
OTHER_TOKEN = "bb" * 28 + ".6f74686572"
MAINNET_ADDR = ("addr1qx2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3n0d3vllmyqwsx5wktcd8cc3sq835lu7drv2xwl2"
                "wywfgse35a3x")


class KeySigner:
    """A Signer over a fresh pycardano payment key (tests only; the keystore is another module's)."""

    def __init__(self) -> None:
        from pycardano import Address, Network, PaymentSigningKey

        self._sk = PaymentSigningKey.generate()
        self._vk = self._sk.to_verification_key()
        self.address = Address(self._vk.hash(), network=Network.TESTNET).encode()
        self.signed = 0

    def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
        self.signed += 1
        return self._vk.payload, self._sk.sign(tx_body_hash)

    def __repr__(self) -> str:
        return f"KeySigner({self.address})"


def fresh_address() -> str:
    """A new devnet enterprise address nobody controls."""
    return KeySigner().address


@pytest.fixture(scope="module")
def signer() -> KeySigner:
    """The paying wallet."""
    return KeySigner()


@pytest.fixture(scope="module")
def payees() -> list[str]:
    """Ten distinct payee addresses."""
    return [fresh_address() for _ in range(10)]


def utxo(owner: str, lovelace: int, assets: dict[str, int] | None = None, *, n: int = 0) -> Utxo:
    """A UTxO at ``owner`` with a made-up reference."""
    return Utxo(OutputRef(hashlib.blake2b(b"u%d" % n, digest_size=32).hexdigest(), n % 5), owner, lovelace,
                assets or {})


def pay(outputs: list[RequiredOutput], utxos: list[Utxo], signer: KeySigner, *,
        params: ProtocolParams = MAINNET_PARAMS, metadata: Any = None) -> SignedPayment:
    """build_payment with the usual wallet arguments."""
    return build_payment(outputs, utxos=utxos, change_address=signer.address, signer=signer, params=params,
                         ttl_slot=5_000, metadata=metadata)


def decoded(payment: SignedPayment) -> tuple[dict[int, Any], dict[int, Any], Any]:
    """(body, witness set, auxiliary data) of the signed transaction."""
    body, witnesses, valid, aux = cbor2.loads(payment.cbor)
    assert valid is True
    return body, witnesses, aux


def value_of(obj: Any) -> Counter[str]:
    """Per-asset totals of one encoded output value."""
    if isinstance(obj, int):
        return Counter({LOVELACE: obj})
    total = Counter({LOVELACE: obj[0]})
    for policy, names in obj[1].items():
        for name, qty in names.items():
            total[f"{policy.hex()}.{name.hex()}"] += qty
    return total


@pytest.mark.parametrize("n_outputs", [1, 3, 10])
def test_fee_is_the_minimum_for_the_final_size(signer: KeySigner, payees: list[str], n_outputs: int) -> None:
    """The fee equals coeff × (len(cbor) − 1) + constant of the signed transaction, for 1, 3 and 10 outputs."""
    outs = [RequiredOutput(payees[i], 1_000_000 + 7 * i) for i in range(n_outputs)]
    p = pay(outs, [utxo(signer.address, 50_000_000, n=1), utxo(signer.address, 3_000_000, n=2)], signer,
            metadata={674: {"msg": ["x402", "inv-123"]}})
    assert p.fee_lovelace == min_fee(len(p.cbor) - 1, MAINNET_PARAMS)
    body, _, _ = decoded(p)
    assert body[2] == p.fee_lovelace and body[3] == 5_000
    assert p.cost_lovelace == p.fee_lovelace + sum(o.amount for o in outs)


def test_transaction_shape_decodes_with_pycardano(signer: KeySigner, payees: list[str]) -> None:
    """pycardano reads the transaction back: same id, fee, outputs in order, change last, CIP-20 metadata."""
    from pycardano import Transaction

    outs = [RequiredOutput(payees[0], 2_000_000, role="payTo"), RequiredOutput(payees[1], 1_500_000)]
    p = pay(outs, [utxo(signer.address, 20_000_000)], signer, metadata={674: {"msg": ["x402", "inv-9"]}})
    tx = Transaction.from_cbor(p.cbor)
    assert str(tx.id) == p.tx_id
    assert tx.transaction_body.fee == p.fee_lovelace
    assert [str(o.address) for o in tx.transaction_body.outputs] == [payees[0], payees[1], signer.address]
    assert tx.transaction_body.outputs[2].amount.coin == p.change[0].lovelace
    assert p.change[0].ref == OutputRef(p.tx_id, 2)
    assert dict(tx.auxiliary_data.data) == {674: {"msg": ["x402", "inv-9"]}}


def test_aux_data_hash_in_body(signer: KeySigner, payees: list[str]) -> None:
    """The body carries blake2b-256 of the auxiliary data exactly as serialized in the transaction."""
    p = pay([RequiredOutput(payees[0], 1_000_000)], [utxo(signer.address, 9_000_000)], signer,
            metadata={674: {"msg": ["x402", "abc"]}})
    body, _, aux = decoded(p)
    assert body[7] == hashlib.blake2b(cbor2.dumps(aux), digest_size=32).digest()
    assert aux == {674: {"msg": ["x402", "abc"]}}
    plain = pay([RequiredOutput(payees[0], 1_000_000)], [utxo(signer.address, 9_000_000)], signer)
    assert 7 not in decoded(plain)[0] and decoded(plain)[2] is None


def test_signature_verifies_over_body_hash(signer: KeySigner, payees: list[str]) -> None:
    """The witness is the signer's key and an ed25519 signature over the body hash (the tx id)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = pay([RequiredOutput(payees[0], 1_000_000)], [utxo(signer.address, 9_000_000)], signer)
    _, witnesses, _ = decoded(p)
    [[vkey, sig]] = witnesses[0]
    Ed25519PublicKey.from_public_bytes(vkey).verify(sig, bytes.fromhex(p.tx_id))


def test_fake_ledger_accepts_with_exact_fee(signer: KeySigner, payees: list[str]) -> None:
    """A ledger applying the fee, min-UTxO, signature and conservation rules accepts the transaction."""
    chain = MemoryChain()
    chain.fund(signer.address, 30_000_000, {TOKEN: 40})
    p = pay([RequiredOutput(payees[0], 1_234_567), RequiredOutput(payees[1], 3, TOKEN)],
            chain.utxos_at(signer.address), signer)
    assert chain.submit(p.cbor) == p.tx_id
    assert sum(u.lovelace for u in chain.utxos_at(signer.address)) == 30_000_000 - p.cost_lovelace
    assert chain.utxos_at(payees[1])[0].assets == {TOKEN: 3}


def test_token_output_carries_its_min_ada(signer: KeySigner, payees: list[str]) -> None:
    """A token output gets exactly its minimum ADA for its size as sent, counted in the cost; leftover tokens return."""
    from pycardano import Address, TransactionOutput, Value

    p = pay([RequiredOutput(payees[0], 25, TOKEN)], [utxo(signer.address, 10_000_000, {TOKEN: 100})], signer)
    body, _, _ = decoded(p)
    coin = body[1][0][1][0]
    assert p.output_lovelace == (coin,)
    assert coin == min_utxo_lovelace(payees[0], coin, {TOKEN: 25}, MAINNET_PARAMS)
    ma = {bytes.fromhex("aa" * 28): {b"token": 25}}
    out = TransactionOutput(Address.from_primitive(payees[0]), Value.from_primitive([coin, ma]))
    assert (160 + len(out.to_cbor())) * 4310 == coin  # the legacy [address, value] form, as sent
    assert p.cost_lovelace == coin + p.fee_lovelace
    assert p.change[0].assets == {TOKEN: 75}


def test_tokens_are_selected_when_needed(signer: KeySigner, payees: list[str]) -> None:
    """The UTxO holding the required token is spent even if others hold more ADA; foreign tokens stay in change."""
    utxos = [utxo(signer.address, 900_000_000, n=1), utxo(signer.address, 2_000_000, {TOKEN: 5, OTHER_TOKEN: 9}, n=2)]
    p = pay([RequiredOutput(payees[0], 5, TOKEN)], utxos, signer)
    assert utxos[1].ref in p.inputs
    assert p.change[0].assets == {OTHER_TOKEN: 9}


def test_output_below_min_utxo_is_refused(signer: KeySigner, payees: list[str]) -> None:
    """An ADA output below the ledger minimum is refused, naming the output and the minimum; nothing signed."""
    before = signer.signed
    minimum = min_utxo_lovelace(payees[0], 0, {}, MAINNET_PARAMS)
    with pytest.raises(AmountError, match=rf"output 1 \(split to {payees[0]}\).*minimum UTxO value of "
                                          rf"{minimum // 1_000_000}\.{minimum % 1_000_000:06d} ADA"):
        pay([RequiredOutput(payees[1], 2_000_000), RequiredOutput(payees[0], minimum - 1, role="split")],
            [utxo(signer.address, 50_000_000)], signer)
    assert signer.signed == before
    ok = pay([RequiredOutput(payees[0], minimum)], [utxo(signer.address, 50_000_000)], signer)
    assert ok.output_lovelace == (minimum,)


@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "100"])
def test_bad_amounts_are_refused(signer: KeySigner, payees: list[str], amount: Any) -> None:
    """Zero, negative, fractional, boolean and string amounts are AmountError."""
    with pytest.raises(AmountError):
        pay([RequiredOutput(payees[0], amount)], [utxo(signer.address, 50_000_000)], signer)


def test_bad_asset_is_refused(signer: KeySigner, payees: list[str]) -> None:
    """An asset id that is neither lovelace nor policy.name hex is AmountError."""
    with pytest.raises(AmountError, match="unknown asset"):
        pay([RequiredOutput(payees[0], 5, "ADA")], [utxo(signer.address, 50_000_000)], signer)


@pytest.mark.parametrize("address", [MAINNET_ADDR, "addr_test1notanaddress", "", "Ae2tdPwUPEZ", "ADDR_TEST1QQ"])
def test_bad_addresses_are_refused(signer: KeySigner, address: str) -> None:
    """Another network's address, a bad checksum, a Byron or empty address are AddressError."""
    with pytest.raises(AddressError):
        pay([RequiredOutput(address, 2_000_000)], [utxo(signer.address, 50_000_000)], signer)


def test_corrupted_checksum_is_refused(signer: KeySigner, payees: list[str]) -> None:
    """One changed character in a valid address breaks its checksum: AddressError."""
    addr = payees[0]
    bad = addr[:-1] + ("q" if addr[-1] != "q" else "p")
    with pytest.raises(AddressError, match="checksum"):
        pay([RequiredOutput(bad, 2_000_000)], [utxo(signer.address, 50_000_000)], signer)


def test_address_bytes_round_trip(payees: list[str]) -> None:
    """Bech32 decode/encode round-trips testnet and mainnet addresses."""
    for addr in [*payees, MAINNET_ADDR]:
        assert address_from_bytes(address_bytes(addr)) == addr


def test_insufficient_funds_reports_needed_and_available(signer: KeySigner, payees: list[str]) -> None:
    """Too little ADA or a missing token raises InsufficientFundsError with needed and available per asset."""
    utxos = [utxo(signer.address, 3_000_000, n=1), utxo(signer.address, 2_000_000, {TOKEN: 2}, n=2)]
    with pytest.raises(InsufficientFundsError) as exc:
        pay([RequiredOutput(payees[0], 4_900_000)], utxos, signer)
    assert exc.value.available == {LOVELACE: 5_000_000, TOKEN: 2}
    assert exc.value.needed[LOVELACE] > 5_000_000
    with pytest.raises(InsufficientFundsError) as exc:
        pay([RequiredOutput(payees[0], 3, TOKEN)], utxos, signer)
    assert exc.value.needed[TOKEN] == 3 and exc.value.available[TOKEN] == 2
    with pytest.raises(InsufficientFundsError):
        pay([RequiredOutput(payees[0], 2_000_000)], [], signer)


def test_dust_change_adds_an_input_rather_than_overpaying(signer: KeySigner, payees: list[str]) -> None:
    """When change would be below its minimum, another input is added and the fee stays the minimum."""
    big = utxo(signer.address, 2_500_000, n=1)
    p = pay([RequiredOutput(payees[0], 2_000_000)], [big, utxo(signer.address, 1_500_000, n=2)], signer)
    assert len(p.inputs) == 2 and p.fee_lovelace == min_fee(len(p.cbor) - 1, MAINNET_PARAMS)
    assert p.change[0].lovelace >= min_utxo_lovelace(signer.address, p.change[0].lovelace, {}, MAINNET_PARAMS)


def test_dust_folds_into_fee_only_as_last_resort(signer: KeySigner, payees: list[str]) -> None:
    """With no input left to add, leftover dust below min change goes to the fee (no change output)."""
    p = pay([RequiredOutput(payees[0], 2_000_000)], [utxo(signer.address, 2_500_000)], signer)
    assert p.change == () and p.fee_lovelace == 500_000 and p.cost_lovelace == 2_500_000
    assert p.fee_lovelace >= min_fee(len(p.cbor) - 1, MAINNET_PARAMS)
    chain = MemoryChain()
    chain.fund(signer.address, 2_500_000)
    assert chain.submit(pay([RequiredOutput(payees[0], 2_000_000)], chain.utxos_at(signer.address),
                            signer).cbor)


def test_exact_spend_needs_no_change(signer: KeySigner, payees: list[str]) -> None:
    """Inputs equal to outputs plus the minimum fee give a transaction without change, fee exact."""
    probe = pay([RequiredOutput(payees[0], 2_000_000)], [utxo(signer.address, 2_500_000)], signer)
    exact_fee = min_fee(len(probe.cbor) - 1, MAINNET_PARAMS)
    p = pay([RequiredOutput(payees[0], 2_000_000)], [utxo(signer.address, 2_000_000 + exact_fee)], signer)
    assert p.change == () and p.fee_lovelace == exact_fee == min_fee(len(p.cbor) - 1, MAINNET_PARAMS)


def test_fee_settles_when_change_crosses_an_integer_size_boundary(signer: KeySigner, payees: list[str]) -> None:
    """Around 2^32 lovelace of change (5 vs 9 CBOR bytes) the fee is the least valid one, never below minimum."""
    fees = []
    for delta in range(150_000, 260_000, 2_500):
        total = 2**32 + 2_000_000 + delta
        p = pay([RequiredOutput(payees[0], 2_000_000)], [utxo(signer.address, total)], signer)
        minimum = min_fee(len(p.cbor) - 1, MAINNET_PARAMS)
        assert minimum <= p.fee_lovelace <= minimum + 4 * MAINNET_PARAMS.min_fee_coefficient
        assert p.change[0].lovelace + p.fee_lovelace + 2_000_000 == total
        fees.append(p.fee_lovelace - minimum)
    assert 0 in fees


def test_metadata_limits(signer: KeySigner, payees: list[str]) -> None:
    """Strings over 64 bytes, floats and non-integer labels in metadata are MetadataError."""
    for metadata in ({674: {"msg": ["x" * 65]}}, {674: 1.5}, {"674": "a"}, {-1: "a"}):
        with pytest.raises(MetadataError):
            pay([RequiredOutput(payees[0], 2_000_000)], [utxo(signer.address, 9_000_000)], signer,
                metadata=metadata)


def test_ttl_and_signer_checks(signer: KeySigner, payees: list[str]) -> None:
    """A negative TTL, no outputs, or a signer returning wrong-sized bytes are refused."""
    with pytest.raises(TransactionBuildError):
        build_payment([RequiredOutput(payees[0], 2_000_000)], utxos=[utxo(signer.address, 9_000_000)],
                      change_address=signer.address, signer=signer, params=MAINNET_PARAMS, ttl_slot=-1)
    with pytest.raises(AmountError):
        pay([], [utxo(signer.address, 9_000_000)], signer)

    class BadSigner:
        address = signer.address

        def sign(self, tx_body_hash: bytes) -> tuple[bytes, bytes]:
            return b"k" * 31, b"s" * 64

    with pytest.raises(TransactionBuildError, match="wrong size"):
        build_payment([RequiredOutput(payees[0], 2_000_000)], utxos=[utxo(signer.address, 9_000_000)],
                      change_address=signer.address, signer=BadSigner(), params=MAINNET_PARAMS, ttl_slot=1)


def test_too_many_inputs_is_refused(signer: KeySigner, payees: list[str]) -> None:
    """A payment needing a transaction past max_tx_size raises TransactionBuildError instead of building it."""
    small = ProtocolParams(44, 155381, 4310, max_tx_size=1_000, max_value_size=5000)
    utxos = [utxo(signer.address, 1_100_000, n=i) for i in range(40)]
    with pytest.raises(TransactionBuildError, match="byte limit"):
        pay([RequiredOutput(payees[0], 30_000_000)], utxos, signer, params=small)


def test_min_utxo_follows_the_serialized_size(payees: list[str]) -> None:
    """min UTxO is (160 + output size) × coinsPerUtxoByte, growing with tokens and with the coin's own size."""
    ada_only = min_utxo_lovelace(payees[0], 0, {}, MAINNET_PARAMS)
    assert ada_only == (160 + 29 + 2 + 1 + 5) * 4310  # array, address bytes header + 29, 5-byte coin
    with_token = min_utxo_lovelace(payees[0], 0, {TOKEN: 1}, MAINNET_PARAMS)
    with_two = min_utxo_lovelace(payees[0], 0, {TOKEN: 1, OTHER_TOKEN: 1}, MAINNET_PARAMS)
    assert ada_only < with_token < with_two
    big_coin = min_utxo_lovelace(payees[0], 2**33, {}, MAINNET_PARAMS)
    assert big_coin == ada_only + 4 * 4310  # the 9-byte coin the output would actually carry


def test_plan_then_sign_matches_build(signer: KeySigner, payees: list[str]) -> None:
    """plan_payment chooses inputs and fee without the key; sign_payment gives the same tx as build_payment."""
    utxos = [utxo(signer.address, 9_000_000, n=1), utxo(signer.address, 4_000_000, n=2)]
    before = signer.signed
    plan = plan_payment([RequiredOutput(payees[0], 5_000_000)], utxos=utxos, change_address=signer.address,
                        params=MAINNET_PARAMS, ttl_slot=5_000)
    assert signer.signed == before and plan.inputs == (utxos[0].ref,)
    signed = sign_payment(plan, signer)
    built = pay([RequiredOutput(payees[0], 5_000_000)], utxos, signer)
    assert signed.tx_id == plan.tx_id == built.tx_id and signed.fee_lovelace == plan.fee_lovelace
    assert "_draft" not in repr(plan)


def test_lazy_payment_sender_import() -> None:
    """``from wallets.payment import PaymentSender`` works (it lives in wallets.sender)."""
    from wallets.payment import PaymentSender
    from wallets.sender import PaymentSender as Direct

    assert PaymentSender is Direct


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amounts=st.lists(st.integers(min_value=1_000_000, max_value=40_000_000), min_size=1, max_size=6),
    token_amounts=st.lists(st.integers(min_value=1, max_value=50), max_size=2),
    wallet=st.lists(st.tuples(st.integers(min_value=1_000_000, max_value=80_000_000),
                              st.integers(min_value=0, max_value=60)), min_size=1, max_size=8),
)
def test_value_is_conserved(signer: KeySigner, payees: list[str], amounts: list[int], token_amounts: list[int],
                            wallet: list[tuple[int, int]]) -> None:
    """For any payment that builds: inputs = outputs + change + fee per asset, fee is ≥ and near the minimum."""
    utxos = [utxo(signer.address, lov, {TOKEN: tok} if tok else {}, n=i) for i, (lov, tok) in enumerate(wallet)]
    outs = [RequiredOutput(payees[i % 10], a) for i, a in enumerate(amounts)]
    outs += [RequiredOutput(payees[-1 - i], t, TOKEN) for i, t in enumerate(token_amounts)]
    try:
        p = pay(outs, utxos, signer)
    except InsufficientFundsError:
        return
    by_ref = {u.ref: u for u in utxos}
    consumed: Counter[str] = Counter()
    for ref in p.inputs:
        consumed[LOVELACE] += by_ref[ref].lovelace
        consumed.update(by_ref[ref].assets)
    body, _, _ = decoded(p)
    produced: Counter[str] = Counter({LOVELACE: body[2]})
    for out in body[1]:
        produced.update(value_of(out[1]))
    assert +consumed == +produced
    minimum = min_fee(len(p.cbor) - 1, MAINNET_PARAMS)
    assert p.fee_lovelace >= minimum
    if p.change:
        assert p.fee_lovelace == minimum
        assert p.change[0].lovelace == value_of(body[1][-1][1])[LOVELACE]
    for out in body[1]:
        coin = value_of(out[1])[LOVELACE]
        assert coin >= (160 + len(cbor2.dumps(out))) * MAINNET_PARAMS.coins_per_utxo_byte
