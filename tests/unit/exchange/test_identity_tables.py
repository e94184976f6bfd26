"""The identity tables are parsed fail-fast: a typo stops the start-up, never a leak."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from fhir_server.access.identifiers import IDENTIFIERS, parse_identifiers
from fhir_server.exchange.identity.table import MATCHING, parse_matching

RAW_IDS = json.loads(IDENTIFIERS.read_text())
RAW_MATCH = json.loads(MATCHING.read_text())


def test_the_shipped_tables_parse() -> None:
    ids = parse_identifiers(RAW_IDS)
    assert ids.masked_uris == {"http://hl7.org/fhir/sid/us-ssn"}
    edipi = ids.of("http://mhs.example.org/fhir/sid/edipi")
    assert edipi is not None and edipi.key == "edipi" and edipi.unique
    table = parse_matching(RAW_MATCH)
    assert [g.code for g in table.grades] == ["certain", "probable", "possible"]


def _broken_ids(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW_IDS)
    change(raw)
    return raw


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["systems"][2].pop("masked"),
        lambda r: r["systems"][2].pop("shape"),
        lambda r: r["systems"][2].update(shape="(["),
        lambda r: r["systems"][1].update(system=r["systems"][0]["system"]),
        lambda r: r["systems"][0]["match_weight"].pop("agree"),
        lambda r: r.pop("types"),
    ],
)
def test_a_malformed_identifier_table_is_refused(change: Any) -> None:
    with pytest.raises(ValueError):
        parse_identifiers(_broken_ids(change))


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["features"].pop("telecom"),
        lambda r: r["features"]["family"].update(exact="4"),
        lambda r: r.update(phonetic="caverphone"),
        lambda r: r["grades"].reverse(),
        lambda r: r.update(required=[["shoe-size"]]),
        lambda r: r.update(typo_similarity=2),
    ],
)
def test_a_malformed_matching_table_is_refused(change: Any) -> None:
    raw = copy.deepcopy(RAW_MATCH)
    change(raw)
    with pytest.raises(ValueError):
        parse_matching(raw)
