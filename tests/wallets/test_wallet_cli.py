"""`cardano-agent wallet …` through agent.cli.main: local commands, then chain commands on the devnet."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

import agent.commands.wallet as wallet_cmd
import wallets.keystore as keystore_module
from agent.cli import main
from wallets.keystore import Keystore

PASS = "cli passphrase 123"
VECTOR_WORDS = "test walk nut penalty hip pave soap entry language right filter choice"
VECTOR_TESTNET = ("addr_test1qz2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3jcu5d8ps7zex2k2xt3uqxgjqnn"
                  "j83ws8lhrn648jjxtwq2ytjqp")
VECTOR_MAINNET = ("addr1qx2fxv2umyhttkxyxp8x0dlpdt3k6cwng5pxj3jhsydzer3jcu5d8ps7zex2k2xt3uqxgjqnnj83ws8l"
                  "hrn648jjxtwqfjkjv7")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast scrypt, a passphrase in the environment, no terminal, no stray Ogmios setting."""
    monkeypatch.setattr(keystore_module, "_SCRYPT_N", 2**10)
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASS)
    monkeypatch.delenv("CARDANO_AGENT_NEW_PASSPHRASE", raising=False)
    monkeypatch.delenv("CARDANO_AGENT_OGMIOS_URL", raising=False)
    monkeypatch.setattr(wallet_cmd, "_has_tty", lambda: False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _import_vector(capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path, name: str = "vec",
                   network: str = "preprod") -> None:
    words = tmp_path / "words.txt"
    words.write_text(VECTOR_WORDS + "\n")
    code, _, err = run(capsys, "wallet", "import", name, "--network", network, "--mnemonic-file", str(words),
                       "--home", str(home))
    assert code == 0, err


def test_create_shows_words_once_then_never(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    """create prints 24 numbered words with a warning; list never prints them again."""
    code, out, err = run(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    assert code == 0, err
    assert "shown ONCE" in out and " 1. " in out and "24. " in out
    numbered = re.findall(r"(\d+)\. ([a-z]+)", out)
    assert [int(n) for n, _ in numbered] == list(range(1, 25))
    words = [w for _, w in numbered]
    phrase = " ".join(words)
    assert Keystore(home / "wallets").reveal_mnemonic("main", PASS).reveal() == phrase
    code, listed, _ = run(capsys, "wallet", "list", "--home", str(home))
    assert code == 0 and "main" in listed and "devnet" in listed
    assert not any(f"{a} {b}" in listed for a, b in zip(words, words[1:]))


def test_create_json_includes_mnemonic_only_there(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    """--json create carries the mnemonic and warning; --json list carries addresses and no words."""
    created = run_json(capsys, "wallet", "create", "main", "--network", "preview", "--home", str(home))
    assert len(created["mnemonic"].split()) == 24 and "ONCE" in created["warning"]
    assert created["address"].startswith("addr_test1q")
    listed = run_json(capsys, "wallet", "list", "--home", str(home))
    assert listed == [{k: created[k] for k in ("name", "network", "address", "created_at")}]
    assert created["mnemonic"] not in json.dumps(listed)


def test_import_from_file_gives_vector_address(capsys: pytest.CaptureFixture[str], home: Path,
                                               tmp_path: Path) -> None:
    """import --mnemonic-file stores the known mnemonic; its address is the published vector."""
    _import_vector(capsys, home, tmp_path)
    _import_vector(capsys, home, tmp_path, name="main-net", network="mainnet")
    listed = {w["name"]: w["address"] for w in run_json(capsys, "wallet", "list", "--home", str(home))}
    assert listed == {"vec": VECTOR_TESTNET, "main-net": VECTOR_MAINNET}


def test_import_from_stdin(capsys: pytest.CaptureFixture[str], home: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """--mnemonic-file - reads the words from standard input."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("  " + VECTOR_WORDS.upper() + "\n"))
    imported = run_json(capsys, "wallet", "import", "vec", "--network", "devnet", "--mnemonic-file", "-",
                        "--home", str(home))
    assert imported["address"] == VECTOR_TESTNET


def test_import_bad_checksum_is_clean_error(capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path) -> None:
    """A bad-checksum mnemonic exits non-zero with one error line, no traceback, no words, no file."""
    words = tmp_path / "bad.txt"
    words.write_text(VECTOR_WORDS.rsplit(" ", 1)[0] + " walk")
    code, out, err = run(capsys, "wallet", "import", "bad", "--network", "devnet", "--mnemonic-file", str(words),
                         "--home", str(home))
    assert code != 0 and out == ""
    assert err.startswith("error: ") and "checksum" in err and "Traceback" not in err
    assert "penalty" not in err
    assert not (home / "wallets" / "bad.json").exists()


def test_import_missing_file(capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path) -> None:
    """A mnemonic file that does not exist is a one-line error."""
    code, _, err = run(capsys, "wallet", "import", "x", "--network", "devnet", "--mnemonic-file",
                       str(tmp_path / "nope.txt"), "--home", str(home))
    assert code != 0 and "cannot read mnemonic file" in err


def test_no_passphrase_and_no_tty(capsys: pytest.CaptureFixture[str], home: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CARDANO_AGENT_PASSPHRASE and without a terminal, create fails clearly and writes nothing."""
    monkeypatch.delenv("CARDANO_AGENT_PASSPHRASE")
    code, out, err = run(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    assert code != 0 and out == ""
    assert "CARDANO_AGENT_PASSPHRASE" in err
    assert not (home / "wallets" / "main.json").exists()


def test_prompted_passphrase_twice(capsys: pytest.CaptureFixture[str], home: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal, create asks twice; a mismatch refuses, a match creates the wallet."""
    monkeypatch.delenv("CARDANO_AGENT_PASSPHRASE")
    monkeypatch.setattr(wallet_cmd, "_has_tty", lambda: True)
    answers = iter(["first one", "second one", "same pass", "same pass"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(wallet_cmd.getpass, "getpass", fake_getpass)
    code, _, err = run(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    assert code != 0 and "do not match" in err
    code, _, err = run(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    assert code == 0, err
    assert prompts == ["Passphrase: ", "Repeat passphrase: "] * 2
    assert Keystore(home / "wallets").unlock("main", "same pass").network == "devnet"


def test_duplicate_and_invalid_names(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    """An existing name or an invalid one is a one-line error before any passphrase is read."""
    assert run(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))[0] == 0
    code, _, err = run(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    assert code != 0 and "already exists" in err
    code, _, err = run(capsys, "wallet", "create", "Bad Name", "--network", "devnet", "--home", str(home))
    assert code != 0 and "invalid wallet name" in err


def test_passwd(capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> None:
    """passwd re-encrypts under CARDANO_AGENT_NEW_PASSPHRASE; a wrong old passphrase changes nothing."""
    _import_vector(capsys, home, tmp_path)
    path = home / "wallets" / "vec.json"
    before = path.read_bytes()
    monkeypatch.setenv("CARDANO_AGENT_NEW_PASSPHRASE", "brand new pass")
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", "wrong")
    code, _, err = run(capsys, "wallet", "passwd", "vec", "--home", str(home))
    assert code != 0 and "wrong passphrase or damaged" in err and path.read_bytes() == before
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASS)
    assert run_json(capsys, "wallet", "passwd", "vec", "--home", str(home)) == {"name": "vec", "changed": True}
    assert Keystore(home / "wallets").unlock("vec", "brand new pass").address == VECTOR_TESTNET


def test_list_empty_and_missing_wallet(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    """list on a fresh home prints (none); show of an unknown wallet is a clear error."""
    code, out, _ = run(capsys, "wallet", "list", "--home", str(home))
    assert code == 0 and "(none)" in out
    code, _, err = run(capsys, "wallet", "show", "ghost", "--home", str(home), "--ogmios-url", "ws://127.0.0.1:1")
    assert code != 0 and "no wallet named 'ghost'" in err


def test_no_secret_in_logs_or_output(capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    """Across import, list and passwd, no log line and no output holds the passphrase or word pairs."""
    with caplog.at_level(logging.DEBUG):
        _import_vector(capsys, home, tmp_path)
        code, out, err = run(capsys, "wallet", "list", "--home", str(home))
    text = out + err + "\n".join(r.getMessage() for r in caplog.records)
    words = VECTOR_WORDS.split()
    assert not any(f"{a} {b}" in text for a, b in zip(words, words[1:]))
    assert PASS not in text


@pytest.mark.parametrize(
    ("address", "network", "fragment"),
    [
        (VECTOR_MAINNET, "devnet", "mainnet address"),
        (VECTOR_TESTNET, "mainnet", "testnet address"),
        ("addr_test1notanaddress", "devnet", "not a Cardano address"),
    ],
)
def test_check_address(address: str, network: str, fragment: str) -> None:
    """An address of the other network, or garbage, raises AddressError before anything is signed."""
    from wallets.errors import AddressError

    with pytest.raises(AddressError, match=fragment):
        wallet_cmd.check_address(address, network)
    assert wallet_cmd.check_address(VECTOR_TESTNET, "preprod") == VECTOR_TESTNET


def test_ogmios_url_resolution(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ogmios-url beats the environment, which beats [chain] ogmios_url in agent.toml."""
    import argparse

    home.mkdir(parents=True)
    (home / "agent.toml").write_text('[chain]\nnetwork = "devnet"\nogmios_url = "ws://127.0.0.1:4001"\n')
    args = argparse.Namespace(home=home, ogmios_url=None)
    assert wallet_cmd.resolve_ogmios_url(args, env={}) == "ws://127.0.0.1:4001"
    assert wallet_cmd.resolve_ogmios_url(args, env={"CARDANO_AGENT_OGMIOS_URL": "ws://127.0.0.1:4002"}) \
        == "ws://127.0.0.1:4002"
    args.ogmios_url = "ws://127.0.0.1:4003"
    assert wallet_cmd.resolve_ogmios_url(args, env={"CARDANO_AGENT_OGMIOS_URL": "ws://x"}) == "ws://127.0.0.1:4003"
    from agent.errors import ConfigError

    args.ogmios_url = "http://127.0.0.1:4003"
    with pytest.raises(ConfigError, match="ws://"):
        wallet_cmd.resolve_ogmios_url(args, env={})
    args.ogmios_url = None
    (home / "agent.toml").write_text("[chain\nogmios_url = 3\n")
    with pytest.raises(ConfigError):
        wallet_cmd.resolve_ogmios_url(args, env={})


# -- split planning, checked by the sandbox ledger ------------------------------------------

TOKEN = "ab" * 28 + ".746f6b656e"


def _ledger_and_wallet(lovelace: list[int], assets: dict[str, int] | None = None) -> tuple[Any, Any, list[Any]]:
    from sandbox.utxo_ledger import Ledger, LedgerParams
    from wallets.hd import UnlockedWallet, derive_keys, parse_mnemonic
    from wallets.types import Utxo

    wallet = UnlockedWallet(name="t", keys=derive_keys(parse_mnemonic(VECTOR_WORDS), "devnet"))
    ledger = Ledger(LedgerParams(), slot=100)
    utxos = []
    for i, amount in enumerate(lovelace):
        extra = assets if (assets and i == 0) else {}
        ref = ledger.add_genesis_utxo(wallet.address, amount, extra)
        utxos.append(Utxo(ref, wallet.address, amount, dict(extra)))
    return ledger, wallet, utxos


def _params() -> Any:
    from sandbox.utxo_ledger import LedgerParams
    from wallets.types import ProtocolParams

    p = LedgerParams()
    return ProtocolParams(p.min_fee_coefficient, p.min_fee_constant, p.coins_per_utxo_byte, p.max_tx_size,
                          p.max_value_size)


@pytest.mark.parametrize("into", [2, 8, 30])
def test_plan_split_equal_lanes_accepted_by_ledger(into: int) -> None:
    """split spends every UTxO into N equal outputs; the ledger accepts it; fee is within N lovelace of minimum."""
    from wallets.payment import min_fee

    ledger, wallet, utxos = _ledger_and_wallet([50_000_000, 30_000_000, 7_123_457])
    payment = wallet_cmd.plan_split(utxos, into=into, address=wallet.address, signer=wallet,
                                    params=_params(), ttl_slot=1000)
    assert set(payment.inputs) == {u.ref for u in utxos}
    assert len(payment.output_lovelace) == into and len(set(payment.output_lovelace)) == 1
    assert payment.change == ()
    assert 0 <= payment.fee_lovelace - min_fee(payment.size_bytes, _params()) < into
    assert payment.fee_lovelace + sum(payment.output_lovelace) == sum(u.lovelace for u in utxos)
    assert payment.cost_lovelace == payment.fee_lovelace  # nothing leaves the wallet but the fee
    ledger.submit(payment.cbor)
    ledger.produce_block()
    after = ledger.utxos_at([wallet.address])
    assert len(after) == into and {o.lovelace for _, o in after} == {payment.output_lovelace[0]}


def test_plan_split_keeps_tokens_in_one_extra_output() -> None:
    """With native tokens, N equal ADA lanes plus one change output holding the tokens; ledger accepts."""
    ledger, wallet, utxos = _ledger_and_wallet([20_000_000, 40_000_000], {TOKEN: 500})
    payment = wallet_cmd.plan_split(utxos, into=4, address=wallet.address, signer=wallet,
                                    params=_params(), ttl_slot=1000)
    assert len(set(payment.output_lovelace)) == 1 and len(payment.change) == 1
    assert dict(payment.change[0].assets) == {TOKEN: 500}
    ledger.submit(payment.cbor)
    ledger.produce_block()
    assert ledger.balance(wallet.address)[TOKEN] == 500
    assert len(ledger.utxos_at([wallet.address])) == 5


def test_plan_split_refuses_lanes_below_min_utxo() -> None:
    """Too little ADA for N lanes of the minimum UTxO value is an AmountError; nothing is built."""
    from wallets.errors import AmountError

    _, wallet, utxos = _ledger_and_wallet([5_000_000])
    with pytest.raises(AmountError, match="cannot split"):
        wallet_cmd.plan_split(utxos, into=8, address=wallet.address, signer=wallet, params=_params(),
                              ttl_slot=1000)


# -- show / send / split over the in-memory chain ----------------------------------------------

OTHER = ("addr_test1qpu5vlrf4xkxv2qpwngf6cjhtw542ayty80v8dyr49rf5ewvxwdrt70qlcpeeagscasafhffqsxy36t90l"
         "dv06wqrk2qum8x5w")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path,
         tmp_path: Path) -> Any:
    """The vector wallet imported on devnet, funded with 100 ADA + 7 ADA/500 tokens on a MemoryChain."""
    from sandbox.memchain import MemoryChain

    _import_vector(capsys, home, tmp_path, network="devnet")
    chain = MemoryChain(slot=50)
    chain.fund(VECTOR_TESTNET, 100_000_000)
    chain.fund(VECTOR_TESTNET, 7_000_000, {TOKEN: 500})
    monkeypatch.setattr(wallet_cmd, "_open_chain", lambda args: chain)
    return chain


def _lovelace_at(chain: Any, address: str) -> int:
    return sum(u.lovelace for u in chain.utxos_at(address))


def test_show_balance_and_utxos(capsys: pytest.CaptureFixture[str], home: Path, fake: Any) -> None:
    """show reports the address, lovelace and token balances and each UTxO, in JSON and as text."""
    shown = run_json(capsys, "wallet", "show", "vec", "--home", str(home))
    assert shown["address"] == VECTOR_TESTNET and shown["network"] == "devnet"
    assert shown["balance"] == {"lovelace": 107_000_000, TOKEN: 500}
    assert sorted(u["lovelace"] for u in shown["utxos"]) == [7_000_000, 100_000_000]
    assert shown["pending"] == [] and shown["tip_slot"] == 50
    code, out, _ = run(capsys, "wallet", "show", "vec", "--home", str(home))
    assert code == 0 and "107.000000" in out and TOKEN in out and fake.closed


def test_send_moves_exact_amount(capsys: pytest.CaptureFixture[str], home: Path, fake: Any) -> None:
    """send --yes pays the exact amount; the wallet loses amount + fee, where fee is the reported one."""
    sent = run_json(capsys, "wallet", "send", "vec", OTHER, "5.25", "--yes", "--home", str(home))
    assert sent["amount_lovelace"] == 5_250_000 and sent["to"] == OTHER
    assert sent["cost_lovelace"] == 5_250_000 + sent["fee_lovelace"]
    assert fake.accepted == [sent["tx_id"]] and sent["ttl_slot"] == 50 + 900
    assert _lovelace_at(fake, OTHER) == 5_250_000
    assert _lovelace_at(fake, VECTOR_TESTNET) == 107_000_000 - sent["cost_lovelace"]


@pytest.mark.parametrize("argv", [("send", "vec", OTHER, "5", "--yes"), ("split", "vec", "--into", "2")])
def test_ttl_counts_from_the_ledger_clock_not_the_lagging_tip(capsys: pytest.CaptureFixture[str], home: Path,
                                                              fake: Any, argv: tuple[str, ...]) -> None:
    """When no block was made for a while the tip lags the ledger's clock: the TTL counts from the clock,
    as the payer's does, so --ttl-s is the window the transaction really has."""
    fake.current_slot = lambda now=None: 50 + 400  # the clock ran 400 slots past the last block
    assert fake.tip().slot == 50
    sent = run_json(capsys, "wallet", *argv, "--ttl-s", "120", "--home", str(home))
    assert sent["ttl_slot"] == 450 + 120
    assert fake.accepted == [sent["tx_id"]]


@pytest.mark.parametrize(
    ("amount", "to", "fragment"),
    [
        ("-1", OTHER, "non-negative"),
        ("0", OTHER, "more than 0"),
        ("1.0000001", OTHER, "6 decimals"),
        ("ten", OTHER, "not an ADA amount"),
        ("107.000001", OTHER, "cannot send"),
        ("1", VECTOR_MAINNET, "mainnet address"),
        ("1", "addr_test1qqqq", "not a Cardano address"),
    ],
)
def test_send_refusals_move_nothing(capsys: pytest.CaptureFixture[str], home: Path, fake: Any,
                                    monkeypatch: pytest.MonkeyPatch, amount: str, to: str, fragment: str) -> None:
    """Bad amounts, over-balance and wrong-network addresses fail before unlocking; nothing is submitted."""
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", "not the passphrase")  # never reached
    code, out, err = run(capsys, "wallet", "send", "vec", to, amount, "--yes", "--home", str(home))
    assert code != 0 and out == "" and fragment in err and "Traceback" not in err
    assert fake.accepted == [] and _lovelace_at(fake, VECTOR_TESTNET) == 107_000_000


def test_send_without_yes_needs_a_terminal(capsys: pytest.CaptureFixture[str], home: Path, fake: Any,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --yes and no terminal, send refuses; on a terminal, answering no cancels."""
    code, _, err = run(capsys, "wallet", "send", "vec", OTHER, "1", "--home", str(home))
    assert code != 0 and "--yes" in err
    monkeypatch.setattr(wallet_cmd, "_has_tty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    code, _, err = run(capsys, "wallet", "send", "vec", OTHER, "1", "--home", str(home))
    assert code != 0 and "cancelled" in err
    assert fake.accepted == []


def test_send_wrong_passphrase_moves_nothing(capsys: pytest.CaptureFixture[str], home: Path, fake: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong passphrase at send time is the opaque keystore error and no transaction is submitted."""
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", "not the passphrase")
    code, _, err = run(capsys, "wallet", "send", "vec", OTHER, "1", "--yes", "--home", str(home))
    assert code != 0 and "wrong passphrase or damaged" in err and fake.accepted == []


def test_split_cli(capsys: pytest.CaptureFixture[str], home: Path, fake: Any) -> None:
    """split --into 8 leaves 8 equal ADA UTxOs plus one holding the tokens, in one transaction."""
    split = run_json(capsys, "wallet", "split", "vec", "--into", "8", "--home", str(home))
    assert fake.accepted == [split["tx_id"]] and split["outputs"] == 8
    utxos = fake.utxos_at(VECTOR_TESTNET)
    plain = [u.lovelace for u in utxos if not u.assets]
    assert plain == [split["lovelace_each"]] * 8
    assert [dict(u.assets) for u in utxos if u.assets] == [{TOKEN: 500}]
    assert _lovelace_at(fake, VECTOR_TESTNET) == 107_000_000 - split["fee_lovelace"]
    code, _, err = run(capsys, "wallet", "split", "vec", "--into", "1", "--home", str(home))
    assert code != 0 and "between 2 and 100" in err


# -- end to end on the running devnet ------------------------------------------------------------


def test_devnet_show_split_send(capsys: pytest.CaptureFixture[str], home: Path, devnet: Any,
                                devnet_key: Any) -> None:
    """On the devnet: a new wallet is funded, shown, split into 8 lanes, then sends 5 ADA; the ledger agrees."""
    created = run_json(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    address = created["address"]
    devnet.fund(address, 100_000_000)
    url = ["--ogmios-url", devnet.ogmios_url, "--home", str(home)]

    shown = run_json(capsys, "wallet", "show", "main", *url)
    assert shown["balance"] == {"lovelace": 100_000_000} and len(shown["utxos"]) == 1

    split = run_json(capsys, "wallet", "split", "main", "--into", "8", *url)
    lanes = devnet.ledger.utxos_at([address])
    assert len(lanes) == 8 and {out.lovelace for _, out in lanes} == {split["lovelace_each"]}
    assert devnet.ledger.balance(address)["lovelace"] == 100_000_000 - split["fee_lovelace"]

    before = devnet.ledger.balance(devnet_key.address)["lovelace"]
    sent = run_json(capsys, "wallet", "send", "main", devnet_key.address, "5", "--yes", *url)
    assert devnet.ledger.balance(devnet_key.address)["lovelace"] == before + 5_000_000
    assert devnet.ledger.balance(address)["lovelace"] == \
        100_000_000 - split["fee_lovelace"] - sent["cost_lovelace"]
    shown = run_json(capsys, "wallet", "show", "main", *url)
    assert len(shown["utxos"]) == 8  # one lane spent, its change came back


def test_devnet_send_over_balance_moves_nothing(capsys: pytest.CaptureFixture[str], home: Path, devnet: Any,
                                                devnet_key: Any) -> None:
    """Sending more than the balance on the devnet is a clear error and leaves both balances unchanged."""
    created = run_json(capsys, "wallet", "create", "main", "--network", "devnet", "--home", str(home))
    devnet.fund(created["address"], 10_000_000)
    before = devnet.ledger.balance(devnet_key.address)["lovelace"]
    code, _, err = run(capsys, "wallet", "send", "main", devnet_key.address, "10", "--yes",
                       "--ogmios-url", devnet.ogmios_url, "--home", str(home))
    assert code != 0 and "not enough funds" in err
    assert devnet.ledger.balance(created["address"])["lovelace"] == 10_000_000
    assert devnet.ledger.balance(devnet_key.address)["lovelace"] == before


def test_show_lists_agent_pending_in_mempool(capsys: pytest.CaptureFixture[str], home: Path, fake: Any) -> None:
    """show lists the agent's recorded pending transactions that are still in the mempool, and no others."""
    from agent.sql_reservations import SqliteReservations
    from agent.store import Database
    from wallets.types import OutputRef, Utxo

    fake.auto_confirm = False
    sent = run_json(capsys, "wallet", "send", "vec", OTHER, "1", "--yes", "--home", str(home))
    db = Database.in_home(home)
    change = [Utxo(OutputRef(sent["tx_id"], 1), VECTOR_TESTNET, 2_000_000)]
    SqliteReservations(db, "vec").record_pending("job-1", sent["tx_id"], change)
    SqliteReservations(db, VECTOR_TESTNET).record_pending("job-2", "ee" * 32, [])
    SqliteReservations(db, VECTOR_TESTNET).record_pending("job-3", "ff" * 32,
                                                          [Utxo(OutputRef("ff" * 32, 0), VECTOR_TESTNET, 1)])
    db.close()
    assert run_json(capsys, "wallet", "show", "vec", "--home", str(home))["pending"] == [sent["tx_id"]]
    fake.produce_block()
    assert run_json(capsys, "wallet", "show", "vec", "--home", str(home))["pending"] == []
