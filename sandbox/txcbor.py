"""Decodes a Cardano transaction from raw CBOR, keeping the byte spans the ledger hashes and measures.

The transaction id is the hash of the body bytes *as received* and the minimum UTxO deposit
depends on each output's serialized size, so the decoder never re-serializes: a small CBOR
item scanner finds the spans and cbor2 decodes only the small pieces inside them.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import cbor2

from wallets import bech32


ASSET_SEP = "."


class DecodeError(ValueError):
    """The bytes are not a transaction this ledger can read."""


def blake2b_256(data: bytes) -> bytes:
    """Return the 32-byte blake2b digest of ``data``."""
    return hashlib.blake2b(data, digest_size=32).digest()


def blake2b_224(data: bytes) -> bytes:
    """Return the 28-byte blake2b digest of ``data`` (key and script hashes)."""
    return hashlib.blake2b(data, digest_size=28).digest()


# --- CBOR item scanning ---------------------------------------------------------------------


def read_header(data: bytes, pos: int) -> tuple[int, int | None, int]:
    """Read one CBOR head at ``pos``: (major type, argument or None if indefinite, next position)."""
    if pos >= len(data):
        raise DecodeError("truncated CBOR")
    ib = data[pos]
    major, ai = ib >> 5, ib & 0x1F
    pos += 1
    if ai < 24:
        return major, ai, pos
    if ai in (24, 25, 26, 27):
        width = 1 << (ai - 24)
        if pos + width > len(data):
            raise DecodeError("truncated CBOR")
        return major, int.from_bytes(data[pos : pos + width], "big"), pos + width
    if ai == 31 and major in (2, 3, 4, 5):
        return major, None, pos
    raise DecodeError(f"invalid CBOR head byte 0x{ib:02x}")


def item_end(data: bytes, pos: int) -> int:
    """Return the position just past the CBOR item starting at ``pos`` (iterative, no recursion)."""
    n = len(data)
    stack = [1]  # items still expected at each open level; -1 means "until break"
    while stack:
        if stack[-1] == 0:
            stack.pop()
            continue
        if pos >= n:
            raise DecodeError("truncated CBOR")
        if stack[-1] < 0 and data[pos] == 0xFF:
            stack.pop()
            pos += 1
            continue
        if stack[-1] > 0:
            stack[-1] -= 1
        major, arg, pos = read_header(data, pos)
        if major in (2, 3):
            if arg is None:
                stack.append(-1)
            else:
                pos += arg
                if pos > n:
                    raise DecodeError("truncated CBOR string")
        elif major == 4:
            stack.append(-1 if arg is None else arg)
        elif major == 5:
            stack.append(-1 if arg is None else 2 * arg)
        elif major == 6:
            stack.append(1)
    return pos


def container_items(data: bytes, pos: int, major_expected: int) -> tuple[list[tuple[int, int]], int]:
    """Spans of the items of the array (4) or map (5, keys and values alternate) at ``pos``."""
    major, arg, pos = read_header(data, pos)
    if major == 6 and arg == 258:  # a CBOR set: tag 258 around an array
        major, arg, pos = read_header(data, pos)
    if major != major_expected:
        raise DecodeError(f"expected CBOR major type {major_expected}, found {major}")
    spans: list[tuple[int, int]] = []
    count = None if arg is None else (arg if major == 4 else 2 * arg)
    while count is None or len(spans) < count:
        if count is None and pos < len(data) and data[pos] == 0xFF:
            pos += 1
            break
        end = item_end(data, pos)
        spans.append((pos, end))
        pos = end
    return spans, pos


# --- decoded shapes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedOutput:
    """One transaction output: its address, value, datum and serialized sizes as received."""

    address: str
    address_bytes: bytes
    credential: Credential
    lovelace: int
    assets: dict[str, int]
    datum_hash: str | None
    datum: str | None
    size: int
    value_size: int
    script: str | None = None  # hex CBOR of the reference script [language, script]


@dataclass(frozen=True, slots=True)
class DecodedTx:
    """What the ledger needs from a transaction, with byte-exact hashes and sizes."""

    tx_id: str
    raw: bytes
    size: int  # as the fee rule measures it: without the is-valid flag
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[DecodedOutput, ...]
    fee: int
    ttl: int | None
    valid_from: int | None
    aux_hash: str | None
    aux_computed_hash: str | None
    aux_data: Any
    vkey_witnesses: tuple[tuple[bytes, bytes], ...]
    bootstrap_witnesses: tuple[tuple[bytes, bytes, str], ...]  # (vkey, signature, address root)
    native_scripts: dict[str, Any]  # hash -> decoded native script, from the witness set
    plutus_scripts: tuple[str, ...]  # hashes of Plutus scripts in the witness set
    redeemers: tuple[tuple[str, int], ...]
    datums: tuple[str, ...]
    mint: dict[str, int]
    has_certificates: bool
    withdrawals: dict[bytes, int]
    script_data_hash: str | None
    required_signers: tuple[str, ...]
    network_id: int | None
    reference_inputs: tuple[tuple[str, int], ...]
    collateral_inputs: tuple[tuple[str, int], ...]
    donation: int
    unsupported: tuple[str, ...] = field(default=())


_BODY_KEYS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22}
_BODY_FIELDS_UNSUPPORTED = {6: "protocol update", 19: "votes", 20: "governance proposals", 21: "treasury value"}
_SCRIPT_TAGS = {1: 0, 3: 1, 6: 2, 7: 3}  # witness-set key -> script language tag used in the hash
_REDEEMER_PURPOSES = ("spend", "mint", "publish", "withdraw", "vote", "propose")


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DecodeError(f"{what} must be an unsigned integer")
    return value


def _positive(value: Any, what: str) -> int:
    if _uint(value, what) == 0:
        raise DecodeError(f"{what} must be positive when present")
    return value


def _network_id(value: Any) -> int:
    if type(value) is not int or value not in (0, 1):
        raise DecodeError("a network id is 0 or 1")
    return value


def _bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or (size is not None and len(value) != size):
        raise DecodeError(f"{what} must be {size if size else 'some'} bytes")
    return value


def _seq(value: Any, what: str) -> list[Any]:
    if isinstance(value, cbor2.CBORTag) and value.tag == 258:
        value = value.value
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise DecodeError(f"{what} must be an array")
    return list(value)


def _refs(value: Any, what: str) -> tuple[tuple[str, int], ...]:
    refs = []
    for item in _seq(value, what):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise DecodeError(f"{what}: an output reference is [id, index]")
        refs.append((_bytes(item[0], "transaction id", 32).hex(), _uint(item[1], "output index")))
    return tuple(sorted(refs)) if isinstance(value, (set, frozenset)) else tuple(refs)


def decode_multiasset(value: Any, *, signed: bool) -> dict[str, int]:
    """Flatten ``{policy: {name: qty}}`` into ``{"policy.name": qty}``."""
    if not isinstance(value, dict):
        raise DecodeError("multi-asset must be a map")
    assets: dict[str, int] = {}
    for policy, names in value.items():
        policy_hex = _bytes(policy, "policy id", 28).hex()
        if not isinstance(names, dict):
            raise DecodeError("asset names must be a map")
        for name, qty in names.items():
            name_b = _bytes(name, "asset name")
            if len(name_b) > 32:
                raise DecodeError("asset name longer than 32 bytes")
            if not isinstance(qty, int) or isinstance(qty, bool) or (not signed and qty < 0):
                raise DecodeError("asset quantity must be an integer")
            if qty:
                assets[f"{policy_hex}{ASSET_SEP}{name_b.hex()}"] = qty
    return assets


def _value(value: Any) -> tuple[int, dict[str, int]]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise DecodeError("a value is coin or [coin, multi-asset]")
        return _uint(value[0], "coin"), decode_multiasset(value[1], signed=False)
    return _uint(value, "coin"), {}


def _decode_output(raw: bytes, start: int, end: int) -> DecodedOutput:
    span = raw[start:end]
    out = cbor2.loads(span)
    datum_hash = datum = script = None
    if isinstance(out, (list, tuple)):  # legacy shape: [address, value, datum hash?]
        if len(out) not in (2, 3):
            raise DecodeError("a legacy output is [address, value, datum hash?]")
        addr, val = out[0], out[1]
        if len(out) == 3:
            datum_hash = _bytes(out[2], "datum hash", 32).hex()
        items, _ = container_items(raw, start, 4)
        value_span = items[1]
    elif isinstance(out, dict):  # post-Alonzo map {0: address, 1: value, 2: datum option, 3: script}
        if not all(type(k) is int for k in out) or 0 not in out or 1 not in out or not set(out) <= {0, 1, 2, 3}:
            raise DecodeError("an output map needs keys 0 and 1 and allows 2 and 3")
        addr, val = out[0], out[1]
        option = out.get(2)
        if option is not None:
            if not isinstance(option, (list, tuple)) or len(option) != 2 or type(option[0]) is not int:
                raise DecodeError("bad datum option")
            if option[0] not in (0, 1):
                raise DecodeError("bad datum option")
            if option[0] == 0:
                datum_hash = _bytes(option[1], "datum hash", 32).hex()
            else:
                tag = option[1]
                if not isinstance(tag, cbor2.CBORTag) or tag.tag != 24 or not isinstance(tag.value, bytes):
                    raise DecodeError("an inline datum is tag 24 around bytes")
                datum = tag.value.hex()
        if 3 in out:
            script = _script_ref(out[3])
        items, _ = container_items(raw, start, 5)
        value_span = next(items[i + 1] for i in range(0, len(items), 2) if raw[items[i][0]] == 0x01)
    else:
        raise DecodeError("an output is an array or a map")
    address_bytes = _bytes(addr, "address")
    lovelace, assets = _value(val)
    return DecodedOutput(
        address=address_to_str(address_bytes),
        address_bytes=address_bytes,
        credential=payment_credential(address_bytes),
        lovelace=lovelace,
        assets=assets,
        datum_hash=datum_hash,
        datum=datum,
        size=end - start,
        value_size=value_span[1] - value_span[0],
        script=script,
    )


SCRIPT_LANGUAGES = ("native", "plutus:v1", "plutus:v2", "plutus:v3")


@dataclass(frozen=True, slots=True)
class ScriptRef:
    """A reference script as an output carries it: language, hash, bytes and size as the fee counts it."""

    language: str  # one of SCRIPT_LANGUAGES
    hash: str  # blake2b-224 of the language tag and the script bytes
    cbor: str  # hex: the native script's CBOR, or the Plutus script's bytes
    size: int  # bytes counted by Conway's reference-script fee


def _script_ref(tag: Any) -> str:
    """Check a script_ref output field (tag 24 around ``[language, script]``); return the inner CBOR hex."""
    if not isinstance(tag, cbor2.CBORTag) or tag.tag != 24 or not isinstance(tag.value, bytes):
        raise DecodeError("a reference script is tag 24 around bytes")
    script_ref(tag.value.hex())
    return tag.value.hex()


def script_ref(inner_hex: str) -> ScriptRef:
    """Decode the ``[language, script]`` CBOR (hex) of a reference script.

    Raises:
        DecodeError: it is not a script in a known language.
    """
    try:
        decoded = cbor2.loads(bytes.fromhex(inner_hex))
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise DecodeError(f"bad reference script: {exc}") from None
    if (not isinstance(decoded, (list, tuple)) or len(decoded) != 2 or type(decoded[0]) is not int
            or not 0 <= decoded[0] < len(SCRIPT_LANGUAGES)):
        raise DecodeError("a reference script is [language 0-3, script]")
    language, script = decoded
    if language == 0:
        if not isinstance(script, (list, tuple)):
            raise DecodeError("a native script is an array")
        body = bytes.fromhex(inner_hex)[2:]  # as received: after the array head 0x82 and the tag 0x00
    else:
        if not isinstance(script, bytes):
            raise DecodeError("a Plutus script is a bytestring")
        body = script
    return ScriptRef(SCRIPT_LANGUAGES[language], blake2b_224(bytes([language]) + body).hex(), body.hex(), len(body))


def _witness_hashes(raw: bytes, wit_start: int) -> tuple[dict[str, Any], list[str], list[str]]:
    """Native scripts by hash, Plutus script hashes and datum hashes, from the bytes as received."""
    native: dict[str, Any] = {}
    plutus: list[str] = []
    datums: list[str] = []
    spans, _ = container_items(raw, wit_start, 5)
    for i in range(0, len(spans), 2):
        key = cbor2.loads(raw[spans[i][0] : spans[i][1]])
        if key not in _SCRIPT_TAGS and key != 4:
            continue
        for s, e in container_items(raw, spans[i + 1][0], 4)[0]:
            item = raw[s:e]
            if key == 4:
                datums.append(blake2b_256(item).hex())
                continue
            if key == 1:
                native[blake2b_224(b"\x00" + item).hex()] = cbor2.loads(item)
                continue
            script = cbor2.loads(item)  # plutus scripts are hashed as their bytestring contents
            if not isinstance(script, bytes):
                raise DecodeError("a plutus script is a bytestring")
            plutus.append(blake2b_224(bytes([_SCRIPT_TAGS[key]]) + script).hex())
    return native, plutus, datums


def _witness_pairs(value: Any, what: str) -> tuple[tuple[bytes, bytes], ...]:
    pairs = []
    for w in _seq(value, what):
        if not isinstance(w, (list, tuple)) or len(w) < 2:
            raise DecodeError(f"{what}: a witness is [vkey, signature, ...]")
        pairs.append((_bytes(w[0], "verification key", 32), _bytes(w[1], "signature", 64)))
    return tuple(pairs)


def _bootstrap_witnesses(value: Any) -> tuple[tuple[bytes, bytes, str], ...]:
    witnesses = []
    for w in _seq(value, "bootstrap witnesses"):
        if not isinstance(w, (list, tuple)) or len(w) != 4:
            raise DecodeError("a bootstrap witness is [vkey, signature, chain code, attributes]")
        vkey, sig = _bytes(w[0], "verification key", 32), _bytes(w[1], "signature", 64)
        chain_code, attributes = _bytes(w[2], "chain code", 32), _bytes(w[3], "attributes")
        # The Byron address root: hash of (0, (0, xpub), attributes) with the attributes spliced in.
        spending = b"\x83\x00\x82\x00\x58\x40" + vkey + chain_code + attributes
        root = blake2b_224(hashlib.sha3_256(spending).digest()).hex()
        witnesses.append((vkey, sig, root))
    return tuple(witnesses)


def _redeemers(value: Any) -> tuple[tuple[str, int], ...]:
    """Redeemer pointers from the legacy array ``[[tag, index, data, units]]`` or the Conway map."""
    if isinstance(value, dict):  # Conway map {[tag, index]: [data, units]}
        entries = [(k, v) for k, v in value.items()]
        if not all(isinstance(k, (list, tuple)) and len(k) == 2 and isinstance(v, (list, tuple)) and len(v) == 2
                   for k, v in entries):
            raise DecodeError("a redeemer map is {[tag, index]: [data, units]}")
        keys = [k for k, _v in entries]
    else:
        items = _seq(value, "redeemers")
        if not all(isinstance(r, (list, tuple)) and len(r) == 4 for r in items):
            raise DecodeError("a redeemer is [tag, index, data, units]")
        keys = [r[:2] for r in items]
    pointers = []
    for tag, index in keys:
        if type(tag) is not int or not 0 <= tag < len(_REDEEMER_PURPOSES):
            raise DecodeError("bad redeemer tag")
        pointers.append((_REDEEMER_PURPOSES[tag], _uint(index, "redeemer index")))
    return tuple(pointers)


def decode_transaction(raw: bytes) -> DecodedTx:
    """Decode ``raw`` (a whole transaction) or raise :class:`DecodeError`."""
    try:
        return _decode(raw)
    except DecodeError:
        raise
    except (
        cbor2.CBORDecodeError, ValueError, TypeError, KeyError, IndexError, StopIteration, RecursionError, OverflowError
    ) as exc:
        raise DecodeError(str(exc) or type(exc).__name__) from exc


def _decode(raw: bytes) -> DecodedTx:
    top, end = container_items(raw, 0, 4)
    if end != len(raw):
        raise DecodeError("trailing bytes after the transaction")
    if len(top) not in (3, 4):
        raise DecodeError("a transaction is [body, witnesses, is-valid?, auxiliary data]")
    (b0, b1), (w0, w1) = top[0], top[1]
    aux_span = top[-1]
    if len(top) == 4 and cbor2.loads(raw[top[2][0] : top[2][1]]) is not True:
        raise DecodeError("the is-valid flag must be true for a transaction without scripts")
    body_bytes = raw[b0:b1]
    body_spans, _ = container_items(raw, b0, 5)
    body: dict[int, tuple[int, int]] = {}
    for i in range(0, len(body_spans), 2):
        key = cbor2.loads(raw[body_spans[i][0] : body_spans[i][1]])
        if type(key) is not int or key in body:  # a bool would pass for 0/1 in a dict lookup
            raise DecodeError("transaction body keys must be distinct integers")
        body[key] = body_spans[i + 1]

    def field_value(key: int) -> Any:
        s, e = body[key]
        return cbor2.loads(raw[s:e])

    for key in (0, 1, 2):
        if key not in body:
            raise DecodeError(f"transaction body lacks field {key}")
    inputs = _refs(field_value(0), "inputs")
    if len(set(inputs)) != len(container_items(raw, body[0][0], 4)[0]):
        raise DecodeError("the same input is listed twice")  # a set would silently drop it
    out_spans, _ = container_items(raw, body[1][0], 4)
    outputs = tuple(_decode_output(raw, s, e) for s, e in out_spans)
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise DecodeError(f"unknown transaction body field {unknown[0]}")
    opt = {k: field_value(k) for k in body if k > 2}
    if 16 in opt:  # collateral return: only checked for shape (no scripts run here)
        _decode_output(raw, *body[16])
    if 17 in opt:
        _uint(opt[17], "total collateral")

    aux_raw = raw[aux_span[0] : aux_span[1]]
    aux_present = aux_raw != b"\xf6"
    witnesses = cbor2.loads(raw[w0:w1])
    if not isinstance(witnesses, dict) or not all(type(k) is int and 0 <= k <= 7 for k in witnesses):
        raise DecodeError("the witness set must be a map with keys 0 to 7")
    native, plutus, datums = _witness_hashes(raw, w0)
    withdrawals = opt.get(5, {})
    if not isinstance(withdrawals, dict):
        raise DecodeError("withdrawals must be a map")
    return DecodedTx(
        tx_id=blake2b_256(body_bytes).hex(),
        raw=raw,
        size=len(raw) - 1 if len(top) == 4 else len(raw),
        inputs=inputs,
        outputs=outputs,
        fee=_uint(field_value(2), "fee"),
        ttl=_uint(opt[3], "ttl") if 3 in opt else None,
        valid_from=_uint(opt[8], "validity start") if 8 in opt else None,
        aux_hash=_bytes(opt[7], "auxiliary data hash", 32).hex() if 7 in opt else None,
        aux_computed_hash=blake2b_256(aux_raw).hex() if aux_present else None,
        aux_data=cbor2.loads(aux_raw) if aux_present else None,
        vkey_witnesses=_witness_pairs(witnesses.get(0, []), "vkey witnesses"),
        bootstrap_witnesses=_bootstrap_witnesses(witnesses.get(2, [])),
        native_scripts=native,
        plutus_scripts=tuple(plutus),
        redeemers=_redeemers(witnesses[5]) if 5 in witnesses else (),
        datums=tuple(datums),
        mint=decode_multiasset(opt[9], signed=True) if 9 in opt else {},
        has_certificates=bool(_seq(opt[4], "certificates")) if 4 in opt else False,
        withdrawals={_bytes(k, "reward account", 29): _uint(v, "withdrawal") for k, v in withdrawals.items()},
        script_data_hash=_bytes(opt[11], "script data hash", 32).hex() if 11 in opt else None,
        required_signers=tuple(_bytes(h, "required signer", 28).hex() for h in _seq(opt.get(14, []), "signers")),
        network_id=_network_id(opt[15]) if 15 in opt else None,
        reference_inputs=_refs(opt.get(18, []), "reference inputs"),
        collateral_inputs=_refs(opt.get(13, []), "collateral inputs"),
        donation=_positive(opt[22], "donation") if 22 in opt else 0,
        unsupported=tuple(name for key, name in _BODY_FIELDS_UNSUPPORTED.items() if key in body),
    )


# --- addresses ------------------------------------------------------------------------------

def bech32_encode(hrp: str, payload: bytes) -> str:
    """Encode ``payload`` as bech32 with prefix ``hrp`` (no length limit, as Cardano uses it)."""
    return bech32.encode(hrp, payload)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """Decode a bech32 string into (prefix, payload bytes) or raise :class:`DecodeError`."""
    if text.lower() != text and text.upper() != text:
        raise DecodeError("mixed-case bech32")
    text = text.lower()
    try:
        return bech32.decode(text)
    except bech32.Bech32Error as exc:
        what = {"checksum": "bad bech32 checksum", "padding": "invalid bech32 padding"}
        raise DecodeError(what.get(exc.reason, f"not a bech32 string: {text!r}")) from None


@dataclass(frozen=True, slots=True)
class Credential:
    """Who may spend an output: a key hash, a script hash, or a Byron address root (all hex)."""

    kind: str  # "key" | "script" | "byron"
    hash: str


def address_network(address: bytes) -> int | None:
    """The network id of a Shelley address (header low nibble); None for a Byron address."""
    if not address:
        raise DecodeError("empty address")
    kind = address[0] >> 4
    if kind == 8:
        return None
    if kind > 7:
        raise DecodeError(f"unsupported address type {kind}")
    return address[0] & 0x0F


def byron_is_mainnet(address: bytes) -> bool:
    """A Byron address belongs to mainnet when its attributes carry no protocol magic."""
    outer = cbor2.loads(address)
    if not isinstance(outer, list) or len(outer) != 2 or not isinstance(outer[0], cbor2.CBORTag):
        raise DecodeError("malformed Byron address")
    inner = cbor2.loads(outer[0].value)
    if not isinstance(inner, list) or len(inner) != 3 or not isinstance(inner[1], dict):
        raise DecodeError("malformed Byron address")
    return 2 not in inner[1]


@functools.lru_cache(maxsize=8192)
def address_to_str(address: bytes) -> str:
    """The text form of an address: bech32 for Shelley addresses, base58 for Byron ones."""
    network = address_network(address)
    if network is None:
        byron_is_mainnet(address)  # validates the structure
        return bech32.base58_encode(address)
    if len(address) < 29:
        raise DecodeError("address too short")
    return bech32_encode("addr" if network == 1 else "addr_test", address)


def address_from_str(text: str) -> bytes:
    """The raw bytes of a bech32 Shelley address (``addr…`` / ``addr_test…``)."""
    hrp, payload = bech32_decode(text)
    if hrp not in ("addr", "addr_test"):
        raise DecodeError(f"not a payment address: {text!r}")
    address_to_str(payload)
    return payload


def reward_account_to_str(account: bytes) -> str:
    """The bech32 form of a reward (stake) address."""
    if not account:
        raise DecodeError("empty reward account")
    return bech32_encode("stake" if account[0] & 0x0F == 1 else "stake_test", account)


def payment_credential(address: bytes) -> Credential:
    """The payment credential that must authorise spending from ``address``."""
    kind = address[0] >> 4
    if kind == 8:
        outer = cbor2.loads(address)
        root = cbor2.loads(outer[0].value)[0]
        return Credential("byron", _bytes(root, "address root", 28).hex())
    if len(address) < 29:
        raise DecodeError("address too short")
    return Credential("script" if kind & 1 else "key", address[1:29].hex())
