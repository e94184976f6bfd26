"""The delivery worker: an asyncio task in each server process (app lifespan) that takes
due notifications from the queue (queue.py, one conditional update per claim) and delivers
them, up to `delivery.workers` at once, so a dead endpoint or mail server holds one slot
for at most `timeout_s` and everything else goes on. A failure is retried after the
table's backoff (`delivery.backoff_s`); after the last one the notification is kept as
`failed` and its rest-hook Subscription goes to status `error`
(http://hl7.org/fhir/uv/subscriptions-backport/errors.html).

Besides events it sends each new Subscription's handshake (status requested -> active on
success; events wait until then) and the heartbeats of subscriptions with a heartbeat
period that had no traffic for that long. Logs name subscriptions and reasons only: no
address, no content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from pymongo.errors import PyMongoError

from fhir_server.notify import backport, endpoints
from fhir_server.notify.delivery import Failed, message, post_hook, send_email, write_outbox
from fhir_server.notify.queue import NotifyStore, now_utc
from fhir_server.notify.table import NotificationTable

log = logging.getLogger("fhir_server.notify")
Doc = dict[str, Any]
# Seconds an event waits while its subscription's handshake is still pending.
HANDSHAKE_WAIT_S = 0.2
# Polling slows to this when no work was seen for IDLE_AFTER_S (an idle server costs little).
IDLE_POLL_S = 0.5
IDLE_AFTER_S = 30.0


def portal_url(base_url: str) -> str:
    """`{base}/portal/`: the server's public base without the FHIR path."""
    return base_url.removesuffix("/fhir").rstrip("/") + "/portal/"


