"""The Bulk Data kick-off request's parameters, parsed and checked before a job exists.

Bulk Data Access IG 2.0.0, "Query Parameters" (https://hl7.org/fhir/uv/bulkdata/export.html):
`_outputFormat`, `_since`, `_type`, `_elements`, `_typeFilter`, `patient` (Patient and Group
level), from the query string or, on POST, a `Parameters` body, read by the operation
table's parser (fhir_server/operations/params.py) and checked here for meaning. Everything that can be wrong
with a request answers 400 at kick-off, so a job that starts can only fail for a server-side
reason. `Prefer: handling=lenient` turns an unknown or unsupported parameter into a warning
written to the manifest's error file instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.search.execute import criteria_filter
from fhir_server.search.parse import parse_search
from fhir_server.search.query import any_of
from fhir_server.search.registry import Registry

Doc = dict[str, Any]

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
# Rendering options the REST layer handles; never export parameters.
IGNORED = frozenset({"_format", "_pretty"})
# A `_typeFilter` selects resources; these shape a search result and mean nothing here.
RESULT_PARAMS = frozenset(
    {"_include", "_revinclude", "_sort", "_count", "_summary", "_elements", "_total"}
)
_REFERENCE = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class ExportSpec:
    """What one export selects; `types` None means every type the request may search."""

    level: str  # "system" | "patient" | "group"
    group: str | None = None
    output_format: str = NDJSON
    since: datetime | None = None
    types: tuple[str, ...] | None = None
    # Per type, the `_typeFilter` queries as one MongoDB filter (alternatives ORed).
    type_filters: dict[str, Doc] = field(default_factory=dict)
    patients: tuple[str, ...] = ()
    elements: tuple[tuple[str | None, str], ...] = ()
    # Problems `Prefer: handling=lenient` let through; they go to the error file.
    warnings: tuple[str, ...] = ()

    def elements_for(self, rt: str) -> tuple[str, ...]:
        return tuple(e for t, e in self.elements if t in (None, rt))

    def record(self) -> Doc:
        """The parameters as stored with the job (for operators; never read back)."""
        return {
            "level": self.level,
            "group": self.group,
            "outputFormat": self.output_format,
            "since": self.since,
            "types": list(self.types) if self.types is not None else None,
            "typeFilter": sorted(self.type_filters),
            "patients": list(self.patients),
            "elements": [f"{t}.{e}" if t else e for t, e in self.elements],
        }


def parse_instant(text: str) -> datetime:
    """A FHIR instant (with time zone, as `_since` requires) as an aware UTC datetime."""
    if not _INSTANT.match(text):
        raise BadRequest(f"_since {text!r} is not a FHIR instant (e.g. 2026-01-01T00:00:00Z)")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise BadRequest(f"_since {text!r} is not a valid date and time") from None


class _Parser:
    def __init__(self, registry: Registry, known: frozenset[str], lenient: bool) -> None:
        self.registry = registry
        self.known = known
        self.lenient = lenient
        self.warnings: list[str] = []

    def problem(self, text: str) -> None:
        """Unsupported in strict mode (400); a warning under `handling=lenient`."""
        if not self.lenient:
            raise NotSupported(text)
        self.warnings.append(text)

    def type_name(self, rt: str, what: str) -> str | None:
        if rt in self.known:
            return rt
        self.problem(f"{what} names {rt!r}, which is not a resource type this server knows")
        return None

    async def type_filter(self, db: Any, item: str, types: tuple[str, ...] | None) -> Doc | None:
        """One `_typeFilter` entry, `Type?query`, through the one search parser."""
        rt, sep, query = item.partition("?")
        if not sep or not query:
            raise BadRequest(f"_typeFilter {item!r} must be Type?search-parameters")
        if self.type_name(rt, "_typeFilter") is None:
            return None
        if types is not None and rt not in types:
            self.problem(f"_typeFilter {item!r} names a type that _type leaves out")
            return None
        params = parse_qsl(query, keep_blank_values=True)
        if not params:
            raise BadRequest(f"_typeFilter {item!r} has no search parameters")
        bad = sorted({k for k, _ in params if k.split(":", 1)[0] in RESULT_PARAMS})
        if bad:
            raise BadRequest(f"_typeFilter may not use result parameters: {', '.join(bad)}")
        req = parse_search(rt, params, self.registry, strict=not self.lenient)
        for name, value, why in req.dropped:
            self.warnings.append(f"_typeFilter {rt}: {name}={value} ignored ({why})")
        if any(c.chain or c.has for c in req.criteria):
            # Chains and _has read other types; the kick-off would need the access policy
            # inside those sub-queries, which the shared filter builder does not take.
            raise NotSupported("chained parameters and _has are not supported in _typeFilter")
        return await criteria_filter(db, self.registry, req)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


async def parse_kickoff(
    db: Any,
    registry: Registry,
    known: frozenset[str],
    params: list[tuple[str, str]],
    *,
    level: str,
    group: str | None = None,
    lenient: bool = False,
) -> ExportSpec:
    """Check and parse the kick-off parameters; raises 400 (`BadRequest`/`NotSupported`)."""
    p = _Parser(registry, known, lenient)
    by_name: dict[str, list[str]] = {}
    for name, value in params:
        if name in IGNORED:
            continue
        by_name.setdefault(name, []).append(value)
    fmt = NDJSON
    for value in by_name.pop("_outputFormat", []):
        if value.strip().lower() not in OUTPUT_FORMATS:
            raise NotSupported(
                f"_outputFormat {value!r} is not supported; use application/fhir+ndjson"
            )
    since = None
    since_values = by_name.pop("_since", [])
    if len(since_values) > 1:
        raise BadRequest("_since may be given once")
    if since_values:
        since = parse_instant(since_values[0].strip())
    types: tuple[str, ...] | None = None
    if "_type" in by_name:
        names = _split(by_name.pop("_type"))
        if not names:
            raise BadRequest("_type is empty")
        types = tuple(dict.fromkeys(t for t in names if p.type_name(t, "_type")))
    patients: list[str] = []
    for ref in _split(by_name.pop("patient", [])):
        if not _REFERENCE.match(ref):
            raise BadRequest(f"patient {ref!r} must be a reference Patient/<id>")
        patients.append(ref)
    if patients and level == "system":
        raise BadRequest("the patient parameter applies to Patient and Group level exports only")
    elements: list[tuple[str | None, str]] = []
    for item in _split(by_name.pop("_elements", [])):
        head, _, tail = item.partition(".")
        if tail:
            if p.type_name(head, "_elements") is not None:
                elements.append((head, tail.split(".", 1)[0]))
        else:
            elements.append((None, head))
    filters: dict[str, list[Doc]] = {}
    for item in _split(by_name.pop("_typeFilter", [])):
        built = await p.type_filter(db, item, types)
        if built is not None:
            filters.setdefault(item.partition("?")[0], []).append(built)
    for name in sorted(by_name):
        if name == "includeAssociatedData":
            p.problem("includeAssociatedData is not supported")
        else:
            p.problem(f"{name} is not a parameter of $export")
    return ExportSpec(
        level=level,
        group=group,
        output_format=fmt,
        since=since,
        types=types,
        type_filters={rt: any_of(fs) for rt, fs in filters.items()},
        patients=tuple(dict.fromkeys(patients)),
        elements=tuple(elements),
        warnings=tuple(p.warnings),
    )
