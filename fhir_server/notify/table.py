"""The notifications table (profiles/portal/notifications.json), parsed fail-fast.

Topics are data, as the R4 Subscriptions Backport has them: a canonical URL, the resource
and interaction that trigger it, and the one filter parameter a Subscription narrows it by
(http://hl7.org/fhir/uv/subscriptions-backport/components.html#subscription-filters).
`names` says whom that filter must name for the subscription to be the caller's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.notify.endpoints import Network, parse_networks

TABLE = Path(__file__).resolve().parents[2] / "profiles" / "portal" / "notifications.json"
# Whom a topic's filter may name: the caller's own Patient, or a pool the caller is in.
FILTER_NAMES = frozenset({"self", "member-pool"})
SUBSCRIBERS = frozenset({"Patient", "Practitioner"})
CHANNELS = frozenset({"rest-hook"})
PAYLOADS = frozenset({"empty", "id-only"})


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    description: str
    resource: str
    interaction: str
    parameter: str
    names: str  # self | member-pool
    about: str  # the element naming the patient the resource is about
    requires: str  # an element the resource must carry to fire the topic
    subscribers: frozenset[str]
    # The workflow that fires the topic itself ("" : the notifications workflow, on the
    # trigger above): results-available is fired by results release, which knows holds.
    fired_by: str = ""
    # The topic's own email (None: the table's message email); never health information.
    email: Email | None = None
    # The element of the resource that names the subscriber (default: the filter parameter,
    # as Communication.recipient is both); e.g. Task.for for the `patient` parameter.
    element: str = ""
    # A transition trigger (None: every write of `interaction`), e.g. a refill Task entering
    # `completed`: fires once, on the write that makes the change, never on later updates.
    when: Transition | None = None
    # Also tell the RelatedPersons of the patient `about` names (subscribers.recipient admits
    # only a parent of a child under the restricted age; never for an adolescent).
    proxies: bool = False

    @property
    def names_element(self) -> str:
        return self.element or self.parameter

    def fires(self, resource: Any, old: Any = None) -> bool:
        """Whether this write of a resource of the topic's type fires the topic."""
        if not isinstance(resource, dict) or not resource.get(self.requires):
            return False
        return self.when is None or self.when.entered(resource, old)


@dataclass(frozen=True)
class Transition:
    """`element` entered one of `to` in this write (it was elsewhere, or the resource is
    new), on a resource whose `code_element` (a CodeableConcept) carries `coding`."""

    element: str
    to: frozenset[str]
    code_element: str
    coding: tuple[str, str]  # (system, code)

    def entered(self, resource: dict[str, Any], old: Any) -> bool:
        concept = resource.get(self.code_element)
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not any(
            isinstance(c, dict) and (c.get("system"), c.get("code")) == self.coding
            for c in codings or ()
        ):
            return False
        before = old.get(self.element) if isinstance(old, dict) else None
        return resource.get(self.element) in self.to and before not in self.to


@dataclass(frozen=True)
class Channel:
    types: frozenset[str]
    payloads: frozenset[str]
    mime_types: frozenset[str]
    heartbeat_min_s: int
    heartbeat_max_s: int
    https_only_in_production: bool
    # Addresses a rest-hook may never reach in production (notify/endpoints.py).
    denied_networks: tuple[Network, ...] = ()


@dataclass(frozen=True)
class Delivery:
    backoff_s: tuple[float, ...]
    timeout_s: float
    lease_s: float
    poll_ms: int
    workers: int
    heartbeat_scan_s: float

    def retry_after(self, attempts: int) -> float | None:
        """Seconds before the next try after `attempts` failed ones; None: give up."""
        return self.backoff_s[attempts - 1] if 0 < attempts <= len(self.backoff_s) else None


@dataclass(frozen=True)
class Email:
    sender: str
    subject: str
    body: str

    def text(self, portal: str) -> str:
        return self.body.replace("{portal}", portal)


