"""CLI: the unattended agent: `job add|list|show|cancel|retry`, `run`, `status` and `call`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Any

from agent.output import emit, format_ada, kv, table, terminal_safe
from agent.views import job_view
from agent.service import DEFAULT_CONCURRENCY
from agent.service import recovery_text as _recovery_text  # noqa: F401 - the words `run` prints, tested here

ORDER = 30

_FIELD_OPTIONS = [
    # (option, dest, kind-specific help)
    ("--message", "message", "chat: the message"),
    ("--session-id", "session_id", "chat: keep context across calls"),
    ("--token", "token", "token-analysis: ticker, e.g. SNEK"),
    ("--policy-id", "policy_id", "token-analysis: policy id (56 hex)"),
    ("--asset-name-hex", "asset_name_hex", "token-analysis: asset name (hex)"),
    ("--network", "network", "token-analysis: network label (default cardano)"),
    ("--prompt", "prompt", "images-generate: the prompt"),
    ("--size", "size", "images-generate: e.g. 1024x1024"),
]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    job = sub.add_parser("job", help="queue and inspect API jobs", parents=[common])
    jsub = job.add_subparsers(dest="job_command", metavar="ACTION", required=True)

    add = jsub.add_parser("add", help="queue a job: chat, token-analysis or images-generate", parents=[common])
    add.add_argument("kind", help="chat | token-analysis | images-generate | http")
    add.add_argument("url_arg", nargs="?", metavar="URL", help="http: the URL (or --url)")
    _request_options(add)
    add.add_argument("--tag", action="append", default=[], help="tag the job (repeatable); budgets can match tags")
    add.add_argument("--budget", help="charge this job to the named budget as well")
    add.add_argument("--max-attempts", type=int, default=5, help="tries for transient failures (default 5)")
    add.set_defaults(func=cmd_add)

    lst = jsub.add_parser("list", help="list jobs, newest first", parents=[common])
    lst.add_argument("--state", help="only jobs in this state (queued, running, done, failed, ...)")
    lst.add_argument("--tag", help="only jobs with this tag")
    lst.add_argument("--limit", type=int, default=50)
    lst.set_defaults(func=cmd_list)

    for name, func, text in (("show", cmd_show, "show one job"), ("cancel", cmd_cancel, "cancel a queued or failed job"),
                             ("retry", cmd_retry, "queue a failed or cancelled job again")):
        p = jsub.add_parser(name, help=text, parents=[common])
        p.add_argument("id", type=int)
        p.set_defaults(func=func)

    run = sub.add_parser("run", help="run workers and schedules until SIGTERM (or until idle)", parents=[common])
    run.add_argument("--workers", type=int, default=1, help="worker threads, for the CPU work (default 1)")
    run.add_argument("--concurrency", type=int, default=None, metavar="N",
                     help="paid calls in flight at most, running or waiting for settlement "
                          f"(default {DEFAULT_CONCURRENCY}, at least --workers); capped by the wallet and budgets")
    run.add_argument("--until-idle", action="store_true", help="exit when no job is left to run")
    run.add_argument("--lease-s", type=float, default=120.0, help=argparse.SUPPRESS)
    run.add_argument("--stop-grace-s", type=float, default=10.0, metavar="S",
                     help="on SIGTERM, seconds the payments in hand get to reach a durable state (default 10)")
    run.add_argument("--log-json", action="store_true", help="write the log file as JSON lines")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="also serve Prometheus /metrics on 127.0.0.1:PORT while running")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="queue, budgets, wallet and recent errors at a glance", parents=[common])
    status.add_argument("--offline", action="store_true", help="do not ask the chain for the balance")
    status.set_defaults(func=cmd_status)

    call = sub.add_parser("call", help="make one API call now (paying if asked) and print the answer",
                          parents=[common])
    call.add_argument("kind", help="chat | token-analysis | images-generate | http")
    call.add_argument("url_arg", nargs="?", metavar="URL", help="http: the URL (or --url)")
    _request_options(call)
    call.add_argument("--tag", action="append", default=[], help=argparse.SUPPRESS)
    call.set_defaults(func=cmd_call)


def _request_options(p: argparse.ArgumentParser) -> None:
    for option, dest, text in _FIELD_OPTIONS:
        p.add_argument(option, dest=dest, help=text)
    p.add_argument("--n", type=int, help="images-generate: how many images (1-4)")
    p.add_argument("--stream", action="store_true", default=None, help="chat: stream the reply (SSE)")
    p.add_argument("--structured", action="store_true", default=None, help="chat: ask for reply_json")
    p.add_argument("--bypass-cache", action="store_true", default=None, help="token-analysis: skip the cache")
    p.add_argument("--partner", help="bill through this partner (X-Partner)")
    p.add_argument("--url", help="http: the URL to call")
    p.add_argument("--method", help="http: GET (default), POST, PUT, PATCH, DELETE or HEAD")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'", help="http: a header (repeatable)")
    p.add_argument("--json-body", dest="json_body", metavar="JSON",
                   help="http: a JSON request body (--json is the output switch of every command)")
    p.add_argument("--data", metavar="TEXT", help="http: a raw request body")


def _request_from(args: argparse.Namespace) -> dict[str, Any]:
    from agent.jobs import validate_request

    if args.kind == "http":
        return _http_request_from(args)
    fields = {dest: getattr(args, dest) for _, dest, _ in _FIELD_OPTIONS}
    fields.update(n=args.n, stream=args.stream, structured=args.structured, bypass_cache=args.bypass_cache)
    request = validate_request(args.kind, {k: v for k, v in fields.items() if v is not None})
    if args.partner:
        request["partner"] = args.partner
    return request


def _http_request_from(args: argparse.Namespace) -> dict[str, Any]:
    from agent.errors import JobError
    from agent.http_job import parse_header_option, parse_json_option
    from agent.jobs import validate_request

    if args.url_arg and args.url and args.url_arg != args.url:
        raise JobError("give the URL once (positional or --url)")
    fields: dict[str, Any] = {"url": args.url or args.url_arg, "method": args.method}
    if args.header:
        fields["headers"] = dict(parse_header_option(h) for h in args.header)
    if args.json_body is not None:
        fields["json"] = parse_json_option(args.json_body)
    if args.data is not None:
        fields["body"] = args.data
    return validate_request("http", {k: v for k, v in fields.items() if v is not None})


def _open(args: argparse.Namespace, *, passphrase: bool = False, secret: str | None = None) -> Any:
    from agent.app import Agent
    from agent.cli import require_home

    require_home(args.home)
    prompt: Any = None
    if passphrase:
        from agent.commands.wallet import read_passphrase

        prompt = read_passphrase
        if secret:
            from agent.logs import register_secret

            register_secret(secret)
            prompt = secret
    return Agent.open(args.home, passphrase=prompt)


def _open_waiting(args: argparse.Namespace, *, secret: str | None, max_wait_s: float = 60.0) -> Any:
    """Open the agent for ``run``; while its database is unreachable, wait with backoff and retry.

    A shared database that is down when a host starts is waited for (one line each try);
    a wrong URL or password (a ConfigError) stops at once. SIGTERM or SIGINT end the wait.
    """
    from agent.errors import StoreError
    from wallets.backoff import backoff_s

    tries = 0
    while True:
        try:
            return _open(args, passphrase=True, secret=secret)
        except StoreError as exc:  # unreachable or lost; a wrong URL or password is a ConfigError
            tries += 1
            wait_s = backoff_s(tries, base_s=1.0, max_s=max_wait_s)
            print(f"waiting for the database: {exc}; retrying in {wait_s:.0f}s", file=sys.stderr, flush=True)
            time.sleep(wait_s)  # the process has nothing else to do until the database answers


def _short_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).strftime("%m-%d %H:%M:%S")


def cmd_add(args: argparse.Namespace) -> int:
    from agent.errors import JobError

    import uuid

    request = _request_from(args)
    if args.kind == "chat" and not request.get("session_id"):
        # Each job talks in its own conversation (shown in `job show`), never in a shared one.
        request["session_id"] = f"job-{uuid.uuid4().hex[:12]}"
    with _open(args) as agent:
        if args.budget and args.budget not in {b.name for b in agent.config.budgets}:
            raise JobError(f"no budget named {args.budget!r} in agent.toml")
        if args.max_attempts < 1:
            raise JobError("--max-attempts must be at least 1")
        job = agent.jobs.enqueue(args.kind, request, tags=args.tag, budget=args.budget,
                                 max_attempts=args.max_attempts, now=time.time())
    emit(args.json, job_view(job), lambda d: print(f"queued job {d['id']} ({d['kind']})"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as agent:
        jobs = agent.jobs.list(state=args.state, tag=args.tag, limit=args.limit)
    data = [job_view(j) for j in jobs]

    def human(rows: list[dict[str, Any]]) -> None:
        table([[j["id"], j["kind"], j["state"], j["attempts"], ",".join(j["tags"]), _describe(j["request"]),
                _clip(j["last_error"] or "", 60)] for j in rows],
              ["ID", "KIND", "STATE", "TRIES", "TAGS", "REQUEST", "LAST ERROR"])

    emit(args.json, data, human)
    return 0


def _describe(request: dict[str, Any]) -> str:
    return _clip(request.get("message") or request.get("token") or request.get("prompt") or "", 40)


def _clip(text: str, width: int) -> str:
    """``text`` on one line in at most ``width`` characters, cut at a word with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[:width - 1]
    if " " in cut[width // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as agent:
        job = agent.jobs.get(args.id)
        payments = [_payment_dict(r) for r in agent.ledger.by_job(job.id)]
    data = {**job_view(job), "payments": payments}

    def human(d: dict[str, Any]) -> None:
        kv([("job", d["id"]), ("kind", d["kind"]), ("state", d["state"]), ("attempts", f"{d['attempts']}/{d['max_attempts']}"),
            ("tags", ", ".join(d["tags"]) or "-"), ("budget", d["budget"] or "-"),
            ("request", json.dumps(d["request"])), ("created", d["created_at"]), ("updated", d["updated_at"]),
            ("result", d["result_path"] or "-"), ("last error", d["last_error"] or "-")])
        if d["payments"]:
            print()
            table([[p["id"], p["state"], p["invoice_id"], format_ada(p["amount_lovelace"]),
                    format_ada(p["fee_lovelace"] or 0)] for p in d["payments"]],
                  ["PAYMENT", "STATE", "INVOICE", "AMOUNT (ADA)", "FEE (ADA)"])
            for p in d["payments"]:
                if p["tx_id"]:
                    print(f"payment {p['id']} tx {p['tx_id']}")

    emit(args.json, data, human)
    return 0


def _payment_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "state": row.state, "invoice_id": row.invoice_id, "route": row.route,
            "amount_lovelace": row.amount_lovelace, "fee_lovelace": row.fee_lovelace, "tx_id": row.tx_id,
            "reason": row.reason}


