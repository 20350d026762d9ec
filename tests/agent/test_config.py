"""agent.toml: a valid file round trip, each invalid case named by key and line, env and init."""

from __future__ import annotations

import argparse
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.commands import init
from agent.config import (
    DEFAULT_MAX_PER_CALL_LOVELACE,
    AgentConfig,
    BudgetSpec,
    ScheduleSpec,
    ada_to_lovelace,
    load_config,
)
from agent.errors import ConfigError
from tests.agent.test_x402 import TOKEN, addr

VALID = """\
[api]
base_url = "http://127.0.0.1:9000/"
partner = "acme"
proof = "cbor"
timeout_s = 12.5

[chain]
network = "devnet"
ogmios_url = "ws://127.0.0.1:2000"

[wallet]
name = "bot-1"
lanes = 3

[policy]
max_per_call_ada = 2.5
approve_above_ada = 1.000001
pin_payees = false
allowed_assets = ["{token}"]

[policy.payees]
"127.0.0.1:9000" = ["{a0}", "{a1}"]

[[budgets]]
name = "daily"
limit_ada = 100
window = "1d"

[[budgets]]
name = "reports"
limits = {{ lovelace = 5000000, "{token}" = 7 }}
window = "30d"
scope = "tag:reports"
include_fees = false

[[schedules]]
name = "morning"
cron = "0 7 * * *"
job = "token-analysis"
tags = ["reports"]
budget = "reports"
misfire = "skip"
report = true

[schedules.params]
token = "SNEK"

[[schedules]]
name = "ping"
every = "15m"
job = "chat"
params = {{ message = "hi", stream = false }}
"""


def write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "agent.toml").write_text(textwrap.dedent(text), encoding="utf-8")
    return home


def valid_text() -> str:
    return VALID.format(token=TOKEN, a0=addr(0), a1=addr(1))


def test_valid_file_round_trip(tmp_path):
    """Every section of a valid file lands in the frozen config with exact lovelace."""
    cfg = load_config(write(tmp_path, valid_text()), env={})
    assert isinstance(cfg, AgentConfig) and cfg.home == tmp_path and cfg.source == tmp_path / "agent.toml"
    assert (cfg.api.base_url, cfg.api.partner, cfg.api.proof, cfg.api.timeout_s, cfg.api.api_key) == (
        "http://127.0.0.1:9000", "acme", "cbor", 12.5, None)
    assert (cfg.chain.network, cfg.chain.ogmios_url, cfg.network.name) == ("devnet", "ws://127.0.0.1:2000", "devnet")
    assert cfg.wallet.name == "bot-1" and cfg.wallet.lanes == 3
    p = cfg.policy
    assert (p.max_per_call_lovelace, p.approve_above_lovelace, p.pin_payees) == (2_500_000, 1_000_001, False)
    assert p.allowed_assets == {"lovelace", TOKEN}
    assert p.payees == {"127.0.0.1:9000": frozenset({addr(0), addr(1)})}
    assert cfg.budgets == (
        BudgetSpec("daily", {"lovelace": 100_000_000}, 86_400, "all", True),
        BudgetSpec("reports", {"lovelace": 5_000_000, TOKEN: 7}, 30 * 86_400, "tag:reports", False),
    )
    assert cfg.schedules == (
        ScheduleSpec("morning", "token-analysis", cron="0 7 * * *", params={"token": "SNEK"},
                     tags=("reports",), budget="reports", misfire="skip", report=True),
        ScheduleSpec("ping", "chat", every_s=900, params={"message": "hi", "stream": False}),
    )


def test_missing_file_gives_devnet_defaults(tmp_path):
    """Without agent.toml the config is a devnet home with local URLs and a safe per-call cap."""
    cfg = load_config(tmp_path, env={})
    assert cfg.source is None and cfg.chain.network == "devnet"
    assert (cfg.api.base_url, cfg.chain.ogmios_url) == ("http://127.0.0.1:8402", "ws://127.0.0.1:1337")
    assert cfg.policy.max_per_call_lovelace == DEFAULT_MAX_PER_CALL_LOVELACE
    assert cfg.budgets == () and cfg.schedules == () and cfg.wallet.name == "default"
    assert cfg.wallet.lanes == 8