@dataclass(frozen=True)
class NotificationTable:
    topics: tuple[Topic, ...]
    channel: Channel
    delivery: Delivery
    email: Email

    def topic(self, url: str) -> Topic | None:
        return next((t for t in self.topics if t.url == url), None)

    def email_for(self, topic: str | None) -> Email:
        """The email of a queued notification's topic (its own, or the message email)."""
        found = self.topic(topic) if topic else None
        return found.email if found is not None and found.email is not None else self.email

    def triggered_by(
        self, rt: str, interaction: str, resource: Any = None, old: Any = None
    ) -> tuple[Topic, ...]:
        """The topics this write fires. A transition topic watches every write that can
        make the change (create, update, patch); the others their one interaction."""
        return tuple(
            t
            for t in self.topics
            if t.resource == rt
            and not t.fired_by
            and (
                interaction in ("create", "update", "patch")
                if t.when is not None
                else t.interaction == interaction
            )
            and (resource is None or t.fires(resource, old))
        )


def _str(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"notifications.json: {where} must be a non-empty string")
    return raw


def _num(raw: Any, where: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise ValueError(f"notifications.json: {where} must be a number in [{low}, {high}]")
    return float(raw)


def _subset(raw: Any, where: str, allowed: frozenset[str] | None) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"notifications.json: {where} must be a non-empty list of strings")
    if allowed is not None and not set(raw) <= allowed:
        raise ValueError(f"notifications.json: {where} may only hold {sorted(allowed)}")
    return frozenset(raw)


def _topic(raw: Any, known_types: frozenset[str] | None) -> Topic:
    if not isinstance(raw, dict):
        raise ValueError("notifications.json: each topic is an object")
    url = _str(raw.get("url"), "topic url")
    rt = _str(raw.get("resource"), f"{url} resource")
    if known_types is not None and rt not in known_types:
        raise ValueError(f"notifications.json: {url}: {rt!r} is not a known resource type")
    interaction = _str(raw.get("interaction"), f"{url} interaction")
    if interaction not in {"create", "update"}:
        raise ValueError(f"notifications.json: {url}: interaction must be create or update")
    filt = raw.get("filter")
    if not isinstance(filt, dict):
        raise ValueError(f"notifications.json: {url} needs a filter object")
    names = _str(filt.get("names"), f"{url} filter names")
    if names not in FILTER_NAMES:
        raise ValueError(f"notifications.json: {url}: filter names must be one of {FILTER_NAMES}")
    fired_by = raw.get("fired_by", "")
    if not isinstance(fired_by, str):
        raise ValueError(f"notifications.json: {url}: fired_by must be a workflow name")
    em = raw.get("email")
    if em is not None and not isinstance(em, dict):
        raise ValueError(f"notifications.json: {url}: email must be an object")
    element = _str(filt["element"], f"{url} filter element") if "element" in filt else ""
    if raw.get("when") is not None and interaction != "update":
        raise ValueError(f"notifications.json: {url}: a 'when' topic has interaction update")
    proxies = raw.get("proxies", False)
    if not isinstance(proxies, bool):
        raise ValueError(f"notifications.json: {url}: proxies must be true or false")
    return Topic(
        element=element,
        when=_transition(raw.get("when"), url),
        proxies=proxies,
        fired_by=fired_by,
        email=None
        if em is None
        else Email(
            sender=_str(em.get("from"), f"{url} email.from"),
            subject=_str(em.get("subject"), f"{url} email.subject"),
            body=_str(em.get("body"), f"{url} email.body"),
        ),
        url=url,
        title=_str(raw.get("title"), f"{url} title"),
        description=_str(raw.get("description"), f"{url} description"),
        resource=rt,
        interaction=interaction,
        parameter=_str(filt.get("parameter"), f"{url} filter parameter"),
        names=names,
        about=_str(raw.get("about"), f"{url} about"),
        requires=_str(raw.get("requires"), f"{url} requires"),
        subscribers=_subset(raw.get("subscribers"), f"{url} subscribers", SUBSCRIBERS),
    )


