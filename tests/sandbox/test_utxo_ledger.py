"""The devnet ledger: real pycardano transactions, one test per phase-1 rule, Ogmios error shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cbor2
import pytest
from pycardano import (
    Address,
    AuxiliaryData,
    Metadata,
    Network,
    PaymentSigningKey,
    Transaction,
    TransactionBody,
    TransactionId,
    TransactionInput,
    TransactionOutput,
    TransactionWitnessSet,
    VerificationKeyWitness,
)

from sandbox.errors import LedgerRejection, SandboxConfigError
from sandbox.utxo_ledger import Block, Ledger, LedgerParams, TxOut
from wallets.types import OutputRef

PARAMS = LedgerParams()
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "data" / "ogmios" / "schemas" / "v6.14"
TOKEN = "ab" * 28 + ".746f6b656e"


@dataclass
class Wallet:
    """A fresh payment key and its testnet enterprise address."""

    key: PaymentSigningKey

    @classmethod
    def new(cls) -> Wallet:
        return cls(PaymentSigningKey.generate())

    @property
    def address(self) -> Address:
        return Address(self.key.to_verification_key().hash(), network=Network.TESTNET)

    @property
    def addr(self) -> str:
        return str(self.address)

    @property
    def key_hash(self) -> str:
        return self.key.to_verification_key().hash().payload.hex()


def tx_input(ref: OutputRef) -> TransactionInput:
    return TransactionInput(TransactionId(bytes.fromhex(ref.tx_id)), ref.index)


def sign(body: TransactionBody, keys: Sequence[PaymentSigningKey], aux: AuxiliaryData | None = None) -> bytes:
    """Serialize ``body`` signed by ``keys`` as pycardano does (a four-element array)."""
    witnesses = [VerificationKeyWitness(k.to_verification_key(), k.sign(body.hash())) for k in keys]
    return Transaction(body, TransactionWitnessSet(vkey_witnesses=witnesses or None), auxiliary_data=aux).to_cbor()


def min_fee_of(raw: bytes, params: LedgerParams = PARAMS) -> int:
    """The rule's minimum fee: the four-element array is measured one byte short (no is-valid flag)."""
    return params.min_fee_coefficient * (len(raw) - 1) + params.min_fee_constant


def balanced(
    inputs: Sequence[tuple[OutputRef, int]],
    keys: Sequence[PaymentSigningKey],
    payments: Sequence[TransactionOutput],
    change: Address,
    *,
    fee_adjust: int = 0,
    aux: AuxiliaryData | None = None,
    **body: Any,
) -> bytes:
    """A signed transaction paying ``payments``, change to ``change``, at exactly the minimum fee + adjust."""
    total_in = sum(amount for _ref, amount in inputs)
    total_out = sum(int(p.amount if isinstance(p.amount, int) else p.amount.coin) for p in payments)
    if aux is not None:
        body["auxiliary_data_hash"] = aux.hash()
    fee = 0
    for _ in range(10):
        outs = list(payments) + [TransactionOutput(change, total_in - total_out - fee)]
        tx_body = TransactionBody(inputs=[tx_input(r) for r, _a in inputs], outputs=outs, fee=fee, **body)
        raw = sign(tx_body, keys, aux)
        needed = min_fee_of(raw)
        if needed == fee:
            break
        fee = needed
    if fee_adjust:
        fee += fee_adjust
        outs = list(payments) + [TransactionOutput(change, total_in - total_out - fee)]
        tx_body = TransactionBody(inputs=[tx_input(r) for r, _a in inputs], outputs=outs, fee=fee, **body)
        raw = sign(tx_body, keys, aux)
    return raw


def rejection(ledger: Ledger, raw: bytes) -> LedgerRejection:
    """Submit ``raw``, expect a rejection, check its shape against the Ogmios v6.6 schema."""
    with pytest.raises(LedgerRejection) as info:
        ledger.submit(raw)
    assert_ogmios_shape(info.value)
    return info.value


_VALIDATOR: Any = None


def assert_ogmios_shape(exc: LedgerRejection) -> None:
    """The error object validates against ogmios.json SubmitTransactionFailure / DeserialisationFailure."""
    global _VALIDATOR
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT7

    if _VALIDATOR is None:
        ogmios = json.loads((SCHEMA_DIR / "ogmios.json").read_text())
        cardano = json.loads((SCHEMA_DIR / "cardano.json").read_text())
        # The schema's Value forbids its own required "ada" key (see the schemas' README).
        cardano["definitions"]["Value"]["propertyNames"]["pattern"] = "^(ada|[0-9a-f]{56})$"
        registry = Registry().with_resources(
            [("ogmios.json", DRAFT7.create_resource(ogmios)), ("cardano.json", DRAFT7.create_resource(cardano))]
        )
        schema = {"oneOf": [{"$ref": "ogmios.json#/definitions/SubmitTransactionFailure"},
                            {"$ref": "ogmios.json#/definitions/DeserialisationFailure"}]}
        _VALIDATOR = jsonschema.Draft7Validator(schema, registry=registry)
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    errors = list(_VALIDATOR.iter_errors(json.loads(json.dumps(error))))
    assert not errors, errors[0].message


@pytest.fixture
def alice() -> Wallet:
    return Wallet.new()


@pytest.fixture
def bob() -> Wallet:
    return Wallet.new()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(slot=10)


