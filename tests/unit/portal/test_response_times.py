"""The response-time rules as pure functions (fhir_server/portal/response_times.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_server.portal.response_times import completed, load_table

RULES = load_table()
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)


def msg(**extra: object) -> dict:
    return {
        "resourceType": "Communication",
        "id": "m1",
        "status": "completed",
        "subject": {"reference": "Patient/p"},
        "sender": {"reference": "Patient/p"},
        "recipient": [{"reference": "Practitioner/d"}, {"reference": "CareTeam/t"}],
        "partOf": [{"reference": "Communication/h"}],
        "payload": [{"contentString": "hello"}],
        **extra,
    }


def test_which_messages_ask_for_an_answer() -> None:
    assert RULES.owner_of(msg()) == {"reference": "CareTeam/t"}  # the first team recipient
    assert RULES.owner_of(msg(sender={"reference": "RelatedPerson/r"})) is not None
    assert RULES.owner_of(msg(recipient=[{"reference": "Organization/clinic"}])) is not None
    assert RULES.owner_of(msg(payload=[])) is None  # a thread header
    assert RULES.owner_of(msg(status="entered-in-error")) is None
    assert RULES.owner_of(msg(status="preparation")) is None
    assert RULES.owner_of(msg(sender={"reference": "Practitioner/d"})) is None
    assert RULES.owner_of(msg(recipient=[{"reference": "Practitioner/d"}])) is None
    assert RULES.owner_of(msg(sender={"display": "no reference"})) is None


def test_which_messages_answer() -> None:
    doc = {"sender": {"reference": "Practitioner/d"}, "status": "completed"}
    assert RULES.answers({**doc, "partOf": [{"reference": "Communication/h"}]})
    assert RULES.answers({**doc, "inResponseTo": [{"reference": "Communication/m1"}]})
    assert not RULES.answers(doc)  # a clinician's new thread answers nothing
    assert not RULES.answers({**msg(), "sender": {"reference": "Patient/p"}})
    versioned = {"reference": "Communication/m1/_history/1"}
    assert not RULES.answers({**doc, "inResponseTo": [versioned]})


def test_the_task_and_its_completion() -> None:
    task = RULES.task_for(
        msg(sent="2026-11-25T15:00:00-05:00"), {"reference": "CareTeam/t"}, NOW, NOW
    )
    assert task["restriction"]["period"] == {
        "start": "2026-11-25T20:00:00.000Z",
        "end": "2026-12-01T22:00:00.000Z",
    }
    assert task["focus"] == {"reference": "Communication/m1"}
    assert task["for"] == {"reference": "Patient/p"} and task["requester"] == {
        "reference": "Patient/p"
    }
    assert task["authoredOn"] == "2026-11-25T20:00:00.000Z"
    # No `sent` (or one that is not a dateTime): the write's own time; a date alone is
    # midnight at the clinic.
    assert (
        RULES.task_for(msg(), {"reference": "CareTeam/t"}, NOW, NOW)["restriction"]["period"][
            "start"
        ]
        == "2026-11-25T20:00:00.000Z"
    )
    dated = RULES.task_for(msg(sent="2026-11-25"), {"reference": "CareTeam/t"}, NOW, NOW)
    assert dated["restriction"]["period"]["start"] == "2026-11-25T05:00:00.000Z"
    done = completed({**task, "meta": {"versionId": "1"}}, {"id": "r1"}, NOW)
    assert done["status"] == "completed" and "meta" not in done
    assert done["executionPeriod"] == {
        "start": "2026-11-25T20:00:00.000Z",
        "end": "2026-11-25T20:00:00.000Z",
    }
    assert done["output"] == [
        {"type": {"text": "reply"}, "valueReference": {"reference": "Communication/r1"}}
    ]
