"""Client compatibility (issue 16, developer experience item 6): the popular FHIR client
libraries run their common calls against one running `fhir-server serve` with the seed.

- `fhirpy` (PyPI): search, `count()` (it sends Aidbox's `_totalMethod=count`, which the
  search parser takes as `_total=accurate`: docs/search.md, "Client habits"), `fetch`,
  `fetch_all` over pages, `first`, `elements`, `include`, read, create, update, not found.
- `fhirclient` (PyPI, SMART on FHIR's Python client): its own standalone launch with PKCE,
  then read, search with paging, create, update, and a refused read.
- `fhir-kit-client` (npm, installed with `npm ci` from tests/e2e/clients/): capability and
  SMART discovery, read, search with `nextPage`, a compartment search, create, update,
  vread, history, an operation (`$find`), a batch, and the errors (tests/e2e/clients/fhir_kit.mjs).

The expectations are the server's own answers over plain HTTP (a one-page search,
`_summary=count`), never the library under test's. The token is the real
authorization server's (`fhir-server token`'s code path: fhir_server/devx/token.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.config import Settings
from fhir_server.devx.token import issue
from tests.e2e.auth.test_python_fhirclient import approve_sync, submit_login_sync
from tests.e2e.conftest import LiveServer
from tests.integration.auth.conftest import PUBLIC, login_for
from tests.integration.seeded import restore_seed

pytestmark = pytest.mark.e2e

SPONSOR = "sponsor-james-carter"
STRANGER = "veteran-samuel-ortiz"  # another family: never visible to the sponsor
CLIENTS = Path(__file__).parent / "clients"


def plain_ids(server: LiveServer, token: str, query: str) -> set[str]:
    """The ids a plain one-page search answers (a held result, for one, is not among them)."""
    got = httpx.get(
        f"{server.base}/{query}&_count=1000&_elements=id",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    return {e["resource"]["id"] for e in got.json().get("entry", [])}


@pytest.fixture(scope="module")
def server(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database = f"clients_{uuid.uuid4().hex[:10]}"
    asyncio.run(restore_seed(mongo_uri, database))
    env = {"MONGODB_URI": mongo_uri, "MONGODB_DATABASE": database}
    env |= {"AUTO_SEED": "0", "AUTH_REQUIRED": "1"}
    log = tmp_path_factory.mktemp("clients") / "server.log"
    live = LiveServer(env, log).start()
    yield live
    live.stop()
    with MongoClient(mongo_uri) as client:
        client.drop_database(database)


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    answer = issue(Settings.from_env(), "james.carter", "user/*.cruds", server=server.base)
    return str(answer["access_token"])


def plain_total(server: LiveServer, token: str, query: str) -> int:
    """The server's own count (`_summary=count`), to check a library's answer against."""
    got = httpx.get(
        f"{server.base}/{query}{'&' if '?' in query else '?'}_summary=count",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    return int(got.json()["total"])


def draft(library: str) -> dict[str, Any]:
    """A proposed Appointment without Slot or period: a draft a patient may keep and edit."""
    return {
        "resourceType": "Appointment",
        "status": "proposed",
        "description": f"{library} draft",
        "participant": [{"actor": {"reference": f"Patient/{SPONSOR}"}, "status": "needs-action"}],
    }


def test_fhirpy_common_calls(server: LiveServer, token: str) -> None:
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import ResourceNotFound

    client = SyncFHIRClient(server.base, authorization=f"Bearer {token}")
    seeded = plain_ids(server, token, f"Observation?patient={SPONSOR}")
    assert len(seeded) > 3  # several pages of 3 below
    observations = client.resources("Observation").search(patient=SPONSOR)
    # count(): `_count=0&_totalMethod=count`; the server's own count and the seed agree.
    assert observations.count() == plain_total(server, token, f"Observation?patient={SPONSOR}")
    assert observations.count() == len(seeded)
    paged = observations.limit(3).fetch_all()  # follows the `next` links
    assert {o.id for o in paged} == seeded
    assert len(observations.limit(3).fetch()) == 3
    newest = observations.sort("-date").first()
    assert newest is not None and newest.id in seeded
    coded = observations.elements("code").limit(2).fetch()
    assert coded and all("code" in o and "valueQuantity" not in o for o in coded)
    raw = observations.include("Observation", "subject").limit(2).fetch_raw()
    assert {e.resource.resourceType for e in raw.entry} == {"Observation", "Patient"}
    assert client.reference("Patient", SPONSOR).to_resource().id == SPONSOR
    # The sponsor's user token sees his family and nobody else.
    assert client.resources("Patient").count() == plain_total(server, token, "Patient")
    with pytest.raises(ResourceNotFound):
        client.reference("Patient", STRANGER).to_resource()

    made = client.resource("Appointment", **draft("fhirpy"))
    made.save()
    assert made.id and made.meta["versionId"] == "1"
    made["description"] = "fhirpy draft, changed"
    made.save()
    assert made.meta["versionId"] == "2"
    again = client.reference("Appointment", made.id).to_resource()
    assert again["description"] == "fhirpy draft, changed"


def test_python_fhirclient_common_calls(server: LiveServer, token: str) -> None:
    import fhirclient.client as fhirclient
    from fhirclient.models.appointment import Appointment
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRNotFoundException

    redirect = "http://127.0.0.1:53998/callback"
    client = fhirclient.FHIRClient(
        settings={
            "app_id": PUBLIC["client_id"],
            "api_base": server.base,
            "redirect_uri": redirect,
            "scope": "launch/patient openid fhirUser patient/*.cruds",
        }
    )
    origin = server.base.removesuffix("/fhir")
    with httpx.Client(base_url=origin, timeout=30) as browser:
        page = browser.get(client.authorize_url)
        who = login_for("sponsor")
        consent = submit_login_sync(browser, page.text, who["username"], who["password"])
        done = approve_sync(browser, consent.text, patient=f"Patient/{SPONSOR}")
        assert done.status_code == 302, done.text
    client.handle_callback(done.headers["location"])
    assert client.ready and client.patient_id == SPONSOR

    assert Patient.read(SPONSOR, client.server).id == SPONSOR
    search = Observation.where({"patient": SPONSOR, "_count": "3"})
    found = {o.id for o in search.perform_resources_iter(client.server)}  # every page
    assert found == plain_ids(server, token, f"Observation?patient={SPONSOR}")
    with pytest.raises(FHIRNotFoundException):
        Patient.read(STRANGER, client.server)

    appt = Appointment(draft("fhirclient"))
    answer = appt.create(client.server)
    made = Appointment.read(answer["id"], client.server)
    made.description = "fhirclient draft, changed"
    made.update(client.server)
    assert Appointment.read(made.id, client.server).description == "fhirclient draft, changed"


@pytest.fixture(scope="module")
def fhir_kit() -> Path:
    """What the project's set-up does for the portal, for these tests: `npm ci` (locked)."""
    if not (CLIENTS / "node_modules" / "fhir-kit-client" / "package.json").is_file():
        assert shutil.which("npm"), "npm is needed for the fhir-kit-client test"
        with open(CLIENTS / ".npm.lock", "w") as lock:  # two test workers: one installs
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (CLIENTS / "node_modules" / "fhir-kit-client").is_dir():
                cmd = ["npm", "ci", "--silent", "--no-audit", "--no-fund", "--prefix", str(CLIENTS)]
                subprocess.run(cmd, check=True, timeout=300)
    return CLIENTS / "fhir_kit.mjs"


