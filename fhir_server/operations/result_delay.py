"""`Patient/[id]/$result-delay`: a patient delays a category of their own results (docs/
portal.md, "Results release"); the work is in fhir_server/access/release_delays.py."""

from __future__ import annotations

from fhir_server.access.release import load_table
from fhir_server.access.release_delays import result_delay
from fhir_server.operations.registry import Operation, Parameter

OPERATION = Operation(
    name="result-delay",
    id="Patient-result-delay",
    levels=frozenset({"instance"}),
    types=frozenset({"Patient"}),
    methods=frozenset({"POST"}),
    interaction="read",
    parameters=(
        Parameter(
            "category",
            "code",
            min=1,
            values=tuple(sorted(load_table().categories)),
            documentation="The category of results to delay (profiles/access/release.json).",
        ),
        Parameter(
            "days",
            "integer",
            min=1,
            documentation="Days after a result is final before it shows; 0 withdraws the delay.",
        ),
        Parameter("return", "Basic", min=1, use="out"),
    ),
    handler=result_delay,
    title="Delay my results of a category",
    description="The calling patient's own delay of a category of results: each result of "
    "it that becomes final is held for that many days, or until the clinician releases it.",
    affects_state=True,
)
