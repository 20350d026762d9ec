"""The core install stays lean: no web server, and the agent's packages never load the sandbox."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_core_dependencies_pull_no_web_server():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for web in ("fastapi", "uvicorn", "starlette", "python-multipart"):
        assert web not in core, f"{web} belongs in an extra, not the core install"
    assert any("fastapi" in d for d in project["optional-dependencies"]["sandbox"])


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["run", "--help"], ["call", "--help"]])
def test_agent_commands_do_not_load_the_sandbox(argv):
    code = ("import sys\nfrom agent.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "loaded = sorted(m for m in sys.modules if m == 'sandbox' or m.startswith(('sandbox.', 'fastapi', 'uvicorn')))\n"
            "print('LOADED:' + ','.join(loaded))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "LOADED:"


def test_sandbox_without_its_extra_says_how_to_install_it(monkeypatch):
    import importlib.util

    from sandbox.errors import SandboxConfigError, require_web_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(SandboxConfigError, match=r"uvicorn missing\): pip install 'cardano-pay-agent\[sandbox\]'"):
        require_web_extra("the T API twin")
