"""`$import` and its status and error files leak nothing: a patient's token (or a
clinician's) cannot start an import nor see one, and a partner sees only its own jobs;
another client's job answers exactly as a missing one (404)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import orjson
import pytest
from joserfc.jwk import RSAKey

from tests.conftest import make_settings
from tests.integration.access.test_smart_enforcement import Server
from tests.integration.auth.conftest import BACKEND
from tests.integration.auth.test_backend_services import assertion, request_token
from tests.integration.exchange.test_import import (
    ASYNC,
    ORG,
    PARTNER,
    Files,
    Partner,
    cli,
    finish,
    parameters,
)
from tests.integration.seeded import seeded_server

PATIENT_LINE = {"resourceType": "Patient", "id": "leak-import-1", "gender": "female"}


@pytest.fixture(scope="module")
async def env(mongo_uri: str) -> AsyncIterator[tuple[Partner, Server, Files]]:
    files = Files()
    async with seeded_server(mongo_uri) as (app, http):
        key = RSAKey.generate_key(2048, parameters={"alg": "RS384", "kid": "partner-leak"})
        jwks = orjson.dumps({"keys": [key.as_dict(private=False)]}).decode()
        settings = make_settings(mongo_uri, database=app.state.ctx.settings.database)
        code = await anyio.to_thread.run_sync(
            lambda: cli(
                settings, "add", PARTNER, "--scope", "system/*.cruds", "--jwks", jwks,
                "--organization", ORG, "--import-url", files.base + "/partner/",
            )
        )  # fmt: skip
        assert code == 0
        yield Partner(http, app, key), Server(http), files
    files.server.shutdown()


async def test_only_the_partner_sees_its_job_and_errors(env: tuple[Partner, Server, Files]) -> None:
    partner, server, files = env
    auth = await partner.bearer()
    url = files.put("/partner/Patient.ndjson", orjson.dumps(PATIENT_LINE) + b"\nnot json\n")
    r = await partner.http.post(
        "/fhir/$import", json=parameters(("Patient", url)), headers={**ASYNC, **auth}
    )
    assert r.status_code == 202, r.text
    status_url = r.headers["content-location"].removeprefix("http://127.0.0.1:8080")
    manifest = await finish(partner, auth, status_url)
    errors_url = manifest["error"][0]["url"].removeprefix("http://127.0.0.1:8080")
    missing = status_url[:-32] + "0" * 32

    patient = await server.token("sponsor", "openid fhirUser patient/*.cruds")
    clinician = await server.token("dr.rachel.kim", "openid fhirUser user/*.cruds")
    key = RSAKey.import_key(BACKEND["jwk"])
    other = await request_token(server, assertion(key, BACKEND["client_id"], "RS384"))
    assert other.status_code == 200, other.text
    for token in (patient, clinician, other.json()["access_token"]):
        h = {"Authorization": f"Bearer {token}"}
        # Starting an import needs a partner's backend token.
        r = await server.http.post(
            "/fhir/$import", json=parameters(("Patient", url)), headers={**ASYNC, **h}
        )
        assert r.status_code == 403, r.text
        # Another's job, its error file and a job that does not exist answer alike.
        answers = [await server.http.get(u, headers=h) for u in (status_url, errors_url, missing)]
        assert [a.status_code for a in answers] == [404, 404, 404]
        assert answers[0].json()["issue"][0]["code"] == answers[2].json()["issue"][0]["code"]
        assert b"leak-import-1" not in b"".join(a.content for a in answers)
        assert (await server.http.delete(status_url, headers=h)).status_code == 404
    # The partner still has both.
    assert (await partner.http.get(status_url, headers=auth)).status_code == 200
    assert (await partner.http.get(errors_url, headers=auth)).status_code == 200