def fund(ledger: Ledger, wallet: Wallet, lovelace: int = 100_000_000, assets: dict[str, int] | None = None):
    return ledger.add_genesis_utxo(wallet.addr, lovelace, assets), lovelace


# --- acceptance -------------------------------------------------------------------------------


def test_valid_payment_is_accepted_and_confirmed_by_the_next_block(ledger, alice, bob):
    """A signed, balanced payment enters the mempool, then its outputs are spendable after a block."""
    inp = fund(ledger, alice)
    raw = balanced([inp], [alice.key], [TransactionOutput(bob.address, 5_000_000)], alice.address, ttl=100)
    tx_id = ledger.submit(raw)
    assert ledger.in_mempool(tx_id) and ledger.mempool() == [(tx_id, raw)]
    assert ledger.utxos_at([bob.addr]) == []  # confirmed state only
    block = ledger.produce_block()
    assert isinstance(block, Block) and block.tx_ids == (tx_id,) and block.height == 1
    assert ledger.balance(bob.addr) == {"lovelace": 5_000_000}
    fee = min_fee_of(raw)
    assert ledger.balance(alice.addr) == {"lovelace": 100_000_000 - 5_000_000 - fee}
    assert ledger.utxos_by_refs([inp[0]]) == []
    assert ledger.utxos_at([bob.addr]) == [(OutputRef(tx_id, 0), TxOut(bob.addr, 5_000_000, {}))]
    assert not ledger.in_mempool(tx_id)


def test_tx_id_hashes_the_body_bytes_as_received(ledger, alice):
    """A body with a non-canonical (8-byte) fee encoding keeps its own hash as the tx id."""
    ref, amount = fund(ledger, alice)
    fee = 300_000
    inputs = cbor2.dumps([[bytes.fromhex(ref.tx_id), 0]])
    outputs = cbor2.dumps([[alice.address.to_primitive(), amount - fee]])
    body = b"\xa3\x00" + inputs + b"\x01" + outputs + b"\x02\x1b" + fee.to_bytes(8, "big")
    assert cbor2.dumps(cbor2.loads(body)) != body
    import hashlib

    body_hash = hashlib.blake2b(body, digest_size=32).digest()
    vk = alice.key.to_verification_key()
    wits = cbor2.dumps({0: [[vk.payload, alice.key.sign(body_hash)]]})
    raw = b"\x84" + body + wits + b"\xf5\xf6"
    assert ledger.submit(raw) == body_hash.hex()


def test_chained_transaction_spends_a_mempool_output(ledger, alice, bob):
    """An output of a transaction still in the mempool can be spent; both land in one block in order."""
    inp = fund(ledger, alice)
    first = balanced([inp], [alice.key], [TransactionOutput(bob.address, 20_000_000)], alice.address)
    first_id = ledger.submit(first)
    second = balanced([(OutputRef(first_id, 0), 20_000_000)], [bob.key], [], bob.address)
    second_id = ledger.submit(second)
    block = ledger.produce_block()
    assert block is not None and block.tx_ids == (first_id, second_id)
    assert ledger.balance(bob.addr)["lovelace"] == 20_000_000 - min_fee_of(second)


def test_native_assets_move_and_are_conserved(ledger, alice, bob):
    """Tokens from genesis move to another address; per-asset balances follow."""
    from pycardano import MultiAsset, Value

    ref = ledger.add_genesis_utxo(alice.addr, 50_000_000, {TOKEN: 1000})
    policy, name = TOKEN.split(".")
    tokens = MultiAsset.from_primitive({bytes.fromhex(policy): {bytes.fromhex(name): 400}})
    rest = MultiAsset.from_primitive({bytes.fromhex(policy): {bytes.fromhex(name): 600}})
    fee = 200_000
    body = TransactionBody(
        inputs=[tx_input(ref)],
        outputs=[TransactionOutput(bob.address, Value(2_000_000, tokens)),
                 TransactionOutput(alice.address, Value(50_000_000 - 2_000_000 - fee, rest))],
        fee=fee,
    )
    ledger.submit(sign(body, [alice.key]))
    ledger.produce_block()
    assert ledger.balance(bob.addr) == {"lovelace": 2_000_000, TOKEN: 400}
    assert ledger.balance(alice.addr) == {"lovelace": 50_000_000 - 2_000_000 - fee, TOKEN: 600}


def test_metadata_with_matching_hash_is_accepted(ledger, alice):
    """Auxiliary data whose blake2b-256 is in the body is accepted."""
    inp = fund(ledger, alice)
    aux = AuxiliaryData(Metadata({674: {"msg": ["invoice 42"]}}))
    raw = balanced([inp], [alice.key], [], alice.address, aux=aux, ttl=50)
    assert len(ledger.submit(raw)) == 64


# --- the fee rule ---------------------------------------------------------------------------------


def test_fee_exactly_at_minimum_accepted_one_less_refused(alice, bob):
    """fee = 44 × (len − 1) + 155381 is accepted; one lovelace less is 3122 with both amounts."""
    ledger = Ledger(slot=10)
    inp = fund(ledger, alice)
    pay = [TransactionOutput(bob.address, 3_000_000)]
    short = balanced([inp], [alice.key], pay, alice.address, fee_adjust=-1)
    body = Transaction.from_cbor(short).transaction_body
    assert body.fee == min_fee_of(short) - 1
    err = rejection(ledger, short)
    assert err.code == 3122
    assert err.data == {"minimumRequiredFee": {"ada": {"lovelace": body.fee + 1}},
                        "providedFee": {"ada": {"lovelace": body.fee}}}
    exact = balanced([inp], [alice.key], pay, alice.address)
    assert Transaction.from_cbor(exact).transaction_body.fee == min_fee_of(exact)
    assert ledger.submit(exact)


