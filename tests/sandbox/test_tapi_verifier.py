"""The verifier: proof parsing, CBOR decoding, output checks, and OgmiosReader against a real devnet."""

from __future__ import annotations

import pytest

from sandbox.invoices import Output
from sandbox.verifier import (
    OgmiosUnreachableError,
    OgmiosReader,
    ProofRefusedError,
    TxView,
    check_outputs,
    decode_tx,
    parse_proof,
)
from tests.fixtures.twin import Payer, address_of, make_key, signed_tx

PAY = "addr_test1vz53fltufhm5evcsa5wa4a6t9w48ruapm8zf9dy8hdnqcsqvups93"
PARTNER = "addr_test1vz8ph3w0fuglfufhnsrjr34kwd6eflnpth50m4t8dcuccushyy7q9"
TOKEN = "ab" * 28 + ".74"


def test_parse_proof_tells_hash_from_cbor() -> None:
    """64 hex is a tx hash (lower-cased); longer even hex is CBOR; anything else is refused."""
    assert parse_proof("AB" * 32) == ("hash", "ab" * 32)
    assert parse_proof(" 84a0 ") == ("cbor", bytes.fromhex("84a0"))
    for bad in ("", "xyz", "abc", "ab" * 20_000):
        with pytest.raises(ProofRefusedError) as err:
            parse_proof(bad)
        assert err.value.code == "invalid_payment_proof"


def test_decode_tx_matches_pycardano_id_and_outputs() -> None:
    """decode_tx hashes the body bytes as sent (same id as pycardano) and reads ADA and token outputs."""
    tx = signed_tx(make_key("d"), [(PAY, 2_000_000, "lovelace"), (PARTNER, 7, TOKEN)], invoice_id="inv_x",
                   network_id=0)
    view = decode_tx(tx.to_cbor())
    assert view.tx_id == str(tx.id) and view.network_id == 0
    assert view.outputs == ((PAY, {"lovelace": 2_000_000}), (PARTNER, {"lovelace": 2_000_000, TOKEN: 7}))


@pytest.mark.parametrize("cbor", [b"", b"\x00", bytes.fromhex("84a0"), bytes.fromhex("8401020304"), b"\x84" + b"\xff" * 50])
def test_decode_tx_refuses_garbage(cbor: bytes) -> None:
    """Bytes that are not a signed transaction are invalid_payment_proof."""
    with pytest.raises(ProofRefusedError) as err:
        decode_tx(cbor)
    assert err.value.code == "invalid_payment_proof"


def _view(*outs: tuple[str, dict]) -> TxView:
    return TxView("t" * 64, tuple(outs), "ledger")


def test_check_outputs_sums_per_address_and_asset() -> None:
    """Required amounts are checked per (address, asset), summing outputs; extra outputs are fine."""
    need = [Output(PAY, 3, TOKEN, "payTo"), Output(PARTNER, 1_000_000, "lovelace", "partner")]
    check_outputs(_view((PAY, {TOKEN: 1, "lovelace": 1}), (PAY, {TOKEN: 2}), (PARTNER, {"lovelace": 1_000_000}),
                        ("addr_test1change", {"lovelace": 5})), need)
    with pytest.raises(ProofRefusedError, match="short_output"):
        check_outputs(_view((PAY, {TOKEN: 2}), (PARTNER, {"lovelace": 1_000_000})), need)
    with pytest.raises(ProofRefusedError, match="missing_output"):
        check_outputs(_view((PAY, {"lovelace": 3}), (PARTNER, {"lovelace": 1_000_000})), need)


def test_check_outputs_refuses_the_other_network() -> None:
    """A mainnet address among the outputs, or network id 1, is wrong_network."""
    need = [Output(PAY, 1, "lovelace", "payTo")]
    with pytest.raises(ProofRefusedError, match="wrong_network"):
        check_outputs(_view((PAY, {"lovelace": 1}), ("addr1vx53fltufhm5", {"lovelace": 1})), need)
    with pytest.raises(ProofRefusedError, match="wrong_network"):
        check_outputs(TxView("t" * 64, ((PAY, {"lovelace": 1}),), "cbor", 1), need)


def test_reader_sees_ledger_mempool_and_node_refusals(devnet_factory) -> None:
    """OgmiosReader finds a tx in the mempool, then on the ledger after a block; a bad submit is refused."""
    key = make_key("reader")
    net = devnet_factory(block_time_s=3600, fund={str(address_of(key)): 50_000_000})
    reader = OgmiosReader(net.ogmios_url)
    payer = Payer(key, net.ogmios_url)
    tx = payer.build([(PAY, 2_000_000, "lovelace"), (PARTNER, 1_500_000, "lovelace")])
    tx_id = reader.submit(tx.to_cbor())
    assert tx_id == str(tx.id)
    assert reader.ledger_outputs(tx_id) is None
    pooled = reader.mempool_tx(tx_id)
    assert pooled is not None and pooled.where == "mempool"
    assert (PAY, {"lovelace": 2_000_000}) in pooled.outputs and (PARTNER, {"lovelace": 1_500_000}) in pooled.outputs
    assert reader.mempool_tx("00" * 32) is None
    net.produce_block()
    on_ledger = reader.ledger_outputs(tx_id)
    assert on_ledger is not None and on_ledger.outputs[:2] == pooled.outputs[:2]
    with pytest.raises(ProofRefusedError) as err:
        reader.submit(tx.to_cbor())  # its inputs are spent now
    assert err.value.code == "payment_rejected_by_node"


def test_reader_walks_the_mempool_once_per_transaction(devnet_factory) -> None:
    """Asked again for a transaction still in the mempool, the reader does not walk the mempool again.

    Ogmios finds a mempool transaction only by walking the snapshot (``nextTransaction``); the
    twin re-verifies every waiting payment at each block, and with a few hundred payments in
    the mempool each of those walks was hundreds of round trips (seen in the block-time bench).
    """
    keys = [make_key(f"walker{i}") for i in range(6)]
    net = devnet_factory(block_time_s=3600, fund={str(address_of(k)): 20_000_000 for k in keys})
    reader = OgmiosReader(net.ogmios_url)
    tx_ids = [reader.submit(Payer(k, net.ogmios_url).build([(PAY, 2_000_000, "lovelace")]).to_cbor()) for k in keys]
    walked: list[str] = []
    query = reader._chain._query

    def counting(method: str, *args, **kwargs):
        walked.append(method)
        return query(method, *args, **kwargs)

    reader._chain._query = counting  # type: ignore[method-assign]
    first = [reader.mempool_tx(t) for t in tx_ids]
    assert all(v is not None and v.where == "mempool" and v.tx_id == t for v, t in zip(first, tx_ids))
    steps = walked.count("nextTransaction")
    assert 0 < steps <= len(tx_ids) * (len(tx_ids) + 1) // 2
    again = [reader.mempool_tx(t) for t in reversed(tx_ids)]
    assert again == list(reversed(first))
    assert walked.count("nextTransaction") == steps  # answered from what was walked, only the id asked
    net.produce_block()
    assert reader.mempool_tx(tx_ids[0]) is None  # in a block now: not "in the mempool" from memory
    assert reader.ledger_outputs(tx_ids[0]) is not None


def test_reader_without_ogmios_is_chain_unavailable() -> None:
    """No Ogmios at the URL: OgmiosUnreachableError, not a hang or a raw socket error."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OgmiosUnreachableError):
        OgmiosReader(f"ws://127.0.0.1:{port}", timeout_s=2).ledger_outputs("00" * 32)
