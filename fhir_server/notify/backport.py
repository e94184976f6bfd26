"""The R4 Subscriptions Backport on the wire: reading a topic-based R4 Subscription and
writing the notification Bundles and status Parameters it promises.

http://hl7.org/fhir/uv/subscriptions-backport/ (STU 1.1):
- a Subscription's `criteria` is the topic canonical; its filters are
  `_criteria.extension[backport-filter-criteria]` (components.html#subscription-filters);
- `channel._payload.extension[backport-payload-content]` is `empty | id-only | full-resource`
  (payloads.html); `channel.extension[backport-heartbeat-period]` the heartbeat in seconds;
- a notification is a Bundle of type `history` whose first entry is the
  `backport-subscription-status-r4` Parameters (notifications.html);
- `$status` answers a `searchset` Bundle of those Parameters
  (OperationDefinition-backport-subscription-status.html).

Pure functions of FHIR JSON; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import Issue, Unprocessable
from fhir_server.notify.table import NotificationTable, Topic

Doc = dict[str, Any]
SD = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PROFILE = SD + "backport-subscription"
STATUS_PROFILE = SD + "backport-subscription-status-r4"
FILTER = SD + "backport-filter-criteria"
PAYLOAD_CONTENT = SD + "backport-payload-content"
HEARTBEAT = SD + "backport-heartbeat-period"
TIMEOUT = SD + "backport-timeout"
MAX_COUNT = SD + "backport-max-count"
TOPIC_CANONICAL = SD + "capabilitystatement-subscriptiontopic-canonical"
SERVER_CAPABILITY = (
    "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/"
    "backport-subscription-server-r4"
)
STATUS_OPERATION = (
    "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"
)


@dataclass(frozen=True)
class Requested:
    """What a client asked for, checked against the table (not yet against the caller)."""

    topic: Topic
    filter_value: str | None  # the reference the topic's filter parameter names
    endpoint: str
    payload: str  # empty | id-only
    mime_type: str
    headers: tuple[str, ...]
    heartbeat_s: int | None
    end: str | None


def _extensions(node: Any, url: str) -> list[Doc]:
    if not isinstance(node, dict):
        return []
    return [e for e in node.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _refuse(reason: str, expression: str) -> Unprocessable:
    issue = Issue(code="business-rule", diagnostics=reason, expression=(expression,))
    return Unprocessable(reason, code="business-rule", issues=[issue])


def read_subscription(
    resource: Doc, table: NotificationTable, *, production: bool = False
) -> Requested:
    """Check a Subscription against the backport and the table; 422 with the element."""
    criteria = resource.get("criteria")
    topic = table.topic(criteria) if isinstance(criteria, str) else None
    if topic is None:
        known = ", ".join(t.url for t in table.topics)
        raise _refuse(
            f"Subscription.criteria must be one of this server's topics ({known})",
            "Subscription.criteria",
        )
    filters = _extensions(resource.get("_criteria"), FILTER)
    if len(filters) > 1:
        raise _refuse("this server takes at most one filter criteria", "Subscription._criteria")
    value = _filter_value(filters[0].get("valueString"), topic) if filters else None
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        raise _refuse("Subscription.channel is required", "Subscription.channel")
    ctype = (channel.get("type") or "") if isinstance(channel.get("type"), str) else ""
    if ctype not in table.channel.types:
        raise _refuse(
            f"channel.type must be one of {sorted(table.channel.types)}",
            "Subscription.channel.type",
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not _good_endpoint(endpoint, production, table):
        need = "https" if production and table.channel.https_only_in_production else "http(s)"
        raise _refuse(
            f"channel.endpoint must be an absolute {need} URL", "Subscription.channel.endpoint"
        )
    mime = channel.get("payload") or "application/fhir+json"
    if mime not in table.channel.mime_types:
        raise _refuse(
            f"channel.payload must be one of {sorted(table.channel.mime_types)}",
            "Subscription.channel.payload",
        )
    contents = _extensions(channel.get("_payload"), PAYLOAD_CONTENT)
    content = contents[0].get("valueCode") if contents else "id-only"
    if content not in table.channel.payloads:
        # full-resource would send a patient's message to whatever the endpoint is.
        raise _refuse(
            f"payload content {content!r} is not offered: use one of "
            f"{sorted(table.channel.payloads)} (an endpoint never gets resource content)",
            "Subscription.channel._payload",
        )
    headers = channel.get("header") or []
    if not isinstance(headers, list) or not all(isinstance(h, str) and ":" in h for h in headers):
        raise _refuse('channel.header entries are "Name: value" strings', "Subscription.channel")
    beats = _extensions(channel, HEARTBEAT)
    heartbeat = beats[0].get("valueUnsignedInt") if beats else None
    ch = table.channel
    if heartbeat is not None and (
        not isinstance(heartbeat, int) or not ch.heartbeat_min_s <= heartbeat <= ch.heartbeat_max_s
    ):
        raise _refuse(
            f"the heartbeat period must be {ch.heartbeat_min_s} to {ch.heartbeat_max_s} seconds",
            "Subscription.channel.extension",
        )
    end = resource.get("end")
    return Requested(
        topic=topic,
        filter_value=value,
        endpoint=endpoint,
        payload=str(content),
        mime_type=str(mime),
        headers=tuple(headers),
        heartbeat_s=heartbeat,
        end=end if isinstance(end, str) else None,
    )


def _filter_value(raw: Any, topic: Topic) -> str:
    """The reference named by `[type]?[parameter]=[Type/id]`, the topic's one filter."""
    where = "Subscription._criteria"
    if not isinstance(raw, str) or "?" not in raw:
        raise _refuse(f"a filter criteria looks like {topic.resource}?{topic.parameter}=...", where)
    rt, query = raw.split("?", 1)
    pairs = parse_qsl(query, keep_blank_values=True)
    if rt != topic.resource or len(pairs) != 1 or pairs[0][0] != topic.parameter:
        raise _refuse(
            f"topic {topic.url} is filtered by {topic.resource}?{topic.parameter}= only", where
        )
    value = pairs[0][1]
    if "," in value or value.count("/") != 1:
        raise _refuse(f"the {topic.parameter} filter names one reference Type/id", where)
    return value


