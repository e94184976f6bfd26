"""The post-check tests the stored compartments and access keys, not a re-index.

A document written with `ak` is judged on its stored `comp` and `ak` alone (the indexer is
never called); one written before `ak` existed, or whose `ak` does not cover the parameters
the policy hides by, is indexed again, so it is judged exactly as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_server.access.family import load_table
from fhir_server.access.policy import AccessPolicy, label_keys, message_keys
from fhir_server.access.rules import CompartmentRule
from fhir_server.access.screen import admitted, screen
from fhir_server.access.stored_keys import LABEL_PARAM, access_field, load, stored_keys
from fhir_server.search.extract import compartments, index_entries
from fhir_server.search.registry import Registry
from smart_auth import AuthContext
from smart_auth.scopes import parse_scopes

Doc = dict[str, Any]
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry.load_default()


class CountingIndexer:
    """The server's indexer, counting its calls."""

    def __init__(self, reg: Registry) -> None:
        self.reg, self.calls = reg, 0

    def __call__(self, r: Doc) -> tuple[Doc, list[str]]:
        self.calls += 1
        return index_entries(r, self.reg), compartments(r, self.reg)


def _policy(rules: tuple[CompartmentRule, ...] | None, comps: tuple[str, ...]) -> AccessPolicy:
    auth = AuthContext(
        subject="u",
        client_id="c",
        scopes=tuple(parse_scopes("user/*.rs")),
        scope="user/*.rs",
        token_id="t",
        grant_id="g",
        expires_at=datetime.now(UTC),
        fhir_user="Patient/me",
    )
    return AccessPolicy(auth=auth, compartments=comps, rules=rules)


def _proxy(reg: Registry) -> AccessPolicy:
    """A parent of a teen: labelled resources and the teen's messages hidden."""
    table = load_table()
    hidden = [*label_keys(reg, table), *message_keys(reg, table, "Patient/teen")]
    rule = CompartmentRule.of("Patient/teen", "child", None, hidden)
    return _policy((rule,), ("Patient/teen",))


def _obs(labelled: bool, patient: str = "Patient/teen") -> Doc:
    r: Doc = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": patient},
    }
    if labelled:
        r["meta"] = {"security": [PSY]}
    return r


def _stored(reg: Registry, resource: Doc) -> Doc:
    """What the Store writes beside `resource` (ResourceStore.document)."""
    ix = index_entries(resource, reg)
    return {"res": resource, "comp": compartments(resource, reg), "ak": access_field(ix["k"])}


def test_access_keys_are_the_label_and_message_keys_of_the_index(reg: Registry) -> None:
    assert load().params >= {LABEL_PARAM, "sender", "recipient"}
    stored = _stored(reg, _obs(True))
    keys = stored["ak"]["k"]
    assert f"_security={PSY['system']}|PSY" in keys
    assert all(k.startswith("_security=") for k in keys)  # nothing else of the index
    msg = {
        "resourceType": "Communication",
        "status": "completed",
        "sender": {"reference": "Patient/teen"},
    }
    assert "sender=Patient/teen" in _stored(reg, msg)["ak"]["k"]
    # Every key a family rule can hide is a key `ak` keeps (or the check falls back).
    proxy = _proxy(reg)
    assert proxy.key_params <= load().params


def test_stored_facts_decide_without_indexing(reg: Registry) -> None:
    policy, indexer = _proxy(reg), CountingIndexer(reg)
    plain, labelled = _stored(reg, _obs(False)), _stored(reg, _obs(True))
    assert admitted(policy, indexer, plain["res"], plain)
    assert not admitted(policy, indexer, labelled["res"], labelled)
    assert indexer.calls == 0
    # It is the stored facts that count: a stored label (or a stored compartment elsewhere)
    # withholds the resource whatever its content says.
    assert not admitted(policy, indexer, plain["res"], {**plain, "ak": labelled["ak"]})
    assert not admitted(policy, indexer, plain["res"], {**plain, "comp": ["Patient/other"]})
    assert indexer.calls == 0
    assert screen(policy, indexer, plain["res"], where="test", stored=plain)
    assert not screen(policy, indexer, labelled["res"], where="test", stored=labelled)
    assert indexer.calls == 0


@pytest.mark.parametrize(
    "old",
    [
        lambda d: {k: v for k, v in d.items() if k != "ak"},  # written before `ak`
        lambda d: {**d, "ak": None},
        lambda d: {**d, "ak": {"k": []}},  # malformed
        # Written before the table named the message parameters: does not cover them.
        lambda d: {**d, "ak": {"p": [LABEL_PARAM], "k": []}},
    ],
)
def test_a_document_without_current_access_keys_is_indexed_again(reg: Registry, old: Any) -> None:
    policy, indexer = _proxy(reg), CountingIndexer(reg)
    for labelled in (False, True):
        doc = old(_stored(reg, _obs(labelled)))
        assert admitted(policy, indexer, doc["res"], doc) is not labelled
    assert indexer.calls == 2
    # Stale keys cannot unhide: an old `ak` saying "no label" on a labelled resource is
    # ignored when it does not cover the parameters (the resource is indexed again).
    doc = {**_stored(reg, _obs(True)), "ak": {"p": [LABEL_PARAM], "k": []}}
    assert not admitted(policy, indexer, doc["res"], doc)


def test_no_stored_document_is_indexed_again(reg: Registry) -> None:
    policy, indexer = _proxy(reg), CountingIndexer(reg)
    assert admitted(policy, indexer, _obs(False))
    assert not admitted(policy, indexer, _obs(True))
    assert not admitted(policy, indexer, _obs(False, "Patient/other"))
    assert indexer.calls == 3


def test_a_policy_hiding_no_keys_needs_only_the_stored_compartments(reg: Registry) -> None:
    own = _policy((CompartmentRule.of("Patient/teen", "self", None, ()),), ("Patient/teen",))
    clinician = _policy(None, ("Patient/teen",))
    indexer = CountingIndexer(reg)
    doc = {k: v for k, v in _stored(reg, _obs(True)).items() if k != "ak"}  # an old document
    for policy in (own, clinician):
        assert policy.key_params == frozenset()
        assert stored_keys(doc, policy.key_params) == ()
        assert admitted(policy, indexer, doc["res"], doc)
        assert not admitted(policy, indexer, doc["res"], {**doc, "comp": ["Patient/x"]})
    assert indexer.calls == 0