def cmd_cancel(args: argparse.Namespace) -> int:
    with _open(args) as agent:
        job = agent.jobs.cancel(args.id, time.time())
    emit(args.json, job_view(job), lambda d: print(f"job {d['id']} cancelled"))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with _open(args) as agent:
        job = agent.jobs.retry(args.id, time.time())
    emit(args.json, job_view(job), lambda d: print(f"job {d['id']} queued again"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.errors import AgentError
    from agent.logs import setup_logging

    if args.workers < 1:
        raise AgentError("--workers must be at least 1")
    if args.concurrency is not None and args.concurrency < 1:
        raise AgentError("--concurrency must be at least 1")
    if not 0 <= args.stop_grace_s <= 3600:
        raise AgentError("--stop-grace-s must be between 0 and 3600 seconds")
    from agent.cli import require_home

    setup_logging(require_home(args.home), verbose=getattr(args, "verbose", 0), json_lines=args.log_json)
    # A long-lived process keeps the passphrase in memory only: out of its environment, so
    # neither a child process nor a dump of the environment carries it.
    env_secret = os.environ.pop("CARDANO_AGENT_PASSPHRASE", None)
    with _open_waiting(args, secret=env_secret) as agent:
        def on_signal(signum: int, frame: Any) -> None:
            print(f"stopping: no new jobs; payments in hand get up to {args.stop_grace_s:g}s…", file=sys.stderr)
            agent.stop()

        previous: dict[int, Any] = {}

        def on_start() -> None:
            # Only now: Ctrl-C at the passphrase prompt or during recovery still interrupts at once.
            previous.update({s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)})

        progress = _Progress(enabled=not args.json)
        try:
            stats = agent.run(workers=args.workers, concurrency=args.concurrency, until_idle=args.until_idle,
                              lease_s=args.lease_s, stop_grace_s=args.stop_grace_s, metrics_port=args.metrics_port,
                              on_progress=progress, say=_stderr_line, on_start=on_start)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            progress.finish()
        counts = agent.jobs.counts()
        waiting = _waiting(agent)
    data = {"done": stats.done, "retried": stats.retried, "failed": stats.failed, "waiting": waiting,
            "errors": stats.errors, "queue": counts}

    def human(d: dict[str, Any]) -> None:
        print(f"run finished: {d['done']} done, {d['failed']} failed, {d['retried']} retried")
        for line in d["errors"][-10:]:
            print(f"  {line}")
        for line in d["waiting"]:
            print(f"  {line}")

    emit(args.json, data, human)
    # Waiting (for an approval, a budget window, the chain) is not failing: exit 0.
    return 0 if not stats.failed else 1


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr)


