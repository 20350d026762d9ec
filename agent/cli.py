"""The ``cardano-agent`` command: argument parsing and the one place errors become exit codes.

Command groups live in ``agent.commands.<name>``; each module defines ``register(sub, common)``
and is discovered here, so this file never grows with the commands. Handlers import heavy
modules (pycardano, httpx, FastAPI) inside themselves, which keeps ``--help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_HOME = "~/.cardano-agent"


def resolve_home(value: str | None) -> Path:
    """Return the agent home: ``--home``, else ``$CARDANO_AGENT_HOME``, else ``~/.cardano-agent``."""
    raw = value or os.environ.get("CARDANO_AGENT_HOME") or DEFAULT_HOME
    return Path(raw).expanduser()


def require_home(home: Path) -> Path:
    """Return ``home`` if it is an agent home; else raise the one line that says how to make one.

    Commands that read or run an agent never create a home silently: a typo in ``--home``
    would otherwise show empty tables for a home that does not exist.
    """
    from agent.errors import ConfigError

    if not home.is_dir():
        raise ConfigError(f"no agent home at {home}; run `cardano-agent init --home {home}`"
                          if str(home) != str(Path(DEFAULT_HOME).expanduser())
                          else f"no agent home at {home}; run `cardano-agent init`")
    return home


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"agent home directory (default {DEFAULT_HOME})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    return common


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser from the command modules in ``agent.commands``."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="cardano-agent",
        description="A headless Cardano wallet agent that pays x402 invoices for API calls.",
        parents=[common],
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import agent.commands as commands

    modules = [importlib.import_module(f"agent.commands.{m.name}")
               for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")]
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__)):
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code. Package errors become one line on stderr."""
    from agent.errors import AgentError
    from wallets.errors import WalletError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.home = resolve_home(getattr(args, "home", None))
    args.json = getattr(args, "json", False)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    ours: tuple[type[Exception], ...] = (AgentError, WalletError)
    if args.command == "sandbox":  # only the sandbox command loads the sandbox package
        from sandbox.errors import SandboxError

        ours += (SandboxError,)
    try:
        return int(func(args) or 0)
    except ours as exc:
        from agent.output import terminal_safe

        print(f"error: {terminal_safe(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # A home or file the system refuses (/sys, read-only, no space): one line, no traceback.
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
