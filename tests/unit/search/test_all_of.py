"""How conjunctions are shaped: the query shape decides the plan on SecantusDB."""

from __future__ import annotations

import pytest

from fhir_server.search.execute import plan
from fhir_server.search.query import all_of

RANGE = {"$elemMatch": {"$gte": "date|2026", "$lt": "date|\uffff"}}


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        # Two required keys on the key array fold into one $all (indexed on both databases).
        (
            [{"rt": "MedicationRequest", "ix.k": "subject=Patient/a"}, {"ix.k": "status=active"}],
            {"rt": "MedicationRequest", "ix.k": {"$all": ["subject=Patient/a", "status=active"]}},
        ),
        (
            [{"rt": "O", "ix.k": "a"}, {"ix.k": "b"}, {"ix.k": {"$all": ["c", "a"]}}],
            {"rt": "O", "ix.k": {"$all": ["a", "b", "c"]}},
        ),
        ([{"rt": "O", "ix.k": "a"}, {"ix.k": "a"}], {"rt": "O", "ix.k": "a"}),
        # An OR of keys is not an equality: it stays a separate conjunct.
        (
            [{"rt": "O", "ix.k": "a"}, {"ix.k": {"$in": ["b", "c"]}}],
            {"$and": [{"rt": "O", "ix.k": "a"}, {"ix.k": {"$in": ["b", "c"]}}]},
        ),
        ([{"rt": "O", "ix.k": "a"}, {"ix.hi": RANGE}], {"rt": "O", "ix.k": "a", "ix.hi": RANGE}),
        ([{"rt": "O"}, {}], {"rt": "O"}),
    ],
)
def test_all_of(parts, expected):
    assert all_of(parts) == expected


@pytest.mark.parametrize(
    ("filt", "first"),
    [
        # One key of the key array: SecantusDB looks it up in (ix.k, _id).
        ({"rt": "Appointment", "ix.k": "patient=Patient/a", "ix.hi": RANGE}, "ix.k"),
        # The patient's compartment before any key (a key may be every patient's).
        (
            {"rt": "Observation", "ix.k": "category=laboratory", "comp": "Patient/a"},
            "comp",
        ),
        # Two keys ($all) cannot be looked up: the patient compartment bounds the scan.
        (
            {"rt": "Observation", "ix.k": {"$all": ["a", "b"]}, "comp": "Patient/a"},
            "comp",
        ),
        ({"rt": "Observation", "ix.k": {"$in": ["a", "b"]}, "comp": "Patient/a"}, "comp"),
        ({"rt": "Observation", "ix.k": {"$in": ["a", "b"]}}, "ix.k"),
        ({"rt": "Observation", "comp": "Patient/a", "_id": {"$in": ["Observation/1"]}}, "_id"),
        # Nothing better than the type: left as built.
        ({"rt": "Appointment", "ix.hi": RANGE}, "rt"),
    ],
)
def test_secantus_plan_puts_the_most_selective_clause_first(filt, first):
    shaped, hint = plan(filt, secantus=True)
    assert hint is None
    assert shaped == filt  # the same conjunction ...
    assert next(iter(shaped)) == first  # ... led by the clause SecantusDB looks up
    assert plan(filt, secantus=False) == (filt, None)
    assert list(plan(filt, secantus=False)[0]) == list(filt)  # MongoDB: untouched


def test_a_lone_or_stays_beside_the_fields():
    policy = {"comp": {"$in": ["Patient/a", "Patient/b"]}, "$or": [{"comp": "Patient/a"}, {}]}
    shaped = all_of([{"rt": "Observation", "ix.k": "code=x"}, policy])
    assert shaped == {"rt": "Observation", "ix.k": "code=x", **policy}
    # A second $or cannot share the level: it becomes a conjunct.
    other = {"$or": [{"ix.k": "a"}, {"ix.k": "b"}]}
    assert all_of([shaped, other]) == {"$and": [shaped, other]}
    # SecantusDB then looks up the compartments first.
    assert next(iter(plan(shaped, secantus=True)[0])) == "comp"