def test_env_overrides_urls_and_supplies_the_api_key(tmp_path):
    """CARDANO_AGENT_API_URL / _OGMIOS_URL override the file; T_API_KEY is the key, redacted in repr."""
    env = {"CARDANO_AGENT_API_URL": "https://api.example.com/", "CARDANO_AGENT_OGMIOS_URL": "wss://node:1337",
           "T_API_KEY": "sk-very-secret", "CARDANO_AGENT_PASSPHRASE": "pass-secret"}
    cfg = load_config(write(tmp_path, valid_text()), env=env)
    assert (cfg.api.base_url, cfg.chain.ogmios_url, cfg.api.api_key) == (
        "https://api.example.com", "wss://node:1337", "sk-very-secret")
    assert "sk-very-secret" not in repr(cfg) and "<redacted>" in repr(cfg.api)
    assert "pass-secret" not in repr(cfg)


def test_bad_env_url_is_refused(tmp_path):
    """An override that is not a URL of the right scheme is refused, naming the variable."""
    with pytest.raises(ConfigError, match="CARDANO_AGENT_OGMIOS_URL"):
        load_config(tmp_path, env={"CARDANO_AGENT_OGMIOS_URL": "http://node"})


def test_non_devnet_defaults_to_the_public_api(tmp_path):
    """A preprod home defaults to the public T API URL."""
    cfg = load_config(write(tmp_path, '[chain]\nnetwork = "preprod"\n'), env={})
    assert cfg.api.base_url == "https://api-v2.fluxpointstudios.com"


