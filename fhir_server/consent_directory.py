"""What the consent page asks of the FHIR store (docs/smart.md, "The consent page").

The authorization server (smart_auth, below fhir_server) renders its pages in worker
threads and knows only account names; it takes two look-ups as plain callables, set here:
the display names of the patients a user may choose (a child has no account, so its name
is the Patient's), and the patients a clinician may open (the subjects of its active care
teams, the same rule the access policy applies, access/care_team.py). Both run the async
store on the server's event loop from the worker thread (anyio.from_thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.from_thread

from fhir_server.access import care_team
from fhir_server.access.policy import today

MAX_PATIENTS = 500  # a clinician's list on the consent page; the search box narrows it


def display_name(patient: dict[str, Any]) -> str:
    """The official (else first) HumanName as people write it: "Sophia Rose Carter"."""
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if name.get("text"):
        return str(name["text"])
    parts = [*(name.get("given") or []), name.get("family") or ""]
    return " ".join(p for p in parts if p) or str(patient.get("id", ""))


def install(auth: Any, store: Any) -> None:
    """Give the authorization server `auth` its two look-ups on the FHIR `store`."""

    async def names(refs: list[str]) -> dict[str, str]:
        keys = [r for r in refs if r.startswith("Patient/")][:MAX_PATIENTS]
        docs = await store.resources_matching({"_id": {"$in": keys}}, what="The consent page")
        found = {f"Patient/{d.get('id')}": display_name(d) for d in docs}
        return {r: found.get(r, r.removeprefix("Patient/")) for r in refs}

    async def team_patients(practitioner: str) -> list[str]:
        table = care_team.load_table()
        patients = await care_team.care_team_patients(store, table, practitioner, today())
        return list(patients[:MAX_PATIENTS])

    auth.patient_name_resolver = _sync(names)
    auth.care_team_resolver = _sync(team_patients)


def _sync(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        return anyio.from_thread.run(fn, *args)

    return call
