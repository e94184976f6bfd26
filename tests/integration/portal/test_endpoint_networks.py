"""In production a Subscription's rest-hook may not point into the server's own networks
(fhir_server/notify/endpoints.py): the create answers 422 and stores nothing. The pipeline
is called directly with production settings on a real database (tokens off: the check does
not depend on who subscribes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from fhir_server.app import build_context
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.pipeline import Pipeline
from fhir_server.search.indexes import index_models
from tests.conftest import drop_test_database, make_settings
from tests.integration.portal.test_notifications import PATIENT_TOPIC, subscription
from tests.integration.test_pipeline import req, verify

FILT = "Communication?recipient=Patient/endpoint-test"


@pytest.fixture(scope="module")
async def pipes(mongo_uri: str) -> AsyncIterator[dict[str, Pipeline]]:
    client = open_client(mongo_uri, timeout_ms=10_000)
    settings = make_settings(mongo_uri)
    db = client[settings.database]
    await ensure_indexes(db, index_models())
    yield {
        "production": Pipeline(
            build_context(replace(settings, production=True), db), verify=verify
        ),
        "development": Pipeline(build_context(settings, db), verify=verify),
    }
    await drop_test_database(client, settings.database)
    await client.close()


async def test_inward_endpoints_are_refused_in_production_only(pipes: dict[str, Pipeline]):
    prod, dev = pipes["production"], pipes["development"]
    for url in ("https://127.0.0.1/hook", "https://localhost:8443/x", "https://169.254.169.254/"):
        r = await prod.handle(
            req("POST", "Subscription", body=subscription(PATIENT_TOPIC, url, filt=FILT))
        )
        assert r.status == 422, r.body
        issue = json.loads(r.body)["issue"][0]
        assert issue["code"] == "business-rule"
        assert issue["expression"] == ["Subscription.channel.endpoint"]
    db = prod.ctx.store.db
    assert await db.subscriptions.count_documents({}) == 0
    # An outward address is taken in production; loopback is taken in development.
    ok = await prod.handle(
        req(
            "POST",
            "Subscription",
            body=subscription(PATIENT_TOPIC, "https://93.184.216.34/h", filt=FILT),
        )
    )
    assert ok.status == 201, ok.body
    local = await dev.handle(
        req(
            "POST",
            "Subscription",
            body=subscription(PATIENT_TOPIC, "http://127.0.0.1:9/h", filt=FILT),
        )
    )
    assert local.status == 201, local.body
    assert await db.subscriptions.count_documents({}) == 2
