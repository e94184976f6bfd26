"""Bad input answers with the right status and OperationOutcome, and writes nothing."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import FHIR_JSON, make_settings, patient, running_app


async def history_count(client: httpx.AsyncClient) -> int:
    return (await client.get("_history", params={"_count": "1"})).json()["total"]


def deep(levels: int) -> dict:
    node: dict = {"url": "http://x", "valueString": "leaf"}
    for _ in range(levels):
        node = {"url": "http://x", "extension": [node]}
    return patient(extension=[node])


CASES = [
    # (name, method, url, raw body, content type, status, issue code)
    (
        "invalid JSON",
        "POST",
        "Patient",
        b'{"resourceType": "Patient",',
        FHIR_JSON,
        400,
        "structure",
    ),
    ("not an object", "POST", "Patient", b"[1, 2]", FHIR_JSON, 400, "structure"),
    (
        "type mismatch",
        "POST",
        "Patient",
        json.dumps({"resourceType": "Observation"}).encode(),
        FHIR_JSON,
        400,
        "invalid",
    ),
    (
        "id mismatch",
        "PUT",
        "Patient/abc",
        json.dumps(patient(id="xyz")).encode(),
        FHIR_JSON,
        400,
        "invalid",
    ),
    (
        "no id on update",
        "PUT",
        "Patient/abc",
        json.dumps(patient()).encode(),
        FHIR_JSON,
        400,
        "required",
    ),
    (
        "dollar key",
        "POST",
        "Patient",
        json.dumps(patient(**{"$where": "1"})).encode(),
        FHIR_JSON,
        400,
        "structure",
    ),
    (
        "nested dollar key",
        "POST",
        "Patient",
        json.dumps(patient(name=[{"family": {"$ne": 1}}])).encode(),
        FHIR_JSON,
        400,
        "structure",
    ),
    (
        "dotted key",
        "POST",
        "Patient",
        json.dumps(patient(**{"a.b": 1})).encode(),
        FHIR_JSON,
        400,
        "structure",
    ),
    ("too deep", "POST", "Patient", json.dumps(deep(80)).encode(), FHIR_JSON, 400, "structure"),
    (
        "unknown type",
        "POST",
        "Spaceship",
        json.dumps({"resourceType": "Spaceship"}).encode(),
        FHIR_JSON,
        404,
        "not-supported",
    ),
    (
        "xml body",
        "POST",
        "Patient",
        b"<Patient/>",
        {"Content-Type": "application/fhir+xml"},
        415,
        "not-supported",
    ),
    (
        "unknown element",
        "POST",
        "Patient",
        json.dumps(patient(colour="blue")).encode(),
        FHIR_JSON,
        400,
        "structure",
    ),
    (
        "bad code",
        "POST",
        "Patient",
        json.dumps(patient(gender="banana")).encode(),
        FHIR_JSON,
        400,
        None,
    ),
    (
        "bad id",
        "PUT",
        "Patient/no_underscores!",
        json.dumps(patient(id="no_underscores!")).encode(),
        FHIR_JSON,
        400,
        "invalid",
    ),
    ("empty body", "POST", "Patient", b"", FHIR_JSON, 400, "structure"),
]


@pytest.mark.parametrize(
    ("name", "method", "url", "raw", "headers", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
async def test_bad_input(client: httpx.AsyncClient, name, method, url, raw, headers, status, code):
    before = await history_count(client)
    r = await client.request(method, url, content=raw, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], body
    if code:
        assert body["issue"][0]["code"] == code, body
    assert "Traceback" not in r.text
    assert await history_count(client) == before


async def test_validation_issue_points_at_field(client: httpx.AsyncClient):
    r = await client.post("Patient", json=patient(birthDate="2020-13-45"), headers=FHIR_JSON)
    assert r.status_code == 400
    expressions = [e for i in r.json()["issue"] for e in i.get("expression", [])]
    assert any("birthDate" in e for e in expressions), r.json()


async def test_profile_failure_is_422(client: httpx.AsyncClient):
    profiled = patient(
        meta={"profile": ["https://mhs.example.org/fhir/StructureDefinition/mhs-patient"]}
    )
    r = await client.post("Patient", json=profiled, headers=FHIR_JSON)
    assert r.status_code == 422, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    profiled["identifier"] = [
        {"system": "http://mhs.example.org/fhir/sid/edipi", "value": "1234567890"}
    ]
    assert (await client.post("Patient", json=profiled, headers=FHIR_JSON)).status_code == 201


async def test_unknown_url_and_method(client: httpx.AsyncClient):
    r = await client.get("Patient/abc/_history/1/extra")
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"
    r = await client.post("Patient/abc", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 405
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_body_over_limit_is_413(mongo_uri: str):
    async with running_app(
        make_settings(mongo_uri, max_body_bytes=2000, max_resource_bytes=2000)
    ) as small:
        big = patient(
            text={
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 5000 + "</div>",
            }
        )
        r = await small.post("Patient", json=big, headers=FHIR_JSON)
        assert r.status_code == 413
        assert r.json()["issue"][0]["code"] == "too-costly"
        assert (await small.get("_history")).json()["total"] == 0


def padded(size: int, **extra: object) -> dict:
    div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * size + "</div>"
    return patient(text={"status": "generated", "div": div}, **extra)


async def test_a_resource_over_the_document_limit_is_413_at_once(client: httpx.AsyncClient):
    """17 MiB: over MongoDB's 16 MiB document limit, under the 64 MiB body limit. It once
    answered 500 after 13-17 s; now 413 from its Content-Length, unread."""
    import time

    raw = json.dumps(padded(17 * 1024 * 1024)).encode()
    started = time.monotonic()
    r = await client.post("Patient", content=raw, headers=FHIR_JSON)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["issue"][0]["code"] == "too-costly"
    assert time.monotonic() - started < 5


async def test_resource_and_entry_limits_store_nothing(mongo_uri: str):
    settings = make_settings(mongo_uri, max_body_bytes=60_000, max_resource_bytes=5_000)
    async with running_app(settings) as small:
        big, ok = padded(6_000), patient()

        async def chunks():  # no Content-Length: refused while streaming in
            raw = json.dumps(big).encode()
            for i in range(0, len(raw), 1000):
                yield raw[i : i + 1000]

        r = await small.post("Patient", content=chunks(), headers=FHIR_JSON)
        assert r.status_code == 413, r.text
        r = await small.put("Patient/big", json={**big, "id": "big"}, headers=FHIR_JSON)
        assert r.status_code == 413
        for kind in ("batch", "transaction"):
            bundle = {
                "resourceType": "Bundle",
                "type": kind,
                "entry": [
                    {"resource": ok, "request": {"method": "POST", "url": "Patient"}},
                    {"resource": big, "request": {"method": "POST", "url": "Patient"}},
                ],
            }
            r = await small.post("", json=bundle, headers=FHIR_JSON)
            assert r.status_code == 413, r.text
            outcome = r.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource"]
        too_long = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": ok}] * 1000}
        assert (await small.post("", json=too_long, headers=FHIR_JSON)).status_code == 413
        assert (await small.get("_history")).json()["total"] == 0  # the first entries too
        # Within the limits, the same shapes are fine.
        assert (await small.post("Patient", json=ok, headers=FHIR_JSON)).status_code == 201


def raw_get(port: int, target: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a socket: httpx refuses URLs over 64 KiB itself."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_long_query_strings_are_414_through_the_served_http_stack(mongo_uri: str):
    """`fhir-server serve`'s uvicorn settings: a 300,000-character query string (once
    uvicorn's plain-text 400) reaches the app and answers 414 with an OperationOutcome."""
    import threading
    import time

    import anyio
    import uvicorn

    from fhir_server.app import create_app
    from fhir_server.cli import uvicorn_config
    from fhir_server.db.embedded import free_port

    settings = make_settings(mongo_uri, port=free_port())
    server = uvicorn.Server(uvicorn_config(settings, create_app(settings)))
    server.config.log_level = "warning"
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            await anyio.sleep(0.05)
        for size in (70_000, 300_000):
            target = b"/fhir/Patient?name=" + b"a" * size
            status, headers, body = await anyio.to_thread.run_sync(raw_get, settings.port, target)
            assert status == 414, (size, body[:200])
            assert headers["content-type"].startswith("application/fhir+json")
            outcome = json.loads(body)
            assert outcome["issue"][0]["code"] == "too-long"
        status, _, body = await anyio.to_thread.run_sync(
            raw_get, settings.port, b"/fhir/Patient?name=short"
        )
        assert status == 200, body[:200]
    finally:
        server.should_exit = True
        await anyio.to_thread.run_sync(thread.join, 30)
