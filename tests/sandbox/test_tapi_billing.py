"""The twin's billing config: defaults, TOML parsing, split arithmetic and refusals of bad configs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sandbox.billing import (
    ACME_ADDRESS,
    DEFAULT_PAY_TO,
    GLOBEX_ADDRESS,
    TwinConfig,
    load_twin_config,
    parse_twin_config,
    privilege_for,
)
from sandbox.errors import SandboxConfigError

TOKEN = "ab" * 28 + ".746f6b656e"


def test_default_addresses_derive_from_fixed_labels() -> None:
    """The built-in payTo and partner addresses are devnet addresses of keys derived from their labels."""
    from pycardano import Address, Network, PaymentSigningKey

    for label, expected in [("twin-pay-to", DEFAULT_PAY_TO), ("twin-partner-acme", ACME_ADDRESS),
                            ("twin-partner-globex", GLOBEX_ADDRESS)]:
        vk = PaymentSigningKey(hashlib.sha256(label.encode()).digest()).to_verification_key()
        assert str(Address(vk.hash(), network=Network.TESTNET)) == expected


def test_defaults_load_without_a_file() -> None:
    """No config file means the built-in defaults: ADA on cardano-devnet, 300 s invoices, mempool not accepted."""
    config = load_twin_config(None)
    assert (config.chain, config.asset_label, config.decimals) == ("cardano-devnet", "ADA", 6)
    assert config.invoice_timeout_s == 300 and config.accept_mempool is False
    assert config.prices["chat"] == 2_000_000
    assert set(config.partners) == {"acme", "globex"}


def test_additional_split_adds_outputs_on_top() -> None:
    """additional: payTo receives the full amount and the partner output comes on top."""
    config = TwinConfig()
    need = config.required_payment("chat", config.partners["acme"])
    assert need.amount_units == 2_000_000
    assert need.outputs == ((DEFAULT_PAY_TO, 2_000_000, "lovelace", "payTo"),
                            (ACME_ADDRESS, 1_000_000, "lovelace", "partner"))


def test_inclusive_split_carves_outputs_out_of_a_batch_price() -> None:
    """inclusive with batchTarget 5: amount is 5 calls' price and payTo gets it minus the partner share."""
    config = TwinConfig()
    need = config.required_payment("chat", config.partners["globex"])
    assert need.amount_units == 10_000_000
    assert need.outputs[0][1] == 6_000_000 and need.outputs[1][1] == 4_000_000


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    """A TOML file sets asset, prices, keys, partners, mempool acceptance and faults."""
    path = tmp_path / "billing.toml"
    path.write_text(f'''
asset = "{TOKEN}"
accept_mempool = true
invoice_timeout_s = 60
[prices]
chat = 5
[api_keys.reader]
privileges = ["token-analysis"]
[partners.solo]
split_mode = "inclusive"
batch_target = 3
outputs = [{{address = "{ACME_ADDRESS}", amount = 2, role = "referrer"}}]
[faults]
error_rate = 0.25
delay_ms = 10
''')
    config = load_twin_config(path)
    assert config.asset_label == TOKEN and config.decimals == 0 and config.accept_mempool
    assert config.prices["chat"] == 5 and config.invoice_timeout_s == 60
    assert config.api_keys["reader"].allows("token-analysis") and not config.api_keys["reader"].allows("chat")
    need = config.required_payment("chat", config.partners["solo"])
    assert need.outputs == ((DEFAULT_PAY_TO, 13, TOKEN, "payTo"), (ACME_ADDRESS, 2, TOKEN, "referrer"))
    assert config.faults.error_rate == 0.25 and config.faults.delay_ms == 10


@pytest.mark.parametrize("text, fragment", [
    ("chain = 'cardano-mainnet'", "cardano-devnet"),
    ("pay_to = 'addr1vx53fltufhm5evcsa5wa4a6t9w48ruapm8zf9dy8hdnqcsqh54v25'", "pay_to"),
    ("pay_to = 'addr_test1vqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq'", "pay_to"),  # bad checksum
    ("asset = 'SNEK'", "asset"),
    ("[prices]\nchat = 500", "below 1000000"),
    ("[prices]\nchat = '2'", "prices.chat"),
    ("[prices]\nfly = 2", "unknown route"),
    ("[partners.x]\nsplit_mode = 'half'", "split_mode"),
    ("[api_keys.k]\nprivileges = ['root']", "privileges"),
    ("[faults]\nerror_rate = 'often'", "error_rate"),
    ("accept_mempool = 'yes'", "accept_mempool"),
    ("colour = 'red'", "unknown billing config keys"),
])
def test_bad_configs_are_refused_with_the_key_named(text: str, fragment: str) -> None:
    """Each bad setting raises SandboxConfigError naming what is wrong."""
    import tomllib

    with pytest.raises(SandboxConfigError, match=fragment):
        parse_twin_config(tomllib.loads(text))


def test_unreadable_or_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    """A missing file or broken TOML is a SandboxConfigError, not a traceback."""
    with pytest.raises(SandboxConfigError, match="cannot read"):
        load_twin_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[prices\n")
    with pytest.raises(SandboxConfigError, match="not valid TOML"):
        load_twin_config(bad)


def test_privileges_group_image_routes_and_hide_keys() -> None:
    """Image routes share the images privilege; an ApiKey repr never shows the key."""
    assert privilege_for("images/edit") == "images" and privilege_for("images/variations") == "variations"
    assert "twin-admin-key" not in repr(TwinConfig().api_keys["twin-admin-key"])


def test_config_repr_leaves_api_keys_out() -> None:
    """Printing a TwinConfig never shows an api key."""
    assert "twin-admin-key" not in repr(TwinConfig())
