"""The console's HTTP server: the standard library's ThreadingHTTPServer, no framework.

Access rules, checked before any page:

- Bound to loopback by default. Any other address needs a token (``CARDANO_AGENT_CONSOLE_TOKEN``);
  when a token is set it is required whatever the address: ``Authorization: Bearer``, or the
  HttpOnly cookie that ``/login`` sets.
- The ``Host`` header must name this server (a loopback name, or the bound address): a page on
  another site that rebinds its DNS name to 127.0.0.1 is refused.
- Every POST must come from this origin (``Origin``/``Sec-Fetch-Site``) and carry the per-server
  CSRF token (form field ``csrf`` or header ``X-CSRF-Token``); a cross-site POST changes nothing.
- ``read_only`` refuses every POST that would decide something.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from agent.console import pages
from agent.errors import AgentError, ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "CARDANO_AGENT_CONSOLE_TOKEN"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COOKIE = "cardano_agent_console"
JOB_STATES = ("queued", "running", "paying", "awaiting_settlement", "done", "failed", "cancelled")
LEDGER_STATES = ("reserved", "signed", "submitted", "settled", "refused", "unsettled", "released")
MAX_BODY = 16_384


class RequestRefused(Exception):
    """A request refused before it reached the agent: status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console listens and who may use it."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    read_only: bool = False
    chain: bool = True
    """Ask the chain for the balance (overview, /metrics); False for offline use."""

    def check(self) -> None:
        """Refuse a non-loopback address without a token (ConfigError)."""
        if self.host not in LOOPBACK and not self.token:
            raise ConfigError(f"serving on {self.host} (not loopback) needs a token: set {TOKEN_ENV}")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError(f"{TOKEN_ENV} must be at least 16 characters")