def test_three_element_transaction_is_measured_whole(alice):
    """A transaction without the is-valid flag (three elements) is measured at its full length."""
    ledger = Ledger(slot=10)
    ref, amount = fund(ledger, alice)
    vk = alice.key.to_verification_key()

    def encode(fee: int) -> bytes:
        outputs = [TransactionOutput(alice.address, amount - fee)]
        body = TransactionBody(inputs=[tx_input(ref)], outputs=outputs, fee=fee)
        wits = {0: [[vk.payload, alice.key.sign(body.hash())]]}
        return b"\x83" + body.to_cbor() + cbor2.dumps(wits) + b"\xf6"

    fee = 0
    for _ in range(5):
        fee = 44 * len(encode(fee)) + 155381
    assert rejection(ledger, encode(fee - 1)).code == 3122
    assert ledger.submit(encode(fee))


# --- one test per rejection rule ------------------------------------------------------------------


def test_empty_inputs_refused_3121(ledger, alice):
    """A transaction with no inputs is refused with 3121 and no data."""
    body = TransactionBody(inputs=[], outputs=[TransactionOutput(alice.address, 2_000_000)], fee=200_000)
    err = rejection(ledger, sign(body, [alice.key]))
    assert (err.code, err.data) == (3121, None)


def test_unknown_input_refused_3117(ledger, alice):
    """An input that never existed is listed in unknownOutputReferences."""
    ghost = OutputRef("cd" * 32, 3)
    raw = balanced([(ghost, 10_000_000)], [alice.key], [], alice.address)
    err = rejection(ledger, raw)
    assert err.code == 3117
    assert err.data == {"unknownOutputReferences": [{"transaction": {"id": "cd" * 32}, "index": 3}]}


def test_double_spend_within_mempool_refused_3117(ledger, alice, bob):
    """A second transaction spending an input already spent by a mempool transaction is 3117."""
    inp = fund(ledger, alice)
    ledger.submit(balanced([inp], [alice.key], [TransactionOutput(bob.address, 2_000_000)], alice.address))
    again = balanced([inp], [alice.key], [TransactionOutput(bob.address, 3_000_000)], alice.address)
    err = rejection(ledger, again)
    assert err.code == 3117
    assert err.data == {"unknownOutputReferences": [{"transaction": {"id": inp[0].tx_id}, "index": 0}]}
    assert len(ledger.mempool()) == 1


def test_spent_on_chain_input_refused_3117(ledger, alice):
    """Resubmitting a confirmed transaction is 3117: its inputs are spent."""
    inp = fund(ledger, alice)
    raw = balanced([inp], [alice.key], [], alice.address)
    ledger.submit(raw)
    ledger.produce_block()
    assert rejection(ledger, raw).code == 3117


def test_invalid_signature_refused_3100(ledger, alice):
    """A witness whose signature is not over the body hash is listed in invalidSignatories."""
    ref, amount = fund(ledger, alice)
    body = TransactionBody(inputs=[tx_input(ref)], outputs=[TransactionOutput(alice.address, amount - 200_000)],
                           fee=200_000)
    vk = alice.key.to_verification_key()
    bad = VerificationKeyWitness(vk, alice.key.sign(b"not the body hash"))
    raw = Transaction(body, TransactionWitnessSet(vkey_witnesses=[bad])).to_cbor()
    err = rejection(ledger, raw)
    assert (err.code, err.data) == (3100, {"invalidSignatories": [vk.payload.hex()]})


def test_missing_signature_refused_3101(ledger, alice, bob):
    """Spending alice's output with only bob's witness lists alice's key hash as missing."""
    inp = fund(ledger, alice)
    raw = balanced([inp], [bob.key], [], alice.address)
    err = rejection(ledger, raw)
    assert (err.code, err.data) == (3101, {"missingSignatories": [alice.key_hash]})


def test_required_signer_without_witness_refused_3101(ledger, alice, bob):
    """A required signer in the body needs a witness too."""
    from pycardano import VerificationKeyHash

    inp = fund(ledger, alice)
    signer = VerificationKeyHash(bytes.fromhex(bob.key_hash))
    raw = balanced([inp], [alice.key], [], alice.address, required_signers=[signer])
    assert (rejection(ledger, raw).data) == {"missingSignatories": [bob.key_hash]}


def test_output_below_minimum_deposit_refused_3125(ledger, alice, bob):
    """An output under (160 + size) × coinsPerUTxOByte is listed with its minimum required value."""
    inp = fund(ledger, alice)
    tiny = TransactionOutput(bob.address, 800_000)
    raw = balanced([inp], [alice.key], [tiny], alice.address)
    err = rejection(ledger, raw)
    size = len(tiny.to_cbor())
    assert err.code == 3125
    assert err.data == {"insufficientlyFundedOutputs": [{
        "output": {"address": bob.addr, "value": {"ada": {"lovelace": 800_000}}},
        "minimumRequiredValue": {"ada": {"lovelace": (160 + size) * 4310}},
    }]}


