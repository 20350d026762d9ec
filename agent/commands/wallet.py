"""``cardano-agent wallet``: create, import, list, show, split, send and re-key local wallets.

The passphrase comes from ``CARDANO_AGENT_PASSPHRASE`` or an interactive prompt, never from
an argument (arguments show up in ``ps`` and shell history). The 24 words of a new wallet are
printed once, by ``create``, and never again. Chain commands reach Ogmios at ``--ogmios-url``,
``CARDANO_AGENT_OGMIOS_URL`` or ``[chain] ogmios_url`` in ``<home>/agent.toml``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from agent.errors import AgentError, ConfigError
from wallets.errors import KeystoreError, MnemonicError

if TYPE_CHECKING:
    from wallets.keystore import Keystore

ORDER = 20
PASSPHRASE_ENV = "CARDANO_AGENT_PASSPHRASE"
NEW_PASSPHRASE_ENV = "CARDANO_AGENT_NEW_PASSPHRASE"
OGMIOS_ENV = "CARDANO_AGENT_OGMIOS_URL"  # agent.app.OGMIOS_URL_ENV (not imported: --help stays light)
NETWORK_CHOICES = ("devnet", "preprod", "preview", "mainnet")

MNEMONIC_WARNING = (
    "Write these 24 words down on paper and keep them offline. They are shown ONCE and never "
    "again; anyone who has them can spend this wallet's funds, and without them a lost "
    "keystore file or passphrase means lost funds."
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``wallet`` command group."""
    group = sub.add_parser("wallet", parents=[common], help="create, inspect and use local wallets",
                           description="Create, import, list, show, split, send and re-key local wallets.")
    cmds = group.add_subparsers(dest="wallet_command", metavar="WALLET_COMMAND")
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])

    p = cmds.add_parser("create", parents=[common], help="make a new wallet and show its 24 words once")
    p.add_argument("name")
    p.add_argument("--network", choices=NETWORK_CHOICES, required=True)
    p.set_defaults(func=cmd_create)

    p = cmds.add_parser("import", parents=[common], help="store an existing mnemonic as a wallet")
    p.add_argument("name")
    p.add_argument("--network", choices=NETWORK_CHOICES, required=True)
    p.add_argument("--mnemonic-file", metavar="PATH",
                   help="file holding the words, or '-' for stdin (default: prompt)")
    p.set_defaults(func=cmd_import)

    p = cmds.add_parser("list", parents=[common], help="list wallets (no passphrase needed)")
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser("show", parents=[common], help="address, balance per asset, UTxOs")
    p.add_argument("name")
    _chain_options(p)
    p.set_defaults(func=cmd_show)

    p = cmds.add_parser("split", parents=[common], help="fan the funds into N equal UTxOs (parallel lanes)")
    p.add_argument("name")
    p.add_argument("--into", type=int, required=True, metavar="N")
    _chain_options(p)
    p.set_defaults(func=cmd_split)

    p = cmds.add_parser("send", parents=[common], help="send ADA to an address")
    p.add_argument("name")
    p.add_argument("address")
    p.add_argument("amount", metavar="ADA", help="amount in ADA, up to 6 decimals (or 5000000lovelace)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _chain_options(p)
    p.set_defaults(func=cmd_send)

    p = cmds.add_parser("passwd", parents=[common], help="change a wallet's passphrase")
    p.add_argument("name")
    p.set_defaults(func=cmd_passwd)


def _chain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ogmios-url", metavar="URL",
                   help=f"Ogmios WebSocket URL (default ${OGMIOS_ENV} or [chain] ogmios_url in agent.toml)")
    p.add_argument("--ttl-s", type=int, default=900, metavar="SECONDS",
                   help="validity window from the ledger's current slot, in slots (default 900)")


# -- helpers --------------------------------------------------------------------------------


def keystore_for(home: Path) -> Keystore:
    """Return the keystore in ``<home>/wallets``."""
    from wallets.keystore import Keystore

    return Keystore(home / "wallets")


def _has_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _register_secret(value: str) -> None:
    from agent.logs import register_secret

    register_secret(value)  # the CLI's log handlers scrub it from every line from now on


