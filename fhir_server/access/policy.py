"""The access policy of one request, built from its SMART token.

A policy is a search: the patient context and any query-qualified scopes become MongoDB
filters built by the one search parser and query builder (fhir_server.search), ANDed into
every query the request makes (main query, chains, `_has`, includes), so paging and totals
stay right and a hidden resource answers exactly as a missing one.

Scopes: https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from fhir_server import clock
from fhir_server.access import care_team, release, scope_filters
from fhir_server.access.family import Band, compartment_rules, load_table
from fhir_server.access.policy_epochs import (
    CARE_TEAM_TYPES,
    CARE_TEAMS,
    FAMILY_TYPES,
    InputCache,
    Reads,
    snapshot,
)
from fhir_server.access.policy_tables import PolicyTables, label_keys, message_keys
from fhir_server.access.rules import CompartmentRule, DirectoryRule, rules_admit, rules_filter
from fhir_server.access.stored_keys import key_param
from fhir_server.access.views import View
from fhir_server.errors import BadRequest, Forbidden
from fhir_server.storage.store import as_store
from smart_auth import AuthContext, allows

# Built from the tables once (policy_tables.py); named here for the tests that check them.
__all__ = ["OPEN", "AccessPolicy", "PolicyTables", "build_policy", "label_keys", "message_keys"]

Doc = dict[str, Any]
TABLES = Path(__file__).resolve().parents[2] / "profiles" / "access"

# FHIR interactions as the scope letters know them (c r u d s).
INTERACTION = {
    "read": "read",
    "vread": "read",
    "history": "read",
    "search": "search",
    "create": "create",
    "update": "update",
    "patch": "update",
    "delete": "delete",
}


@dataclass(frozen=True)
class AccessPolicy:
    """What one request may see and do; `OPEN` (no token checks) only when auth is off."""

    auth: AuthContext | None = None
    # Patient compartments the request is confined to; None = not confined to patients.
    compartments: tuple[str, ...] | None = None
    # Per type, the query-qualified scope restriction already built as a Mongo filter.
    scope_filters: dict[str, Doc] = field(default_factory=dict)
    # Per compartment, what a Patient user sees there (family.py); None = `compartments` whole.
    rules: tuple[CompartmentRule, ...] | None = None
    # Directory types a confined token reads besides its compartments (care_team.py).
    directory: DirectoryRule | None = None
    # The stated reason when a clinician broke the glass for this request (audited).
    break_glass: str | None = None
    # Per type, the read-time views applied to what leaves (views.py), from the workflows.
    views: Mapping[str, tuple[View, ...]] = field(default_factory=dict)
    # Results release (release.py): the result types a patient or proxy token sees only
    # once released (status, hold expiry); None for clinicians and system tokens.
    release: frozenset[str] | None = None

    @cached_property
    def key_params(self) -> frozenset[str]:
        """The parameters whose index keys the rules hide by (labels, message senders...):
        what a stored document's access keys must cover for the post-check (stored_keys.py)."""
        return frozenset(key_param(k) for r in self.rules or () for k in r.hidden_keys)

    @property
    def restricted(self) -> bool:
        """True whenever a token governs the request (its filters may still be empty)."""
        return self.auth is not None

    def require(self, resource_type: str, interaction: str) -> None:
        """403 when no scope grants the interaction on the type (SMART: not granted)."""
        if self.auth is None:
            return
        if not allows(self.auth.scopes, resource_type, INTERACTION[interaction]):
            raise Forbidden(
                f"the access token does not grant {interaction} on {resource_type}"
                + _ceiling_note(self.auth.acr, resource_type, interaction)
            )

    def sees_compartment(self, compartment: str) -> bool:
        """Whether the request may look into `compartment` at all: a confined token only into
        its own (a compartment search or an export of another patient answers as for a
        patient that does not exist)."""
        return self.compartments is None or compartment in self.compartments

    def shows_reference(self, reference: str) -> bool:
        """Whether a reference `Type/id` may be shown to the caller: a Patient whose
        compartment the rules show Patients of, or a directory resource."""
        rt = reference.split("/", 1)[0]
        comps = [reference] if rt == "Patient" else []
        return self.admits(rt, comps, ())

    def read_filter(self, resource_type: str) -> Doc | None:
        """`type_filter` as the store's `visible` argument: None when nothing is hidden."""
        return self.type_filter(resource_type) or None

    def type_filter(self, resource_type: str) -> Doc:
        """The filter ANDed into every query on `resource_type` ("*": any type)."""
        if self.auth is None:
            return {}
        if resource_type != "*" and not (
            allows(self.auth.scopes, resource_type, "read")
            or allows(self.auth.scopes, resource_type, "search")
        ):
            # Not granted at all: included or chained resources of this type stay out.
            return {"_id": {"$in": []}}
        parts: list[Doc] = []
        if self.rules is not None:
            filt = rules_filter(self.rules, resource_type, self.directory)
            if filt:
                parts.append(filt)
        elif self.compartments is not None:
            parts.append({"comp": {"$in": list(self.compartments)}})
        if resource_type == "*":
            scoped = scope_filters.across_types(self.scope_filters)
        else:
            scoped = self.scope_filters.get(resource_type)
        if scoped is not None:
            parts.append(scoped)
        if self.release is not None and (resource_type == "*" or resource_type in self.release):
            # The expiry is compared with the clock of this query: a hold that ran out is
            # released on the next read, with no job and no write.
            parts.append(release.query_clause(clock.now()))
        if not parts:
            return {}
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def admits(self, resource_type: str, compartments: Iterable[str], keys: Iterable[str]) -> bool:
        """The compartment rules evaluated in memory on one resource (its type, compartments
        and `ix.k` keys): what `type_filter` does in the database, minus scope filters."""
        if self.rules is not None:
            return rules_admit(self.rules, resource_type, compartments, keys, self.directory)
        if self.compartments is not None:
            return bool(set(compartments) & set(self.compartments))
        return True

    def check_write(
        self,
        compartments: list[str],
        *,
        resource_type: str | None = None,
        keys: Iterable[str] = (),
        labels_before: frozenset[tuple[str, str]] = frozenset(),
        labels_after: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """A confined request may only write into its own patient compartments (every
        compartment the resource is in, so naming one of its own patients beside another
        one reaches no further), only what it could then read, and a proxy may not add,
        change or remove security labels."""
        if self.compartments is None:
            return
        if not compartments or not set(compartments) <= set(self.compartments):
            raise Forbidden(
                "the resource is outside the patient compartments this access token may write to"
            )
        if self.rules is None or resource_type is None:
            return
        if not self.admits(resource_type, compartments, keys):
            raise Forbidden(
                "the resource is outside the patient compartments this access token may write to"
            )
        by_proxy = any(r.proxy and r.compartment in compartments for r in self.rules)
        if by_proxy and labels_before != labels_after:
            raise Forbidden("a proxy may not add, change or remove security labels")

    def writer_kinds(self, compartments: Iterable[str]) -> tuple[str, ...]:
        """The kinds of actor of the write-rule table (access/writes.py) this token is on a
        resource in `compartments`: one per compartment (its band), or the token's own
        kind for a resource in no patient compartment."""
        if self.auth is None or self.auth.is_system:
            return ("system",)
        if self.break_glass is not None:
            return ("break-glass",)
        by_compartment = {r.compartment: r.band for r in self.rules or ()}
        bands = [by_compartment[c] for c in compartments if c in by_compartment]
        if not bands:
            bands = [self._own_band()]
        return tuple(dict.fromkeys(self._kind(b) for b in bands))

    def possible_writer_kinds(self) -> tuple[str, ...]:
        """Every kind this token may be on some resource (for checks made before the
        target is looked up)."""
        if self.auth is None or self.auth.is_system or self.break_glass is not None:
            return self.writer_kinds(())
        bands = [r.band for r in self.rules or ()] + [self._own_band()]
        return tuple(dict.fromkeys(self._kind(b) for b in bands))

    def _own_band(self) -> str:
        assert self.auth is not None
        if (self.auth.fhir_user or "").startswith("Practitioner/"):
            return "clinician"
        return "managed" if self.auth.acr == "managed" else "self"

    def _kind(self, band: str) -> str:
        if band == "self" and self.auth is not None and self.auth.acr in load_table().basic_levels:
            return "basic"
        return band


OPEN = AccessPolicy()


@lru_cache(maxsize=1)
def _login_levels() -> dict[str, Any]:
    from smart_auth.policy import AccessPolicy as LoginLevels

    return dict(LoginLevels.load(TABLES).levels)


def _ceiling_note(acr: str | None, resource_type: str, interaction: str) -> str:
    """Why, when the login level itself withholds it (profiles/access/login_levels.json):
    a DS Logon Basic user asking to send a message learns that no token of that login
    ever may, not merely that this one does not."""
    level = _login_levels().get(acr or "")
    if level is None or allows(level.ceiling, resource_type, INTERACTION[interaction]):
        return ""
    return f": a {level.label} login never does (sign in with a higher login level)"


def _confinement(auth: AuthContext) -> tuple[str, ...] | None:
    """Patient compartments a token is confined to (None for system and clinician users)."""
    if auth.is_system:
        return None
    contexts = {s.context for s in auth.scopes}
    fhir_user = auth.fhir_user or ""
    allowed: list[str] = []
    if "patient" in contexts and auth.patient:
        allowed.append(f"Patient/{auth.patient}")
    if "user" in contexts and fhir_user.startswith("Patient/"):
        allowed += [fhir_user, *auth.acts_for]
    return tuple(dict.fromkeys(allowed))


async def build_policy(
    db: Any,
    tables: PolicyTables,
    auth: AuthContext,
    *,
    break_glass: str | None = None,
    cache: InputCache | None = None,
    views: Mapping[str, tuple[View, ...]] | None = None,
) -> AccessPolicy:
    """Turn a validated token into filters, parsing query-qualified scopes as searches.

    `tables` are the access tables compiled at start-up (policy_tables.py): only the token
    and the data (relationships, Consents, care teams) are looked at per request.
    `break_glass` is the reason a clinician stated for reaching beyond its care teams on this
    request (the `X-Break-Glass-Reason` header); anyone else stating one is refused.
    `cache` keeps the documents the policy reads (relationships, Consents, care teams) per
    token subject, valid while their epochs are unchanged (policy_epochs.py); None reads
    them afresh. `views` are the read-time views of the server's workflows (views.py)."""
    if break_glass is not None:
        reason = _break_glass_reason(auth, break_glass, tables.clinicians)
        # The clinician sees every patient for this one request, as before care teams.
        base = AccessPolicy(auth=auth, break_glass=reason)
    else:
        base = await _confined_policy(db, tables, auth, cache)
    built = await scope_filters.build(db, tables.registry, auth.scopes, base.type_filter)
    if not built and not views:
        return base
    return replace(base, scope_filters=built or base.scope_filters, views=views or base.views)


async def _confined_policy(
    db: Any, tables: PolicyTables, auth: AuthContext, cache: InputCache | None
) -> AccessPolicy:
    """The policy before query-qualified scopes: compartments, family rules, directory."""
    confined: tuple[str, ...] | None
    reads: Reads | None = None
    subject: tuple[Any, ...]
    if _is_clinician(auth):
        subject = ("clinician", auth.fhir_user)
        reads = await _reads(db, cache, subject, [CARE_TEAMS], CARE_TEAM_TYPES)
        confined = await _clinician_compartments(reads, tables.clinicians, auth)
    else:
        confined = _confinement(auth)
        if confined is not None and (auth.fhir_user or "").startswith("Patient/"):
            subject = ("patient", auth.fhir_user, auth.acr, confined)
            keys = [*confined, auth.fhir_user or ""]
            reads = await _reads(db, cache, subject, keys, FAMILY_TYPES)
    rules = await _rules(reads or db, tables, auth, confined) if confined is not None else None
    if reads is not None:
        reads.commit()
    if rules is not None:
        confined = tuple(r.compartment for r in rules)
    # Patients and proxies (any confined token but a clinician's) see results once released.
    released = (
        release.load_table().guarded_types
        if confined is not None and not _is_clinician(auth)
        else None
    )
    return AccessPolicy(
        auth=auth,
        compartments=confined,
        rules=rules,
        directory=tables.directory if confined is not None else None,
        release=released,
    )


async def _reads(
    db: Any,
    cache: InputCache | None,
    subject: tuple[Any, ...],
    keys: list[str],
    types: frozenset[str],
) -> Reads:
    """The policy's reads for `subject`: the epochs of `keys` first (one point lookup),
    then the cached documents if they were read under those epochs."""
    store = as_store(db, None)  # a database as tests and benchmarks pass one, or a store
    epochs = await snapshot(store.db, keys) if cache is not None else None
    return Reads(store, cache, subject, epochs, types)


def _is_clinician(auth: AuthContext) -> bool:
    return not auth.is_system and (auth.fhir_user or "").startswith("Practitioner/")


async def _clinician_compartments(
    db: Any, table: care_team.ClinicianTable, auth: AuthContext
) -> tuple[str, ...]:
    """A practitioner sees the patients of its care teams; launched on a patient (`patient/`
    scopes) it gets that patient only if the patient is one of them."""
    team = await care_team.care_team_patients(db, table, auth.fhir_user or "", today())
    contexts = {s.context for s in auth.scopes}
    allowed: list[str] = []
    if "patient" in contexts and auth.patient and f"Patient/{auth.patient}" in team:
        allowed.append(f"Patient/{auth.patient}")
    if "user" in contexts:
        allowed += team
    return tuple(dict.fromkeys(allowed))


def _break_glass_reason(auth: AuthContext, raw: str, table: care_team.ClinicianTable) -> str:
    from fhir_server.access.break_glass import stated_reason  # its rules: that module

    if not _is_clinician(auth):
        raise Forbidden("break-the-glass access is only for practitioners")
    reason = stated_reason(raw, table)
    if reason is None:
        raise BadRequest(
            f"the break-the-glass reason must be {table.min_reason} to "
            f"{table.max_reason} characters of text in at least {table.min_reason_words} "
            "words",
            code="value",
        )
    return reason


def today() -> date:
    return datetime.now(UTC).date()


async def _rules(
    db: Any, tables: PolicyTables, auth: AuthContext, confined: tuple[str, ...]
) -> tuple[CompartmentRule, ...]:
    fhir_user = auth.fhir_user or ""
    if not fhir_user.startswith("Patient/"):
        # A clinician launched on a patient: that compartment whole (care-team confinement
        # is a separate rule).
        return tuple(CompartmentRule.of(c, "clinician", None, ()) for c in confined)

    def hidden(band: Band, patient: str) -> list[str]:
        keys = list(tables.label_keys) if band.hide_labelled else []
        if band.hide_care_team_messages:
            keys += tables.message_keys(patient)
        return keys

    return await compartment_rules(
        db,
        tables.family,
        fhir_user=fhir_user,
        level=auth.acr,
        compartments=confined,
        hidden_keys=hidden,
        today=today(),
    )
