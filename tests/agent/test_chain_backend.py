"""Choosing the chain backend: ``[chain] backend``, ``blockfrost_url``, ``BLOCKFROST_PROJECT_ID``, ``init --chain``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.app import Agent, open_chain
from agent.config import load_config
from agent.errors import ConfigError
from wallets.blockfrost import PUBLIC_URLS, SANDBOX_PROJECT_ID, SANDBOX_URL, BlockfrostAuthError, BlockfrostChain
from wallets.ogmios import OgmiosChain

SECRET = "preprodSECRETsecretSECRETsecret0000"


def _home(tmp_path, chain: str):
    (tmp_path / "agent.toml").write_text(f"[chain]\n{chain}\n")
    return tmp_path


def test_default_backend_is_ogmios(tmp_path):
    """Without ``backend`` the agent reaches the chain through Ogmios, as before."""
    config = load_config(_home(tmp_path, 'network = "preprod"'), env={})
    assert config.chain.backend == "ogmios"
    assert isinstance(open_chain(config.chain), OgmiosChain)


@pytest.mark.parametrize("network", ["mainnet", "preprod", "preview"])
def test_blockfrost_url_defaults_to_the_networks_public_endpoint(tmp_path, network):
    """``blockfrost_url`` defaults to Blockfrost's endpoint for the network."""
    config = load_config(_home(tmp_path, f'network = "{network}"\nbackend = "blockfrost"'), env={})
    assert config.chain.blockfrost_url == PUBLIC_URLS[network]
    assert config.chain.blockfrost_url == f"https://cardano-{network}.blockfrost.io/api/v0"


def test_devnet_blockfrost_defaults_to_the_sandbox_and_its_project_id(tmp_path):
    """On the devnet the sandbox's loopback API and its public project id are used by default."""
    config = load_config(_home(tmp_path, 'network = "devnet"\nbackend = "blockfrost"'), env={})
    chain = open_chain(config.chain)
    try:
        assert isinstance(chain, BlockfrostChain) and chain.url == SANDBOX_URL
        assert chain._client.headers["project_id"] == SANDBOX_PROJECT_ID
    finally:
        chain.close()


def test_project_id_comes_from_the_environment_and_never_shows(tmp_path):
    """BLOCKFROST_PROJECT_ID is read from the environment and redacted from the config's repr."""
    home = _home(tmp_path, 'network = "preprod"\nbackend = "blockfrost"\nblockfrost_url = "http://127.0.0.1:3000/api/v0"')
    config = load_config(home, env={"BLOCKFROST_PROJECT_ID": SECRET})
    assert config.chain.blockfrost_project_id == SECRET
    assert SECRET not in repr(config.chain) and SECRET not in repr(config)
    with Agent.open(home, env={"BLOCKFROST_PROJECT_ID": SECRET}) as agent:
        chain = agent.chain
        assert isinstance(chain, BlockfrostChain) and chain.url == "http://127.0.0.1:3000/api/v0"
        assert SECRET not in repr(chain) and SECRET not in repr(agent)


def test_project_id_in_the_file_is_refused(tmp_path):
    """A project id written into agent.toml is an unknown key: secrets live in the environment only."""
    home = _home(tmp_path, 'network = "preprod"\nbackend = "blockfrost"\nblockfrost_project_id = "x"')
    with pytest.raises(ConfigError, match=r"agent.toml:4: chain.blockfrost_project_id: unknown key"):
        load_config(home, env={})


def test_blockfrost_off_the_devnet_without_a_project_id_is_one_clear_line(tmp_path):
    """Paying through Blockfrost on preprod with no project id: the error names the network and the variable."""
    config = load_config(_home(tmp_path, 'network = "preprod"\nbackend = "blockfrost"'), env={})
    with pytest.raises(BlockfrostAuthError, match="no Blockfrost project id for preprod: set BLOCKFROST_PROJECT_ID"):
        open_chain(config.chain)


@pytest.mark.parametrize("line, message", [
    ('backend = "kupo"', 'chain.backend: expected ogmios or blockfrost, got "kupo"'),
    ('backend = "blockfrost"\nblockfrost_url = "ws://x"', "chain.blockfrost_url: expected a http/https URL"),
])
def test_bad_backend_settings_name_key_and_line(tmp_path, line, message):
    """A bad backend or URL is one line with the file, line and key."""
    with pytest.raises(ConfigError, match=message):
        load_config(_home(tmp_path, line), env={})


def test_init_with_blockfrost_writes_a_home_that_loads(tmp_path):
    """``init --network preprod --chain blockfrost`` writes backend and URL; the file loads as such."""
    home = tmp_path / "h"
    run = subprocess.run([sys.executable, "-m", "agent.cli", "--home", str(home), "init", "--network", "preprod",
                          "--chain", "blockfrost"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "BLOCKFROST_PROJECT_ID" in run.stdout
    config = load_config(home, env={})
    assert (config.chain.network, config.chain.backend) == ("preprod", "blockfrost")
    assert config.chain.blockfrost_url == PUBLIC_URLS["preprod"]
    assert "BLOCKFROST_PROJECT_ID" in (home / "agent.toml").read_text()


def test_wallet_show_reads_the_chain_and_token_names_through_blockfrost(tmp_path, devnet, fast_keystore, capsys,
                                                                          monkeypatch):
    """`wallet show` on a Blockfrost home: balance from the sandbox's Blockfrost API, token named by its metadata."""
    import json

    from agent.cli import main
    from sandbox.blockfrost_api import BlockfrostServer
    from sandbox.devnet import DEVNET_TOKEN
    from wallets.keystore import Keystore

    monkeypatch.delenv("CARDANO_AGENT_OGMIOS_URL", raising=False)
    monkeypatch.delenv("BLOCKFROST_PROJECT_ID", raising=False)
    with BlockfrostServer.start(devnet.node) as server:
        home = _home(tmp_path, f'network = "devnet"\nbackend = "blockfrost"\nblockfrost_url = "{server.url}"')
        info, _ = Keystore(home / "wallets").create("main", network="devnet", passphrase="pw")
        devnet.fund(info.address, 3_000_000, {DEVNET_TOKEN: 7})
        assert main(["wallet", "show", "main", "--home", str(home), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert server.requests > 0
    assert shown["balance"] == {"lovelace": 3_000_000, DEVNET_TOKEN: 7}
    assert shown["token_names"] == {DEVNET_TOKEN: "Devnet token (DEVNET)"}
