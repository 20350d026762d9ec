"""Logging for the CLI: a rotating file in the home, optional JSON lines, secrets scrubbed.

Library modules only call ``logging.getLogger(__name__)``; this module is the one place that
adds handlers, and only the CLI calls it. Every handler carries :class:`RedactingFilter`, which
removes registered secret values (passphrase, api key), ``api-key`` header values, bech32
secret keys and runs of BIP-39 words that look like a mnemonic, whatever logged them.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import threading
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

REDACTED = "[REDACTED]"
LOG_FILENAME = "agent.log"
MAX_LOG_BYTES = 5 * 1024 * 1024
BACKUP_COUNT = 5

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_KEY_PATTERNS = [
    re.compile(r"(?i)(api[-_]key[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]+)"),
    re.compile(r"(?i)(passphrase[\"']?\s*[:=]\s*[\"']?)([^\s\"',}]+)"),
    re.compile(r"\b(?:ed25519e?_sk|root_xsk|acct_xsk|addr_xsk|xprv)1[02-9ac-hj-np-z]{20,}\b"),
]
_WORD = re.compile(r"[a-z]{3,8}")
_MIN_MNEMONIC_RUN = 8


def register_secret(value: str | None) -> None:
    """Scrub ``value`` from every log line from now on (ignored when empty or very short)."""
    if value and len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


@lru_cache(maxsize=1)
def _bip39_words() -> frozenset[str]:
    try:
        from mnemonic import Mnemonic

        return frozenset(Mnemonic("english").wordlist)
    except Exception:  # noqa: BLE001 - without the list, mnemonic runs are not detected
        return frozenset()


def redact(text: str) -> str:
    """Return ``text`` with every known secret and secret-looking token replaced."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) + REDACTED) if m.groups() else REDACTED, text)
    return _redact_mnemonic_runs(text)


def _redact_mnemonic_runs(text: str) -> str:
    words = _bip39_words()
    if not words:
        return text
    tokens = list(re.finditer(r"[A-Za-z]+", text))
    run: list[re.Match[str]] = []
    spans: list[tuple[int, int]] = []
    for tok in tokens + [None]:  # type: ignore[list-item]
        if tok is not None and tok.group().lower() in words and _WORD.fullmatch(tok.group().lower()):
            run.append(tok)
            continue
        if len(run) >= _MIN_MNEMONIC_RUN:
            spans.append((run[0].start(), run[-1].end()))
        run = []
    for start, end in reversed(spans):
        text = text[:start] + REDACTED + text[end:]
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with :func:`redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
            record.exc_info = None
        record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, never to a stream closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _last_line_is_json(path: Path) -> bool | None:
    """Whether the log file's last line is a JSON object (None: no file or no line)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 8192))
            lines = [line for line in fh.read().splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1].lstrip().startswith(b"{") if lines else None


def teardown_logging() -> None:
    """Remove the handlers :func:`setup_logging` added (a command that ends leaves none behind)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()


def setup_logging(home: Path | None, *, verbose: int = 0, json_lines: bool = False,
                  console: bool = True) -> None:
    """Send logs to ``<home>/agent.log`` (rotating) and, when ``console``, warnings to stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cardano_agent", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    text_format = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    handlers: list[logging.Handler] = []
    if home is not None:
        try:
            home.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                home / LOG_FILENAME, maxBytes=MAX_LOG_BYTES, backupCount=BACKUP_COUNT, encoding="utf-8")
        except OSError as exc:
            from agent.errors import ConfigError

            raise ConfigError(f"cannot write the log in {home}: {exc.strerror or exc} "
                              "(the home must be writable)") from None
        file_handler.setFormatter(JsonFormatter() if json_lines else text_format)
        if _last_line_is_json(home / LOG_FILENAME) not in (None, json_lines):
            # One format per file: a switch to (or from) --log-json starts a fresh agent.log.
            file_handler.doRollover()
        handlers.append(file_handler)
    if console:
        stream = _StderrHandler()
        stream.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
        stream.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(message)s"))
        handlers.append(stream)
    for handler in handlers:
        handler.addFilter(RedactingFilter())
        handler._cardano_agent = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for noisy in ("websockets", "httpx", "httpcore", "apscheduler", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
