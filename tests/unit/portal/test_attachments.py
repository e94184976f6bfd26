"""The attachment table (profiles/portal/attachments.json) parses fail-fast, and the content
checks decide by the table: type allowed, size, magic bytes."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from fhir_server.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType
from fhir_server.portal.attachments import (
    TABLE,
    attachments,
    check_content,
    load_table,
    parse_table,
)
from fhir_server.validation import KNOWN_RESOURCE_TYPES

KNOWN = frozenset(KNOWN_RESOURCE_TYPES)
RAW = json.loads(TABLE.read_text())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_the_shipped_table_has_the_defaults():
    t = load_table(known_types=KNOWN)
    assert t.max_bytes == 10 * 1024 * 1024
    assert {c.name for c in t.types} == {"application/pdf", "image/png", "image/jpeg", "text/plain"}
    assert t.content_type("Application/PDF; name=x.pdf").name == "application/pdf"  # type: ignore[union-attr]
    assert t.content_type("application/zip") is None
    assert t.watched == {"Binary", "Communication"}


@pytest.mark.parametrize(
    ("declared", "data", "error"),
    [
        ("application/pdf", b"%PDF-1.7 ...", None),
        ("image/png", b"\x89PNG\r\n\x1a\n....", None),
        ("image/jpeg", b"\xff\xd8\xff\xdb....", None),
        ("text/plain; charset=utf-8", "naïve".encode(), None),
        ("application/zip", b"PK\x03\x04", UnsupportedMediaType),
        (None, b"%PDF-", UnsupportedMediaType),
        ("application/pdf", b"%PDF", UnsupportedMediaType),  # the prefix is %PDF-
        ("image/png", b"\xff\xd8\xff", UnsupportedMediaType),
        ("text/plain", b"a\x00b", UnsupportedMediaType),
        ("text/plain", b"\xc3\x28", UnsupportedMediaType),
        ("application/pdf", b"%PDF-" + b"x" * 100, PayloadTooLarge),
    ],
)
def test_content_checks(declared, data, error):
    t = parse_table({**RAW, "max_bytes": 64}, KNOWN)
    if error is None:
        check_content(t, declared, b64(data), "Binary.contentType")
        return
    with pytest.raises(error) as caught:
        check_content(t, declared, b64(data), "Binary.contentType")
    issue = caught.value.issues[0]
    want = "Binary.data" if error is PayloadTooLarge else "Binary.contentType"
    assert issue.expression == (want,)


def test_size_and_base64_are_checked():
    t = load_table(known_types=KNOWN)
    with pytest.raises(Unprocessable):
        check_content(t, "text/plain", b64(b"abc"), "X.contentType", size=4)
    with pytest.raises(Unprocessable):
        check_content(t, "text/plain", "not base64!", "X.contentType")
    check_content(t, "text/plain", b64(b"abc"), "X.contentType", size=3)


def test_attachments_are_found_through_lists():
    msg = {
        "payload": [
            {"contentString": "hi"},
            {"contentAttachment": {"url": "Binary/a"}},
            {"contentAttachment": {"data": "AA=="}},
        ]
    }
    found = attachments(msg, ("payload", "contentAttachment"), "Communication")
    assert [w for w, _ in found] == [
        "Communication.payload[1].contentAttachment",
        "Communication.payload[2].contentAttachment",
    ]


def _broken(change):
    raw = copy.deepcopy(RAW)
    change(raw)
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        [],
        _broken(lambda r: r.update(max_bytes=0)),
        _broken(lambda r: r.update(max_bytes="10MB")),
        _broken(lambda r: r.update(types={})),
        _broken(lambda r: r["types"].update({"Image/GIF": {"magic": ["47494638"]}})),
        _broken(lambda r: r["types"].update({"image/gif": {"magic": ["not hex"]}})),
        _broken(lambda r: r["types"].update({"image/gif": {}})),
        _broken(lambda r: r["types"].update({"image/gif": {"magic": ["47"], "text": True}})),
        _broken(lambda r: r["types"].update({"image/gif": {"magic": ["47"], "size": 3}})),
        _broken(lambda r: r["messages"].update({"Comunication": r["messages"]["Communication"]})),
        _broken(lambda r: r["messages"].update({"Communication": {"attachments": "payload"}})),
        _broken(lambda r: r.update(binary="Binery")),
        _broken(lambda r: r.update(patient_security_contexts=["Comunication"])),
    ],
)
def test_a_malformed_table_stops_the_server(raw):
    with pytest.raises(ValueError):
        parse_table(raw, KNOWN)