def _transition(raw: Any, url: str) -> Transition | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"element", "to", "code"}:
        raise ValueError(f"notifications.json: {url}: when needs exactly element, to and code")
    code = raw["code"]
    if not isinstance(code, dict) or set(code) != {"element", "system", "code"}:
        raise ValueError(f"notifications.json: {url}: when.code needs element, system and code")
    return Transition(
        element=_str(raw["element"], f"{url} when.element"),
        to=_subset(raw["to"], f"{url} when.to", None),
        code_element=_str(code["element"], f"{url} when.code.element"),
        coding=(
            _str(code["system"], f"{url} when.code.system"),
            _str(code["code"], f"{url} when.code.code"),
        ),
    )


def parse_table(raw: Any, known_types: frozenset[str] | None = None) -> NotificationTable:
    """Fail fast: a typo must stop the server, not silence a notification."""
    if not isinstance(raw, dict):
        raise ValueError("notifications.json must be an object")
    topics = raw.get("topics")
    if not isinstance(topics, list) or not topics:
        raise ValueError("notifications.json needs a non-empty list 'topics'")
    parsed = tuple(_topic(t, known_types) for t in topics)
    if len({t.url for t in parsed}) != len(parsed):
        raise ValueError("notifications.json: two topics share a url")
    ch, dl, em = raw.get("channel"), raw.get("delivery"), raw.get("email")
    if not isinstance(ch, dict) or not isinstance(dl, dict) or not isinstance(em, dict):
        raise ValueError("notifications.json needs objects 'channel', 'delivery' and 'email'")
    hb_min = int(_num(ch.get("heartbeat_min_s"), "channel.heartbeat_min_s", 1, 86400))
    hb_max = int(_num(ch.get("heartbeat_max_s"), "channel.heartbeat_max_s", hb_min, 604800))
    backoff = dl.get("backoff_s")
    if not isinstance(backoff, list) or not backoff:
        raise ValueError("notifications.json: delivery.backoff_s must be a non-empty list")
    timeout = _num(dl.get("timeout_s"), "delivery.timeout_s", 0.1, 300)
    lease = _num(dl.get("lease_s"), "delivery.lease_s", 1, 3600)
    if lease <= timeout:
        raise ValueError("notifications.json: delivery.lease_s must exceed delivery.timeout_s")
    https_only = ch.get("https_only_in_production")
    if not isinstance(https_only, bool):
        raise ValueError("notifications.json: channel.https_only_in_production must be boolean")
    return NotificationTable(
        topics=parsed,
        channel=Channel(
            types=_subset(ch.get("types"), "channel.types", CHANNELS),
            payloads=_subset(ch.get("payloads"), "channel.payloads", PAYLOADS),
            mime_types=_subset(ch.get("mime_types"), "channel.mime_types", None),
            heartbeat_min_s=hb_min,
            heartbeat_max_s=hb_max,
            https_only_in_production=https_only,
            denied_networks=parse_networks(
                ch.get("denied_networks_in_production", []),
                "channel.denied_networks_in_production",
            ),
        ),
        delivery=Delivery(
            backoff_s=tuple(_num(b, "delivery.backoff_s[]", 0.01, 86400) for b in backoff),
            timeout_s=timeout,
            lease_s=lease,
            poll_ms=int(_num(dl.get("poll_ms"), "delivery.poll_ms", 10, 60000)),
            workers=int(_num(dl.get("workers"), "delivery.workers", 1, 64)),
            heartbeat_scan_s=_num(
                dl.get("heartbeat_scan_s"), "delivery.heartbeat_scan_s", 0.1, 3600
            ),
        ),
        email=Email(
            sender=_str(em.get("from"), "email.from"),
            subject=_str(em.get("subject"), "email.subject"),
            body=_str(em.get("body"), "email.body"),
        ),
    )


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE, known_types: frozenset[str] | None = None) -> NotificationTable:
    return parse_table(json.loads(path.read_text()), known_types)
