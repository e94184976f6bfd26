"""The account-linking verifier handed to smart_auth (smart_auth/linking.py): the answers
of an unlinked DS Logon account, with its name, matched by the `Patient/$match` rules;
the one Patient matched at `certain` grade, or None (none, or several: never a guess)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhir_server.exchange.identity import match
from fhir_server.exchange.identity.table import identifiers
from smart_auth.linking import IdentityClaim, IdentityVerifier

if TYPE_CHECKING:
    from fhir_server.context import ServerContext

Doc = dict[str, Any]


def as_patient(claim: IdentityClaim) -> Doc:
    """The claim as a `$match` input Patient."""
    table = identifiers()
    ssn = next(s for s in table.systems if s.masked)
    edipi = next(s for s in table.systems if s.key == "edipi")
    given: Doc = {"resourceType": "Patient", "name": [{"text": claim.name}]}
    if claim.birth_date:
        given["birthDate"] = claim.birth_date
    idents = []
    if claim.edipi:
        idents.append({"system": edipi.system, "value": claim.edipi})
    if claim.ssn_last4:
        idents.append({"system": ssn.system, "value": claim.ssn_last4})
    if idents:
        given["identifier"] = idents
    return given


def verifier(ctx: ServerContext) -> IdentityVerifier:
    async def verify(claim: IdentityClaim) -> str | None:
        found = await match.candidates(ctx, as_patient(claim), type_filter=None)
        certain = match.select(found, only_certain=True, count=1)
        return f"Patient/{certain[0].resource['id']}" if certain else None

    return verify
