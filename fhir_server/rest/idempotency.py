"""Idempotent creates: `If-None-Exist` and the `Idempotency-Key` header, safe under races.

A retried `POST [type]` must create one resource, however many copies arrive at once.
Conditional create (https://hl7.org/fhir/R4/http.html#ccreate) alone is a search then a
write, so parallel copies can all find nothing and all create. Here each guarded create
reads its claim (storage/claims.py) before it searches, and moves it on in the transaction
that writes the resource: of parallel copies one commits, the others' transactions fail, and
they start again, find the winner and answer it (docs/rest.md, "Idempotent creates").

- `If-None-Exist: <query>`: the claim is per type and normalised query (parameters sorted),
  so copies of one conditional create are serialised; the answer stays the search's (200
  and the match, 412 for several matches). Inside a transaction bundle the same claim is
  taken in the bundle's transaction, read before the bundle's own `ifNoneExist` search; a
  lost race fails the bundle with 412 (retry it), never a second copy.
- `Idempotency-Key: "<key>"` (IETF draft "The Idempotency-Key HTTP Header Field", a
  Structured Field string): the claim is per caller (client id and user of the token) and
  key, with the request's fingerprint (type and body). The same key and body again answer
  what the first answered (its status, the resource as it is now); the same key with another
  body is 422, as the draft says; a key is remembered `idempotency_key_ttl_s` (24 h by
  default). Only a create takes one: on PATCH or a Bundle it is 400, since nothing would
  make those idempotent; GET, PUT and DELETE are idempotent already and ignore it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from fhir_server.access.policy import AccessPolicy
from fhir_server.context import ServerContext
from fhir_server.db.transactions import own_transaction
from fhir_server.errors import BadRequest, NotSupported, Unprocessable
from fhir_server.rest.messages import FhirRequest
from fhir_server.storage.claims import Claim, ClaimStore, LostRace

Doc = dict[str, Any]
HEADER = "idempotency-key"
# Copies of one create that lose the race start again; each round one of them wins.
MAX_ATTEMPTS = 40
# Printable ASCII, as a Structured Field string holds (RFC 8941 section 3.3.3).
_KEY = re.compile(r'^"?([\x20-\x21\x23-\x5b\x5d-\x7e]{1,255})"?$')


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def normalised_condition(condition: str) -> str:
    """The conditional create's query with its parameters in one order, so two spellings of
    one condition share a claim."""
    query = condition.split("?", 1)[1] if "?" in condition else condition
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def parse_key(value: str) -> str:
    m = _KEY.match(value.strip())
    if m is None or (value.strip().startswith('"') != value.strip().endswith('"')):
        raise BadRequest(
            "Idempotency-Key must be a string of 1-255 printable ASCII characters, "
            'e.g. Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"'
        )
    return m.group(1)


def caller(policy: AccessPolicy) -> str:
    """Whose keys these are: the token's client and user (one client's key never answers
    another's request)."""
    auth = policy.auth
    if auth is None:
        return "no-token"
    return f"{auth.client_id}\x1f{auth.subject}"


def refuse_key(req: FhirRequest, what: str) -> None:
    """400 for an Idempotency-Key on a request that is not a create."""
    if req.header(HEADER) is not None:
        raise NotSupported(
            f"Idempotency-Key is honoured on a create (POST [type]) only, not on {what}; "
            "inside a transaction Bundle use the entries' request.ifNoneExist"
        )


@dataclass(frozen=True)
class Guards:
    """What makes one create idempotent: its condition and/or its key."""

    rt: str
    condition: str | None
    condition_key: str | None
    request_key: str | None
    fingerprint: str | None

    @staticmethod
    def of(req: FhirRequest, rt: str, body: Doc) -> Guards | None:
        condition = req.header("if-none-exist") or None
        raw_key = req.header(HEADER)
        if condition is None and raw_key is None:
            return None
        if raw_key is not None and req.in_bundle:
            raise NotSupported("Idempotency-Key does not apply to a Bundle entry")
        ckey = _digest("if-none-exist", rt, normalised_condition(condition)) if condition else None
        rkey = fp = None
        if raw_key is not None:
            rkey = _digest("idempotency-key", caller(req.policy), parse_key(raw_key))
            fp = _digest(rt, orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode())
        return Guards(rt, condition, ckey, rkey, fp)

    def claim_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.condition_key, self.request_key) if k is not None)

    async def read(self, ctx: ServerContext) -> dict[str, Claim]:
        store = claim_store(ctx)
        return {k: await store.read(k) for k in self.claim_keys()}

    def replay(self, claims: dict[str, Claim]) -> tuple[str, int] | None:
        """The first answer under this key, `(id, status)`, or None; 422 when the key
        was used with another request."""
        if self.request_key is None:
            return None
        claim = claims[self.request_key]
        if claim.result is None:
            return None
        if claim.fingerprint != self.fingerprint:
            raise Unprocessable(
                "this Idempotency-Key was already used with a different request; "
                "use a new key for a new request",
                code="business-rule",
            )
        return claim.result.split("/", 1)[1], int(claim.status or 200)

    async def take(
        self,
        ctx: ServerContext,
        claims: dict[str, Claim],
        req: FhirRequest,
        rid: str,
        status: int,
        *,
        key_only: bool = False,
    ) -> None:
        assert req.session is not None
        store = claim_store(ctx)
        for key in (self.request_key,) if key_only else self.claim_keys():
            if key is None:
                continue
            await store.take(
                claims[key],
                result=f"{self.rt}/{rid}",
                status=status,
                fingerprint=self.fingerprint if key == self.request_key else None,
                ttl_s=ctx.settings.idempotency_key_ttl_s,
                session=req.session,
            )


def claim_store(ctx: ServerContext) -> ClaimStore:
    return ClaimStore(ctx.store.db, ctx.store.max_time_ms)


async def backoff(attempt: int) -> None:
    """Wait before round `attempt` + 1: jittered, so copies that lost together do not
    collide again, and growing (to half a second), so a winner whose transaction is slow
    to commit on a loaded database is waited for rather than raced 40 times at once."""
    await asyncio.sleep(random.uniform(0.002, min(0.5, 0.01 * 2**attempt)))


@asynccontextmanager
async def transaction(ctx: ServerContext, req: FhirRequest) -> AsyncIterator[None]:
    """The guarded create's own transaction (the bundle's when it runs in one): its
    conflicts are a lost race, which the caller answers by starting again."""
    async with own_transaction(ctx.store.client, req, LostRace):
        yield


__all__ = ["MAX_ATTEMPTS", "Guards", "LostRace", "backoff", "refuse_key", "transaction"]