def test_output_exactly_at_minimum_deposit_accepted(ledger, alice, bob):
    """An output holding exactly (160 + size) × coinsPerUTxOByte is accepted."""
    inp = fund(ledger, alice)
    probe = TransactionOutput(bob.address, 1_000_000)
    minimum = (160 + len(probe.to_cbor())) * 4310
    assert len(TransactionOutput(bob.address, minimum).to_cbor()) == len(probe.to_cbor())
    raw = balanced([inp], [alice.key], [TransactionOutput(bob.address, minimum)], alice.address)
    assert ledger.submit(raw)


def test_value_not_conserved_refused_3123(ledger, alice):
    """Outputs + fee short of the inputs is 3123 with both sides as Ogmios values."""
    ref, amount = fund(ledger, alice)
    body = TransactionBody(inputs=[tx_input(ref)], outputs=[TransactionOutput(alice.address, 50_000_000)], fee=200_000)
    err = rejection(ledger, sign(body, [alice.key]))
    assert err.code == 3123
    assert err.data == {"valueConsumed": {"ada": {"lovelace": amount}},
                        "valueProduced": {"ada": {"lovelace": 50_200_000}}}


def test_token_not_conserved_refused_3123(ledger, alice):
    """Dropping native tokens (no output carries them) breaks conservation for that asset."""
    ref = ledger.add_genesis_utxo(alice.addr, 50_000_000, {TOKEN: 7})
    body = TransactionBody(inputs=[tx_input(ref)], outputs=[TransactionOutput(alice.address, 49_800_000)], fee=200_000)
    err = rejection(ledger, sign(body, [alice.key]))
    policy, name = TOKEN.split(".")
    assert err.code == 3123
    assert err.data["valueConsumed"] == {"ada": {"lovelace": 50_000_000}, policy: {name: 7}}
    assert err.data["valueProduced"] == {"ada": {"lovelace": 50_000_000}}


def test_ttl_passed_refused_3118(ledger, alice):
    """A TTL at or before the current slot is 3118 with the interval and current slot."""
    inp = fund(ledger, alice)
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, ttl=10))
    assert (err.code, err.data) == (3118, {"validityInterval": {"invalidAfter": 10}, "currentSlot": 10})


def test_not_yet_valid_refused_3118(ledger, alice):
    """A validity start after the current slot is 3118 with invalidBefore."""
    inp = fund(ledger, alice)
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, validity_start=11, ttl=20))
    assert err.data == {"validityInterval": {"invalidBefore": 11, "invalidAfter": 20}, "currentSlot": 10}
    ledger.advance_to(11)
    assert ledger.submit(balanced([inp], [alice.key], [], alice.address, validity_start=11, ttl=20))


def test_transaction_too_large_refused_3119(alice):
    """A transaction above maxTransactionSize is 3119 with both sizes in bytes."""
    ledger = Ledger(LedgerParams(max_tx_size=150), slot=10)
    inp = fund(ledger, alice)
    raw = balanced([inp], [alice.key], [], alice.address)
    err = rejection(ledger, raw)
    assert (err.code, err.data) == (3119, {"measuredTransactionSize": {"bytes": len(raw) - 1},
                                           "maximumTransactionSize": {"bytes": 150}})


def test_output_to_another_network_refused_3124(ledger, alice):
    """An output to a mainnet address on the testnet devnet is 3124 listing the address."""
    inp = fund(ledger, alice)
    mainnet = Address(alice.key.to_verification_key().hash(), network=Network.MAINNET)
    raw = balanced([inp], [alice.key], [TransactionOutput(mainnet, 2_000_000)], alice.address)
    err = rejection(ledger, raw)
    assert (err.code, err.data) == (3124, {"expectedNetwork": "testnet", "discriminatedType": "address",
                                           "invalidEntities": [str(mainnet)]})


def test_wrong_body_network_id_refused_3124(ledger, alice):
    """A body network id of mainnet is 3124 with discriminatedType transaction."""
    inp = fund(ledger, alice)
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, network_id=1))
    assert err.data == {"expectedNetwork": "testnet", "discriminatedType": "transaction"}


def _with_aux(ledger: Ledger, alice: Wallet, *, aux_bytes: bytes | None, aux_hash: bytes | None) -> bytes:
    ref, amount = ledger.add_genesis_utxo(alice.addr, 100_000_000), 100_000_000
    body = TransactionBody(inputs=[tx_input(ref)], outputs=[TransactionOutput(alice.address, amount - 300_000)],
                           fee=300_000, auxiliary_data_hash=None)
    if aux_hash is not None:
        from pycardano import AuxiliaryDataHash

        body.auxiliary_data_hash = AuxiliaryDataHash(aux_hash)
    vk = alice.key.to_verification_key()
    wits = cbor2.dumps({0: [[vk.payload, alice.key.sign(body.hash())]]})
    return b"\x84" + body.to_cbor() + wits + b"\xf5" + (aux_bytes if aux_bytes is not None else b"\xf6")


def test_metadata_without_hash_refused_3105(ledger, alice):
    """Auxiliary data with no hash in the body is 3105 carrying the computed hash."""
    import hashlib

    aux = cbor2.dumps({674: "hello"})
    err = rejection(ledger, _with_aux(ledger, alice, aux_bytes=aux, aux_hash=None))
    assert (err.code, err.data) == (3105, {"metadata": {"hash": hashlib.blake2b(aux, digest_size=32).hexdigest()}})


