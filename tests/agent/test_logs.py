"""Log redaction and the rotating log file: no secret ever reaches a log line."""

from __future__ import annotations

import json
import logging

import pytest
from mnemonic import Mnemonic

from agent import logs


@pytest.fixture(autouse=True)
def clean_secrets():
    saved = set(logs._secrets)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved)


def test_registered_secrets_are_scrubbed():
    """A registered passphrase or api key is replaced wherever it appears."""
    logs.register_secret("hunter2-very-secret")
    assert logs.redact("unlock with hunter2-very-secret failed") == "unlock with [REDACTED] failed"


def test_api_key_headers_and_secret_keys_are_scrubbed():
    """api-key header values and bech32 signing keys are removed even if never registered."""
    text = logs.redact("headers={'api-key': 'k-123456', 'x': 1} key ed25519e_sk1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqq")
    assert "k-123456" not in text and "ed25519e_sk1" not in text


def test_mnemonic_runs_are_scrubbed_but_prose_is_kept():
    """A 24-word mnemonic is removed; an ordinary sentence of a few words stays readable."""
    words = Mnemonic("english").generate(strength=256)
    text = logs.redact(f"restoring from {words}; ok")
    assert words.split()[0] + " " + words.split()[1] not in text
    assert "restoring from [REDACTED]; ok" == text
    assert logs.redact("the job will retry later") == "the job will retry later"


def test_log_file_gets_json_lines_without_secrets(tmp_path):
    """With JSON lines on, the home's agent.log holds one JSON object per record, scrubbed."""
    logs.register_secret("passphrase-xyz-123")
    logs.setup_logging(tmp_path, json_lines=True, console=False)
    try:
        log = logging.getLogger("agent.test")
        log.info("opening wallet with %s", "passphrase-xyz-123")
        try:
            raise ValueError("bad passphrase-xyz-123")
        except ValueError:
            log.exception("failed")
    finally:
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_cardano_agent", False):
                h.flush()
                logging.getLogger().removeHandler(h)
                h.close()
    raw = (tmp_path / "agent.log").read_text()
    assert "passphrase-xyz-123" not in raw
    entries = [json.loads(line) for line in raw.splitlines()]
    assert entries[0]["message"] == "opening wallet with [REDACTED]"
    assert "[REDACTED]" in entries[1]["exception"]
