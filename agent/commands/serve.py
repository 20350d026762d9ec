"""``cardano-agent serve``: the web console, /metrics and a JSON API; ``cardano-agent mcp``: the MCP server."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

ORDER = 60


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the serve and mcp commands."""
    p = sub.add_parser("serve", parents=[common], help="web console, /metrics and JSON API (loopback by default)",
                       description="Serve the web console (overview, jobs, payments, approvals, schedules), "
                                   "Prometheus /metrics and a JSON API under /api/. Bound to 127.0.0.1 unless "
                                   "--host says otherwise; any other address needs CARDANO_AGENT_CONSOLE_TOKEN.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--read-only", action="store_true", help="show everything, decide nothing (no approve/deny)")
    p.add_argument("--offline", action="store_true", help="never ask the chain (no balance shown)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("mcp", parents=[common], help="MCP server for AI agents (stdio, or --http PORT)",
                       description="Serve the agent's tools over the Model Context Protocol: call the T API "
                                   "or any x402 URL (paying under policy and budgets), queue jobs and read "
                                   "results, read budgets, spend and pending approvals. Approving stays with "
                                   "humans. Needs the [mcp] extra.")
    p.add_argument("--http", type=int, metavar="PORT", help="streamable HTTP on 127.0.0.1:PORT (needs "
                                                            "CARDANO_AGENT_CONSOLE_TOKEN) instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="address for --http (default 127.0.0.1)")
    p.set_defaults(func=cmd_mcp)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    from agent.app import Agent
    from agent.console.server import TOKEN_ENV, ConsoleServer, ConsoleSettings
    from agent.errors import ConfigError
    from agent.output import emit

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {args.port}")
    settings = ConsoleSettings(host=args.host, port=args.port, token=os.environ.get(TOKEN_ENV) or None,
                               read_only=args.read_only, chain=not args.offline)
    settings.check()
    with Agent.open(args.home) as agent:
        try:
            server = ConsoleServer(agent, settings)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        emit(args.json, {"url": server.url, "read_only": settings.read_only, "token": bool(settings.token)},
             lambda d: print(f"console on {d['url']}" + (" (read-only)" if d["read_only"] else "")
                             + (" (token required)" if d["token"] else "") + "; Ctrl-C stops", flush=True))
        sys.stdout.flush()

        def stop(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.httpd.server_close()
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve MCP on stdio (or streamable HTTP) until the client goes away."""
    from agent.mcp_server import run_mcp

    return run_mcp(args.home, http_port=args.http, host=args.host)
