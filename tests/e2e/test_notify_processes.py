"""Two `fhir-server` processes on one database deliver each notification once.

Both run the delivery worker against one queue (fhir_server/notify/queue.py claims with a
conditional update and a lease); messages are sent to both at once. The rest-hook receiver
and the SMTP server (real ones, tests/integration/portal/receivers.py) each get every
notification exactly once.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import shared_db_env
from tests.integration.portal.receivers import Hook, Mailbox, notification_type, status_of
from tests.integration.portal.test_notifications import PATIENT_TOPIC, message, subscription

N = 16
JSON = {"Content-Type": "application/fhir+json"}
EMAIL = "pat.two@example.org"


def _focus(bundle: dict) -> str:
    parts = {p["name"]: p for p in status_of(bundle)["notification-event"]["part"]}
    return str(parts["focus"]["valueReference"]["reference"]).rsplit("/", 1)[-1]


def test_two_processes_deliver_each_notification_once(live_server, mongo_uri):
    hook, mail = Hook().start(), Mailbox().start()
    try:
        env = {**shared_db_env(mongo_uri), "SMTP_URL": mail.url}
        a, b = live_server(**env), live_server(**env)
        patient = {
            "resourceType": "Patient",
            "id": "two",
            "telecom": [{"system": "email", "value": EMAIL}],
        }
        assert httpx.put(f"{a.base}/Patient/two", json=patient, headers=JSON).status_code == 201
        sub = subscription(PATIENT_TOPIC, hook.url, filt="Communication?recipient=Patient/two")
        r = httpx.post(f"{a.base}/Subscription", json=sub, headers=JSON)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 30
        while not hook.of_type("handshake") and time.monotonic() < deadline:
            time.sleep(0.05)

        def send(i: int) -> str:
            base = (a, b)[i % 2].base
            body = message("Patient/two", subject="Patient/two", text=f"message {i}")
            r = httpx.post(f"{base}/Communication", json=body, headers=JSON, timeout=60)
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        with ThreadPoolExecutor(8) as pool:
            sent = set(pool.map(send, range(N)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            len(hook.of_type("event-notification")) < N or len(mail.to(EMAIL)) < N
        ):
            time.sleep(0.1)
        time.sleep(2.0)  # a second delivery of anything would have come by now
        events = [x for x in hook.received if notification_type(x) == "event-notification"]
        assert sorted(_focus(e) for e in events) == sorted(sent)
        assert len(hook.of_type("handshake")) == 1
        assert len(mail.to(EMAIL)) == N
        numbers = sorted(
            int(
                {p["name"]: p for p in status_of(e)["notification-event"]["part"]}["event-number"][
                    "valueString"
                ]
            )
            for e in events
        )
        assert numbers == list(range(1, N + 1))
    finally:
        hook.stop()
        mail.stop()
