"""The reason a clinician states to break the glass (profiles/access/clinicians.json).

A reason is text a reviewer can read: invisible format characters (zero-width spaces, the
BOM, direction marks) are removed and blanks collapsed, then it must hold
`min_reason_words` words (runs of two or more letters or digits, as search's words) and at
least `min_reason_length` letters or digits. Ten dots or zero-width spaces state nothing.
"""

from __future__ import annotations

import contextlib
import unicodedata

from fhir_server.access.care_team import ClinicianTable
from fhir_server.search.values import words


def stated_reason(raw: str, table: ClinicianTable) -> str | None:
    """The cleaned reason, or None when it states nothing the table accepts."""
    # Header values reach the app as latin-1 (RFC 9110 section 5.5); a UTF-8 sender's text
    # (accents, zero-width spaces) is recovered so it is judged as it was written.
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        raw = raw.encode("latin-1").decode("utf-8")
    visible = "".join(c for c in raw if unicodedata.category(c) not in ("Cf", "Cc"))
    reason = " ".join(visible.split())
    meaningful = sum(1 for c in reason if c.isalnum())
    if meaningful < table.min_reason or len(reason) > table.max_reason:
        return None
    if len(words(reason)) < table.min_reason_words:
        return None
    return reason
