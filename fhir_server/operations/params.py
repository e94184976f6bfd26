"""The one parser of operation parameters: query string, form body or Parameters resource.

https://hl7.org/fhir/R4/operations.html#request: an operation takes its input parameters in
a `Parameters` resource (POST), as form fields (POST `application/x-www-form-urlencoded`) or,
when it changes nothing, in the query string (GET); query parameters are read on POST too.
Every value is checked against its declared `Parameter` (name, cardinality, type, codes)
before any handler runs, and every failure is a 400 OperationOutcome that names the
parameter: `invalid` (unknown, malformed, repeated), `required` (missing), `not-supported`
(a parameter of the published definition this server does not offer).

`Prefer: handling=lenient` (https://hl7.org/fhir/R4/search.html#errors, the rule search
follows) drops unknown, unsupported, malformed and repeated values instead, and hands them
to the handler as `Params.dropped` to report as warnings; a missing required parameter and
a body that is not a Parameters resource still answer 400.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, FhirError, Issue, NotSupported
from fhir_server.operations.registry import Operation, Parameter, Params
from fhir_server.rest.headers import prefer
from fhir_server.rest.messages import FhirRequest

Doc = dict[str, Any]

# Rendering options the REST layer reads (https://hl7.org/fhir/R4/http.html#general).
IGNORED = frozenset({"_format", "_pretty"})

_DATE = r"\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?"
_TIME = r"([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
_ZONE = r"(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))"
# The primitive types' formats (https://hl7.org/fhir/R4/datatypes.html#primitive).
FORMATS: dict[str, re.Pattern[str]] = {
    "date": re.compile(rf"^{_DATE}$"),
    "dateTime": re.compile(rf"^{_DATE}(T{_TIME}{_ZONE})?$"),
    "instant": re.compile(rf"^\d{{4}}-\d{{2}}-\d{{2}}T{_TIME}{_ZONE}$"),
    "code": re.compile(r"^[^\s]+( [^\s]+)*$"),
    "id": re.compile(r"^[A-Za-z0-9\-.]{1,64}$"),
    "integer": re.compile(r"^[-+]?\d{1,10}$"),
    "positiveInt": re.compile(r"^\+?0*[1-9]\d{0,9}$"),
    "unsignedInt": re.compile(r"^\+?\d{1,10}$"),
    "decimal": re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$"),
    "reference": re.compile(r"^\S+$"),
}
# Text types: any of their value[x] keys is read (a `_type` sent as valueString or
# valueCode means the same), each checked by the declared type's format.
TEXT_TYPES = frozenset(
    {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "token"}
)
NUMBER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "decimal"})


def _is_resource(t: str) -> bool:
    """Whether `t` is Resource or a resource type (the table's `check` admits no other
    capitalised type): a query string cannot carry one
    (https://hl7.org/fhir/R4/operations.html#request)."""
    return t[:1].isupper()


def _key(t: str) -> str:
    return "value" + t[:1].upper() + t[1:]


TEXT_KEYS = frozenset(_key(t) for t in TEXT_TYPES)


class _Reader:
    def __init__(self, op: Operation, lenient: bool) -> None:
        self.op, self.lenient = op, lenient
        self.inputs = op.inputs
        self.values: list[tuple[str, Any, str]] = []
        self.dropped: list[tuple[str, str, str]] = []

    def fail(self, name: str, text: str, error: FhirError) -> None:
        """Raise `error`, or under lenient drop the value with its reason."""
        if not self.lenient:
            raise error
        self.dropped.append((name, text, error.diagnostics))

    def declared(self, name: str, text: str, where: str | None) -> Parameter | None:
        p = self.inputs.get(name)
        if p is not None:
            return p
        if name in self.op.unsupported:
            err: FhirError = NotSupported(f"parameter {name!r} of ${self.op.name} is not supported")
        else:
            err = BadRequest(f"Unknown parameter {name!r} for ${self.op.name}")
        self.fail(name, text, _named(err, where))
        return None

    def add(self, p: Parameter, value: Any, text: str, where: str | None) -> None:
        if p.single and p.name in (n for n, _, _ in self.values):
            self.fail(
                p.name,
                text,
                _named(BadRequest(f"parameter {p.name!r} may be given only once"), where),
            )
            return
        self.values.append((p.name, value, text))

    def text(self, name: str, text: str, where: str | None = None) -> None:
        """A value sent as text: a query or form field."""
        if name in IGNORED:
            return
        p = self.declared(name, text, where)
        if p is None:
            return
        if _is_resource(p.type):
            self.fail(
                name,
                text,
                _named(
                    BadRequest(f"parameter {name!r} is a {p.type}: send it in a Parameters body"),
                    where,
                ),
            )
            return
        try:
            value = _typed(p, text)
        except BadRequest as e:
            self.fail(name, text, _named(e, where))
            return
        self.add(p, value, text, where)

    def entry(self, i: int, entry: Any) -> None:
        """One `Parameters.parameter`."""
        where = f"Parameters.parameter[{i}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise _named(BadRequest(f"{where} needs a name", code="required"), where)
        shown = _shown(entry)
        p = self.declared(name, shown, where)
        if p is None:
            return
        try:
            value, text = _from_entry(p, entry)
        except BadRequest as e:
            self.fail(name, shown, _named(e, where))
            return
        self.add(p, value, text, where)

    def resource(self, name: str, body: Doc) -> None:
        """A body that is the resource itself, standing for parameter `name`."""
        p = self.inputs[name]
        self.add(p, _resource(p, body), "", "Parameters")

    def finish(self) -> Params:
        given = {n for n, _, _ in self.values}
        for p in self.inputs.values():
            if p.min >= 1 and p.name not in given:
                raise BadRequest(
                    f"parameter {p.name!r} of ${self.op.name} is required", code="required"
                )
        return Params(self.values, self.dropped)


def _named(err: FhirError, where: str | None) -> FhirError:
    """The error with its issue pointing at the parameter (a Parameters entry)."""
    if where and where.startswith("Parameters.parameter["):
        err.issues = [Issue(err.code, err.diagnostics, expression=(where,))]
    return err


def _shown(entry: Doc) -> str:
    values = [v for k, v in entry.items() if k.startswith("value")]
    return str(values[0]) if len(values) == 1 and not isinstance(values[0], dict) else ""


def _typed(p: Parameter, text: str) -> Any:
    """A text value as `p.type`; raises BadRequest naming the parameter."""
    t = p.type
    fmt = FORMATS.get(t)
    if fmt is not None and not fmt.match(text):
        raise BadRequest(f"parameter {p.name!r} must be a FHIR {t}, not {text!r}")
    if p.values and text not in p.values:
        raise BadRequest(f"parameter {p.name!r} must be one of {', '.join(p.values)}, not {text!r}")
    if t in ("integer", "positiveInt", "unsignedInt"):
        return int(text)
    if t == "decimal":
        try:
            return Decimal(text)
        except InvalidOperation:
            raise BadRequest(f"parameter {p.name!r} must be a FHIR decimal") from None
    if t == "boolean":
        if text not in ("true", "false"):
            raise BadRequest(f"parameter {p.name!r} must be true or false, not {text!r}")
        return text == "true"
    if t in TEXT_TYPES or t in FORMATS:
        if not text:
            raise BadRequest(f"parameter {p.name!r} is empty")
        return text
    raise NotSupported(f"parameter {p.name!r} of type {t} cannot be sent as text")


def _resource(p: Parameter, value: Any) -> Doc:
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise BadRequest(f"parameter {p.name!r} must be a resource", code="structure")
    if p.type not in ("Resource", value["resourceType"]):
        raise BadRequest(f"parameter {p.name!r} must be a {p.type}, not a {value['resourceType']}")
    return value


def _from_entry(p: Parameter, entry: Doc) -> tuple[Any, str]:
    """(typed value, text as sent) of one Parameters entry for `p`."""
    if p.parts:
        return _from_parts(p, entry), ""
    if "part" in entry:
        raise NotSupported(f"parameter {p.name!r} does not take parts")
    keys = [k for k in entry if k.startswith("value")]
    if _is_resource(p.type):
        if keys or "resource" not in entry:
            raise BadRequest(f"parameter {p.name!r} needs a resource")
        return _resource(p, entry["resource"]), ""
    if "resource" in entry or len(keys) != 1:
        raise BadRequest(f"parameter {p.name!r} needs exactly one value[x]")
    key, value = keys[0], entry[keys[0]]
    if p.type == "reference":
        if key == "valueReference" and isinstance(value, dict):
            value = value.get("reference")
        elif key not in TEXT_KEYS:
            raise BadRequest(f"parameter {p.name!r} needs a valueReference")
        if not isinstance(value, str):
            raise BadRequest(f"parameter {p.name!r} needs a literal reference")
        return _typed(p, value), value
    allowed = TEXT_KEYS if p.type in TEXT_TYPES else {_key(p.type)}
    if key not in allowed:
        raise BadRequest(f"parameter {p.name!r} needs a {_key(p.type)}, not {key}")
    if p.type == "boolean":
        if not isinstance(value, bool):
            raise BadRequest(f"parameter {p.name!r} needs a JSON boolean")
        return value, "true" if value else "false"
    if p.type in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"parameter {p.name!r} needs a JSON number")
        text = str(value)
        return _typed(p, text), text
    if not isinstance(value, str):
        raise BadRequest(f"parameter {p.name!r} needs a JSON string")
    return _typed(p, value), value