def test_fhir_kit_client_common_calls(server: LiveServer, token: str, fhir_kit: Path) -> None:
    started = time.monotonic()
    run = subprocess.run(
        ["node", str(fhir_kit), server.base, token, SPONSOR, STRANGER],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CLIENTS,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert time.monotonic() - started < 60
    origin = server.base.removesuffix("/fhir")
    assert got["fhirVersion"] == "4.0.1" and got["canSearchObservationByPatient"] is True
    assert (got["authorizeUrl"], got["tokenUrl"]) == (
        f"{origin}/auth/authorize",
        f"{origin}/auth/token",
    )
    assert got["patient"] == SPONSOR
    seeded = plain_ids(server, token, f"Observation?patient={SPONSOR}")
    assert got["total"] == len(seeded)
    assert sorted(got["pagedIds"]) == sorted(seeded)  # nextPage walked every page, once each
    assert got["compartment"] and set(got["compartment"]) == {f"Patient/{SPONSOR}"}
    created = got["created"]
    assert (created["version"], created["updatedVersion"]) == ("1", "2")
    assert created["description"] == "fhir-kit-client draft, changed"
    assert got["vread"] == "fhir-kit-client draft" and got["history"] == 2
    assert got["findOffers"] and set(got["findOffers"]) == {"proposed"}
    assert got["batch"][0].startswith("200") and got["batch"][1].startswith("404")
    assert got["otherPatient"] == 404  # another family's patient answers as missing
    assert got["badSearch"] == 400  # an unknown search parameter fails clearly
