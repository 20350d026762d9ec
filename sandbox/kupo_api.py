"""A Kupo-compatible HTTP API over the devnet's ledger: ``/health``, ``/matches``, ``/datums``, ``/scripts``.

Enough of Kupo v2 for pycardano's ``KupoOgmiosV6ChainContext`` and the Kupmios providers of
other SDKs, which pair it with the devnet's Ogmios. It answers as a Kupo run with
``--prune-utxo`` does: matches are the unspent outputs (``?spent`` finds none), each with the
point of the block that created it. Patterns: ``*``, a bech32 address, ``<payment>/*``,
``*/<stake>`` (credential hex digests or bech32 keys/addresses), ``<index>@<tx id>``,
``*@<tx id>``, ``<policy id>.*`` and ``<policy id>.<asset name>``; filters ``policy_id``,
``asset_name``, ``transaction_id``, ``output_index``; ``order=oldest_first|most_recent_first``.
Run it with :meth:`KupoApi.start` (uvicorn in a background thread, like the T API twin).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from sandbox.errors import SandboxError
from sandbox.serving import ServedApp

log = logging.getLogger(__name__)

KUPO_VERSION = "v2.9.0"
_HEX = re.compile(r"^[0-9a-f]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX56 = re.compile(r"^[0-9a-f]{56}$")


class PatternError(ValueError):
    """A ``/matches`` pattern or filter Kupo would refuse (answered 400)."""


@dataclass(frozen=True)
class Pattern:
    """What a match must satisfy; None fields match anything."""

    address: str | None = None
    payment: str | None = None  # payment credential hash (hex)
    stake: str | None = None  # stake credential hash (hex)
    tx_id: str | None = None
    index: int | None = None
    policy_id: str | None = None
    asset_name: str | None = None


def _credential_hex(text: str, prefixes: tuple[str, ...]) -> str:
    """A 28-byte credential from hex, or from bech32 key hashes, keys or (stake) addresses."""
    from sandbox.txcbor import DecodeError, bech32_decode, blake2b_224

    if _HEX56.match(text):
        return text
    try:
        hrp, payload = bech32_decode(text)
    except DecodeError:
        raise PatternError(f"not a credential: {text[:120]!r}") from None
    if hrp in ("addr_vk", "stake_vk") and len(payload) == 32:
        return blake2b_224(payload).hex()
    if hrp in ("addr_vkh", "stake_vkh", "addr_shared_vkh", "stake_shared_vkh", "script") and len(payload) == 28:
        return payload.hex()
    if hrp in prefixes and len(payload) == 29:  # a stake address: header byte and the credential
        return payload[1:].hex()
    raise PatternError(f"not a credential: {text[:120]!r}")


def parse_pattern(text: str) -> Pattern:
    """Parse a Kupo pattern.

    Raises:
        PatternError: the pattern has no meaning for Kupo.
    """
    from sandbox.txcbor import DecodeError, address_from_str, address_to_str

    if text in ("*", "*/*"):
        return Pattern()
    if "@" in text:
        index_text, _, tx_id = text.partition("@")
        if not _HEX64.match(tx_id) or not (index_text == "*" or index_text.isdigit()):
            raise PatternError("an output reference pattern is <index>@<transaction id> or *@<transaction id>")
        return Pattern(tx_id=tx_id, index=None if index_text == "*" else int(index_text))
    if "." in text:
        policy, _, name = text.partition(".")
        if not _HEX56.match(policy) or not (name == "*" or (_HEX.match(name) and len(name) % 2 == 0 and len(name) <= 64)):
            raise PatternError("an asset pattern is <policy id>.<asset name hex> or <policy id>.*")
        return Pattern(policy_id=policy, asset_name=None if name == "*" else name)
    if "/" in text:
        payment, _, stake = text.partition("/")
        return Pattern(payment=None if payment == "*" else _credential_hex(payment, ("addr", "addr_test")),
                       stake=None if stake == "*" else _credential_hex(stake, ("stake", "stake_test")))
    if text.startswith(("addr", "addr_test")):
        try:
            return Pattern(address=address_to_str(address_from_str(text)))
        except DecodeError:
            raise PatternError(f"not an address: {text[:120]!r}") from None
    if text.startswith(("stake", "stake_test")):
        return Pattern(stake=_credential_hex(text, ("stake", "stake_test")))
    raise PatternError(f"unsupported pattern: {text[:120]!r}")


def _credentials(address: str) -> tuple[str | None, str | None]:
    """(payment, stake) credential hashes of a Shelley address; (None, None) for a Byron one."""
    from sandbox.txcbor import DecodeError, address_from_str

    try:
        raw = address_from_str(address)
    except DecodeError:
        return None, None
    kind = raw[0] >> 4
    return raw[1:29].hex(), raw[29:57].hex() if kind <= 3 and len(raw) >= 57 else None


def _matches(pattern: Pattern, ref: Any, out: Any) -> bool:
    if pattern.address is not None and out.address != pattern.address:
        return False
    if pattern.tx_id is not None and ref.tx_id != pattern.tx_id:
        return False
    if pattern.index is not None and ref.index != pattern.index:
        return False
    if pattern.payment is not None or pattern.stake is not None:
        payment, stake = _credentials(out.address)
        if pattern.payment is not None and payment != pattern.payment:
            return False
        if pattern.stake is not None and stake != pattern.stake:
            return False
    if pattern.policy_id is not None:
        names = [a.partition(".")[2] for a in out.assets if a.partition(".")[0] == pattern.policy_id]
        if not names or (pattern.asset_name is not None and pattern.asset_name not in names):
            return False
    return True


def match_json(ref: Any, out: Any, created: tuple[int, str, int] | None) -> dict[str, Any]:
    """One Kupo match (an unspent output)."""
    import hashlib

    from sandbox.txcbor import script_ref

    assets = {}
    for asset, quantity in sorted(out.assets.items()):
        policy, _, name = asset.partition(".")
        assets[f"{policy}.{name}" if name else policy] = quantity
    item: dict[str, Any] = {
        "transaction_index": created[2] if created else 0,
        "transaction_id": ref.tx_id,
        "output_index": ref.index,
        "address": out.address,
        "value": {"coins": out.lovelace, "assets": assets},
        "datum_hash": None,
        "script_hash": script_ref(out.script).hash if out.script else None,
        "created_at": {"slot_no": created[0], "header_hash": created[1]} if created else None,
        "spent_at": None,
    }
    if out.datum is not None:
        item["datum_hash"] = hashlib.blake2b(bytes.fromhex(out.datum), digest_size=32).hexdigest()
        item["datum_type"] = "inline"
    elif out.datum_hash is not None:
        item["datum_hash"] = out.datum_hash
        item["datum_type"] = "hash"
    return item


def find_matches(node: Any, pattern: Pattern, query: dict[str, str]) -> list[dict[str, Any]]:
    """The unspent outputs matching ``pattern`` and the query filters, as Kupo matches.

    Raises:
        PatternError: a filter Kupo would refuse.
    """
    if "spent" in query:
        return []  # pruned: spent outputs are not kept
    policy, name = query.get("policy_id"), query.get("asset_name")
    if policy is not None and not _HEX56.match(policy):
        raise PatternError("'policy_id' must be 56 hex digits")
    if name is not None and (policy is None or not _HEX.match(name)):
        raise PatternError("'asset_name' needs 'policy_id' and is hex")
    tx_id, index = query.get("transaction_id"), query.get("output_index")
    if tx_id is not None and not _HEX64.match(tx_id):
        raise PatternError("'transaction_id' must be 64 hex digits")
    if index is not None and not index.isdigit():
        raise PatternError("'output_index' must be a non-negative integer")
    order = query.get("order", "most_recent_first")
    if order not in ("most_recent_first", "oldest_first"):
        raise PatternError("'order' is most_recent_first or oldest_first")
    if pattern.address is not None:
        pairs: Iterable[tuple[Any, Any]] = node.utxos_at([pattern.address])
    elif pattern.tx_id is not None:
        pairs = [(ref, out) for ref, out in node.all_utxos() if ref.tx_id == pattern.tx_id]
    else:
        pairs = node.all_utxos()
    found = []
    for ref, out in pairs:
        if not _matches(pattern, ref, out):
            continue
        if tx_id is not None and ref.tx_id != tx_id or index is not None and ref.index != int(index):
            continue
        if policy is not None and not _matches(Pattern(policy_id=policy, asset_name=name), ref, out):
            continue
        found.append(match_json(ref, out, node.created_at(ref)))

    def when(item: dict[str, Any]) -> tuple[int, int, int]:
        created = item["created_at"] or {"slot_no": 0}
        return created["slot_no"], item["transaction_index"], item["output_index"]

    found.sort(key=when, reverse=order == "most_recent_first")
    return found


def script_json(inner_hex: str | None) -> dict[str, Any] | None:
    """Kupo's ``/scripts/{hash}`` body: language and script bytes (native: its CBOR)."""
    if inner_hex is None:
        return None
    from sandbox.txcbor import script_ref

    ref = script_ref(inner_hex)
    return {"language": ref.language, "script": ref.cbor}


