"""A partner's transaction bundle gets the same Provenance an import gives.

After a transaction from a partner's backend-service token (a client registered with an
Organization) committed, each resource it created or changed gets its Provenance
(provenance.py), with the Bundle as the source entity: its `identifier` when it has one,
else a name derived from its content (`urn:uuid:` of a hash), so the same bundle sent again
names the same source. The Provenance is written in a transaction of its own right after
(not in the bundle's: its target version is known only once the bundle is written).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from fhir_server.exchange.imports.store import now
from fhir_server.exchange.imports.table import load_table
from fhir_server.exchange.imports.tasks import partner_of
from fhir_server.exchange.imports.write import Source, provenance_of, stamp_all
from fhir_server.rest.messages import FhirRequest, FhirResponse
from fhir_server.storage.store import instant

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]


def is_transaction(req: FhirRequest) -> bool:
    body = req.body
    return (
        req.method == "POST"
        and req.path == []
        and isinstance(body, dict)
        and body.get("resourceType") == "Bundle"
        and body.get("type") == "transaction"
    )


def source_of(bundle: Doc) -> str:
    ident = bundle.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        system = ident.get("system")
        return f"{system}|{ident['value']}" if isinstance(system, str) else ident["value"]
    digest = hashlib.sha256(orjson.dumps(bundle, option=orjson.OPT_SORT_KEYS)).digest()
    return f"urn:uuid:{uuid.UUID(bytes=digest[:16])}"


def started() -> str:
    return instant(now())


async def stamp_transaction(
    ctx: ServerContext, req: FhirRequest, resp: FhirResponse, since: str
) -> None:
    """Provenance for what a partner's committed transaction created or changed."""
    auth = req.policy.auth
    if auth is None or not auth.is_system or resp.status != 200 or resp.body is None:
        return
    partner = await partner_of(ctx, auth.client_id)
    if partner is None or not partner.get("organization"):
        return
    source = Source(source_of(req.body), "Bundle", partner["organization"], auth.client_id)
    table = load_table()
    provs = []
    for e in resp.body.get("entry", []):
        r = e.get("response") or {}
        status, lu, loc = (
            str(r.get("status", "")),
            str(r.get("lastModified", "")),
            r.get("location"),
        )
        if not isinstance(loc, str) or "/_history/" not in loc or loc.startswith("Provenance/"):
            continue
        if status.startswith("201") or (status.startswith("200") and lu >= since):
            provs.append(provenance_of(table, loc, lu, source))
    await stamp_all(ctx, FhirRequest(method="POST", path=[], policy=req.policy), provs)
