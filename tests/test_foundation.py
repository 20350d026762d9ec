"""The CLI skeleton, ADA formatting and network table that every other part relies on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.cli import main, resolve_home
from agent.output import format_ada, parse_ada
from wallets.networks import UnknownNetworkError, get_network, network_for_chain
from wallets.types import is_native_asset


def test_help_exits_zero_and_names_the_program(capsys):
    """`cardano-agent --help` prints usage and exits 0."""
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "cardano-agent" in capsys.readouterr().out


def test_help_does_not_import_pycardano():
    """`--help` stays fast: it never imports pycardano, httpx or FastAPI."""
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('pycardano', 'fastapi', 'ogmios') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_home_resolution_prefers_option_then_env(monkeypatch, tmp_path):
    """--home wins over $CARDANO_AGENT_HOME, which wins over ~/.cardano-agent."""
    monkeypatch.setenv("CARDANO_AGENT_HOME", str(tmp_path / "env"))
    assert resolve_home(str(tmp_path / "opt")) == tmp_path / "opt"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("CARDANO_AGENT_HOME")
    assert resolve_home(None).name == ".cardano-agent"


@pytest.mark.parametrize("lovelace,text", [(0, "0.000000"), (1_500_000, "1.500000"), (-1, "-0.000001")])
def test_format_ada(lovelace, text):
    """Lovelace prints as ADA with six decimals."""
    assert format_ada(lovelace) == text


def test_parse_ada_accepts_decimals_and_refuses_bad_amounts():
    """User-typed ADA becomes integer lovelace; negatives, 7 decimals and words are refused."""
    assert parse_ada("5") == 5_000_000
    assert parse_ada("1.25") == 1_250_000
    for bad in ("-1", "0.0000001", "five", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_ada(bad)


def test_networks_and_chain_labels():
    """Network names map to chain labels and address kinds; unknown ones are refused."""
    assert get_network("devnet").chain_label == "cardano-devnet"
    assert get_network("devnet").testnet and not get_network("mainnet").testnet
    assert network_for_chain("cardano-preprod").name == "preprod"
    with pytest.raises(UnknownNetworkError):
        network_for_chain("cardano-moon")


def test_native_asset_ids():
    """Native assets are `policy(56 hex).name(hex)`; lovelace is not one."""
    assert is_native_asset("a" * 56 + ".534e454b")
    assert is_native_asset("a" * 56 + ".")
    assert not is_native_asset("lovelace")
    assert not is_native_asset("a" * 55 + ".53")
    assert not is_native_asset("a" * 56 + ".5")


@pytest.mark.parametrize("package", ["agent", "wallets", "sandbox"])
def test_every_public_name_resolves_and_import_stays_light(package):
    """Each package's __all__ names resolve, and importing the package alone loads no pycardano."""
    code = (
        f"import sys, {package}\n"
        "light = 'pycardano' not in sys.modules\n"
        f"[getattr({package}, n) for n in {package}.__all__]\n"
        "print('LIGHT' if light else 'HEAVY')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "LIGHT"
