"""The one bech32 (BIP-173, no length limit, as Cardano uses it) and base58 codec of the packages.

``wallets.payment`` (the agent's hot path: payee addresses, cached) and ``sandbox.txcbor``
(the devnet's ledger) both encode and decode through here; each keeps its own error class
and messages. Not pycardano's ``crypto.bech32``: it refuses strings over 108 characters
(longer payloads, such as the sandbox's, are legal in Cardano's use) and says only None on
a bad string, where callers here report checksum vs padding. ``Address.decode`` from
pycardano measured no faster (about 0.5 ms each on the shared 2-core box, both) and the
payee path caches decoded addresses anyway.
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_INDEX = {c: i for i, c in enumerate(CHARSET)}
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """A string that is not bech32; ``reason`` is ``"syntax"``, ``"checksum"`` or ``"padding"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad bech32 ({reason})")
        self.reason = reason


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GEN[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def encode(hrp: str, payload: bytes) -> str:
    """Encode ``payload`` as bech32 with the lower-case prefix ``hrp``."""
    acc, bits, data = 0, 0, []
    for byte in payload:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            data.append((acc >> bits) & 31)
    if bits:
        data.append((acc << (5 - bits)) & 31)
    polymod = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ 1
    data += [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data)


def decode(text: str) -> tuple[str, bytes]:
    """Decode a lower-case bech32 string into ``(prefix, payload)`` or raise :class:`Bech32Error`."""
    hrp, sep, rest = text.rpartition("1")
    if not sep or not hrp or len(rest) < 6 or any(c not in _INDEX for c in rest):
        raise Bech32Error("syntax")
    data = [_INDEX[c] for c in rest]
    if _polymod(_hrp_expand(hrp) + data) != 1:
        raise Bech32Error("checksum")
    acc, bits, raw = 0, 0, bytearray()
    for v in data[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        if bits >= 8:
            bits -= 8
            raw.append((acc >> bits) & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise Bech32Error("padding")
    return hrp, bytes(raw)


def base58_encode(payload: bytes) -> str:
    """Bitcoin-alphabet base58 (Byron addresses), leading zero bytes as ``1``."""
    n = int.from_bytes(payload, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _BASE58[r] + out
    return "1" * (len(payload) - len(payload.lstrip(b"\0"))) + out
