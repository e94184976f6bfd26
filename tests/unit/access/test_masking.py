"""Masking texts and log records (access/masking.py): the SSN system's values after
`system|` and wherever its shape matches, percent-encoded or not; nothing else changes."""

from __future__ import annotations

import logging

from fhir_server.access.identifiers import identifiers
from fhir_server.access.masking import MaskingFilter, mask_text, masked_value

SSN = "http://hl7.org/fhir/sid/us-ssn"


def test_masked_value_keeps_the_last_four_digits() -> None:
    ssn = next(s for s in identifiers().systems if s.masked)
    assert masked_value(ssn, "900123456") == "*****3456"
    assert masked_value(ssn, "999-12-3456") == "*****3456"


def test_mask_text_masks_ssns_in_queries_and_nothing_else() -> None:
    assert mask_text(f"identifier={SSN}|900123456&_count=5") == (
        f"identifier={SSN}|*****3456&_count=5"
    )
    assert mask_text("identifier=http%3A%2F%2Fhl7.org%2Ffhir%2Fsid%2Fus-ssn%7C900123456") == (
        f"identifier={SSN}|*****3456"
    )
    # Four digits (the last four, as $match takes them) are what is shown anyway.
    assert mask_text(f"identifier={SSN}|3456") == f"identifier={SSN}|3456"
    assert mask_text("_content=999-12-3456") == "_content=*****3456"
    # An EDIPI (ten digits) and other values stay as they were, encoding included.
    for text in ("identifier=1530000101", "_id=abc%20d", "birthdate=1985-03-14"):
        assert mask_text(text) == text


def test_the_log_filter_masks_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s "%s"',
        ("1.2.3.4", "GET /fhir/Patient?_content=900123456"),
        None,
    )
    assert MaskingFilter().filter(record)
    assert "900123456" not in record.getMessage() and "*****3456" in record.getMessage()
