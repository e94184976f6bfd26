"""The clipboard table (profiles/portal/clipboards.json) and the Task transitions it drives."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_server.portal.clipboards import SCHEDULING, TABLE, load_table, parse_table

RAW: dict[str, Any] = json.loads(TABLE.read_text())


def test_the_shipped_table_loads_and_agrees_with_booking() -> None:
    rules = load_table()
    assert rules.code["code"] == "complete-questionnaire"
    assert rules.task_status("completed") == "completed"
    assert rules.task_status("in-progress") == "in-progress"
    assert rules.task_status("stopped") is None
    if SCHEDULING.exists():
        theirs = json.loads(SCHEDULING.read_text())["clipboard_task"]["code"]
        assert (theirs["system"], theirs["code"]) == (rules.code["system"], rules.code["code"])


def _broken(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    change(raw)
    return raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(extra=1), "expected"),
        (lambda r: r["task"].update(code={"code": "x"}), "system and a code"),
        (lambda r: r["task"].update(open_statuses=["requested", "bogus"]), "open_statuses"),
        (lambda r: r["task"].update(open_statuses=["in-progress"]), "requested"),
        (lambda r: r["task"].update(open_statuses=["requested"]), "in progress"),
        (
            lambda r: r["task"].update(open_statuses=["requested", "in-progress", "completed"]),
            "completed",
        ),
        (lambda r: r["task"].update(output_type={}), "output_type"),
        (lambda r: r["responses"].update(complete=["done"]), "responses.complete"),
        (lambda r: r["responses"].update(in_progress=["in-progress", "completed"]), "both"),
    ],
)
def test_a_malformed_table_stops_start_up(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_table(_broken(change))


def test_a_booking_table_with_another_code_stops_start_up() -> None:
    other = {"clipboard_task": {"code": {"system": RAW["task"]["code"]["system"], "code": "x"}}}
    with pytest.raises(ValueError, match="differs from scheduling.json"):
        parse_table(RAW, other)
    same = {"clipboard_task": {"code": dict(RAW["task"]["code"])}}
    assert parse_table(RAW, same).code == parse_table(RAW).code


def test_task_transitions() -> None:
    rules = parse_table(RAW)
    task = {"resourceType": "Task", "status": "requested", "meta": {"versionId": "1"}}
    drafted = rules.advanced(task, "qr1", "in-progress", "2026-01-01T00:00:00Z")
    assert drafted is not None and drafted["status"] == "in-progress" and "meta" not in drafted
    assert "output" not in drafted
    assert rules.advanced(drafted, "qr1", "in-progress", "t") is None
    done = rules.advanced(drafted, "qr1", "completed", "t")
    assert done is not None and done["status"] == "completed"
    assert done["output"] == [
        {
            "type": RAW["task"]["output_type"],
            "valueReference": {"reference": "QuestionnaireResponse/qr1"},
        }
    ]
    # A completed Task is not reopened; a stopped response moves nothing.
    assert rules.advanced(done, "qr2", "in-progress", "t") is None
    assert rules.advanced(task, "qr1", "stopped", "t") is None
