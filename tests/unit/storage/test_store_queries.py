"""The Store never merges a caller's filter into its own by dict: the policy is ANDed in."""

from __future__ import annotations

from typing import Any

from fhir_server.storage.store import _conjunction, visible_query


def test_a_read_keeps_its_id_and_ands_the_policy_in() -> None:
    scope = {"_id": "Observation/obs-sophia-weight"}  # a query-qualified scope on `_id`
    q = visible_query("Observation/no-such-id", scope)
    assert q == {"_id": "Observation/no-such-id", "$and": [scope]}
    # The id equality stays first: SecantusDB looks the first clause up in an index.
    assert next(iter(q)) == "_id"
    assert visible_query("Observation/x", None) == {"_id": "Observation/x"}
    assert visible_query("Observation/x", {}) == {"_id": "Observation/x"}


def test_a_policy_naming_the_stores_own_fields_cannot_override_them() -> None:
    policy: dict[str, Any] = {"$or": [{"comp": "Patient/a"}], "rt": "Observation", "id": "p"}
    q = _conjunction([{"rt": "Patient", "id": "x"}, {"$or": [{"lu": 1}]}], policy)
    assert q == {"rt": "Patient", "id": "x", "$or": [{"lu": 1}], "$and": [policy]}
    assert _conjunction([{"rt": "Patient"}], None) == {"rt": "Patient"}