def test_hash_without_metadata_refused_3106(ledger, alice):
    """A body metadata hash with no auxiliary data is 3106 carrying that hash."""
    err = rejection(ledger, _with_aux(ledger, alice, aux_bytes=None, aux_hash=b"\x11" * 32))
    assert (err.code, err.data) == (3106, {"metadata": {"hash": "11" * 32}})


def test_metadata_hash_mismatch_refused_3107(ledger, alice):
    """A body hash that is not blake2b-256 of the auxiliary data bytes is 3107 with both hashes."""
    import hashlib

    aux = cbor2.dumps({674: "hello"})
    err = rejection(ledger, _with_aux(ledger, alice, aux_bytes=aux, aux_hash=b"\x22" * 32))
    assert err.code == 3107
    assert err.data == {"provided": {"hash": "22" * 32},
                        "computed": {"hash": hashlib.blake2b(aux, digest_size=32).hexdigest()}}


def test_metadatum_text_over_64_bytes_refused_3108(ledger, alice):
    """A metadata string longer than 64 bytes is 3108 (no data)."""
    import hashlib

    aux = cbor2.dumps({674: "x" * 65})
    raw = _with_aux(ledger, alice, aux_bytes=aux, aux_hash=hashlib.blake2b(aux, digest_size=32).digest())
    err = rejection(ledger, raw)
    assert (err.code, err.data) == (3108, None)


@pytest.mark.parametrize("cbor", [b"", b"\x00", b"\x84\x01", bytes.fromhex("83a0a0f6ff"), b"\xff" * 10])
def test_undecodable_cbor_refused_32602(ledger, cbor):
    """Bytes that are not a transaction are -32602 with a reason per era; the ledger is unchanged."""
    err = rejection(ledger, cbor)
    assert err.code == -32602 and set(err.data) == {"shelley", "allegra", "mary", "alonzo", "babbage", "conway"}
    assert ledger.mempool() == []
    with pytest.raises(LedgerRejection) as info:
        ledger.evaluate(cbor)
    assert info.value.code == -32602


def test_certificates_refused_3997(ledger, alice):
    """Certificates are not modelled: Ogmios's 3997 (custom mempool rule) says so in data.error."""
    from pycardano import StakeCredential, StakeRegistration

    inp = fund(ledger, alice)
    cert = StakeRegistration(StakeCredential(alice.key.to_verification_key().hash()))
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, certificates=[cert]))
    assert err.code == 3997 and "certificates" in err.data["error"]


def test_withdrawals_refused_3141(ledger, alice):
    """A withdrawal from a reward account (all balances are 0 here) is 3141 with the account."""
    from pycardano import Withdrawals

    inp = fund(ledger, alice)
    account = Address(staking_part=alice.key.to_verification_key().hash(), network=Network.TESTNET)
    withdrawals = Withdrawals({account.to_primitive(): 1_000_000})
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, withdraws=withdrawals))
    assert (err.code, err.data) == (3141, {"incompleteWithdrawals": {str(account): {"ada": {"lovelace": 0}}}})


def test_minting_without_script_refused_3102(ledger, alice):
    """Minting under a policy with no script witness is 3102 listing the policy id."""
    from pycardano import MultiAsset

    inp = fund(ledger, alice)
    policy, name = TOKEN.split(".")
    mint = MultiAsset.from_primitive({bytes.fromhex(policy): {bytes.fromhex(name): 5}})
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, mint=mint))
    assert (err.code, err.data) == (3102, {"missingScripts": [policy]})


# --- priority between rules ------------------------------------------------------------------------


def test_priority_validity_before_unknown_inputs(ledger, alice):
    """Expired and spending an unknown input: 3118 wins."""
    raw = balanced([(OutputRef("ee" * 32, 0), 10_000_000)], [alice.key], [], alice.address, ttl=1)
    assert rejection(ledger, raw).code == 3118


def test_priority_network_before_unknown_inputs(ledger, alice):
    """Wrong-network output and an unknown input: 3124 wins."""
    mainnet = Address(alice.key.to_verification_key().hash(), network=Network.MAINNET)
    raw = balanced([(OutputRef("ee" * 32, 0), 10_000_000)], [alice.key], [TransactionOutput(mainnet, 2_000_000)],
                   alice.address)
    assert rejection(ledger, raw).code == 3124


def test_priority_unknown_inputs_before_signatures(ledger, alice, bob):
    """Unknown input and a missing signature: 3117 wins."""
    inp = fund(ledger, alice)
    raw = balanced([inp, (OutputRef("ee" * 32, 0), 1)], [bob.key], [], alice.address)
    assert rejection(ledger, raw).code == 3117


def test_priority_signatures_before_small_outputs(ledger, alice, bob):
    """Missing signature and a too-small output: 3101 wins."""
    inp = fund(ledger, alice)
    raw = balanced([inp], [bob.key], [TransactionOutput(bob.address, 1)], alice.address)
    assert rejection(ledger, raw).code == 3101


def test_priority_small_output_before_size_and_fee(alice, bob):
    """Too-small output, too large and too low a fee: 3125 wins."""
    ledger = Ledger(LedgerParams(max_tx_size=100), slot=10)
    inp = fund(ledger, alice)
    raw = balanced([inp], [alice.key], [TransactionOutput(bob.address, 1)], alice.address, fee_adjust=-1)
    assert rejection(ledger, raw).code == 3125


