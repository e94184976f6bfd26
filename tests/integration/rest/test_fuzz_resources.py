"""Property: random resources drawn from the R4 JSON Schema never make the server fail.

Resources are generated from single type definitions of the official `fhir.schema.json`
(`fhir_server/data`, the schema `fhir_server/validation/r4_schema.py` checks against):
properties with their types, enums, constants and primitive patterns, `$ref`s followed to a
bounded depth. A third of them are then corrupted (one element replaced by arbitrary JSON).
Each is POSTed to the in-process app: the answer is never a 5xx, and a 4xx is an
OperationOutcome.

hypothesis-jsonschema 0.23.1 cannot draw objects with this Hypothesis (6.170: its private
`many` helper changed), so the few schema keywords fhir.schema.json uses are mapped to
strategies here. Derandomized, bounded examples (docs/rest.md, "Robustness").
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import anyio.from_thread
import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fhir_server.validation.r4_schema import load_schema
from tests.conftest import FHIR_JSON

DEFS: dict[str, Any] = load_schema()["definitions"]
TYPES = (
    "Patient",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "Appointment",
    "Communication",
    "Condition",
    "Encounter",
    "Immunization",
    "AllergyIntolerance",
    "Task",
    "Consent",
    "QuestionnaireResponse",
    "Slot",
)
DEPTH = 3
# Elements not followed: extensions and contained resources recurse without end.
NOT_FOLLOWED = frozenset({"extension", "modifierExtension", "contained"})
EXAMPLES = 100
JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def strategy(node: dict[str, Any], depth: int) -> st.SearchStrategy[Any] | None:
    """A strategy for one schema node; None where the depth bound stops."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if depth <= 0 or name in ("ResourceList", "Extension"):
            return None
        return strategy(DEFS[name], depth - 1)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            subs = [s for s in (strategy(n, depth) for n in node[key]) if s is not None]
            return st.one_of(subs) if subs else None
    kind = node.get("type")
    if kind == "array":
        item = strategy(node.get("items", {}), depth)
        return st.lists(item, min_size=1, max_size=2) if item is not None else None
    if "properties" in node:
        return _object(node, depth)
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "number":
        return st.integers(-10_000, 10_000) | st.floats(-1e6, 1e6, allow_nan=False)
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: len(s) < 200)
    if kind == "string" or kind is None:
        return st.text(min_size=1, max_size=12)
    return None


def _object(node: dict[str, Any], depth: int) -> st.SearchStrategy[dict[str, Any]] | None:
    props = {
        name: s
        for name, sub in node["properties"].items()
        if not name.startswith("_") and name not in NOT_FOLLOWED
        for s in [strategy(sub, depth)]
        if s is not None
    }
    required = {k: props[k] for k in node.get("required", []) if k in props}
    optional = {k: v for k, v in props.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    rt = draw(st.sampled_from(TYPES))
    built = strategy(DEFS[rt], DEPTH)
    assert built is not None
    resource: dict[str, Any] = dict(draw(built))
    resource["resourceType"] = rt
    resource.pop("id", None)  # a create assigns it; a sent id is ignored anyway
    if draw(st.integers(0, 2)) == 0 and len(resource) > 1:
        key = draw(st.sampled_from(sorted(k for k in resource if k != "resourceType")))
        resource[key] = draw(JUNK)
    return resource


async def test_random_schema_resources_never_5xx(client: httpx.AsyncClient) -> None:
    statuses: Counter[int] = Counter()

    async def post(resource: dict[str, Any]) -> None:
        r = await client.post(resource["resourceType"], json=resource, headers=FHIR_JSON)
        statuses[r.status_code] += 1
        assert r.status_code < 500, (resource, r.text)
        if r.status_code >= 400:
            assert r.json()["resourceType"] == "OperationOutcome", r.text

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # No shrinking: each step is a server round trip, and a failure shows its example.
        phases=[Phase.explicit, Phase.generate],
    )
    @given(resources())
    def prop(resource: dict[str, Any]) -> None:
        anyio.from_thread.run(post, resource)

    started = time.monotonic()
    await anyio.to_thread.run_sync(prop)
    print(f"answers {dict(statuses)} in {time.monotonic() - started:.1f} s")
    # Both paths are reached: the schema leaves out R4's own minimums (`status`, one
    # `value[x]`), so most are refused by the models, and some are stored.
    assert statuses[201] >= 2 and sum(v for k, v in statuses.items() if k >= 400) >= 20
