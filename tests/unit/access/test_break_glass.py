"""fhir_server/access/break_glass.py: a reason must be words, not dots or invisible text."""

from __future__ import annotations

import pytest

from fhir_server.access.break_glass import stated_reason
from fhir_server.access.care_team import load_table


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Unconscious patient in the ED", "Unconscious patient in the ED"),
        ("  Cardiac   arrest, bay 4 ", "Cardiac arrest, bay 4"),
        ("Stroke\u200b alert\u200b now", "Stroke alert now"),
        ("\u200b".encode().decode("latin-1") * 12, None),  # UTF-8 bytes read as latin-1
        ("Arrêt cardiaque au bloc".encode().decode("latin-1"), "Arrêt cardiaque au bloc"),
        ("." * 10, None),
        ("\u200b" * 12, None),
        ("\ufeff" * 3 + " " * 10, None),
        ("a.b.c.d.e.f.g.h.i.j", None),  # ten letters, no word of two
        ("Emergencyyy", None),  # one word
        ("why why", None),  # two words, too few letters
        ("x " * 300, None),
        ("word " * 120, None),  # over the maximum length
    ],
)
def test_stated_reason(raw: str, expected: str | None) -> None:
    assert stated_reason(raw, load_table()) == expected
