"""The QuestionnaireResponse checks, table-driven: one Questionnaire that uses every rule,
and per case a response, the mode, and the findings expected (code and linkId path)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.validation.questionnaire_response import ANSWER_TYPES, OPERATORS, check

SCT = "http://snomed.info/sct"
NEVER = {"system": SCT, "code": "266919005", "display": "Never smoked"}
DAILY = {"system": SCT, "code": "449868002", "display": "Smokes daily"}

QUESTIONNAIRE: dict[str, Any] = {
    "resourceType": "Questionnaire",
    "status": "active",
    "item": [
        {"linkId": "reason", "type": "text", "required": True, "maxLength": 20},
        {"linkId": "changed", "type": "boolean", "required": True},
        {
            "linkId": "changes",
            "type": "string",
            "required": True,
            "enableWhen": [{"question": "changed", "operator": "=", "answerBoolean": True}],
        },
        {"linkId": "pain", "type": "integer"},
        {
            "linkId": "pain-where",
            "type": "string",
            "required": True,
            "enableBehavior": "any",
            "enableWhen": [
                {"question": "pain", "operator": ">=", "answerInteger": 5},
                {"question": "reason", "operator": "=", "answerString": "pain"},
            ],
        },
        {
            "linkId": "tobacco",
            "type": "choice",
            "answerOption": [{"valueCoding": NEVER}, {"valueCoding": DAILY}],
        },
        {
            "linkId": "packs",
            "type": "decimal",
            "enableWhen": [{"question": "tobacco", "operator": "!=", "answerCoding": NEVER}],
        },
        {
            "linkId": "size",
            "type": "choice",
            "answerOption": [{"valueInteger": 1}, {"valueInteger": 2}],
        },
        {"linkId": "color", "type": "open-choice", "answerOption": [{"valueString": "red"}]},
        {"linkId": "when", "type": "date"},
        {
            "linkId": "recent",
            "type": "boolean",
            "enableWhen": [
                {"question": "when", "operator": "exists", "answerBoolean": True},
                {"question": "when", "operator": ">", "answerDate": "2020-01-01"},
            ],
        },
        {
            "linkId": "calm",
            "type": "boolean",
            "required": True,
            "enableWhen": [
                {"question": "pain", "operator": "<", "answerDecimal": 2.5},
                {"question": "pain", "operator": "<=", "answerInteger": 2},
            ],
        },
        {"linkId": "note", "type": "display"},
        {
            "linkId": "contacts",
            "type": "group",
            "repeats": True,
            "item": [
                {"linkId": "name", "type": "string", "required": True},
                {"linkId": "phone", "type": "string", "repeats": True},
            ],
        },
        {
            "linkId": "allergy",
            "type": "boolean",
            "item": [
                {
                    "linkId": "allergen",
                    "type": "string",
                    "required": True,
                    "enableWhen": [{"question": "allergy", "operator": "=", "answerBoolean": True}],
                }
            ],
        },
        {
            "linkId": "consent",
            "type": "group",
            "required": True,
            "item": [{"linkId": "ok", "type": "boolean"}],
        },
    ],
}


def a(**value: Any) -> dict[str, Any]:
    return {"answer": [{k: v} for k, v in value.items()]}


def it(link_id: str, *answers: dict[str, Any], item: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"linkId": link_id}
    if answers:
        out["answer"] = list(answers)
    if item is not None:
        out["item"] = item
    return out


BASE = [
    it("reason", {"valueString": "check-up"}),
    it("changed", {"valueBoolean": False}),
    it("consent", item=[it("ok", {"valueBoolean": True})]),
]


def with_(*extra: dict[str, Any], drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [i for i in BASE if i["linkId"] not in drop] + list(extra)


W = "QuestionnaireResponse.item.where(linkId='{}')"

# (name, items, complete, expected [(code, linkId path)])
CASES: list[tuple[str, list[Any], bool, list[tuple[str, str]]]] = [
    ("minimal complete", BASE, True, []),
    ("required missing", with_(drop=("changed",)), True, [("required", W.format("changed"))]),
    ("required missing is fine in a draft", with_(drop=("changed",)), False, []),
    ("required group missing", with_(drop=("consent",)), True, [("required", W.format("consent"))]),
    (
        "required group empty",
        with_(it("consent"), drop=("consent",)),
        True,
        [("required", W.format("consent"))],
    ),
    (
        "unknown linkId",
        with_(it("nope", {"valueString": "x"})),
        True,
        [("structure", W.format("nope"))],
    ),
    ("unknown linkId in a draft too", [it("nope")], False, [("structure", W.format("nope"))]),
    (
        "wrong type",
        with_(it("pain", {"valueString": "7"})),
        True,
        [("value", W.format("pain") + ".answer")],
    ),
    (
        "wrong type in a draft too",
        [it("pain", {"valueDecimal": 7.5})],
        False,
        [("value", W.format("pain") + ".answer")],
    ),
    (
        "maxLength",
        [it("reason", {"valueString": "x" * 21}), *BASE[1:]],
        True,
        [("value", W.format("reason") + ".answer")],
    ),
    ("maxLength not in a draft", [it("reason", {"valueString": "x" * 21})], False, []),
    ("option ok", with_(it("tobacco", {"valueCoding": NEVER})), True, []),
    (
        "option not listed",
        with_(it("tobacco", {"valueCoding": {"system": SCT, "code": "1"}})),
        True,
        [("value", W.format("tobacco") + ".answer")],
    ),
    (
        "option not listed, draft",
        [it("tobacco", {"valueCoding": {"system": SCT, "code": "1"}})],
        False,
        [],
    ),
    ("integer option ok", with_(it("size", {"valueInteger": 2})), True, []),
    (
        "integer option not listed",
        with_(it("size", {"valueInteger": 3})),
        True,
        [("value", W.format("size") + ".answer")],
    ),
    (
        "choice of integers takes no Coding",
        with_(it("size", {"valueCoding": NEVER})),
        True,
        [("value", W.format("size") + ".answer")],
    ),
    ("open-choice free text", with_(it("color", {"valueString": "blue"})), True, []),
    (
        "open-choice Coding must be listed",
        with_(it("color", {"valueCoding": NEVER})),
        True,
        [("value", W.format("color") + ".answer")],
    ),
    (
        "enableWhen = true: required",
        with_(drop=("changed",)) + [it("changed", {"valueBoolean": True})],
        True,
        [("required", W.format("changes"))],
    ),
    (
        "enableWhen = true: answered",
        with_(drop=("changed",))
        + [it("changed", {"valueBoolean": True}), it("changes", {"valueString": "new pill"})],
        True,
        [],
    ),
    (
        "disabled item answered",
        with_(it("changes", {"valueString": "new pill"})),
        True,
        [("business-rule", W.format("changes"))],
    ),
    ("disabled item answered, draft", with_(it("changes", {"valueString": "x"})), False, []),
    (
        "any: first holds (>=)",
        with_(it("pain", {"valueInteger": 5})),
        True,
        [("required", W.format("pain-where"))],
    ),
    ("any: none holds", with_(it("pain", {"valueInteger": 4})), True, []),
    (
        "all: < and <= hold",
        with_(it("pain", {"valueInteger": 2})),
        True,
        [("required", W.format("calm"))],
    ),
    ("all: <= fails", with_(it("pain", {"valueInteger": 3})), True, []),
    (
        "any: second holds (= string)",
        [it("reason", {"valueString": "pain"}), *BASE[1:]],
        True,
        [("required", W.format("pain-where"))],
    ),
    ("!= with no answer enables", with_(it("packs", {"valueDecimal": 1})), True, []),
    (
        "!= equal disables",
        with_(it("tobacco", {"valueCoding": NEVER}), it("packs", {"valueDecimal": 1})),
        True,
        [("business-rule", W.format("packs"))],
    ),
    (
        "!= other enables",
        with_(it("tobacco", {"valueCoding": DAILY}), it("packs", {"valueDecimal": 1})),
        True,
        [],
    ),
    (
        "all: exists and > hold",
        with_(it("when", {"valueDate": "2024-05-01"}), it("recent", {"valueBoolean": True})),
        True,
        [],
    ),
    (
        "all: > fails",
        with_(it("when", {"valueDate": "2019-05-01"}), it("recent", {"valueBoolean": True})),
        True,
        [("business-rule", W.format("recent"))],
    ),
    (
        "all: exists fails",
        with_(it("recent", {"valueBoolean": True})),
        True,
        [("business-rule", W.format("recent"))],
    ),
    (
        "display takes no answer",
        with_(it("note", {"valueString": "x"})),
        True,
        [("structure", W.format("note") + ".answer")],
    ),
    (
        "repeating group, each checked",
        with_(
            it(
                "contacts",
                item=[
                    it("name", {"valueString": "A"}),
                    it("phone", {"valueString": "1"}, {"valueString": "2"}),
                ],
            ),
            it("contacts", item=[it("phone", {"valueString": "3"})]),
        ),
        True,
        [("required", W.format("contacts") + ".item.where(linkId='name')")],
    ),
    (
        "a question does not repeat",
        with_(it("pain", {"valueInteger": 3}, {"valueInteger": 4})),
        True,
        [("structure", W.format("pain") + ".answer")],
    ),
    (
        "a question appears once",
        with_(it("pain", {"valueInteger": 1}), it("pain", {"valueInteger": 2})),
        False,
        [("structure", W.format("pain"))],
    ),
    (
        "child of a question under its answer",
        with_(
            it("allergy", {"valueBoolean": True, "item": [it("allergen", {"valueString": "dust"})]})
        ),
        True,
        [],
    ),
    (
        "child required when enabled by its parent's answer",
        with_(it("allergy", {"valueBoolean": True})),
        True,
        [("required", W.format("allergy") + ".answer.item.where(linkId='allergen')")],
    ),
    ("child not required when disabled", with_(it("allergy", {"valueBoolean": False})), True, []),
    (
        "child of a question not beside the answer",
        with_(it("allergy", {"valueBoolean": False}, item=[it("allergen", {"valueString": "x"})])),
        False,
        [("structure", W.format("allergy") + ".item")],
    ),
    (
        "an answer without a value",
        with_(it("pain", {})),
        True,
        [("required", W.format("pain") + ".answer")],
    ),
]


@pytest.mark.parametrize(
    ("items", "complete", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_case(items: list[Any], complete: bool, expected: list[tuple[str, str]]) -> None:
    response = {"resourceType": "QuestionnaireResponse", "status": "completed", "item": items}
    found = check(response, QUESTIONNAIRE, complete=complete)
    assert [(f.code, f.link_path) for f in found] == expected, found


def test_findings_point_at_the_indexed_element_too() -> None:
    response = {"item": [*BASE, it("tobacco", {"valueCoding": {"code": "x"}})]}
    (f,) = check(response, QUESTIONNAIRE, complete=True)
    issue = f.to_issue().to_json()
    assert issue["code"] == "value"
    assert issue["expression"] == [
        "QuestionnaireResponse.item[3].answer[0]",
        "QuestionnaireResponse.item.where(linkId='tobacco').answer",
    ]
    assert "tobacco" in issue["diagnostics"]


def test_every_item_type_and_operator_is_covered() -> None:
    # The tables name the R4 item types and operators exactly.
    assert set(ANSWER_TYPES) | {"group", "display"} == {
        "group", "display", "boolean", "decimal", "integer", "date", "dateTime", "time",
        "string", "text", "url", "choice", "open-choice", "attachment", "reference", "quantity",
    }  # fmt: skip
    assert {"exists", "=", "!=", ">", "<", ">=", "<="} == OPERATORS
    used = {c["operator"] for q in QUESTIONNAIRE["item"] for c in q.get("enableWhen", [])}
    assert used == OPERATORS


def test_junk_never_raises() -> None:
    for junk in ([1, None, "x"], [{"linkId": 3, "answer": "no"}], [{"answer": [None, 1]}]):
        assert isinstance(check({"item": junk}, QUESTIONNAIRE, complete=True), list)
    assert (
        check({"item": [{"linkId": "a"}]}, {"item": "junk"}, complete=True)[0].code == "structure"
    )