def health_text(node: Any) -> tuple[dict[str, Any], str]:
    """Kupo's ``/health`` as JSON and as Prometheus text."""
    tip = node.tip()
    slot = tip.slot if tip else 0
    body = {
        "connection_status": "connected",
        "most_recent_checkpoint": slot,
        "most_recent_node_tip": slot,
        "seconds_since_last_block": max(0, node.current_slot() - slot),
        "network_synchronization": 1.0,
        "configuration": {"indexes": "installed"},
        "version": KUPO_VERSION,
    }
    text = "".join([
        "# TYPE kupo_connection_status gauge\nkupo_connection_status 1.0\n",
        f"# TYPE kupo_most_recent_checkpoint counter\nkupo_most_recent_checkpoint {slot}\n",
        f"# TYPE kupo_most_recent_node_tip counter\nkupo_most_recent_node_tip {slot}\n",
    ])
    return body, text


def create_app(node: Any) -> Callable[..., Any]:
    """The ASGI app serving the Kupo API for ``node`` (a ``DevnetNode``)."""
    from urllib.parse import parse_qsl, unquote

    async def respond(send: Callable[..., Any], status: int, body: Any, *, text: str | None = None) -> None:
        payload = (text if text is not None else json.dumps(body, separators=(",", ":"))).encode()
        tip = node.tip()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8" if text is not None else b"application/json;charset=utf-8"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-most-recent-checkpoint", str(tip.slot if tip else 0).encode()),
            (b"access-control-allow-origin", b"*"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], unquote(scope["path"])
        if method != "GET":
            await respond(send, 405, {"hint": "Kupo's API is read-only: use GET."})
            return
        query = {k: v for k, v in parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True)}
        parts = [p for p in path.split("/") if p]
        try:
            if parts == ["health"]:
                body, text = health_text(node)
                accept = dict(scope.get("headers", [])).get(b"accept", b"").decode()
                if "json" in accept:
                    await respond(send, 200, body)
                else:
                    await respond(send, 200, None, text=text)
            elif parts and parts[0] == "matches" and len(parts) <= 3:
                pattern = parse_pattern("/".join(parts[1:]) if len(parts) > 1 else "*")
                await respond(send, 200, find_matches(node, pattern, query))
            elif len(parts) == 2 and parts[0] == "datums":
                if not _HEX64.match(parts[1]):
                    raise PatternError("a datum hash is 64 hex digits")
                datum = node.datum(parts[1])
                await respond(send, 200, {"datum": datum} if datum is not None else None)
            elif len(parts) == 2 and parts[0] == "scripts":
                if not _HEX56.match(parts[1]):
                    raise PatternError("a script hash is 56 hex digits")
                await respond(send, 200, script_json(node.script(parts[1])))
            else:
                await respond(send, 404, {"hint": f"no such endpoint: {path[:200]}"})
        except PatternError as bad:
            await respond(send, 400, {"hint": str(bad)})

    return app


class KupoApi(ServedApp):
    """A running Kupo-compatible API. ``url`` is ``http://host:port``; ``stop()`` shuts it down."""

    @classmethod
    def start(cls, node: Any, *, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0) -> KupoApi:
        """Serve the Kupo API for ``node`` on ``host:port`` (0: any free port) in a background thread.

        Raises:
            SandboxError: the port cannot be bound or the server does not start.
        """
        api = cls()
        api._serve(create_app(node), host=host, port=port, what="the Kupo API", name="kupo-api",
                   startup_timeout_s=startup_timeout_s, interface="asgi3", proxy_headers=False, log_config=None,
                   ws="none")
        log.info("Kupo API serving at %s", api.url)
        return api