def _from_parts(p: Parameter, entry: Doc) -> Doc:
    """A parameter of parts: each part read by its own declaration, then the required
    ones checked (https://hl7.org/fhir/R4/parameters.html: `part` is a nested parameter)."""
    parts = entry.get("part")
    if any(k.startswith("value") for k in entry) or "resource" in entry:
        raise BadRequest(f"parameter {p.name!r} takes parts, not a value")
    if not isinstance(parts, list) or not parts:
        raise BadRequest(f"parameter {p.name!r} needs its parts", code="required")
    declared = {q.name: q for q in p.parts}
    out: Doc = {}
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        q = declared.get(name) if isinstance(name, str) else None
        if q is None:
            raise BadRequest(f"parameter {p.name!r} has no part {name!r}")
        value, _ = _from_entry(q, part)
        if q.single:
            if name in out:
                raise BadRequest(f"part {name!r} of parameter {p.name!r} is repeated")
            out[q.name] = value
        else:
            out.setdefault(q.name, []).append(value)
    for q in p.parts:
        if q.min >= 1 and q.name not in out:
            raise BadRequest(f"parameter {p.name!r} needs its part {q.name!r}", code="required")
    return out


def lenient(req: FhirRequest) -> bool:
    return prefer(req.header("prefer")).get("handling") == "lenient"


