"""The outbox dispatcher: delivers webhook rows that job transitions committed.

A row is claimed by pushing its `next_attempt_at` past a short lease in its own transaction, so
several API processes can dispatch from one database without sending a row twice at once. A row
is retried with exponential backoff until delivered or `max_attempts` is reached (then `dead`).
The `webhook-id` is the row id on every attempt, so receivers can drop duplicates.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from diffusiond.auth.tenants import TenantService
from diffusiond.store.database import Database
from diffusiond.store.tables import OutboxRow
from diffusiond.webhooks.delivery import Outcome, post
from diffusiond.webhooks.formats import wrap
from diffusiond.webhooks.signing import signed_headers
from diffusiond.webhooks.ssrf import UrlPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    base_seconds: float = 1.0  # 1, 2, 4, ... capped: about 40 minutes in all
    max_seconds: float = 600.0
    claim_seconds: float = 60.0  # a claimed row is someone's for this long

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.base_seconds * 2 ** max(attempts - 1, 0), self.max_seconds))


@dataclass(frozen=True)
class Due:
    id: str
    tenant_id: str
    url: str
    payload: str
    attempts: int
    format: str = "standard"


class WebhookDispatcher:
    """A background thread that drains the outbox."""

    def __init__(self, db: Database, tenants: TenantService, policy: UrlPolicy, *,
                 retry: RetryPolicy | None = None, poll_interval: float = 1.0, batch: int = 20) -> None:
        self.db = db
        self.tenants = tenants
        self.policy = policy
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.batch = batch
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="diffusiond-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def notify(self) -> None:
        self.wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception:
                log.exception("webhook dispatcher failed")
                sent = 0
            if not sent:
                self.wake.wait(self.poll_interval)
                self.wake.clear()

    def run_once(self) -> int:
        """Claim and attempt every due row; returns how many were attempted."""
        due = self._claim()
        for row in due:
            self._record(row, self._attempt(row))
        return len(due)

    def _claim(self) -> list[Due]:
        now = datetime.now(UTC)
        due = select(OutboxRow.id).where(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= now)
        # Every job change wakes the dispatcher; most have no webhook. A read costs no write lock, so
        # look before taking one (on SQLite the write lock is shared with every submit).
        with self.db.read() as s:
            if s.scalar(due.limit(1)) is None:
                return []
        with self.db.session() as s:
            rows = list(s.scalars(
                select(OutboxRow).where(OutboxRow.status == "pending", OutboxRow.next_attempt_at <= now)
                .order_by(OutboxRow.created_at, OutboxRow.id).limit(self.batch).with_for_update(skip_locked=True)))
            for row in rows:
                row.next_attempt_at = now + timedelta(seconds=self.retry.claim_seconds)
            return [Due(r.id, r.tenant_id, r.url, r.payload, r.attempts, r.format) for r in rows]

    def _attempt(self, row: Due) -> Outcome:
        try:
            secret = self.tenants.get(row.tenant_id).webhook_secret
        except Exception as e:
            return Outcome(False, error=f"tenant: {e}")
        body, extra = wrap(row.format, row.id, row.payload)
        return post(self.policy, row.url, body, {**signed_headers(secret, row.id, body), **extra})

    def _record(self, due: Due, outcome: Outcome) -> None:
        now = datetime.now(UTC)
        with self.db.session() as s:
            row = s.get(OutboxRow, due.id, with_for_update=True)
            if row is None or row.status != "pending":
                return
            row.attempts = due.attempts + 1
            if outcome.ok:
                row.status, row.delivered_at, row.last_error = "delivered", now, None
                return
            row.last_error = (outcome.error or "failed")[:2000]
            if row.attempts >= self.retry.max_attempts:
                row.status = "dead"
                log.warning("webhook %s to %s dead after %d attempts: %s", row.id, row.url, row.attempts,
                            row.last_error)
            else:
                row.next_attempt_at = now + self.retry.delay(row.attempts)