def read_passphrase(*, confirm: bool = False, env: Mapping[str, str] | None = None,
                    env_name: str = PASSPHRASE_ENV, prompt: str = "Passphrase: ") -> str:
    """Return the passphrase from ``env_name`` or a prompt (twice when ``confirm``).

    Raises:
        KeystoreError: no environment variable and no terminal, or the two entries differ.
    """
    env = os.environ if env is None else env
    value = env.get(env_name)
    if value:
        _register_secret(value)
        return value
    if not _has_tty():
        raise KeystoreError(f"no passphrase: set {env_name} or run in a terminal to be prompted")
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat " + prompt[0].lower() + prompt[1:]) != value:
        raise KeystoreError("the passphrases do not match")
    _register_secret(value)
    return value


MAINNET_MIN_PASSPHRASE_CHARS = 12
"""A mainnet keystore's passphrase is all that stands between a stolen file and the funds."""


def check_passphrase_strength(passphrase: str, network: str) -> None:
    """Refuse a weak passphrase for a mainnet wallet (test networks hold no real value).

    Raises:
        KeystoreError: on mainnet, fewer than 12 characters or fewer than 5 different ones.
    """
    if network != "mainnet":
        return
    if len(passphrase) < MAINNET_MIN_PASSPHRASE_CHARS or len(set(passphrase)) < 5:
        raise KeystoreError(f"a mainnet wallet needs a passphrase of at least {MAINNET_MIN_PASSPHRASE_CHARS} "
                            "characters with at least 5 different ones (a few random words will do)")


def _read_mnemonic(source: str | None) -> str:
    if source is None:
        if not _has_tty():
            raise MnemonicError("no mnemonic: pass --mnemonic-file PATH (or '-' for stdin)")
        return getpass.getpass("Mnemonic words: ")
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise MnemonicError(f"cannot read mnemonic file {source}: {reason}") from None


def _info_dict(info: Any) -> dict[str, Any]:
    return {"name": info.name, "network": info.network, "address": info.address,
            "created_at": info.created_at.isoformat()}


# -- local commands -------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    """Create a wallet; print its address and, once, its 24 words."""
    from agent.output import emit, kv

    store = keystore_for(args.home)
    from wallets.keystore import validate_name

    validate_name(args.name)
    if store.exists(args.name):
        raise KeystoreError(f"a wallet named {args.name!r} already exists in {store.root}")
    passphrase = read_passphrase(confirm=True)
    check_passphrase_strength(passphrase, args.network)
    info, phrase = store.create(args.name, network=args.network, passphrase=passphrase)
    data = _info_dict(info) | {"mnemonic": phrase.reveal(), "warning": MNEMONIC_WARNING}

    def human(d: dict[str, Any]) -> None:
        kv([("wallet", d["name"]), ("network", d["network"]), ("address", d["address"])])
        print()
        print("!" * 78)
        print(MNEMONIC_WARNING)
        print()
        words = phrase.words()
        for row in range(0, len(words), 4):
            print("  ".join(f"{i + 1:>2}. {w:<9}" for i, w in enumerate(words[row:row + 4], start=row)))
        print("!" * 78)

    emit(args.json, data, human)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import a mnemonic from a file, stdin or a hidden prompt."""
    from agent.output import emit, kv
    from wallets.keystore import validate_name

    store = keystore_for(args.home)
    validate_name(args.name)
    if store.exists(args.name):
        raise KeystoreError(f"a wallet named {args.name!r} already exists in {store.root}")
    words = _read_mnemonic(args.mnemonic_file)
    from wallets.hd import parse_mnemonic

    phrase = parse_mnemonic(words)  # fail on a bad phrase before asking for a passphrase
    passphrase = read_passphrase(confirm=True)
    check_passphrase_strength(passphrase, args.network)
    info = store.import_wallet(args.name, network=args.network, mnemonic=phrase, passphrase=passphrase)
    emit(args.json, _info_dict(info),
         lambda d: kv([("imported", d["name"]), ("network", d["network"]), ("address", d["address"])]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List wallets with their network and address."""
    from agent.output import emit, table

    infos = [_info_dict(i) for i in keystore_for(args.home).list()]
    emit(args.json, infos, lambda rows: table(
        [(r["name"], r["network"], r["address"], r["created_at"]) for r in rows],
        ["NAME", "NETWORK", "ADDRESS", "CREATED"]))
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """Change a wallet's passphrase (old from the env/prompt, new from the env/prompt twice)."""
    from agent.output import emit

    store = keystore_for(args.home)
    info = store.info(args.name)
    old = read_passphrase(prompt="Current passphrase: ")
    store.unlock(args.name, old)  # a wrong old passphrase fails before the new one is asked
    new = read_passphrase(confirm=True, env_name=NEW_PASSPHRASE_ENV, prompt="New passphrase: ")
    check_passphrase_strength(new, info.network)
    store.change_passphrase(args.name, old, new)
    emit(args.json, {"name": args.name, "changed": True},
         lambda d: print(f"passphrase of wallet {d['name']!r} changed"))
    return 0


