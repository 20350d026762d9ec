"""Job kinds: requests checked at `job add`, report locations and Markdown rendering."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from agent.errors import JobError
from agent.jobs import JOB_KINDS, render_markdown, report_paths, validate_request

SNEK = "279c909f348e533da5808898f87f9a14bb2c3dfbbacccd631d927a3f"


def test_known_kinds_and_routes():
    """Each job kind calls its T API route (``http`` calls the URL in its request)."""
    assert {k: v.route for k, v in JOB_KINDS.items()} == {
        "chat": "/chat", "token-analysis": "/token-analysis", "images-generate": "/images/generate", "http": "",
    }


def test_valid_requests_are_normalised():
    """Valid requests pass, with defaults filled and hex lower-cased."""
    assert validate_request("chat", {"message": "hi", "stream": True}) == {"message": "hi", "stream": True}
    ta = validate_request("token-analysis", {"token": "SNEK", "policy_id": SNEK.upper()})
    assert ta == {"token": "SNEK", "policy_id": SNEK, "network": "cardano"}
    assert validate_request("images-generate", {"prompt": "a node"}) == {"prompt": "a node", "size": "1024x1024", "n": 1}


@pytest.mark.parametrize("kind,request_,needle", [
    ("dance", {}, "unknown job kind"),
    ("chat", {}, "missing field 'message'"),
    ("chat", {"message": "  "}, "non-empty"),
    ("chat", {"message": "x" * 32_001}, "longer than"),
    ("chat", {"message": "hi", "stream": "yes"}, "true or false"),
    ("token-analysis", {"token": "SNEK", "policy_id": "zz"}, "56 hex"),
    ("token-analysis", {"token": "SNEK", "asset_name_hex": "abc"}, "hex"),
    ("images-generate", {"prompt": "p", "n": 9}, "1 to 4"),
    ("images-generate", {"prompt": "p", "size": "big"}, "1024x1024"),
])
def test_bad_requests_are_refused_with_the_field_named(kind, request_, needle):
    """Unknown kinds and missing/malformed fields are a JobError naming the problem."""
    with pytest.raises(JobError, match=needle):
        validate_request(kind, request_)


def test_scheduler_metadata_is_kept():
    """The `_schedule` marker that the scheduler adds survives validation."""
    req = validate_request("chat", {"message": "hi", "_schedule": {"name": "s", "report": True}})
    assert req["_schedule"]["name"] == "s"


def test_report_paths_by_schedule_and_date(tmp_path):
    """A daily firing writes reports/<schedule>/<date>.json and .md; intraday firings add the time."""
    j, m = report_paths(tmp_path, "daily tokens", datetime(2026, 11, 29, 0, 0, tzinfo=timezone.utc))
    assert j == tmp_path / "reports" / "daily-tokens" / "2026-11-29.json" and m.suffix == ".md"
    j2, _ = report_paths(tmp_path, "hourly", datetime(2026, 11, 29, 7, 30, tzinfo=timezone.utc))
    assert j2.name == "2026-11-29T0730.json"


def test_markdown_rendering_is_readable():
    """Objects become headings and bullet lists, so a report reads without a JSON viewer."""
    md = render_markdown("SNEK", {"token": "SNEK", "score": 7, "risks": ["thin liquidity"],
                                  "holders": {"top10_share": 0.4}}, meta={"paid": "1.000000 ADA"})
    assert md.startswith("# SNEK\n")
    assert "- **paid**: 1.000000 ADA" in md
    assert "- **Score**: 7" in md
    assert "## Risks" in md and "- thin liquidity" in md
    assert "## Holders" in md and "- **Top10 share**: 0.4" in md