def parse_params(op: Operation, req: FhirRequest) -> Params:
    """The call's input parameters: the query string, then the body (POST)."""
    r = _Reader(op, lenient(req))
    for name, value in req.params:
        r.text(name, value)
    body = req.body if req.method == "POST" else None
    if isinstance(body, str):
        # A form body (application/x-www-form-urlencoded, pipeline.py keeps it as text).
        for name, value in parse_qsl(body, keep_blank_values=True):
            r.text(name, value, "form")
    elif body is None or body == {}:
        pass  # no body, or an empty JSON object: no parameters in it
    elif isinstance(body, dict) and body.get("resourceType") == "Parameters":
        entries = body.get("parameter")
        if entries is not None and not isinstance(entries, list):
            raise BadRequest("Parameters.parameter must be a list", code="structure")
        for i, entry in enumerate(entries or []):
            r.entry(i, entry)
    elif op.body_parameter is not None and isinstance(body, dict):
        r.resource(op.body_parameter, body)
    else:
        raise BadRequest(
            f"the body of POST ${op.name} must be a Parameters resource, not "
            f"{_kind(body)} (https://hl7.org/fhir/R4/operations.html#request)"
        )
    return r.finish()


def _kind(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("resourceType"), str):
        return f"a {body['resourceType']}"
    return "that"