class _Progress:
    """One status line on stderr while the runner works (rewritten in place on a terminal)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = ""
        self._last_at = 0.0

    def __call__(self, counts: dict[str, int], stats: Any) -> None:
        if not self.enabled:
            return
        active = counts.get("running", 0) + counts.get("paying", 0) + counts.get("awaiting_settlement", 0)
        waiting = counts.get("awaiting_approval", 0) + counts.get("awaiting_budget", 0)
        line = (f"queued {counts.get('queued', 0)} · running {active} · done {counts.get('done', 0)} · "
                f"failed {counts.get('failed', 0)}" + (f" · waiting {waiting}" if waiting else ""))
        now = time.monotonic()
        if line == self._last and not self.tty:
            return
        if not self.tty and now - self._last_at < 2:
            return
        self._last, self._last_at = line, now
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.tty and self._last:
            sys.stderr.write("\n")


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args) as agent:
        now = time.time()
        data = agent.status(now=now, offline=args.offline)

    def human(d: dict[str, Any]) -> None:
        q = d["queue"]
        print("queue    " + "  ".join(f"{k} {v}" for k, v in q.items() if v) if any(q.values()) else "queue    empty")
        for line in d["waiting"]:
            print(f"         {line}")
        w = d["wallet"]
        line = f"wallet   {w.get('name')} {_short_address(w.get('address', ''))}"
        if "balance_lovelace" in w:
            line += f"  {format_ada(w['balance_lovelace'])} ADA in {w['utxos']} UTxO(s)"
        elif w.get("error"):
            line += f"  (balance unavailable: {w['error']})"
        print(line)
        print(f"paid     {format_ada(d['total_paid_lovelace'])} ADA in all")
        if d.get("store"):
            print(f"store    {d['store']}")
        workers = d.get("workers") or []
        print(f"workers  {sum(p['workers'] for p in workers)} live in {len(workers)} process(es)"
              if workers else "workers  none running")
        for p in workers:
            print(f"  {p['name']}  {p['workers']} worker(s)  jobs {', '.join(map(str, p['jobs'])) or '-'}")
        if d.get("clock", {}).get("warning"):
            print(f"clock    {d['clock']['warning']}")
        if d["budgets"]:
            print()
            table([[b["name"], b["window"], "ADA" if b["asset"] == "lovelace" else b["asset"],
                    _amount(b, "limit"), _amount(b, "spent"), _amount(b, "remaining")]
                   for b in d["budgets"]], ["BUDGET", "WINDOW", "ASSET", "LIMIT", "SPENT", "LEFT"])
        if d["schedules"]:
            print()
            table([[s["name"], s["kind"], s["rule"], _when_text(s["last_fire"]), _next_text(s["next_fire"], now)]
                   for s in d["schedules"]], ["SCHEDULE", "KIND", "RULE", "LAST FIRED", "NEXT"])
        if d["pending_approvals"]:
            print(f"\n{len(d['pending_approvals'])} payment(s) wait for approval: cardano-agent approvals")
        if d["unfinished_payments"]:
            print(f"{len(d['unfinished_payments'])} payment(s) not yet settled")
        if d["recent_failures"]:
            print("\nrecent failures:")
            for j in d["recent_failures"]:
                print(f"  job {j['id']} ({j['kind']}): {j['last_error']}")

    emit(args.json, data, human)
    return 0


def _amount(budget: dict[str, Any], key: str) -> Any:
    return format_ada(budget[key]) if budget["asset"] == "lovelace" else budget[key]


def _short_address(address: str) -> str:
    """An address short enough for one status line: its start and its end."""
    return address if len(address) <= 32 else f"{address[:16]}…{address[-10:]}"


def _when_text(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _next_text(iso: str | None, now: float) -> str:
    if not iso:
        return "-"
    when = datetime.fromisoformat(iso)
    if when.timestamp() <= now:
        return "due now (at the next `run` step)"
    return _when_text(iso)


def _waiting(agent: Any) -> list[str]:
    """Lines saying what queued jobs are waiting for (the chain, the API, an approval, a budget)."""
    from agent.queue import waiting_summary

    return waiting_summary(agent.jobs)


def cmd_call(args: argparse.Namespace) -> int:
    """One API call now: pay if asked, print the answer and (on stderr) what it cost."""
    import uuid

    from agent.logs import setup_logging

    request = _request_from(args)
    partner = request.pop("partner", None)
    if args.kind == "chat" and not request.get("session_id"):
        # A fresh conversation per call: never another call's, job's or home's context.
        request["session_id"] = f"call-{uuid.uuid4().hex[:12]}"
    call_id = f"cli-{uuid.uuid4().hex[:12]}"
    call_tag = f"call:{call_id}"
    from agent.cli import require_home

    setup_logging(require_home(args.home), verbose=getattr(args, "verbose", 0))
    try:
        return _call(args, request, partner, call_id, call_tag)
    finally:
        from agent.logs import teardown_logging

        teardown_logging()


def _call(args: argparse.Namespace, request: dict[str, Any], partner: str | None, call_id: str,
          call_tag: str) -> int:
    from agent.errors import ApprovalRequiredError
    from agent.executor import TApiExecutor
    from agent.payer import JobContext, job_context

    with _open(args, passphrase=True) as agent:
        # As `run` does: resolve what a killed `call` (or any dead process) left, from the
        # chain, before paying; otherwise its reserved inputs would starve this payment.
        recovered = agent.recover()
        if any(v for k, v in recovered.items() if k != "busy"):
            print(f"recovered after a crash: payments {recovered}", file=sys.stderr)
        executor = TApiExecutor(agent)
        started = time.time()
        try:
            client = executor.client_for(partner)
            ask = _ask_at_terminal if sys.stdin is not None and sys.stdin.isatty() and not args.json else None
            with job_context(JobContext(tags=tuple(args.tag) + ("cli", call_tag), confirm_overpay=ask)):
                if args.kind == "chat" and request.get("stream") and not args.json:
                    for event in client.chat_stream(request["message"], session_id=request.get("session_id"),
                                                    request_id=call_id):
                        if event.type == "content" and event.text:
                            sys.stdout.write(terminal_safe(event.text))
                            sys.stdout.flush()
                    sys.stdout.write("\n")
                    _say_paid(_call_payments(agent, call_tag, started))
                    return 0
                data = executor.call(client, args.kind, request, call_id)
        except ApprovalRequiredError as exc:
            return _needs_approval(agent, args, exc)
        except KeyboardInterrupt:
            _say_interrupted(_call_payments(agent, call_tag, started))
            return 130
        finally:
            executor.close()
        payments = _call_payments(agent, call_tag, started)
        images = data.pop("images", None)
        if images:
            data["image_files"] = _save_images(agent.home, call_id, images)
            if args.json:
                data["images"] = images
    data["payments"] = payments
    data["paid_lovelace"] = sum(p["amount_lovelace"] for p in payments)
    data["fee_lovelace"] = sum(p["fee_lovelace"] or 0 for p in payments)
    _say_paid(payments)

    def human(d: dict[str, Any]) -> None:
        if "reply" in d:
            print(d["reply"])
        elif "report" in d:
            print(json.dumps(d["report"], indent=2))
        elif "image_files" in d:
            for path in d["image_files"]:
                print(f"image saved to {path}")
        else:
            print(json.dumps({k: v for k, v in d.items() if k != "payments"}, indent=2))

    emit(args.json, data, human)
    return 0


def _ask_at_terminal(question: str) -> bool:
    """Ask a yes/no question on the terminal (default no)."""
    sys.stderr.write(question + " [y/N] ")
    sys.stderr.flush()
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _call_payments(agent: Any, call_tag: str, started: float) -> list[dict[str, Any]]:
    """The ledger rows this call made (found by its tag), paid or not."""
    return [_payment_dict(r) for r in agent.ledger.rows(since=started - 1) if call_tag in r.tags]


def _say_paid(payments: list[dict[str, Any]]) -> None:
    for p in payments:
        if p["state"] in ("submitted", "settled", "unsettled"):
            print(f"paid {format_ada(p['amount_lovelace'])} ADA + fee {format_ada(p['fee_lovelace'] or 0)} ADA "
                  f"(payment {p['id']}, tx {p['tx_id']})", file=sys.stderr)


def _say_interrupted(payments: list[dict[str, Any]]) -> None:
    """Ctrl-C during a call: say what left the wallet and what becomes of it."""
    sent = [p for p in payments if p["state"] in ("submitted", "settled", "unsettled")]
    signed = [p for p in payments if p["state"] == "signed"]
    held = [p for p in payments if p["state"] == "reserved"]
    for p in sent:
        print(f"interrupted after paying {format_ada(p['amount_lovelace'])} ADA + fee "
              f"{format_ada(p['fee_lovelace'] or 0)} ADA (payment {p['id']}, tx {p['tx_id']}): the answer is lost, "
              "the payment stays in the ledger (`cardano-agent payments`) and counts against the budgets; "
              "it is never paid again.", file=sys.stderr)
    for p in signed:
        print(f"interrupted with payment {p['id']} signed but perhaps not sent (tx {p['tx_id']}): the next "
              "`cardano-agent run` checks the chain and sends the same transaction again or releases it; "
              "nothing is paid twice.", file=sys.stderr)
    for p in held:
        print(f"interrupted before paying: payment {p['id']} was only reserved and is released by the next "
              "`cardano-agent run`.", file=sys.stderr)
    if not payments:
        print("interrupted: nothing was paid", file=sys.stderr)


def _save_images(home: Any, call_id: str, images: list[str]) -> list[str]:
    import base64

    from agent.executor import _write

    folder = home / "results" / call_id
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, b64 in enumerate(images, start=1):
        path = folder / f"image-{n}.png"
        _write(path, base64.b64decode(b64))
        files.append(str(path))
    return files


def _needs_approval(agent: Any, args: argparse.Namespace, exc: Any) -> int:
    """A one-off call above the approval threshold: withdraw the parked approval, say how to queue it."""
    import shlex

    try:
        agent.approvals.deny(int(exc.approval_id), time.time())
    except Exception:  # noqa: BLE001 - already decided elsewhere: nothing to withdraw
        pass
    argv = ["cardano-agent", "job", "add", args.kind]
    for option, dest, _ in _FIELD_OPTIONS:
        value = getattr(args, dest)
        if value is not None and not (dest == "session_id" and str(value).startswith("call-")):
            argv += [option, str(value)]
    for flag, dest in (("--n", "n"),):
        if getattr(args, dest) is not None:
            argv += [flag, str(getattr(args, dest))]
    for flag, dest in (("--stream", "stream"), ("--structured", "structured"), ("--bypass-cache", "bypass_cache")):
        if getattr(args, dest):
            argv.append(flag)
    if args.kind == "http":
        argv.append(args.url or args.url_arg or "URL")
        for flag, dest in (("--method", "method"), ("--json-body", "json_body"), ("--data", "data")):
            if getattr(args, dest, None) is not None:
                argv += [flag, str(getattr(args, dest))]
        for header in getattr(args, "header", None) or []:
            argv += ["--header", header]
    if args.partner:
        argv += ["--partner", args.partner]
    cost = str(exc).split(" costs about ", 1)[-1].split(",", 1)[0] if " costs about " in str(exc) else "more"
    print(f"error: this call would cost about {cost}, above approve_above_ada in agent.toml; a one-off "
          "`call` does not wait for approval and paid nothing.\nQueue it as a job, approve it, and run it:\n"
          f"  {shlex.join(argv)}\n  cardano-agent run --until-idle      # the job then awaits approval\n"
          "  cardano-agent approvals ; cardano-agent approve ID ; cardano-agent run --until-idle",
          file=sys.stderr)
    return 1
