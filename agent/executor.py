"""Runs one job: the T API call for its kind, paid through the agent's wallet, and its result files.

A job that paid before a crash is resumed with the proof of that payment (never a new
transaction for the same call): the stored proof is handed to the x402 auth under the call's
request id, so the first request already carries ``X-Invoice-Id`` and ``X-Payment``. If the
server says that invoice was already consumed by our own transaction, the payment is marked
settled and the call is made afresh (the answer was lost in the crash, not the money).

A paid call the server answers "pending" does not wait in the worker: the executor raises
:class:`agent.runner.JobParked` and the runner parks the job. Resumed, the job sends the same
call (same request id) with the same proof: from the auth's memory, else from the ledger.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.faults import crash_point
from agent.jobs import render_markdown, report_paths
from agent.payer import JobContext, job_context
from agent.runner import JobOutcome

log = logging.getLogger(__name__)

MAX_SUMMARY_CHARS = 500


class TApiExecutor:
    """Executes queued jobs against the T API through an :class:`agent.app.Agent`.

    Args:
        agent: the open agent (config, wallet, ledger, job store).
        client_kwargs: extra ``TClient`` arguments (a transport in tests).
    """

    def __init__(self, agent: Any, **client_kwargs: Any) -> None:
        self.agent = agent
        self._client_kwargs = client_kwargs
        self._clients: dict[tuple[int, str | None], Any] = {}
        self._lock = threading.Lock()

    def client_for(self, partner: str | None) -> Any:
        """The ``TClient`` for ``partner`` in this thread (made once per thread and partner)."""
        key = (threading.get_ident(), partner)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self.agent.client(partner=partner, **self._client_kwargs)
                self._clients[key] = client
            return client

    def close(self) -> None:
        """Close every HTTP client this executor opened."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def execute(self, job: Any, *, worker_id: str) -> JobOutcome:
        """Run ``job`` and return its outcome; raise to fail or retry it (the runner decides)."""
        from agent.auth import SettlementPendingError, parking
        from agent.queue import AWAITING
        from agent.runner import JobParked

        request = dict(job.request)
        if job.kind == "chat" and not request.get("session_id"):
            request["session_id"] = f"job{job.id}-{uuid.uuid4().hex[:12]}"  # never the shared default session
        schedule = request.pop("_schedule", None)
        partner = request.pop("partner", None)
        client = self.client_for(partner)
        # A parked job resumes the very call it made: same request id, same proof.
        resuming = job.state == AWAITING and bool(job.request_id)
        request_id = job.request_id if resuming else f"job{job.id}-{uuid.uuid4().hex[:12]}"
        paid_before = self._reconcile_unsettled(client, job.id)
        # A job with no payment row has no proof to resume: its first attempt skips that read.
        resumed = ((self._held_proof(client, request_id) if resuming else None)
                   or (self._resume(client, job.id, request_id) if paid_before else None))
        store = self.agent.jobs

        def on_state(state: str) -> None:
            store.set_state(job.id, state, worker_id=worker_id, now=self.agent.clock())

        store.set_state(job.id, AWAITING if resuming else "running", worker_id=worker_id, now=self.agent.clock(),
                        request_id=request_id)
        ctx = JobContext(job_id=job.id, tags=tuple(job.tags), budget=job.budget, on_state=on_state)
        try:
            with job_context(ctx), parking():
                data = self._call_resuming(client, job, request, request_id, resumed)
        except SettlementPendingError as exc:
            raise JobParked(str(exc), retry_after_s=exc.retry_after_s) from None
        crash_point("after_call")
        return self._outcome(job, data, schedule=schedule)

    def _call_resuming(self, client: Any, job: Any, request: dict[str, Any], request_id: str,
                       resumed: Any) -> dict[str, Any]:
        from agent.auth import PaymentRejectedError

        try:
            return self.call(client, job.kind, request, request_id)
        except PaymentRejectedError:
            # x402 v2: the refused re-presentation is recorded (agent.x402v2_payer.refused);
            # what it paid is decided from the chain, and the call is made afresh.
            if resumed is None or (resumed.dialect == "t" and not self._consumed_by_us(
                    client, resumed.invoice_id, resumed.payment, int(resumed.payment_id))):
                raise
            log.info("job %s: invoice %s was consumed by our payment before the crash; calling afresh",
                     job.id, resumed.invoice_id)
            return self.call(client, job.kind, request, f"job{job.id}-{uuid.uuid4().hex[:12]}")

    # -- the call ---------------------------------------------------------------------------
    def call(self, client: Any, kind: str, request: dict[str, Any], request_id: str) -> dict[str, Any]:
        """Make the API call a job of ``kind`` stands for; return its JSON-able result."""
        if kind == "chat":
            if request.get("stream"):
                stream = client.chat_stream(request["message"], session_id=request.get("session_id"),
                                            request_id=request_id)
                text = "".join(event.text or "" for event in stream if event.type == "content")
                return {"reply": text, "streamed": True, "request_id": request_id}
            reply = client.chat(request["message"], session_id=request.get("session_id"),
                                structured=bool(request.get("structured")), request_id=request_id)
            return {"reply": reply.reply, "reply_json": reply.reply_json, "session_id": reply.session_id,
                    "request_id": reply.request_id}
        if kind == "token-analysis":
            report = client.token_analysis(request["token"], policy_id=request.get("policy_id"),
                                           asset_name_hex=request.get("asset_name_hex"),
                                           network=request.get("network", "cardano"),
                                           bypass_cache=bool(request.get("bypass_cache")), request_id=request_id)
            return {"report": report.data, "cached": report.cached, "request_id": report.request_id}
        if kind == "images-generate":
            result = client.images_generate(request["prompt"], size=request.get("size", "1024x1024"),
                                            n=int(request.get("n", 1)), request_id=request_id)
            return {"images": [base64.b64encode(img).decode() for img in result.images], "request_id": request_id}
        if kind == "http":
            from agent.http_job import http_call

            return http_call(self.agent, request, request_id, transport=self._client_kwargs.get("transport"))
        raise ValueError(f"unknown job kind {kind!r}")

    def _held_proof(self, client: Any, request_id: str) -> Any:
        """The proof the auth still remembers for the call sent as ``request_id``, if any."""
        if client.mode != "x402":
            return None
        return self.agent.x402_auth(partner=client._partner).proof_for(request_id)

    def _resume(self, client: Any, job_id: int, request_id: str) -> Any:
        if client.mode != "x402":
            return None
        payer = self.agent.payer()
        proof = payer.resume_proof(job_id)
        if proof is not None:
            log.info("job %s: resuming with the proof of invoice %s", job_id, proof.invoice_id)
            self.agent.x402_auth(partner=client._partner).remember(request_id, proof)
        return proof

    def _reconcile_unsettled(self, client: Any, job_id: int) -> bool:
        """Settle this job's payments that were refused only because the server had already used them.

        A crash after the server consumed our payment (its answer lost) leaves the row
        ``unsettled`` once the resumed call is told "consumed"; asking the server's payment
        status on every attempt settles it even if the process died before it could ask.
        Returns whether the job has any payment row at all.
        """
        if client.mode != "x402":
            return False
        rows = self.agent.ledger.by_job(job_id)
        for row in rows:
            if row.state == "unsettled" and row.tx_id and not row.invoice_id.startswith("x402v2:"):
                self._consumed_by_us(client, row.invoice_id, row.tx_id, row.id)
        return bool(rows)

    def _consumed_by_us(self, client: Any, invoice_id: str, payment: str, payment_id: int) -> bool:
        """True (and the row settled) if the server consumed ``invoice_id`` with our transaction."""
        try:
            status = client.payment_status(invoice_id)
        except Exception as exc:  # noqa: BLE001 - without an answer, assume the worst: not ours
            log.warning("could not ask the status of invoice %s: %s", invoice_id, exc)
            return False
        ours = status.tx_hash is not None and status.tx_hash in payment
        if ours and status.status in ("consumed", "confirmed"):
            row = self.agent.ledger.get(payment_id)
            if row.state in ("submitted", "unsettled"):
                self.agent.ledger.mark_settled(row.id, now=self.agent.clock())
                log.info("payment %s for invoice %s settled: the server had used it", row.id, invoice_id)
            return True
        return False

    # -- results ----------------------------------------------------------------------------
    def _outcome(self, job: Any, data: dict[str, Any], *, schedule: dict[str, Any] | None) -> JobOutcome:
        home: Path = self.agent.home
        paid = [r for r in self.agent.ledger.by_job(job.id) if r.paid]
        spent = {"payments": len(paid), "amount_lovelace": sum(r.amount_lovelace for r in paid),
                 "fee_lovelace": sum(r.fee_lovelace or 0 for r in paid)}
        images = data.pop("images", None)
        result_dir = home / "results"
        result_dir.mkdir(parents=True, exist_ok=True)
        if images:
            folder = result_dir / f"job-{job.id}"
            folder.mkdir(exist_ok=True)
            files = []
            for n, b64 in enumerate(images, start=1):
                path = folder / f"image-{n}.png"
                _write(path, base64.b64decode(b64))
                files.append(str(path))
            data["image_files"] = files
        document = {"job": job.id, "kind": job.kind, "request": job.request, "spent": spent, **data}
        result_path = result_dir / f"job-{job.id}.json"
        _write(result_path, json.dumps(document, indent=2, default=str).encode())
        if schedule and schedule.get("report"):
            fire_time = datetime.fromisoformat(schedule["fire_time"]).astimezone(timezone.utc)
            json_path, md_path = report_paths(home, schedule["name"], fire_time)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            _write(json_path, json.dumps(document, indent=2, default=str).encode())
            title = f"{schedule['name']}: {job.kind} {job.request.get('token') or ''}".strip()
            meta = {"fired": fire_time.isoformat(), "job": job.id,
                    "paid": f"{spent['amount_lovelace'] / 1e6:.6f} ADA + {spent['fee_lovelace'] / 1e6:.6f} fee"}
            _write(md_path, render_markdown(title, data.get("report", data), meta=meta).encode())
            result_path = json_path
        summary = {k: v for k, v in data.items() if k in ("reply", "cached", "request_id", "image_files", "status", "body_file")}
        if isinstance(summary.get("reply"), str) and len(summary["reply"]) > MAX_SUMMARY_CHARS:
            summary["reply"] = summary["reply"][:MAX_SUMMARY_CHARS] + "…"
        summary["spent"] = spent
        return JobOutcome(result=summary, result_path=str(result_path))


def _write(path: Path, data: bytes) -> None:
    """Write a file atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
