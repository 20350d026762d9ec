"""The README's Python example runs as written against the sandbox (only the home and URL differ)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.fixtures.agent_home import PASSPHRASE

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(agent_home, monkeypatch, capsys):
    """The ```python block under "From Python" pays for three chats and prints three replies."""
    block = re.search(r"From Python.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "json={...}" not in block
    code = (block.replace('"~/.cardano-agent"', repr(str(agent_home.home)))
                 .replace("http://127.0.0.1:8402", agent_home.twin.url.rstrip("/")))
    monkeypatch.setenv("CARDANO_AGENT_PASSPHRASE", PASSPHRASE)
    before = agent_home.balance()
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "you said 'What is Cardano?'" in out and "you said 'Hello'" in out
    assert "Summarize Cardano" in out
    assert before - agent_home.balance() >= 3 * 2_000_000
