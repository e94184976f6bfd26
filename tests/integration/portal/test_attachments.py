"""Attachment content rules (profiles/portal/attachments.json) over HTTP on an open server:
a Binary or a message attachment of a type not allowed answers 415, one over the size limit
413, one whose bytes are not its declared type 415, each with an OperationOutcome naming the
element, and nothing is stored, in a transaction bundle too. A raw `POST /Binary` (the
file's own Content-Type) takes the same path. https://hl7.org/fhir/R4/binary.html
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.conftest import FHIR_JSON

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
TEN_MIB = 10 * 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def binary(content_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Binary", "contentType": content_type, "data": b64(data), **extra}


def message(*attachments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": "Patient/attach-p"},
        "payload": [{"contentString": "see attached"}]
        + [{"contentAttachment": a} for a in attachments],
        **extra,
    }


def inline(content_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"contentType": content_type, "data": b64(data), **extra}


async def count(client: httpx.AsyncClient, rt: str) -> int:
    r = await client.get(rt, params={"_summary": "count"})
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def refused(r: httpx.Response, status: int, code: str, expression: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == code, body
    assert issue["expression"] == [expression], body


async def test_allowed_files_are_stored(client: httpx.AsyncClient):
    for ctype, data in (
        ("application/pdf", PDF),
        ("image/png", PNG),
        ("image/jpeg", JPEG),
        ("text/plain; charset=utf-8", "Grüße, no NUL".encode()),
    ):
        r = await client.post("Binary", json=binary(ctype, data), headers=FHIR_JSON)
        assert r.status_code == 201, (ctype, r.text)
    r = await client.post(
        "Communication",
        json=message(inline("image/png", PNG, size=len(PNG))),
        headers=FHIR_JSON,
    )
    assert r.status_code == 201, r.text


async def test_refused_files_store_nothing(client: httpx.AsyncClient):
    binaries, messages = await count(client, "Binary"), await count(client, "Communication")
    cases = [
        # a type the table does not allow
        (binary("application/zip", b"PK\x03\x04"), 415, "not-supported", "Binary.contentType"),
        # mislabelled: PNG bytes declared as PDF, a NUL in text, JPEG declared as PNG
        (binary("application/pdf", PNG), 415, "not-supported", "Binary.contentType"),
        (binary("text/plain", b"a\x00b"), 415, "not-supported", "Binary.contentType"),
        (binary("text/plain", b"\xff\xfe bad utf-8"), 415, "not-supported", "Binary.contentType"),
        (binary("image/png", JPEG), 415, "not-supported", "Binary.contentType"),
        # one byte over the limit (still under the server's body limit in base64)
        (
            binary("application/pdf", PDF + b"\x00" * (TEN_MIB + 1 - len(PDF))),
            413,
            "too-costly",
            "Binary.data",
        ),
    ]
    for body, status, code, expression in cases:
        r = await client.post("Binary", json=body, headers=FHIR_JSON)
        refused(r, status, code, expression)
    where = "Communication.payload[1].contentAttachment"
    for att, status, code, expression in [
        (inline("application/x-msdownload", b"MZ"), 415, "not-supported", f"{where}.contentType"),
        (inline("image/jpeg", PDF), 415, "not-supported", f"{where}.contentType"),
        (inline("application/pdf", PDF, size=3), 422, "business-rule", f"{where}.size"),
        (
            {"contentType": "application/pdf", "url": "https://elsewhere.example/x.pdf"},
            422,
            "business-rule",
            f"{where}.url",
        ),
        (
            {"contentType": "application/pdf", "url": "Binary/not-there"},
            422,
            "business-rule",
            f"{where}.url",
        ),
    ]:
        r = await client.post("Communication", json=message(att), headers=FHIR_JSON)
        refused(r, status, code, expression)
    # Inside a transaction: the good entry before the bad one is not stored either.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": binary("application/pdf", PDF),
                "request": {"method": "POST", "url": "Binary"},
            },
            {
                "resource": message(inline("application/pdf", PNG)),
                "request": {"method": "POST", "url": "Communication"},
            },
        ],
    }
    r = await client.post("", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 415, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert await count(client, "Binary") == binaries
    assert await count(client, "Communication") == messages


async def test_a_url_must_name_a_binary_of_the_message_or_its_thread(client: httpx.AsyncClient):
    r = await client.post("Communication", json=message(), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    thread = f"Communication/{r.json()['id']}"
    r = await client.post(
        "Binary",
        json=binary("application/pdf", PDF, securityContext={"reference": thread}),
        headers=FHIR_JSON,
    )
    assert r.status_code == 201, r.text
    url = f"Binary/{r.json()['id']}"
    other = await client.post("Binary", json=binary("application/pdf", PDF), headers=FHIR_JSON)
    stray = f"Binary/{other.json()['id']}"
    ok = message({"contentType": "application/pdf", "url": url}, partOf=[{"reference": thread}])
    assert (await client.post("Communication", json=ok, headers=FHIR_JSON)).status_code == 201
    # Another thread's Binary, or one declared as another type, is refused.
    where = "Communication.payload[1].contentAttachment"
    r = await client.post(
        "Communication",
        json=message({"url": stray}, partOf=[{"reference": thread}]),
        headers=FHIR_JSON,
    )
    refused(r, 422, "business-rule", f"{where}.url")
    r = await client.post(
        "Communication",
        json=message({"contentType": "image/png", "url": url}, partOf=[{"reference": thread}]),
        headers=FHIR_JSON,
    )
    refused(r, 415, "not-supported", f"{where}.contentType")


async def test_a_raw_upload_becomes_a_binary(client: httpx.AsyncClient):
    r = await client.post(
        "Binary",
        content=PNG,
        headers={"Content-Type": "image/png", "X-Security-Context": "Communication/raw-1"},
    )
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["contentType"] == "image/png"
    assert base64.b64decode(stored["data"]) == PNG
    assert stored["securityContext"] == {"reference": "Communication/raw-1"}
    # Read back as its raw content when Accept names its type; FHIR JSON otherwise.
    url = f"Binary/{stored['id']}"
    raw = await client.get(url, headers={"Accept": "image/png"})
    assert raw.status_code == 200, raw.text
    assert raw.content == PNG and raw.headers["content-type"] == "image/png"
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["etag"] == 'W/"1"'
    assert (await client.get(url, headers={"Accept": "image/*"})).content == PNG
    wrong = await client.get(url, headers={"Accept": "application/pdf"})
    assert wrong.status_code == 406, wrong.text
    assert wrong.json()["resourceType"] == "OperationOutcome"
    for accept in ("*/*", "application/fhir+json", "image/png, application/fhir+json"):
        r = await client.get(url, headers={"Accept": accept})
        assert r.status_code == 200 and r.json()["resourceType"] == "Binary", (accept, r.text)
    missing = await client.get("Binary/not-there", headers={"Accept": "image/png"})
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    before = await count(client, "Binary")
    bad = await client.post("Binary", content=PNG, headers={"Content-Type": "application/pdf"})
    refused(bad, 415, "not-supported", "Binary.contentType")
    zip_ = await client.post("Binary", content=b"PK", headers={"Content-Type": "application/zip"})
    refused(zip_, 415, "not-supported", "Binary.contentType")
    assert await count(client, "Binary") == before