class ConsoleServer:
    """The console for one agent: ``start()`` serves in a thread, ``serve_forever()`` in this one."""

    def __init__(self, agent: Any, settings: ConsoleSettings, *, runner: Any = None) -> None:
        settings.check()
        self.agent = agent
        self.settings = settings
        self.csrf = secrets.token_urlsafe(32)
        from agent.metrics import registry_for

        self.registry = registry_for(agent, runner=runner, chain=settings.chain)
        self.httpd = _Httpd((settings.host, settings.port), _Handler)
        self.httpd.console = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self) -> "ConsoleServer":
        """Serve in a daemon thread (tests, ``run --metrics-port``)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="console", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- access checks ------------------------------------------------------------------------
    def allowed_hosts(self) -> set[str]:
        port = self.port
        names = set(LOOPBACK) | {self.settings.host}
        return {f"{n}:{port}" if ":" not in n else f"[{n}]:{port}" for n in names} | names

    def authorized(self, headers: Any) -> bool:
        token = self.settings.token
        if not token:
            return True
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].encode(), token.encode()):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie is no cookie
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self.session_value().encode())

    def session_value(self) -> str:
        """The cookie value: derived from the token, so the token itself is never stored in the browser."""
        return hmac.new((self.settings.token or "").encode(), b"console-session", "sha256").hexdigest()

    def same_origin(self, headers: Any) -> bool:
        site = headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return False
        origin = headers.get("Origin")
        if origin is None:
            return True  # not a browser's cross-site form (browsers send Origin on POST); the CSRF token decides
        if origin == "null":
            return False
        return urlsplit(origin).netloc in self.allowed_hosts()


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    console: ConsoleServer


class _Handler(BaseHTTPRequestHandler):
    server: _Httpd
    server_version = "cardano-agent-console"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("console: " + format, *args)

    # -- dispatch -------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        console = self.server.console
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        wants_json = url.path.startswith("/api/")
        try:
            if self.headers.get("Host") not in console.allowed_hosts():
                raise RequestRefused(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host: this console answers only "
                                     "to its own address")
            form = self._form() if method == "POST" else {}
            if url.path == "/login":
                self._login(method, form)
                return
            if not console.authorized(self.headers):
                if wants_json or url.path == "/metrics" or method == "POST":
                    raise RequestRefused(HTTPStatus.UNAUTHORIZED, "a valid console token is required")
                self._redirect("/login")
                return
            if method == "POST":
                self._post(url.path, form, wants_json)
                return
            self._get(url.path, query, wants_json)
        except RequestRefused as exc:
            self._refuse(exc.status, str(exc), wants_json)
        except AgentError as exc:
            self._refuse(HTTPStatus.CONFLICT if "already" in str(exc) else HTTPStatus.BAD_REQUEST, str(exc),
                         wants_json)
        except Exception:  # noqa: BLE001 - one line to the browser; the details go to the log
            log.exception("console: %s %s failed", method, url.path)
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the agent log)", wants_json)

    def _get(self, path: str, query: dict[str, str], wants_json: bool) -> None:
        agent = self.server.console.agent
        settings = self.server.console.settings
        if path == "/metrics":
            from agent.metrics import render

            exposition, ctype = render(self.server.console.registry)
            self._send(HTTPStatus.OK, exposition, ctype)
            return
        api: dict[str, Callable[[], Any]] = {
            "/api/status": lambda: agent.status(offline=not settings.chain),
            "/api/budgets": agent.budget_usage,
            "/api/spend": lambda: agent.spend(group_by=query.get("by", "day")),
            "/api/payments": lambda: agent.payments(state=query.get("state") or None,
                                                    limit=_int(query.get("limit"), 100)),
            "/api/jobs": lambda: agent.list_jobs(state=query.get("state") or None, tag=query.get("tag") or None,
                                                 limit=_int(query.get("limit"), 50)),
            "/api/approvals": agent.pending_approvals,
            "/api/schedules": agent.schedules,
            "/api/csrf": lambda: {"csrf": self.server.console.csrf},
        }
        if path in api:
            self._json(HTTPStatus.OK, api[path]())
            return
        if path.startswith("/api/jobs/"):
            self._json(HTTPStatus.OK, agent.job_detail(_path_id(path, "/api/jobs/")))
            return
        message, error = query.get("msg"), query.get("err")
        ro = settings.read_only
        if path == "/":
            since = agent.clock() - 30 * 86_400
            body = pages.overview(agent.status(offline=not settings.chain), agent.budget_usage(),
                                  agent.spend(since=since, group_by="day"))
            self._page("Overview", path, body, message, error)
        elif path == "/jobs":
            state, tag = query.get("state") or None, query.get("tag") or None
            body = pages.jobs_page(agent.list_jobs(state=state, tag=tag, limit=_int(query.get("limit"), 100)),
                                   state=state, tag=tag, states=JOB_STATES)
            self._page("Jobs", path, body, message, error)
        elif path.startswith("/jobs/"):
            job_id = _path_id(path, "/jobs/")
            self._page(f"Job {job_id}", "/jobs", pages.job_page(agent.job_detail(job_id)), message, error)
        elif path == "/payments":
            state = query.get("state") or None
            body = pages.payments_page(agent.payments(state=state, limit=_int(query.get("limit"), 200)),
                                       state=state, states=LEDGER_STATES)
            self._page("Payments", path, body, message, error)
        elif path == "/approvals":
            body = pages.approvals_page(agent.pending_approvals(), csrf=self.server.console.csrf, read_only=ro)
            self._page("Approvals", path, body, message, error)
        elif path == "/schedules":
            self._page("Schedules", path, pages.schedules_page(agent.schedules()), message, error)
        else:
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"no page {path}")

    def _post(self, path: str, form: dict[str, str], wants_json: bool) -> None:
        console = self.server.console
        if not console.same_origin(self.headers):
            raise RequestRefused(HTTPStatus.FORBIDDEN, "cross-site request refused: nothing was changed")
        sent = form.get("csrf") or self.headers.get("X-CSRF-Token") or ""
        if not hmac.compare_digest(sent.encode(), console.csrf.encode()):
            raise RequestRefused(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token: nothing was changed")
        if console.settings.read_only:
            raise RequestRefused(HTTPStatus.FORBIDDEN, "the console is read-only: nothing was changed")
        prefix = "/api/approvals/" if wants_json else "/approvals/"
        rest = path.removeprefix(prefix) if path.startswith(prefix) else ""
        approval, _, verb = rest.partition("/")
        if verb not in ("approve", "deny") or not approval.isdigit():
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"no action {path}")
        try:
            decide = console.agent.approve if verb == "approve" else console.agent.deny
            data = decide(int(approval))
        except AgentError as exc:
            if wants_json:
                raise
            self._redirect("/approvals?" + _qs(err=str(exc)))
            return
        if wants_json:
            self._json(HTTPStatus.OK, data)
            return
        done = "approved" if verb == "approve" else "denied"
        job = data["job"]
        tail = ""
        if job is not None:
            tail = (f"; job {job['id']} queued again" if job.get("requeued")
                    else f"; job {job['id']} is {job['state'] or 'gone'}")
        self._redirect("/approvals?" + _qs(msg=f"{done} {data['approval']['id']}{tail}"))

    def _login(self, method: str, form: dict[str, str]) -> None:
        console = self.server.console
        if method == "GET":
            self._send(HTTPStatus.OK, pages.login_page().encode(), "text/html; charset=utf-8")
            return
        if not console.same_origin(self.headers):
            raise RequestRefused(HTTPStatus.FORBIDDEN, "cross-site request refused")
        token = console.settings.token
        if not token or not hmac.compare_digest(form.get("token", "").encode(), token.encode()):
            self._send(HTTPStatus.UNAUTHORIZED, pages.login_page(error="wrong token").encode(),
                       "text/html; charset=utf-8")
            return
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", f"{COOKIE}={console.session_value()}; HttpOnly; SameSite=Strict; Path=/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- reading and writing ---------------------------------------------------------------------
    def _form(self) -> dict[str, str]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length > MAX_BODY:
            raise RequestRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        raw = self.rfile.read(length) if length else b""
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                raise RequestRefused(HTTPStatus.BAD_REQUEST, "body is not JSON") from None
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}

    def _page(self, title: str, path: str, body: str, message: str | None, error: str | None) -> None:
        html = pages.layout(title, path, body, read_only=self.server.console.settings.read_only,
                            message=message, error=error)
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _refuse(self, status: int, message: str, wants_json: bool) -> None:
        if wants_json or self.path.startswith("/metrics"):
            self._json(status, {"error": message})
            return
        html = pages.layout("Refused", "", "", read_only=False, error=message)
        self._send(status, html.encode(), "text/html; charset=utf-8")

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                         "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
        self.send_header("Referrer-Policy", "same-origin")  # no-referrer makes Chromium send Origin: null
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _int(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise RequestRefused(HTTPStatus.BAD_REQUEST, f"not a number: {text!r}")
    return int(text)


def _path_id(path: str, prefix: str) -> int:
    raw = path.removeprefix(prefix).strip("/")
    if not raw.isdigit():
        raise RequestRefused(HTTPStatus.NOT_FOUND, f"no page {path}")
    return int(raw)


def _qs(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)
