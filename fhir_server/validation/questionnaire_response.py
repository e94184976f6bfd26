"""A QuestionnaireResponse checked against the Questionnaire it answers: pure functions.

https://hl7.org/fhir/R4/questionnaireresponse.html#invs and
https://hl7.org/fhir/R4/questionnaire-definitions.html#Questionnaire.item:

- every response item's `linkId` is an item of the Questionnaire at that level (qrs-2), a
  question's children sit under its answers and a group's under the group (qrs-1), a group
  or display item carries no answer, a question that does not repeat has one answer at most
  and appears once among its siblings (a repeating group may appear many times);
- each answer's `value[x]` is the one the item's `type` takes (`choice` and `open-choice`
  also the types of their `answerOption`s);
- with `complete` (a `completed` or `amended` response): every enabled `required` item is
  answered (a group: at least one answer somewhere inside it), a `choice` answer is one of
  the item's `answerOption`s (an `open-choice` Coding too; its free text is free), a string
  fits `maxLength`, and an item that `enableWhen` disables (with `enableBehavior` all or
  any) is not answered, nor required, nor are its children.

Without `complete` (a response still `in-progress`) only the structure and the answer types
are checked: a draft may leave questions open. Answers bound to a ValueSet
(`answerValueSet`) are checked for their type, not for membership: the server holds no
terminology service.

Each finding points at the element twice: the indexed path
(`QuestionnaireResponse.item[2].answer[0]`) and the linkId path
(`QuestionnaireResponse.item.where(linkId='tobacco').answer`), so a client can match it to
its form whichever way it keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import Issue

Doc = dict[str, Any]
ROOT = "QuestionnaireResponse"

# https://hl7.org/fhir/R4/valueset-item-type.html -> QuestionnaireResponse.item.answer.value[x]
ANSWER_TYPES: dict[str, frozenset[str]] = {
    "boolean": frozenset({"valueBoolean"}),
    "decimal": frozenset({"valueDecimal"}),
    "integer": frozenset({"valueInteger"}),
    "date": frozenset({"valueDate"}),
    "dateTime": frozenset({"valueDateTime"}),
    "time": frozenset({"valueTime"}),
    "string": frozenset({"valueString"}),
    "text": frozenset({"valueString"}),
    "url": frozenset({"valueUri"}),
    "choice": frozenset({"valueCoding"}),
    "open-choice": frozenset({"valueCoding", "valueString"}),
    "attachment": frozenset({"valueAttachment"}),
    "reference": frozenset({"valueReference"}),
    "quantity": frozenset({"valueQuantity"}),
}
# Items that hold no answer of their own.
NOT_ANSWERED = frozenset({"group", "display"})
# https://hl7.org/fhir/R4/valueset-questionnaire-enable-operator.html
OPERATORS = frozenset({"exists", "=", "!=", ">", "<", ">=", "<="})
_NUMBERS = frozenset({"Decimal", "Integer"})


@dataclass(frozen=True)
class Finding:
    """One problem: an OperationOutcome issue code, what is wrong, and where."""

    code: str  # https://hl7.org/fhir/R4/valueset-issue-type.html
    diagnostics: str
    path: str  # indexed FHIRPath of the element (its parent's when it is missing)
    link_path: str  # the same element by linkIds

    def to_issue(self) -> Issue:
        where = (self.path, self.link_path) if self.link_path != self.path else (self.path,)
        return Issue(self.code, self.diagnostics, expression=where)


@dataclass(frozen=True)
class _Here:
    """Where the walk is: the indexed path, the linkId path, and the response item lists
    from the innermost (this group or answer) to the whole response, where `enableWhen`
    looks for the answers it names (the nearest first, so a repeated group's conditions
    read their own repetition)."""

    path: str
    link: str
    scopes: tuple[list[Any], ...]

    def into(self, path: str, link: str, items: list[Any]) -> _Here:
        return _Here(path, link, (items, *self.scopes))


def check(response: Doc, questionnaire: Doc, *, complete: bool) -> list[Finding]:
    """Everything wrong with `response` as an answer to `questionnaire` (empty when none)."""
    items = _list(response.get("item"))
    out: list[Finding] = []
    _level(_list(questionnaire.get("item")), items, _Here(ROOT, ROOT, (items,)), complete, out)
    return out


def issues(findings: list[Finding]) -> list[Issue]:
    return [f.to_issue() for f in findings]


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dicts(v: Any) -> Iterator[tuple[int, Doc]]:
    for i, x in enumerate(_list(v)):
        if isinstance(x, dict):
            yield i, x


def _q(link_id: Any) -> str:
    return "'" + str(link_id).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _level(
    q_items: list[Any], r_items: list[Any], here: _Here, complete: bool, out: list[Finding]
) -> None:
    """One level: the Questionnaire's items here against the response's items here."""
    by_link = {q["linkId"]: q for _, q in _dicts(q_items) if isinstance(q.get("linkId"), str)}
    seen: dict[str, int] = {}
    for i, r in _dicts(r_items):
        link_id = r.get("linkId")
        path = f"{here.path}.item[{i}]"
        link = f"{here.link}.item.where(linkId={_q(link_id)})"
        q = by_link.get(link_id) if isinstance(link_id, str) else None
        if q is None or not isinstance(link_id, str):
            out.append(Finding("structure", f"{link_id!r}: no such item (linkId) here", path, link))
            continue
        seen[link_id] = seen.get(link_id, 0) + 1
        if seen[link_id] == 2 and not (q.get("type") == "group" and q.get("repeats") is True):
            out.append(
                Finding(
                    "structure",
                    f"{link_id!r} appears more than once; only a repeating group may (a "
                    "repeating question takes several answers instead)",
                    path,
                    link,
                )
            )
        _item(q, r, _Here(path, link, here.scopes), complete, out)
    if not complete:
        return
    for link_id, q in by_link.items():
        if link_id in seen or q.get("required") is not True:
            continue
        if _enabled(q, here.scopes):
            out.append(
                Finding(
                    "required",
                    f"{link_id!r} is required and has no answer",
                    here.path,
                    f"{here.link}.item.where(linkId={_q(link_id)})",
                )
            )


def _item(q: Doc, r: Doc, here: _Here, complete: bool, out: list[Finding]) -> None:
    kind = q.get("type")
    link_id = q["linkId"]
    answers = list(_dicts(r.get("answer")))
    if complete and not _enabled(q, here.scopes):
        if _has_content(r):
            out.append(
                Finding(
                    "business-rule",
                    f"{link_id!r} is not enabled by the answers given (enableWhen), so it "
                    "must not be answered",
                    here.path,
                    here.link,
                )
            )
        return
    if kind in NOT_ANSWERED:
        if answers:
            out.append(
                Finding(
                    "structure",
                    f"{link_id!r} is a {kind} item, which takes no answer",
                    f"{here.path}.answer[0]",
                    f"{here.link}.answer",
                )
            )
        children = _list(r.get("item"))
        _level(
            _list(q.get("item")), children, here.into(here.path, here.link, children), complete, out
        )
        if complete and kind == "group" and q.get("required") is True and not _has_content(r):
            out.append(
                Finding(
                    "required", f"{link_id!r} is required and has no answer", here.path, here.link
                )
            )
        return
    if r.get("item"):
        out.append(
            Finding(
                "structure",
                f"the items under question {link_id!r} belong under its answer",
                f"{here.path}.item[0]",
                f"{here.link}.item",
            )
        )
    if len(answers) > 1 and q.get("repeats") is not True:
        out.append(
            Finding(
                "structure",
                f"{link_id!r} does not repeat: one answer at most",
                f"{here.path}.answer[1]",
                f"{here.link}.answer",
            )
        )
    if complete and q.get("required") is True and not any(_value(a) for _, a in answers):
        out.append(
            Finding("required", f"{link_id!r} is required and has no answer", here.path, here.link)
        )
    allowed = _allowed(q)
    for j, a in answers:
        path, link = f"{here.path}.answer[{j}]", f"{here.link}.answer"
        value = _value(a)
        if value is None:
            if not a.get("item"):
                out.append(
                    Finding("required", f"an answer to {link_id!r} has no value", path, link)
                )
        elif value[0] not in allowed:
            out.append(
                Finding(
                    "value",
                    f"{link_id!r} is a {kind} item: its answers are "
                    f"{' or '.join(sorted(allowed))}, not {value[0]}",
                    path,
                    link,
                )
            )
        elif complete:
            problem = _answer_problem(q, value)
            if problem:
                out.append(Finding("value", f"{link_id!r}: {problem}", path, link))
        children = _list(a.get("item"))
        _level(_list(q.get("item")), children, here.into(path, link, children), complete, out)


def _allowed(q: Doc) -> frozenset[str]:
    kind = q.get("type")
    base = ANSWER_TYPES.get(kind if isinstance(kind, str) else "", frozenset())
    options = {v[0] for _, o in _dicts(q.get("answerOption")) if (v := _value(o))}
    if kind == "choice" and options:
        return frozenset(options)
    if kind == "open-choice" and options:
        return frozenset(options | {"valueString"})
    return base


def _answer_problem(q: Doc, value: tuple[str, Any]) -> str | None:
    """Why an answer of the right type is still not acceptable, in a completed response."""
    key, v = value
    options = [ov for _, o in _dicts(q.get("answerOption")) if (ov := _value(o))]
    free_text = q.get("type") == "open-choice" and key == "valueString"
    listed = any(ok == key and _same(key[5:], v, o) for ok, o in options)
    if q.get("type") in ("choice", "open-choice") and options and not free_text and not listed:
        return "the answer is not one of the item's answerOptions"
    limit = q.get("maxLength")
    if key == "valueString" and isinstance(limit, int) and isinstance(v, str) and len(v) > limit:
        return f"the answer is longer than its maxLength of {limit}"
    return None


def _value(node: Doc) -> tuple[str, Any] | None:
    """The (value[x] key, value) of an answer or answerOption, or None."""
    for k, v in node.items():
        if k.startswith("value") and len(k) > 5 and k[5].isupper() and v is not None:
            return k, v
    return None


def _has_content(r: Doc) -> bool:
    """Whether a response item holds an answer anywhere (itself or inside)."""
    for _, a in _dicts(r.get("answer")):
        if _value(a) is not None or any(_has_content(c) for _, c in _dicts(a.get("item"))):
            return True
    return any(_has_content(c) for _, c in _dicts(r.get("item")))


# enableWhen ------------------------------------------------------------------------------


def _enabled(q: Doc, scopes: tuple[list[Any], ...]) -> bool:
    conditions = [c for _, c in _dicts(q.get("enableWhen"))]
    if not conditions:
        return True
    results = (_holds(c, _answers(c.get("question"), scopes)) for c in conditions)
    return any(results) if q.get("enableBehavior") == "any" else all(results)


def _answers(link_id: Any, scopes: tuple[list[Any], ...]) -> list[tuple[str, Any]]:
    """The answer values given to `link_id`, from the nearest scope that holds the item."""
    for items in scopes:
        found = list(_find(items, link_id))
        if found:
            return [v for r in found for _, a in _dicts(r.get("answer")) if (v := _value(a))]
    return []


def _find(items: list[Any], link_id: Any) -> Iterator[Doc]:
    for _, r in _dicts(items):
        if r.get("linkId") == link_id:
            yield r
        yield from _find(_list(r.get("item")), link_id)
        for _, a in _dicts(r.get("answer")):
            yield from _find(_list(a.get("item")), link_id)


def _holds(condition: Doc, answers: list[tuple[str, Any]]) -> bool:
    """One enableWhen condition on the answers given to its question."""
    op = condition.get("operator")
    expected = next(
        ((k[6:], v) for k, v in condition.items() if k.startswith("answer") and len(k) > 6),
        None,
    )
    if op not in OPERATORS or expected is None:
        return False
    kind, want = expected
    if op == "exists":
        return bool(answers) == (want is True)
    got = [(k[5:], v) for k, v in answers]
    if op == "=":
        return any(_same(kind, v, want) for k, v in got if _comparable(k, kind))
    if op == "!=":
        return not any(_same(kind, v, want) for k, v in got if _comparable(k, kind))
    return any(_ordered(op, kind, v, want) for k, v in got if _comparable(k, kind))


def _comparable(got: str, want: str) -> bool:
    return got == want or (got in _NUMBERS and want in _NUMBERS)


def _same(kind: str, a: Any, b: Any) -> bool:
    if kind == "Coding":
        if not isinstance(a, dict) or not isinstance(b, dict):
            return False
        systems = a.get("system"), b.get("system")
        return a.get("code") == b.get("code") and (None in systems or systems[0] == systems[1])
    if kind == "Reference":
        return (
            isinstance(a, dict) and isinstance(b, dict) and a.get("reference") == b.get("reference")
        )
    if kind == "Quantity":
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and _unit(a) == _unit(b)
            and _number(a.get("value")) == _number(b.get("value"))
        )
    if kind in _NUMBERS:
        return _number(a) is not None and _number(a) == _number(b)
    return type(a) is type(b) and a == b


def _ordered(op: str, kind: str, a: Any, b: Any) -> bool:
    if kind == "Quantity":
        if not (isinstance(a, dict) and isinstance(b, dict) and _unit(a) == _unit(b)):
            return False
        a, b = a.get("value"), b.get("value")
        kind = "Decimal"
    x: Any
    y: Any
    if kind in _NUMBERS:
        x, y = _number(a), _number(b)
    elif (
        kind in ("Date", "DateTime", "Time", "String") and isinstance(a, str) and isinstance(b, str)
    ):
        # ISO 8601 values of one precision order as strings.
        x, y = a, b
    else:
        return False
    if x is None or y is None:
        return False
    return bool({">": x > y, "<": x < y, ">=": x >= y, "<=": x <= y}[op])


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _unit(q: Doc) -> tuple[Any, Any]:
    return q.get("system"), q.get("code") or q.get("unit")