def test_priority_size_before_fee(alice):
    """Too large and too low a fee: 3119 wins."""
    ledger = Ledger(LedgerParams(max_tx_size=100), slot=10)
    inp = fund(ledger, alice)
    assert rejection(ledger, balanced([inp], [alice.key], [], alice.address, fee_adjust=-1)).code == 3119


def test_priority_fee_before_value(ledger, alice):
    """Fee too low and value not conserved: 3122 wins."""
    ref, _amount = fund(ledger, alice)
    body = TransactionBody(inputs=[tx_input(ref)], outputs=[TransactionOutput(alice.address, 5_000_000)], fee=1)
    assert rejection(ledger, sign(body, [alice.key])).code == 3122


# --- blocks, time, queries, persistence ---------------------------------------------------------------


def test_block_slot_is_after_the_previous_block(ledger):
    """Empty mempool gives no block unless forced; slots strictly increase block to block."""
    assert ledger.produce_block() is None and ledger.tip is None and ledger.height == 0
    first = ledger.produce_block(force=True)
    assert first is not None and (first.height, first.slot) == (1, 10)
    second = ledger.produce_block(5, force=True)
    assert second is not None and (second.height, second.slot) == (2, 11)
    assert second.id != first.id and len(second.id) == 64
    assert ledger.produce_block(30, force=True).slot == 30 and ledger.slot == 30


def test_advance_to_never_goes_backwards(ledger):
    """The slot clock only moves forward."""
    ledger.advance_to(5)
    assert ledger.slot == 10
    ledger.advance_to(12)
    assert ledger.slot == 12


def test_expired_mempool_transactions_are_dropped_at_block_time(ledger, alice, bob):
    """A mempool transaction whose TTL passed by the block's slot is dropped, with its chained child."""
    inp = fund(ledger, alice)
    parent = ledger.submit(balanced([inp], [alice.key], [TransactionOutput(bob.address, 9_000_000)], alice.address,
                                    ttl=15))
    child = ledger.submit(balanced([(OutputRef(parent, 0), 9_000_000)], [bob.key], [], bob.address))
    assert ledger.produce_block(15) is None
    assert not ledger.in_mempool(parent) and not ledger.in_mempool(child)
    assert ledger.balance(alice.addr) == {"lovelace": 100_000_000}
    assert ledger.utxos_by_refs([inp[0]])[0][1].lovelace == 100_000_000


def test_utxo_queries_return_confirmed_outputs(ledger, alice, bob):
    """utxos_at and utxos_by_refs see confirmed outputs only and skip unknown references."""
    ref_a = ledger.add_genesis_utxo(alice.addr, 7_000_000)
    ref_b = ledger.add_genesis_utxo(bob.addr, 8_000_000, {TOKEN: 3})
    assert ledger.utxos_at([alice.addr, bob.addr]) == sorted(
        [(ref_a, TxOut(alice.addr, 7_000_000, {})), (ref_b, TxOut(bob.addr, 8_000_000, {TOKEN: 3}))],
        key=lambda item: (item[0].tx_id, item[0].index))
    assert ledger.utxos_by_refs([ref_b, OutputRef("00" * 32, 0)]) == [(ref_b, TxOut(bob.addr, 8_000_000, {TOKEN: 3}))]
    assert ledger.balance("addr_test1_unknown") == {"lovelace": 0}


def test_genesis_rejects_foreign_or_malformed_addresses(ledger, alice):
    """Genesis funds go only to bech32 addresses of the devnet's network, in valid amounts."""
    mainnet = Address(alice.key.to_verification_key().hash(), network=Network.MAINNET)
    for bad in (str(mainnet), "not-an-address", alice.addr[:-1] + ("q" if alice.addr[-1] != "q" else "p")):
        with pytest.raises(SandboxConfigError):
            ledger.add_genesis_utxo(bad, 1_000_000)
    for lovelace, assets in ((-1, None), (1.5, None), (1, {"lovelace": 3}), (1, {TOKEN: -2})):
        with pytest.raises(SandboxConfigError):
            ledger.add_genesis_utxo(alice.addr, lovelace, assets)
    assert ledger.utxos_at([alice.addr]) == []


def test_state_round_trips_through_json(ledger, alice, bob):
    """to_state/from_state via JSON restores UTxOs, tip, slot and the mempool; the chain continues."""
    inp = fund(ledger, alice)
    ledger.submit(balanced([inp], [alice.key], [TransactionOutput(bob.address, 4_000_000)], alice.address))
    ledger.produce_block()
    change = ledger.utxos_at([alice.addr])[0]
    pending = ledger.submit(balanced([(change[0], change[1].lovelace)], [alice.key],
                                     [TransactionOutput(bob.address, 2_000_000)], alice.address))
    restored = Ledger.from_state(json.loads(json.dumps(ledger.to_state())))
    assert restored.to_state() == ledger.to_state()
    assert restored.tip == ledger.tip and restored.in_mempool(pending)
    block = restored.produce_block()
    assert block is not None and block.height == 2 and block.tx_ids == (pending,)
    assert restored.balance(bob.addr) == {"lovelace": 6_000_000}
    assert restored.add_genesis_utxo(bob.addr, 1) != ledger.add_genesis_utxo(alice.addr, 1)