def _good_endpoint(url: str, production: bool, table: NotificationTable) -> bool:
    parts = urlsplit(url)
    schemes = (
        {"https"}
        if production and table.channel.https_only_in_production
        else {
            "http",
            "https",
        }
    )
    return parts.scheme in schemes and bool(parts.hostname)


# --- what the server sends ---------------------------------------------------------------


def status_parameters(
    *,
    base: str,
    sub_id: str,
    topic: str,
    status: str,
    kind: str,
    events: int,
    event: tuple[int, datetime, str | None] | None = None,
    error: str | None = None,
) -> Doc:
    """The backport-subscription-status-r4 Parameters. `event`: (number, time, focus
    reference or None for an `empty` payload)."""
    params: list[Doc] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub_id}"}},
        {"name": "topic", "valueCanonical": topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        # R4 has no integer64: the backport carries the count as a string.
        {"name": "events-since-subscription-start", "valueString": str(events)},
    ]
    if event is not None:
        number, when, focus = event
        parts: list[Doc] = [
            {"name": "event-number", "valueString": str(number)},
            {"name": "timestamp", "valueInstant": _instant(when)},
        ]
        if focus is not None:
            parts.append({"name": "focus", "valueReference": {"reference": f"{base}/{focus}"}})
        params.append({"name": "notification-event", "part": parts})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": params,
    }


def notification_bundle(
    *, bundle_id: str, now: datetime, base: str, status: Doc, sub_id: str, focus: str | None
) -> Doc:
    """A notification: a `history` Bundle, the status Parameters first; for `id-only` the
    focus as an entry with its URL and no resource (payloads.html#id-only)."""
    entries: list[Doc] = [
        {
            "fullUrl": f"urn:uuid:{bundle_id}",
            "resource": status,
            "request": {"method": "GET", "url": f"Subscription/{sub_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if focus is not None:
        rt = focus.split("/", 1)[0]
        entries.append(
            {
                "fullUrl": f"{base}/{focus}",
                "request": {"method": "POST", "url": rt},
                "response": {"status": "201"},
            }
        )
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "history",
        "timestamp": _instant(now),
        "entry": entries,
    }


def _instant(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
