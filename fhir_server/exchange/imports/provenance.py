"""The Provenance stamped on every resource an import creates or changes.

One Provenance per written version (https://hl7.org/fhir/R4/provenance.html): `target`
the version (`Type/id/_history/n`), `recorded` the version's own `lastUpdated`, `agent`
the partner Organization (author) and the client that delivered it (assembler, on behalf
of the Organization), `entity` the source (the file URL, or the transaction Bundle). Its
id and content follow from the version and the source alone, so writing it again (a batch
run twice after a restart, the same file imported twice) changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fhir_server.exchange.imports.table import ImportTable

Doc = dict[str, Any]


def provenance_id(target: str) -> str:
    return "imp-" + hashlib.sha256(target.encode("utf-8")).hexdigest()[:40]


def build(
    table: ImportTable,
    target: str,
    recorded: str,
    created: bool,
    organization: str | None,
    client_id: str,
    source: str,
) -> Doc:
    t = table.provenance
    client_agent: Doc = {
        "type": {"coding": [t["client_agent"]]},
        "who": {"identifier": {"system": t["client_system"], "value": client_id}},
    }
    agents: list[Doc] = []
    if organization:
        org = {"reference": organization}
        agents.append({"type": {"coding": [t["organization_agent"]]}, "who": org})
        client_agent["onBehalfOf"] = org
    agents.append(client_agent)
    return {
        "resourceType": "Provenance",
        "id": provenance_id(target),
        "target": [{"reference": target}],
        "recorded": recorded,
        "activity": {"coding": [t["activity"] if created else t["update_activity"]]},
        "agent": agents,
        "entity": [
            {
                "role": "source",
                "what": {"identifier": {"system": t["source_system"], "value": source}},
            }
        ],
    }
