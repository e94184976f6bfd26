"""The operation registry: what an operation is, as one table row.

Each operation (https://hl7.org/fhir/R4/operations.html) is an `Operation`: its name, the
levels (system, type, instance) and resource types it is invoked on, the HTTP methods it
takes, the SMART interaction the token needs, its parameters and its handler. `rest/dispatch.py`
routes every `$name` through `OperationTable.find` with no code per operation; the
CapabilityStatement and the served OperationDefinitions (operations/definitions.py) are
generated from the same rows, so what is advertised is what is routed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhir_server.context import ServerContext
    from fhir_server.rest.messages import FhirRequest, FhirResponse

LEVELS = frozenset({"system", "type", "instance"})
METHODS = frozenset({"GET", "POST"})
# The input types the one parser reads (operations/params.py), besides "Resource" and the
# resource types: FHIR primitives, "reference" (a literal `Type/id`) and "token" (a search
# token, sent as text).
PRIMITIVE_INPUTS = frozenset(
    {
        "string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown", "token",
        "date", "dateTime", "instant", "integer", "positiveInt", "unsignedInt", "decimal",
        "boolean", "reference",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Parameter:
    """One OperationDefinition.parameter (https://hl7.org/fhir/R4/operationdefinition.html)."""

    name: str
    type: str  # FHIR type: "string", "code", "reference", "date", "instant", "Resource", ...
    min: int = 0
    max: str = "1"  # "1" or "*"
    use: str = "in"  # "in" | "out"
    documentation: str = ""
    # The codes a `code` parameter takes (a required binding); empty: any code.
    values: tuple[str, ...] = ()
    # A parameter made of parts (OperationDefinition.parameter.part; its `type` is ""):
    # its value is a dict of the parts' typed values by name (a part with max "*", a list).
    parts: tuple[Parameter, ...] = ()

    @property
    def single(self) -> bool:
        return self.max == "1"


class Params:
    """An operation's input parameters, typed per `Parameter.type` (operations/params.py
    builds them; unknown or malformed ones never get this far).

    "reference" values are strings ("Patient/123"), "Resource" values are dicts, integers
    are ints, booleans bools, decimals `Decimal`s; dates, instants and the string types stay
    strings (checked against their FHIR format)."""

    def __init__(
        self,
        values: Iterable[tuple[str, Any, str]] = (),
        dropped: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        # (name, typed value, the value as sent): in request order, query string first.
        self.items: tuple[tuple[str, Any, str], ...] = tuple(values)
        # (name, value as sent, why) that `Prefer: handling=lenient` let through unread.
        self.dropped: tuple[tuple[str, str, str], ...] = tuple(dropped)

    def get(self, name: str) -> Any | None:
        """The first value of `name`, or None."""
        for n, v, _ in self.items:
            if n == name:
                return v
        return None

    def all(self, name: str) -> list[Any]:
        return [v for n, v, _ in self.items if n == name]

    def pairs(self) -> list[tuple[str, str]]:
        """The values as sent, for a handler that reads them on as text (a search)."""
        return [(n, text) for n, v, text in self.items if not isinstance(v, dict)]

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _, _ in self.items)

    def __repr__(self) -> str:
        return f"Params({[(n, v) for n, v, _ in self.items]!r})"


@dataclass(frozen=True)
class OperationCall:
    """One invocation, as the handler gets it."""

    operation: Operation
    rt: str | None  # None at system level
    rid: str | None  # set at instance level
    params: Params

    @property
    def level(self) -> str:
        if self.rt is None:
            return "system"
        return "type" if self.rid is None else "instance"


Handler = Callable[["ServerContext", "FhirRequest", OperationCall], Awaitable["FhirResponse"]]
# The SMART interaction an operation needs on its type: fixed, or decided by the call
# ($validate: mode=delete needs delete). "" : the handler checks per type itself ($export,
# which leaves types the token may not search out of the export).
Interaction = str | Callable[[OperationCall], str]


@dataclass(frozen=True)
class Operation:
    name: str  # without "$", e.g. "mark-read"
    levels: frozenset[str]  # subset of {"system", "type", "instance"}
    types: frozenset[str] | None  # resource types (None: any type / system only)
    methods: frozenset[str]  # {"GET", "POST"} (GET only when it changes nothing)
    interaction: Interaction  # checked by dispatch before the handler runs
    parameters: tuple[Parameter, ...]
    handler: Handler
    title: str = ""
    description: str = ""
    affects_state: bool = False
    # The OperationDefinition id (several rows may share a name: $export has three); the
    # served definition is `{base}/OperationDefinition/{id}`.
    id: str = ""
    # The published OperationDefinition this row implements (Bulk Data, FHIR core), if any:
    # the CapabilityStatement names it and the served definition gives it as `base`.
    canonical: str = ""
    # Parameters the published definition has and this server does not support: 400
    # not-supported rather than "unknown".
    unsupported: frozenset[str] = frozenset()
    # The Resource parameter a POST body stands for when it is not a Parameters resource
    # ($validate takes the resource itself: https://hl7.org/fhir/R4/resource-operation-validate.html).
    body_parameter: str | None = None
    # Whether HEAD runs the GET handler: not where a GET starts work (an export kick-off).
    answers_head: bool = True

    def __post_init__(self) -> None:
        # Fail fast at import: a bad row would otherwise surface as a 500 on some request.
        if not self.levels or not self.levels <= LEVELS:
            raise ValueError(f"${self.name}: levels {sorted(self.levels)} not within {LEVELS}")
        if not self.methods or not self.methods <= METHODS:
            raise ValueError(f"${self.name}: methods {sorted(self.methods)} not within {METHODS}")
        if self.affects_state and "GET" in self.methods:
            # https://hl7.org/fhir/R4/operations.html#request: only operations that change
            # nothing may be invoked with GET.
            raise ValueError(f"${self.name} affects state: it cannot take GET")
        names = [p.name for p in self.parameters if p.use == "in"]
        if len(names) != len(set(names)):
            raise ValueError(f"${self.name}: a parameter is declared twice")
        if self.body_parameter is not None and self.body_parameter not in names:
            raise ValueError(f"${self.name}: body_parameter {self.body_parameter!r} undeclared")

    @property
    def definition_id(self) -> str:
        return self.id or self.name

    @property
    def inputs(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters if p.use == "in"}

    def allowed_methods(self) -> list[str]:
        """The Allow header of a 405 (HEAD where GET may be repeated harmlessly)."""
        allowed = sorted(self.methods)
        if "GET" in self.methods and self.answers_head:
            allowed.append("HEAD")
        return allowed

    def interaction_for(self, call: OperationCall) -> str:
        return self.interaction(call) if callable(self.interaction) else self.interaction

    def serves(self, level: str, rt: str | None) -> bool:
        if level not in self.levels:
            return False
        if level == "system":
            return True
        return self.types is None or rt in self.types


# A URL below an operation that is not itself an operation call ($export's status and file
# URLs): the first path segment it owns and the handler that answers every method there.
RouteHandler = Callable[["ServerContext", "FhirRequest"], Awaitable["FhirResponse"]]


@dataclass(frozen=True)
class Route:
    segment: str
    handler: RouteHandler

    def owns(self, path: list[str]) -> bool:
        """Paths below `segment`; an operation on one of them still goes through the table."""
        return bool(path) and path[0] == self.segment and not any(p[:1] == "$" for p in path[1:])


@dataclass(frozen=True)
class OperationTable:
    operations: tuple[Operation, ...]
    routes: tuple[Route, ...] = ()
    _by_id: dict[str, Operation] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        seen: dict[tuple[str, str, str | None], str] = {}
        for op in self.operations:
            if op.definition_id in self._by_id:
                raise ValueError(f"two operations have the definition id {op.definition_id!r}")
            self._by_id[op.definition_id] = op
            for level in op.levels:
                for rt in sorted(op.types) if op.types is not None else [None]:
                    key = (op.name, level, None if level == "system" else rt)
                    if key in seen:
                        raise ValueError(f"${op.name} is registered twice at {level} {rt}")
                    seen[key] = op.definition_id

    def find(self, name: str, level: str, rt: str | None) -> Operation | None:
        """The operation `$name` at `level` on `rt` (None: system level), if registered.
        A row for a named type wins over one for any type."""
        found = [op for op in self.operations if op.name == name and op.serves(level, rt)]
        found.sort(key=lambda op: op.types is None)
        return found[0] if found else None

    def check(self, known_types: frozenset[str]) -> None:
        """Fail fast at start-up on a row that names a type the server does not know or an
        input the parser cannot read (it would otherwise never match, or answer 400)."""
        for op in self.operations:
            unknown = sorted((op.types or frozenset()) - known_types)
            if unknown:
                raise ValueError(f"${op.name}: unknown resource types {unknown}")
            for p in [q for top in op.inputs.values() for q in (top, *top.parts)]:
                if p.parts and not p.type:
                    continue
                if p.type not in PRIMITIVE_INPUTS | {"Resource"} | known_types:
                    raise ValueError(f"${op.name}: parameter {p.name!r} has type {p.type!r}")

    def by_id(self, definition_id: str) -> Operation | None:
        return self._by_id.get(definition_id)

    def route(self, path: list[str]) -> Route | None:
        return next((r for r in self.routes if r.owns(path)), None)


NO_OPERATIONS = OperationTable(())
