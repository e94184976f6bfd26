"""Reading a backport Subscription (pure): what is refused and why."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.errors import Unprocessable
from fhir_server.notify import backport
from fhir_server.notify.table import load_table

TABLE = load_table()
TOPIC = TABLE.topics[0]


def sub(**channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "r",
        "criteria": TOPIC.url,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:1/h", **channel},
    }


def test_defaults_are_id_only_fhir_json() -> None:
    got = backport.read_subscription(sub(), TABLE)
    assert (got.payload, got.mime_type, got.filter_value) == (
        "id-only",
        "application/fhir+json",
        None,
    )


def test_filter_and_heartbeat_are_read() -> None:
    body = sub(extension=[{"url": backport.HEARTBEAT, "valueUnsignedInt": 60}])
    body["_criteria"] = {
        "extension": [{"url": backport.FILTER, "valueString": "Communication?recipient=Patient/p1"}]
    }
    got = backport.read_subscription(body, TABLE)
    assert (got.filter_value, got.heartbeat_s) == ("Patient/p1", 60)


@pytest.mark.parametrize(
    "body",
    [
        {**sub(), "criteria": "Communication?recipient=Patient/p1"},  # R4 criteria, not a topic
        sub(
            _payload={
                "extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "full-resource"}]
            }
        ),
        sub(type="email"),
        sub(endpoint="file:///etc/passwd"),
        sub(payload="application/xml"),
        sub(extension=[{"url": backport.HEARTBEAT, "valueUnsignedInt": 1}]),
        sub(header=["no colon"]),
        {
            **sub(),
            "_criteria": {
                "extension": [
                    {
                        "url": backport.FILTER,
                        "valueString": "Communication?recipient=Patient/a,Patient/b",
                    }
                ]
            },
        },
    ],
)
def test_refused_with_the_element(body: dict[str, Any]) -> None:
    with pytest.raises(Unprocessable) as err:
        backport.read_subscription(body, TABLE)
    issue = err.value.issues[0]
    assert issue.code == "business-rule" and issue.expression


def test_production_wants_https() -> None:
    with pytest.raises(Unprocessable):
        backport.read_subscription(sub(), TABLE, production=True)
    assert backport.read_subscription(sub(endpoint="https://h/x"), TABLE, production=True)
