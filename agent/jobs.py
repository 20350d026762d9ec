"""Job kinds: what each kind of job asks for, how its request is checked, and how reports look.

A job's request is checked when it is added (``validate_request``), so a job that could never
run is refused at ``job add`` rather than failing at 3 a.m. The request is stored as JSON and
passed unchanged to the executor later.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from agent.errors import JobError

MAX_MESSAGE_CHARS = 32_000
_IMAGE_SIZE = re.compile(r"^\d{2,4}x\d{2,4}$")
_HEX = re.compile(r"^[0-9a-f]*$")


@dataclass(frozen=True, slots=True)
class JobKind:
    """A kind of job: its name, the API route it calls, and its request checker."""

    name: str
    route: str
    summary: str
    check: Callable[[dict[str, Any]], dict[str, Any]]


def _text(request: Mapping[str, Any], key: str, *, required: bool = True, max_len: int = MAX_MESSAGE_CHARS) -> str | None:
    value = request.get(key)
    if value is None:
        if required:
            raise JobError(f"missing field {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise JobError(f"field {key!r} must be a non-empty string")
    if len(value) > max_len:
        raise JobError(f"field {key!r} is longer than {max_len} characters")
    return value


def _check_chat(request: dict[str, Any]) -> dict[str, Any]:
    out = {"message": _text(request, "message")}
    session = _text(request, "session_id", required=False, max_len=200)
    if session:
        out["session_id"] = session
    for flag in ("structured", "stream"):
        if request.get(flag) is not None:
            if not isinstance(request[flag], bool):
                raise JobError(f"field {flag!r} must be true or false")
            out[flag] = request[flag]
    return out


def _check_token_analysis(request: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"token": _text(request, "token", max_len=64)}
    policy = request.get("policy_id")
    if policy is not None:
        if not isinstance(policy, str) or len(policy) != 56 or not _HEX.match(policy.lower()):
            raise JobError("field 'policy_id' must be 56 hex characters")
        out["policy_id"] = policy.lower()
    name = request.get("asset_name_hex")
    if name is not None:
        if not isinstance(name, str) or len(name) % 2 or len(name) > 64 or not _HEX.match(name.lower()):
            raise JobError("field 'asset_name_hex' must be hex, at most 32 bytes")
        out["asset_name_hex"] = name.lower()
    out["network"] = _text(request, "network", required=False, max_len=32) or "cardano"
    if request.get("bypass_cache") is not None:
        out["bypass_cache"] = bool(request["bypass_cache"])
    return out


def _check_images_generate(request: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": _text(request, "prompt", max_len=4000)}
    size = request.get("size", "1024x1024")
    if not isinstance(size, str) or not _IMAGE_SIZE.match(size):
        raise JobError("field 'size' must look like 1024x1024")
    n = request.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4:
        raise JobError("field 'n' must be an integer from 1 to 4")
    out.update(size=size, n=n)
    return out


def _check_http(request: dict[str, Any]) -> dict[str, Any]:
    from agent.http_job import check_request

    return check_request(request)


JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("chat", "/chat", "ask the T API chat a question", _check_chat),
        JobKind("token-analysis", "/token-analysis", "analyse a Cardano token", _check_token_analysis),
        JobKind("images-generate", "/images/generate", "generate images from a prompt", _check_images_generate),
        JobKind("http", "", "call any URL, paying a T or x402 v2 402", _check_http),
    )
}


def validate_request(kind: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Return the normalised request for a job of ``kind``, keeping scheduler metadata.

    Raises:
        JobError: unknown kind, missing or malformed fields.
    """
    spec = JOB_KINDS.get(kind)
    if spec is None:
        raise JobError(f"unknown job kind {kind!r}; expected one of {', '.join(JOB_KINDS)}")
    if not isinstance(request, Mapping):
        raise JobError("a job request must be a table of fields")
    try:
        checked = spec.check(dict(request))
    except JobError as exc:
        raise JobError(f"{kind}: {exc}") from None
    if "_schedule" in request:
        checked["_schedule"] = request["_schedule"]
    return checked


def report_paths(home: Path, schedule: str, fire_time: datetime) -> tuple[Path, Path]:
    """Where a scheduled job's report goes: ``reports/<schedule>/<date>.json`` and ``.md``."""
    folder = home / "reports" / _safe(schedule)
    stem = fire_time.strftime("%Y-%m-%d")
    if fire_time.hour or fire_time.minute:
        stem += fire_time.strftime("T%H%M")
    return folder / f"{stem}.json", folder / f"{stem}.md"


def render_markdown(title: str, data: Any, *, meta: Mapping[str, Any] | None = None) -> str:
    """Render a JSON result as a readable Markdown page (headings for objects, bullets for lists)."""
    lines = [f"# {title}", ""]
    for key, value in (meta or {}).items():
        lines.append(f"- **{key}**: {value}")
    if meta:
        lines.append("")
    _render(data, lines, level=2)
    return "\n".join(lines).rstrip() + "\n"


def _render(value: Any, lines: list[str], *, level: int) -> None:
    if isinstance(value, Mapping):
        scalars = [(k, v) for k, v in value.items() if v is not None and not isinstance(v, (Mapping, list))]
        for key, item in scalars:
            lines.append(f"- **{_label(key)}**: {_value(key, item)}")
        if scalars:
            lines.append("")
        for key, item in value.items():
            if isinstance(item, (Mapping, list)):
                lines.append(f"{'#' * min(level, 6)} {_label(key)}")
                lines.append("")
                _render(item, lines, level=level + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (Mapping, list)):
                lines.append(f"- {json.dumps(item, sort_keys=True)}")
            else:
                lines.append(f"- {item}")
        lines.append("")
    else:
        lines.append(str(value))
        lines.append("")


def _label(key: Any) -> str:
    """A field name for people: ``liquidityLovelace`` and ``liquidity_lovelace`` read "Liquidity (ADA)"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(key)).replace("_", " ").replace("-", " ").split()
    unit = ""
    if len(words) > 1 and words[-1].lower() == "lovelace":
        words, unit = words[:-1], " (ADA)"
    elif len(words) > 1 and words[-1].lower() in ("usd", "pct"):
        unit = " (USD)" if words[-1].lower() == "usd" else " (%)"
        words = words[:-1]
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return (text[:1].upper() + text[1:] if text else str(key)) + unit


def _value(key: Any, item: Any) -> Any:
    """Lovelace figures are shown in ADA (six decimals) next to a label that says so."""
    if str(key).lower().endswith("lovelace") and isinstance(item, int) and not isinstance(item, bool):
        whole, frac = divmod(abs(item), 1_000_000)
        return f"{'-' if item < 0 else ''}{whole}.{frac:06d}"
    return item


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "schedule"
