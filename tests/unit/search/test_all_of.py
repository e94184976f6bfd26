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
    ("filt", "hint"),
    [
        ({"rt": "Appointment", "ix.k": "patient=Patient/a", "ix.hi": RANGE}, "rt_ix_k"),
        ({"rt": "Appointment", "ix.k": {"$all": ["a", "b"]}, "ix.hi": RANGE}, "rt_ix_k"),
        ({"rt": "Appointment", "ix.hi": RANGE}, "rt_ix_hi"),
        ({"rt": "Appointment", "ix.k": "patient=Patient/a"}, None),
    ],
)
def test_secantus_hint_prefers_the_key_equality(filt, hint):
    assert plan(filt, secantus=True) == (filt, hint)
    assert plan(filt, secantus=False) == (filt, None)