A = "addr_placeholder"
INVALID = [
    ("unknown section", '[wallet]\nname = "w"\n[apii]  # <-\nbase_url = "http://a"\n', 'apii: unknown key'),
    ("unknown key", '[api]\nproof = "hash"\nbase_ur = "http://a"  # <-\n', "api.base_ur: unknown key"),
    ("api key in file", '[api]\napi_key = "k"  # <-\n', "api.api_key: unknown key .* T_API_KEY"),
    ("wrong type", '[api]\n\ntimeout_s = "soon"  # <-\n', 'api.timeout_s: expected a positive number of seconds, got "soon"'),
    ("bad proof", '[api]\nproof = "sig"  # <-\n', 'api.proof: expected hash or cbor, got "sig"'),
    ("bad url", '[api]\nbase_url = "ftp://x"  # <-\n', "api.base_url: expected a http/https URL"),
    ("bad network", '[chain]\nnetwork = "moon"  # <-\n', "chain.network: expected mainnet, preprod, preview or devnet"),
    ("section not table", 'wallet = "w"  # <-\n', "wallet: expected a table"),
    ("negative lanes", '[wallet]\nlanes = -1  # <-\n',
     "wallet.lanes: expected a whole number of lanes from 0 to 100, got -1"),
    ("too many lanes", '[wallet]\nlanes = 101  # <-\n', "wallet.lanes: expected a whole number of lanes from 0 to 100"),
    ("fractional lanes", '[wallet]\nlanes = 2.5  # <-\n', "wallet.lanes: expected a whole number"),
    ("too many decimals", '[policy]\nmax_per_call_ada = 1.0000001  # <-\n', "policy.max_per_call_ada: ADA has at most 6 decimals"),
    ("negative ada", '[policy]\napprove_above_ada = -1  # <-\n', "non-negative ADA amount"),
    ("bad payee", '[policy.payees]\n"h" = ["{a0}", "nope"]  # <-\n', r'policy.payees.h\[1\]: address is not a bech32'),
    ("payee host with scheme", '[policy.payees]\n"https://h/x" = []  # <-\n', "expected a host or host:port"),
    ("mainnet payee on devnet", '[policy]\npayees = {{ h = ["{m0}"] }}  # <-\n', "wrong network"),
    ("bad asset", '[policy]\nallowed_assets = ["DOGE"]  # <-\n', r"policy.allowed_assets\[0\]: asset: unknown asset"),
    ("budget without limit", '[[budgets]]\nname = "a"\nlimit_ada = 1\n[[budgets]]  # <-\nname = "b"\n', r"budgets\[1\]: budget without a limit"),
    ("bad window", '[[budgets]]\nname = "a"\nlimit_ada = 1\n\n[[budgets]]\nname = "b"\nlimit_ada = 1\nwindow = "fortnight"  # <-\n',
     r'budgets\[1\].window: expected a duration like "1h", "7d", "2w" or "none", got "fortnight"'),
    ("duplicate budget", '[[budgets]]\nname = "a"\nlimit_ada = 1\n[[budgets]]\nname = "a"  # <-\nlimit_ada = 2\n', 'duplicate name "a"'),
    ("bad scope", '[[budgets]]\nname = "a"\nlimit_ada = 1\nscope = "route:"  # <-\n', r"budgets\[0\].scope"),
    ("limit twice", '[[budgets]]\nname = "a"\nlimit_ada = 1\nlimits = {{ lovelace = 5 }}  # <-\n', "given twice"),
    ("fractional limit", '[[budgets]]\nname = "a"\n[budgets.limits]\nlovelace = 1.5  # <-\n', r"budgets\[0\].limits.lovelace: expected a non-negative integer"),
    ("budgets as table", '[budgets]  # <-\nname = "a"\n', r"budgets: expected \[\[budgets\]\] entries"),
    ("bad cron", '[[schedules]]\nname = "s"\njob = "chat"\ncron = "0 25 * * *"  # <-\nparams = {{ message = "m" }}\n', r"schedules\[0\].cron: bad cron"),
    ("cron fields", '[[schedules]]\nname = "s"\njob = "chat"\ncron = "* * * *"  # <-\n', "expected 5 cron fields"),
    ("cron and every", '[[schedules]]  # <-\nname = "s"\njob = "chat"\ncron = "0 7 * * *"\nevery = "1h"\n', "exactly one of cron or every"),
    ("bad every", '[[schedules]]\nname = "s"\njob = "chat"\nevery = "1 week"  # <-\n', r'schedules\[0\].every: expected an interval'),
    ("unknown job", '[[schedules]]\nname = "s"\nevery = "1h"\njob = "mine"  # <-\n', "expected chat, token-analysis, images-generate or http"),
    ("bad params", '[[schedules]]\nname = "s"\nevery = "1h"\njob = "chat"\n\n[schedules.params]  # <-\nmesage = "typo"\n',
     r"schedules\[0\].params: chat: missing field 'message'"),
    ("unknown budget", '[[schedules]]\nname = "s"\nevery = "1h"\njob = "chat"\nbudget = "nope"  # <-\nparams = {{ message = "m" }}\n', 'no budget named "nope"'),
    ("bad misfire", '[[schedules]]\nname = "s"\nevery = "1h"\njob = "chat"\nparams = {{ message = "m" }}\nmisfire = "later"  # <-\n', "run_once or skip"),
    ("report not bool", '[[schedules]]\nname = "s"\nevery = "1h"\njob = "chat"\nparams = {{ message = "m" }}\nreport = "yes"  # <-\n', "expected true or false"),
    ("second schedule", '[[schedules]]\nname = "s"\nevery = "1h"\njob = "chat"\nparams = {{ message = "m" }}\n\n[[schedules]]\nname = "t"\nevery = "1h"\njob = "chat"\n[schedules.params]\nmessage = "m"\nsession_id = 5  # <-\n',
     r"schedules\[1\].params.session_id: chat: field 'session_id'"),
    ("toml syntax", '[api]\nproof = "hash"\ntimeout_s = = 3  # <-\n', "TOML syntax error"),
]


