"""profiles/portal/notifications.json parses, and a malformed table stops start-up."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_server.notify.table import TABLE, parse_table
from fhir_server.validation import KNOWN_RESOURCE_TYPES

RAW = json.loads(TABLE.read_text())


def test_the_shipped_table_parses() -> None:
    table = parse_table(RAW, frozenset(KNOWN_RESOURCE_TYPES))
    # The message topics first; the workflows append theirs (results release: "self").
    assert [t.names for t in table.topics][:2] == ["self", "member-pool"]
    assert all(t.names in ("self", "member-pool") for t in table.topics)
    assert table.channel.payloads == {"empty", "id-only"}
    assert table.delivery.retry_after(1) == RAW["delivery"]["backoff_s"][0]
    assert table.delivery.retry_after(len(RAW["delivery"]["backoff_s"]) + 1) is None
    assert "{portal}" not in table.email.text("https://x/portal/")


def _when_topic(raw: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in raw["topics"] if t.get("when"))


def _when(raw: dict[str, Any]) -> dict[str, Any]:
    when: dict[str, Any] = _when_topic(raw)["when"]
    return when


def _broken(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    change(raw)
    return raw


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("topics"),
        lambda r: r["topics"][0].update(resource="Nope"),
        lambda r: r["topics"][0]["filter"].update(names="anyone"),
        lambda r: r["topics"][1].update(url=r["topics"][0]["url"]),
        lambda r: r["topics"][0].update(subscribers=["Device"]),
        lambda r: r["channel"].update(payloads=["full-resource"]),
        lambda r: r["channel"].update(types=["websocket"]),
        lambda r: r["delivery"].update(lease_s=5, timeout_s=10),
        lambda r: r["delivery"].update(backoff_s=[]),
        lambda r: r["delivery"].update(workers=0),
        lambda r: r["email"].update(subject=""),
        lambda r: r["channel"].update(https_only_in_production="yes"),
        # A transition trigger (the prescriptions' topics) is checked as strictly.
        lambda r: _when(r).update(to=[]),
        lambda r: _when(r).pop("element"),
        lambda r: _when(r)["code"].pop("system"),
        lambda r: _when(r).update(unknown=1),
        lambda r: _when_topic(r).update(interaction="create"),
        lambda r: _when_topic(r).update(proxies="yes"),
        lambda r: _when_topic(r)["filter"].update(element=""),
    ],
)
def test_a_malformed_table_is_refused(change: Any) -> None:
    with pytest.raises(ValueError, match="notifications.json"):
        parse_table(_broken(change), frozenset(KNOWN_RESOURCE_TYPES))


def test_a_thread_header_fires_no_topic() -> None:
    table = parse_table(RAW)
    header = {"resourceType": "Communication", "recipient": [{"reference": "Patient/p"}]}
    assert table.triggered_by("Communication", "create", header) == ()
    msg = {**header, "payload": [{"contentString": "x"}]}
    assert len(table.triggered_by("Communication", "create", msg)) == 2


REFILL = {"system": "https://mhs.example.org/fhir/CodeSystem/portal-task", "code": "refill-request"}


def test_a_transition_topic_fires_once_on_the_change() -> None:
    """refill-ready: the refill Task entering completed, not its steps nor later updates."""
    table = parse_table(RAW)
    task = {"resourceType": "Task", "code": {"coding": [REFILL]}, "for": {"reference": "Patient/p"}}

    def urls(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
        return [t.url.rsplit("/", 1)[1] for t in table.triggered_by("Task", "update", new, old)]

    done = {**task, "status": "completed"}
    assert urls(done, {**task, "status": "in-progress"}) == ["refill-ready"]
    assert urls(done, done) == []  # a later update: no transition
    assert urls({**task, "status": "in-progress"}, {**task, "status": "accepted"}) == []
    assert [t.url for t in table.triggered_by("Task", "patch", done, task)] != []
    other = {**done, "code": {"coding": [{**REFILL, "code": "complete-questionnaire"}]}}
    assert urls(other, task) == []  # another kind of Task
    renewal = {**done, "code": {"coding": [{**REFILL, "code": "renewal-request"}]}}
    assert urls({**renewal, "status": "rejected"}, {**renewal, "status": "requested"}) == [
        "renewal-decided"
    ]