def test_corrupt_state_is_refused(ledger):
    """A state of another version or with missing keys raises SandboxConfigError."""
    for state in ({}, {"version": 99}, {**ledger.to_state(), "utxo": [{"tx_id": "00"}]}):
        with pytest.raises(SandboxConfigError):
            Ledger.from_state(state)


def test_evaluate_returns_no_budgets_without_scripts(ledger, alice):
    """evaluate() on a script-free transaction is an empty list."""
    inp = fund(ledger, alice)
    assert ledger.evaluate(balanced([inp], [alice.key], [], alice.address)) == []


# --- native scripts, datums and less common body fields ----------------------------------------------


def _mint_tx(ledger: Ledger, alice: Wallet, script, keys, *, quantity: int = 5, scripts=None, **body) -> bytes:
    from pycardano import MultiAsset, Value

    ref = ledger.add_genesis_utxo(alice.addr, 50_000_000)
    policy = script.hash().payload
    minted = MultiAsset.from_primitive({policy: {b"tok": quantity}})
    fee = 300_000
    tx_body = TransactionBody(inputs=[tx_input(ref)], fee=fee, mint=minted, **body,
                              outputs=[TransactionOutput(alice.address, Value(50_000_000 - fee, minted))])
    witnesses = [VerificationKeyWitness(k.to_verification_key(), k.sign(tx_body.hash())) for k in keys]
    wits = TransactionWitnessSet(vkey_witnesses=witnesses, native_scripts=scripts if scripts is not None else [script])
    return Transaction(tx_body, wits).to_cbor()


def test_minting_under_a_signed_native_script_is_accepted(ledger, alice):
    """A native-script policy satisfied by the witnesses mints; the tokens land in the output."""
    from pycardano import ScriptPubkey

    script = ScriptPubkey(alice.key.to_verification_key().hash())
    ledger.submit(_mint_tx(ledger, alice, script, [alice.key]))
    ledger.produce_block()
    assert ledger.balance(alice.addr)[f"{script.hash().payload.hex()}.{b'tok'.hex()}"] == 5


def test_native_script_without_its_signature_refused_3103(ledger, alice, bob):
    """A native script requiring bob's key, signed only by alice, is 3103 listing the script hash."""
    from pycardano import ScriptPubkey

    script = ScriptPubkey(bob.key.to_verification_key().hash())
    err = rejection(ledger, _mint_tx(ledger, alice, script, [alice.key]))
    assert (err.code, err.data) == (3103, {"failingNativeScripts": [script.hash().payload.hex()]})


def test_time_locked_native_script_checks_the_validity_interval(ledger, alice):
    """An 'after slot 20' script fails without a validity start at or past 20."""
    from pycardano import InvalidBefore, ScriptAll, ScriptPubkey

    script = ScriptAll([ScriptPubkey(alice.key.to_verification_key().hash()), InvalidBefore(20)])
    assert rejection(ledger, _mint_tx(ledger, alice, script, [alice.key], validity_start=5)).code == 3103
    ledger.advance_to(20)
    assert ledger.submit(_mint_tx(ledger, alice, script, [alice.key], validity_start=20))


def test_unneeded_script_refused_3104(ledger, alice, bob):
    """A witness-set script that nothing needs is 3104 listing its hash."""
    from pycardano import ScriptPubkey

    script = ScriptPubkey(alice.key.to_verification_key().hash())
    extra = ScriptPubkey(bob.key.to_verification_key().hash())
    err = rejection(ledger, _mint_tx(ledger, alice, script, [alice.key], scripts=[script, extra]))
    assert (err.code, err.data) == (3104, {"extraneousScripts": [extra.hash().payload.hex()]})


def test_inline_datum_output_is_kept_and_reported(ledger, alice, bob):
    """A post-Alonzo output with an inline datum keeps it in the UTxO and in error data."""
    from pycardano import PlutusData

    inp = fund(ledger, alice)
    out = TransactionOutput(bob.address, 3_000_000, datum=PlutusData())
    tx_id = ledger.submit(balanced([inp], [alice.key], [out], alice.address))
    ledger.produce_block()
    assert ledger.utxos_by_refs([OutputRef(tx_id, 0)])[0][1].datum == PlutusData().to_cbor().hex()
    poor = TransactionOutput(bob.address, 1_000, datum=PlutusData())
    err = rejection(ledger, balanced([fund(ledger, alice)], [alice.key], [poor], alice.address))
    assert err.data["insufficientlyFundedOutputs"][0]["output"]["datum"] == PlutusData().to_cbor().hex()


def test_unknown_reference_input_refused_3117(ledger, alice):
    """A reference input that does not exist is listed like a spent input."""
    inp = fund(ledger, alice)
    raw = balanced([inp], [alice.key], [], alice.address, reference_inputs=[tx_input(OutputRef("ab" * 32, 1))])
    assert rejection(ledger, raw).data == {"unknownOutputReferences": [{"transaction": {"id": "ab" * 32}, "index": 1}]}


def test_duplicate_input_refused_32602(ledger, alice):
    """The same input listed twice (plain array) does not decode as a valid transaction."""
    ref, amount = fund(ledger, alice)
    body = {0: [[bytes.fromhex(ref.tx_id), 0]] * 2, 1: [[alice.address.to_primitive(), amount - 300_000]], 2: 300_000}
    body_bytes = cbor2.dumps(body)
    import hashlib

    vk = alice.key.to_verification_key()
    sig = alice.key.sign(hashlib.blake2b(body_bytes, digest_size=32).digest())
    raw = b"\x84" + body_bytes + cbor2.dumps({0: [[vk.payload, sig]]}) + b"\xf5\xf6"
    assert rejection(ledger, raw).code == -32602