class Worker:
    def __init__(self, ctx: Any, table: NotificationTable) -> None:
        self.ctx = ctx
        self.table = table
        self.store = NotifyStore(ctx.store.db)
        self.http = httpx.AsyncClient(timeout=table.delivery.timeout_s, follow_redirects=False)
        self._free = table.delivery.workers  # delivery slots not in use
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._last_work = 0.0

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="notify-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="notify-heartbeat"),
        ]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming, let deliveries in flight finish for a while, hand back the rest."""
        self._stopping.set()
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=timeout_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        await self.http.aclose()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _poll_s(self) -> float:
        loop = asyncio.get_running_loop()
        busy = loop.time() - self._last_work < IDLE_AFTER_S
        fast = self.table.delivery.poll_ms / 1000
        return fast if busy else max(fast, IDLE_POLL_S)

    async def _claim_loop(self) -> None:
        """Claim as many as there are free slots, start each, and claim again as soon as a
        slot frees up; poll only an empty queue."""
        lease = self.table.delivery.lease_s
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if self._free <= 0:
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), IDLE_POLL_S)
                continue
            try:
                items = await self.store.claim(lease, self._free)
            except PyMongoError as exc:
                log.warning("notification queue unavailable (%s); retrying", type(exc).__name__)
                await self._sleep(1.0)
                continue
            if not items:
                await self._sleep(self._poll_s())
                continue
            self._last_work = loop.time()
            for item in items:
                self._free -= 1
                task = asyncio.create_task(self._deliver(item))
                self._inflight.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._free += 1
        self._freed.set()

    async def _deliver(self, item: Doc) -> None:
        try:
            if item["kind"] == "email":
                await self._email(item)
            else:
                await self._hook(item)
        except Failed as exc:
            await self._failed(item, str(exc))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.store.release(item)
            raise
        except PyMongoError as exc:
            # The claim lapses and the notification is taken again: nothing is lost.
            log.warning("notification %s left to its lease (%s)", item["_id"], type(exc).__name__)
        except Exception:
            log.exception("notification %s failed unexpectedly", item["_id"])
            await self._failed(item, "the server failed to send it")

    async def _failed(self, item: Doc, reason: str) -> None:
        attempts = int(item.get("attempts", 0)) + 1
        wait = self.table.delivery.retry_after(attempts)
        if wait is None:
            await self.store.give_up(item, "failed", reason)
            if item.get("sub"):
                await self.store.set_status(item["sub"], "error", error=reason)
            log.warning(
                "notification %s given up after %d attempts: %s", item["_id"], attempts, reason
            )
            return
        await self.store.retry(item, now_utc() + timedelta(seconds=wait), reason)

    async def _email(self, item: Doc) -> None:
        settings = self.ctx.settings
        msg = message(
            self.table.email_for(item.get("topic")),
            str(item["to"]),
            portal_url(self.ctx.base_url),
            item["_id"],
        )
        smtp_url = getattr(settings, "smtp_url", "")
        if smtp_url:
            await send_email(smtp_url, msg, self.table.delivery.timeout_s)
        elif settings.production:
            raise Failed("no SMTP_URL is set")
        else:
            folder = Path(settings.data_dir) / "outbox"
            await asyncio.to_thread(write_outbox, folder, item["_id"], msg)
        await self.store.delivered(item)

    async def _hook(self, item: Doc) -> None:
        kind = item["type"]
        fresh = kind == "event-notification" and item.get("event") is None
        # A first try of an event takes its number from an active subscription and reads it
        # in the same update; anything else (or a subscription not active) reads it.
        sub = await self.store.take_event(item["sub"]) if fresh else None
        if sub is not None:
            item["event"] = int(sub["events"])
        else:
            sub = await self.store.subscription(item["sub"])
        now = now_utc()
        if sub is None or sub["status"] not in ("requested", "active"):
            await self.store.give_up(item, "cancelled", "the subscription is gone or not active")
            return
        if sub.get("end") is not None and _aware(sub["end"]) <= now:
            await self.store.set_status(sub["_id"], "off")
            await self.store.give_up(item, "cancelled", "the subscription ended")
            return
        if kind != "handshake" and sub["status"] == "requested":
            await self.store.defer(item, now + timedelta(seconds=HANDSHAKE_WAIT_S))
            return
        event = None
        events = int(sub.get("events", 0))
        if kind == "event-notification":
            # Kept with the notification by its retry or its delivery (queue.py), so a
            # retried event keeps its number.
            number = item.get("event")
            if number is None:
                number = await self.store.next_event_number(sub["_id"]) or events + 1
                item["event"] = number
            events = max(events, int(number))
            focus = item.get("focus") if sub.get("payload") == "id-only" else None
            event = (int(number), item["created"], focus)
        base = self.ctx.base_url
        status = backport.status_parameters(
            base=base,
            sub_id=sub["_id"],
            topic=sub["topic"],
            status="active" if kind != "handshake" else sub["status"],
            kind=kind,
            events=events,
            event=event,
        )
        bundle = backport.notification_bundle(
            bundle_id=item["_id"],
            now=now,
            base=base,
            status=status,
            sub_id=sub["_id"],
            focus=event[2] if event is not None else None,
        )
        if self.ctx.settings.production and await endpoints.refused(
            sub["endpoint"], self.table.channel.denied_networks
        ):
            raise Failed("the endpoint resolves into a network this server does not deliver to")
        await post_hook(
            self.http,
            sub["endpoint"],
            list(sub.get("headers") or []),
            sub.get("mime") or "application/fhir+json",
            bundle,
        )
        await self.store.delivered(item)
        if kind == "handshake":
            await self.store.set_status(sub["_id"], "active", only_from="requested")
        await self.store.push_heartbeat(sub["_id"], sub.get("heartbeat_s"), now)

    async def _heartbeat_loop(self) -> None:
        every = self.table.delivery.heartbeat_scan_s
        while not self._stopping.is_set():
            try:
                now = now_utc()
                for sub in await self.store.due_heartbeats(now):
                    if await self.store.take_heartbeat(sub, now):
                        beat = NotifyStore.item("rest-hook", "heartbeat", sub=sub["_id"])
                        await self.store.enqueue([beat], None)
            except PyMongoError as exc:
                log.warning("heartbeat scan failed (%s); retrying", type(exc).__name__)
            await self._sleep(every)


def _aware(t: Any) -> Any:
    from datetime import UTC

    return t if getattr(t, "tzinfo", None) is not None else t.replace(tzinfo=UTC)
