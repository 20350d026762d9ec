"""What the T API twin answers: deterministic chat replies, token reports and real small PNGs.

Every answer is a pure function of the request (and, for chat, the session's earlier turns),
so tests can assert it exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import threading
import zlib
from typing import Any

PNG_SIDE = 16
"""Generated images are PNG_SIDE × PNG_SIDE pixels whatever size is asked: real, but small."""

_DATA_URI = re.compile(r"^data:image/([a-z0-9.+-]+);base64,", re.IGNORECASE)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def make_png(seed: str, *, side: int = PNG_SIDE) -> bytes:
    """Return a valid RGB PNG whose colours are a function of ``seed`` (a diagonal gradient)."""
    d = _digest("png", seed)
    r0, g0, b0, r1, g1, b1 = d[:6]
    rows = bytearray()
    for y in range(side):
        rows.append(0)  # filter type: none
        for x in range(side):
            t = (x + y) / (2 * side - 2) if side > 1 else 0.0
            rows += bytes((int(r0 + (r1 - r0) * t), int(g0 + (g1 - g0) * t), int(b0 + (b1 - b0) * t)))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b"")


def png_b64(seed: str) -> str:
    """Return ``make_png(seed)`` as base64 text (what the image routes answer)."""
    return base64.b64encode(make_png(seed)).decode("ascii")


class ImagePayloadTooLargeError(ValueError):
    """A base64 image above the size limit (answered 413)."""


class BadImageError(ValueError):
    """Text that is not base64 image data (answered 422)."""


def decode_image(text: str, *, max_bytes: int) -> bytes:
    """Decode a base64 image (raw or ``data:image/...;base64,`` URI), enforcing ``max_bytes`` on the base64 text."""
    payload = _DATA_URI.sub("", text, count=1)
    if len(payload) > max_bytes:
        raise ImagePayloadTooLargeError(f"image is {len(payload)} bytes of base64; the limit is {max_bytes}")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImageError("image is not valid base64") from exc
    if not data:
        raise BadImageError("image is empty")
    return data


def describe_image(data: bytes) -> str:
    """Return a short deterministic description of image bytes (format, size, digest)."""
    kind = "png" if data.startswith(b"\x89PNG") else "jpeg" if data.startswith(b"\xff\xd8") else "image"
    dims = ""
    if kind == "png" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        dims = f" {w}x{h}"
    return f"a {kind}{dims} of {len(data)} bytes (sha256 {hashlib.sha256(data).hexdigest()[:12]})"


class ChatSessions:
    """Per-``session_id`` memory of earlier user messages, so replies depend on the conversation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str, list[str]] = {}

    def reply(self, session_id: str, message: str, *, image: bytes | None = None) -> tuple[str, dict]:
        """Record a turn; return the reply text and its structured form."""
        with self._lock:
            history = self._turns.setdefault(session_id, [])
            previous = history[-1] if history else None
            history.append(message)
            turn = len(history)
        words = message.split()
        summary = " ".join(words[:12]) + ("…" if len(words) > 12 else "")
        text = f"T twin, session {session_id}, turn {turn}: you said {summary!r}."
        if previous is not None:
            text += f" Earlier you said {previous[:80]!r}."
        if image is not None:
            text += f" The image is {describe_image(image)}."
        structured = {
            "summary": summary,
            "turn": turn,
            "session_id": session_id,
            "word_count": len(words),
            "previous": previous,
            "risks": [w for w in words if len(w) > 8][:3],
            "next_steps": [f"ask about {w}" for w in words[:2]],
        }
        return text, structured

    def turns(self, session_id: str) -> int:
        """Return how many turns the session has had."""
        with self._lock:
            return len(self._turns.get(session_id, []))


def sse_frames(text: str) -> list[str]:
    """Split a reply into SSE frames ``data: {"type":"content","text":…}`` ending ``data: [DONE]``."""
    import json

    pieces = re.findall(r"\S+\s*", text) or [text]
    frames = [f"data: {json.dumps({'type': 'content', 'text': p})}\n\n" for p in pieces]
    frames.append("data: [DONE]\n\n")
    return frames


def token_report(token: str, policy_id: str | None, asset_name_hex: str | None, network: str) -> dict[str, Any]:
    """Return the deterministic analysis of a token (scores derived from its identity)."""
    d = _digest("token", token.upper(), policy_id or "", asset_name_hex or "", network)
    score = d[0] * 100 // 255
    liquidity = int.from_bytes(d[1:5], "big") % 50_000_000_000
    holders = int.from_bytes(d[5:8], "big") % 200_000 + 10
    return {
        "token": token,
        "policyId": policy_id,
        "assetNameHex": asset_name_hex,
        "network": network,
        "score": score,
        "risk": "low" if score >= 66 else "medium" if score >= 33 else "high",
        "liquidityLovelace": liquidity,
        "holders": holders,
        "summary": f"{token} on {network}: score {score}/100 with {holders} holders.",
    }