def test_value_too_large_refused_3120(alice, bob):
    """An output whose serialized value exceeds maxValueSize is 3120 listing the output."""
    from pycardano import MultiAsset, Value

    ledger = Ledger(LedgerParams(max_value_size=20), slot=10)
    ref = ledger.add_genesis_utxo(alice.addr, 50_000_000, {TOKEN: 9})
    policy, name = TOKEN.split(".")
    tokens = MultiAsset.from_primitive({bytes.fromhex(policy): {bytes.fromhex(name): 9}})
    body = TransactionBody(inputs=[tx_input(ref)], fee=300_000,
                           outputs=[TransactionOutput(bob.address, Value(49_700_000, tokens))])
    err = rejection(ledger, sign(body, [alice.key]))
    assert err.code == 3120
    assert err.data == {"excessivelyLargeOutputs": [
        {"address": bob.addr, "value": {"ada": {"lovelace": 49_700_000}, policy: {name: 9}}}]}


def test_alonzo_shaped_auxiliary_data_is_accepted(ledger, alice):
    """Tag-259 (Alonzo) auxiliary data is hashed as received and its metadata checked."""
    from pycardano import AlonzoMetadata

    inp = fund(ledger, alice)
    aux = AuxiliaryData(AlonzoMetadata(metadata=Metadata({674: {"msg": ["hi"]}})))
    assert ledger.submit(balanced([inp], [alice.key], [], alice.address, aux=aux))


def test_evaluate_with_redeemers_cannot_run_scripts(ledger, alice):
    """evaluate() refuses redeemers with 3004: the devnet runs no Plutus."""
    ref, amount = fund(ledger, alice)
    body = TransactionBody(inputs=[tx_input(ref)], outputs=[TransactionOutput(alice.address, amount - 300_000)],
                           fee=300_000)
    wits = cbor2.dumps({5: [[0, 0, 0, [1000, 1000]]]})
    raw = b"\x84" + body.to_cbor() + wits + b"\xf5\xf6"
    with pytest.raises(LedgerRejection) as info:
        ledger.evaluate(raw)
    assert (info.value.code, info.value.data) == (3004, {"reason": "the devnet does not execute Plutus scripts"})


def test_collateral_inputs_must_exist_and_be_witnessed(ledger, alice, bob):
    """Collateral inputs count as inputs for 3117 and need their owner's signature (3101)."""
    inp = fund(ledger, alice)
    ghost = tx_input(OutputRef("ef" * 32, 2))
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, collateral=[ghost]))
    assert err.data == {"unknownOutputReferences": [{"transaction": {"id": "ef" * 32}, "index": 2}]}
    bobs = tx_input(ledger.add_genesis_utxo(bob.addr, 5_000_000))
    err = rejection(ledger, balanced([inp], [alice.key], [], alice.address, collateral=[bobs]))
    assert (err.code, err.data) == (3101, {"missingSignatories": [bob.key_hash]})


@pytest.mark.parametrize("field, value", [(10, 0), (23, []), (3, None), (7, None), (15, 2), (22, 0), (5, 0)])
def test_malformed_body_fields_refused_32602(ledger, alice, field, value):
    """Unknown body fields, null TTL/hash, a bad network id or zero donation do not decode."""
    import hashlib

    ref, amount = fund(ledger, alice)
    body = {0: [[bytes.fromhex(ref.tx_id), 0]], 1: [[alice.address.to_primitive(), amount - 300_000]], 2: 300_000,
            field: value}
    body_bytes = cbor2.dumps(body)
    vk = alice.key.to_verification_key()
    sig = alice.key.sign(hashlib.blake2b(body_bytes, digest_size=32).digest())
    raw = b"\x84" + body_bytes + cbor2.dumps({0: [[vk.payload, sig]]}) + b"\xf5\xf6"
    assert rejection(ledger, raw).code == -32602


def test_duplicate_input_in_a_tagged_set_refused_32602(ledger, alice):
    """A tag-258 input set decodes; with a repeated element it does not (cbor2 alone would drop it)."""
    import hashlib

    ref, amount = fund(ledger, alice)
    one = cbor2.dumps([bytes.fromhex(ref.tx_id), 0])
    body_bytes = (b"\xa3\x00\xd9\x01\x02\x82" + one + one + b"\x01"
                  + cbor2.dumps([[alice.address.to_primitive(), amount - 300_000]]) + b"\x02" + cbor2.dumps(300_000))
    vk = alice.key.to_verification_key()
    sig = alice.key.sign(hashlib.blake2b(body_bytes, digest_size=32).digest())
    raw = b"\x84" + body_bytes + cbor2.dumps({0: [[vk.payload, sig]]}) + b"\xf5\xf6"
    assert rejection(ledger, raw).code == -32602
    single = body_bytes.replace(b"\xd9\x01\x02\x82" + one + one, b"\xd9\x01\x02\x81" + one)
    sig = alice.key.sign(hashlib.blake2b(single, digest_size=32).digest())
    tagged = b"\x84" + single + cbor2.dumps({0: [[vk.payload, sig]]}) + b"\xf5\xf6"
    assert ledger.submit(tagged) == hashlib.blake2b(single, digest_size=32).hexdigest()