@pytest.mark.parametrize("case,text,message", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_config_names_key_and_line(tmp_path, case, text, message):
    """Each invalid file raises one ConfigError line: `<path>:<line>: <key>: <what was expected>`."""
    text = text.format(a0=addr(0), m0=addr(0, mainnet=True))
    line = next(i for i, ln in enumerate(text.splitlines(), start=1) if ln.endswith("# <-"))
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(write(tmp_path, text), env={})
    msg = str(exc.value)
    assert msg.startswith(f"{tmp_path / 'agent.toml'}:{line}: ")
    assert "\n" not in msg


def test_locator_finds_keys_in_dotted_and_inline_forms(tmp_path):
    """A dotted key and a key after a multi-line array are located on their own lines."""
    text = ('[policy]\nallowed_assets = [\n  "lovelace",\n]\n'
            'payees."h" = ["{a0}",\n  "bad"]\n').format(a0=addr(0))
    with pytest.raises(ConfigError, match=r"agent.toml:5: policy.payees.h\[1\]"):
        load_config(write(tmp_path, text), env={})


def test_unreadable_encoding_is_a_config_error(tmp_path):
    """A file that is not UTF-8 is a ConfigError, not a crash."""
    tmp_path.joinpath("agent.toml").write_bytes(b"\xff\xfe[api]")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, env={})


@given(st.integers(min_value=0, max_value=45_000_000_000_000_000))
def test_ada_to_lovelace_is_exact(lovelace):
    """Any lovelace amount written as ADA (6 decimals, int or Decimal or text) converts back exactly."""
    ada = Decimal(lovelace).scaleb(-6)
    assert ada_to_lovelace(ada) == lovelace
    assert ada_to_lovelace(str(ada)) == lovelace
    if lovelace % 1_000_000 == 0:
        assert ada_to_lovelace(lovelace // 1_000_000) == lovelace


@pytest.mark.parametrize("bad", ["0.0000001", "-1", "nan", "inf", "five", 1.5, True, None])
def test_ada_to_lovelace_refuses_bad_amounts(bad):
    """Seven decimals, negatives, non-finite, words, floats and bools are refused."""
    with pytest.raises(ValueError):
        ada_to_lovelace(bad)


def run_init(home: Path, *argv: str) -> int:
    from agent.cli import _common_options

    common = _common_options()
    parser = argparse.ArgumentParser(parents=[common])
    init.register(parser.add_subparsers(), common)
    args = parser.parse_args(["init", *argv])
    args.home, args.json = home, getattr(args, "json", False)
    return args.func(args)


@pytest.mark.parametrize("network", ["devnet", "preprod", "mainnet"])
def test_init_writes_a_file_that_loads(tmp_path, capsys, network):
    """`init` writes a commented agent.toml with a daily budget and a paid schedule that is off
    (commented out) until the user removes the "# " in front of its lines."""
    home = tmp_path / "home"
    assert run_init(home, "--network", network) == 0
    assert "wrote" in capsys.readouterr().out
    text = (home / "agent.toml").read_text()
    assert text.count("\n#") > 20
    cfg = load_config(home, env={})
    assert cfg.chain.network == network
    assert any(b.window_s == 86_400 and b.limits.get("lovelace") for b in cfg.budgets)
    assert cfg.schedules == ()
    start = text.index("# [[schedules]]")
    block = text[start:].split("\n\n", 1)[0]
    (home / "agent.toml").write_text(text.replace(block, "\n".join(ln[2:] for ln in block.splitlines())))
    (sched,) = load_config(home, env={}).schedules
    assert (sched.kind, sched.cron, sched.report) == ("token-analysis", "0 7 * * *", True)


def test_init_refuses_to_overwrite_without_force(tmp_path):
    """A second `init` refuses to overwrite; `--force` rewrites the file."""
    run_init(tmp_path)
    (tmp_path / "agent.toml").write_text("# mine\n")
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        run_init(tmp_path)
    assert (tmp_path / "agent.toml").read_text() == "# mine\n"
    assert run_init(tmp_path, "--force", "--json") == 0
    assert load_config(tmp_path, env={}).budgets