# -- chain commands -------------------------------------------------------------------------


def resolve_ogmios_url(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """Return the Ogmios URL: ``--ogmios-url``, then the environment, then ``agent.toml``.

    Raises:
        ConfigError: none of them is set, or agent.toml does not parse.
    """
    from agent.app import resolve_ogmios_url as resolve

    return resolve(args.home, getattr(args, "ogmios_url", None), env)


def _open_chain(args: argparse.Namespace) -> Any:
    from agent.app import chain_for_home

    return chain_for_home(args.home, ogmios_url=getattr(args, "ogmios_url", None))


def _balance(utxos: list[Any]) -> dict[str, int]:
    from wallets.types import LOVELACE

    totals: dict[str, int] = {LOVELACE: 0}
    for u in utxos:
        totals[LOVELACE] += u.lovelace
        for asset, qty in u.assets.items():
            totals[asset] = totals.get(asset, 0) + qty
    return totals


def _token_names(chain: Any, assets: list[str]) -> dict[str, str]:
    """Registered names (ticker) of ``assets`` where the backend knows token metadata (Blockfrost)."""
    lookup = getattr(chain, "token_metadata", None)
    names: dict[str, str] = {}
    if not callable(lookup):
        return names
    for asset in assets[:20]:  # a few requests at most, on a show
        meta = lookup(asset)
        if meta and meta.get("name"):
            names[asset] = f"{meta['name']} ({meta['ticker']})" if meta.get("ticker") else str(meta["name"])
    return names


def _utxo_dict(u: Any) -> dict[str, Any]:
    return {"ref": str(u.ref), "lovelace": u.lovelace, "assets": dict(u.assets)}


def cmd_show(args: argparse.Namespace) -> int:
    """Show a wallet's address, balance per asset and UTxOs (read from the chain)."""
    from agent.output import emit, format_ada, kv, table
    from agent.sql_reservations import pending_in_home
    from wallets.errors import ChainUnavailableError
    from wallets.types import LOVELACE

    info = keystore_for(args.home).info(args.name)
    chain = _open_chain(args)
    try:
        tip = chain.tip()
        utxos = sorted(chain.utxos_at(info.address), key=lambda u: (u.ref.tx_id, u.ref.index))
        pending = [tx for tx in pending_in_home(args.home, (info.name, info.address)) if chain.in_mempool(tx)]
        balance = _balance(utxos)
        names = _token_names(chain, [a for a in balance if a != LOVELACE])
    except ChainUnavailableError:
        # The address is known without the chain: show it, and say plainly what is missing.
        url = getattr(chain, "url", "the configured Ogmios URL")
        unavailable = _info_dict(info) | {"balance": None, "error": f"chain unreachable at {url}"}
        emit(args.json, unavailable, lambda d: kv(
            [("wallet", d["name"]), ("network", d["network"]), ("address", d["address"]),
             ("ADA", f"balance unavailable: {d['error']}")]))
        return 0
    finally:
        chain.close()
    data = _info_dict(info) | {
        "tip_slot": tip.slot,
        "balance": balance,
        "token_names": names,
        "utxos": [_utxo_dict(u) for u in utxos],
        "pending": pending,
    }

    def human(d: dict[str, Any]) -> None:
        kv([("wallet", d["name"]), ("network", d["network"]), ("address", d["address"]),
            ("ADA", format_ada(d["balance"][LOVELACE])), ("UTxOs", len(d["utxos"])),
            ("pending txs", len(d["pending"]) or "none"), ("tip slot", d["tip_slot"])])
        tokens = [(a, d["token_names"].get(a, ""), q) for a, q in d["balance"].items() if a != LOVELACE]
        if tokens:
            print()
            table(tokens, ["ASSET", "NAME", "QUANTITY"])
        print()
        table([(u["ref"], format_ada(u["lovelace"]), len(u["assets"]) or "") for u in d["utxos"]],
              ["UTXO", "ADA", "TOKENS"])
        for tx in d["pending"]:
            print(f"pending  {tx}")

    emit(args.json, data, human)
    return 0


class ConfirmationRequiredError(AgentError):
    """A command that moves funds was not confirmed (no ``--yes`` and no terminal, or answered no)."""


def check_address(address: str, network: str) -> str:
    """Return ``address`` if it is a Shelley address of ``network``'s kind (mainnet or testnet).

    Raises:
        AddressError: it does not parse, or belongs to the other network.
    """
    from wallets.address import parse_address_any_case
    from wallets.errors import AddressError
    from wallets.networks import get_network

    try:
        parsed = parse_address_any_case(address.strip())
    except AddressError:
        raise AddressError(f"not a Cardano address: {address!r}") from None
    if parsed.testnet != get_network(network).testnet:
        kind = "a testnet" if parsed.testnet else "a mainnet"
        raise AddressError(f"{address[:20]}… is {kind} address but this wallet is on {network}")
    return parsed.text


def _confirm(question: str, assume_yes: bool) -> None:
    if assume_yes:
        return
    if not _has_tty():
        raise ConfirmationRequiredError("refusing to move funds without --yes (no terminal to confirm on)")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise ConfirmationRequiredError("cancelled: nothing was sent")


def _paid(args: argparse.Namespace, payment: Any, tx_id: str, extra: dict[str, Any]) -> int:
    from agent.output import emit, format_ada, kv

    data = {"tx_id": tx_id, "fee_lovelace": payment.fee_lovelace, "cost_lovelace": payment.cost_lovelace,
            "ttl_slot": payment.ttl_slot, **extra}
    emit(args.json, data, lambda d: kv(
        [("tx id", d["tx_id"]), ("fee", f"{format_ada(d['fee_lovelace'])} ADA"),
         ("cost", f"{format_ada(d['cost_lovelace'])} ADA")]
        + [_person_field(k, v) for k, v in extra.items() if not isinstance(v, (list, dict))]))
    return 0


def _person_field(key: str, value: Any) -> tuple[str, Any]:
    """A ``*_lovelace`` figure reads in ADA for a person (the JSON keeps the integer)."""
    from agent.output import format_ada

    if "lovelace" in key.split("_") and isinstance(value, int) and not isinstance(value, bool):
        words = key.replace("amount_lovelace", "amount").replace("lovelace_each", "each").replace("_lovelace", "")
        return words.replace("_", " "), f"{format_ada(value)} ADA"
    return key.replace("_", " "), value


def cmd_send(args: argparse.Namespace) -> int:
    """Send ADA from a wallet; every check runs before the passphrase is asked and anything is signed."""
    from agent.output import format_ada, parse_amount
    from agent.sql_reservations import reservations_in_home
    from wallets.errors import AmountError, InsufficientFundsError
    from wallets.payment import PaymentSender
    from wallets.slots import ttl_after
    from wallets.types import RequiredOutput

    try:
        amount = parse_amount(args.amount)  # ADA; lovelace only with its suffix
    except ValueError as exc:
        raise AmountError(str(exc)) from None
    if amount <= 0:
        raise AmountError("the amount must be more than 0 ADA")
    store = keystore_for(args.home)
    info = store.info(args.name)
    to = check_address(args.address, info.network)
    chain = _open_chain(args)
    try:
        available = sum(u.lovelace for u in chain.utxos_at(info.address))
        if amount > available:
            raise InsufficientFundsError(
                f"wallet {info.name!r} holds {format_ada(available)} ADA; cannot send {format_ada(amount)} ADA",
                needed={"lovelace": amount}, available={"lovelace": available})
        _confirm(f"Send {format_ada(amount)} ADA from {info.name!r} to {to}?", args.yes)
        wallet = store.unlock(args.name, read_passphrase())
        ttl_slot = ttl_after(chain, args.ttl_s)
        reservations, db = reservations_in_home(args.home, info.name)
        try:
            # Reserve in the agent's store, so a running agent never picks the same inputs.
            sender = PaymentSender(chain, wallet, reservations=reservations)
            payment = sender.pay([RequiredOutput(to, amount)], ttl_slot=ttl_slot, owner=f"cli-send-{os.getpid()}")
            # The inputs stay reserved (spent once confirmed); the change is not offered for chaining
            # by this short-lived process. The agent's next start clears finished CLI reservations.
            reservations.clear_pending(payment.tx_id)
        finally:
            db.close()
    finally:
        chain.close()
    return _paid(args, payment, payment.tx_id, {"to": to, "amount_lovelace": amount})


def cmd_split(args: argparse.Namespace) -> int:
    """Spend every UTxO of the wallet into N equal outputs to itself, in one transaction."""
    from agent.sql_reservations import reservations_in_home
    from wallets.errors import AmountError
    from wallets.slots import ttl_after

    if not 2 <= args.into <= 100:
        raise AmountError("--into must be between 2 and 100")
    store = keystore_for(args.home)
    info = store.info(args.name)
    chain = _open_chain(args)
    try:
        utxos = chain.utxos_at(info.address)
        if not utxos:
            raise AmountError(f"wallet {info.name!r} has no funds to split")
        params = chain.protocol_params()
        wallet = store.unlock(args.name, read_passphrase())
        ttl_slot = ttl_after(chain, args.ttl_s)
        payment = plan_split(utxos, into=args.into, address=info.address, signer=wallet,
                             params=params, ttl_slot=ttl_slot)
        reservations, db = reservations_in_home(args.home, info.name)
        owner = f"cli-split-{os.getpid()}"
        try:
            reservations.reserve(owner, payment.inputs)  # refused if a running agent holds one of them
            try:
                tx_id = chain.submit(payment.cbor)
            except Exception:
                reservations.release(owner)
                raise
        finally:
            db.close()
    finally:
        chain.close()
    return _paid(args, payment, tx_id, {"outputs": args.into,
                                        "lovelace_each": payment.output_lovelace[0]})


def plan_split(utxos: list[Any], *, into: int, address: str, signer: Any, params: Any, ttl_slot: int) -> Any:
    """Build a signed transaction spending all ``utxos`` into ``into`` equal ADA outputs to ``address``.

    Lanes get ``(total − fee) // into`` each, so the fee exceeds the ledger minimum by less than
    ``into`` lovelace. If the wallet holds native tokens, one more output (the change) keeps them
    with their minimum ADA.

    Raises:
        AmountError: the funds cannot make ``into`` outputs of at least the minimum UTxO value.
    """
    from wallets.errors import AmountError, InsufficientFundsError
    from wallets.payment import build_payment, min_fee, min_utxo_lovelace
    from wallets.types import RequiredOutput

    total = sum(u.lovelace for u in utxos)
    tokens: dict[str, int] = {}
    for u in utxos:
        for asset, qty in u.assets.items():
            tokens[asset] = tokens.get(asset, 0) + qty
    reserve = min_utxo_lovelace(address, 0, tokens, params) if tokens else 0
    lane_min = min_utxo_lovelace(address, 0, {}, params)
    slack = 2_000_000  # fee headroom for the first, measuring build (it keeps a change output)
    if (total - reserve - slack) // into < lane_min:
        raise AmountError(f"cannot split {total / 1e6:.6f} ADA into {into} outputs of at least "
                          f"{lane_min / 1e6:.6f} ADA each (plus the fee)")

    def build(each: int) -> Any:
        return build_payment([RequiredOutput(address, each)] * into, utxos=utxos, change_address=address,
                             signer=signer, params=params, ttl_slot=ttl_slot)

    best = build((total - reserve - slack) // into)
    fee_estimate = best.fee_lovelace
    for _ in range(3):
        try:
            candidate = build((total - reserve - fee_estimate) // into)
        except InsufficientFundsError:
            break  # an amount crossed a CBOR size step: keep the last transaction that balanced
        best = candidate
        exact = min_fee(candidate.size_bytes, params)
        if tokens or candidate.fee_lovelace - exact < into:
            break
        fee_estimate = exact
    return best
