"""The workflow hooks on the one write path (fhir_server/portal/hooks.py), on a real database.

A workflow's `before` step completes or refuses what is stored; its `after` step writes in the
same transaction as the write, so when it fails neither lands (plain requests and bundles).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from fhir_server.app import build_context
from fhir_server.context import ServerContext
from fhir_server.db.client import ensure_indexes, open_client
from fhir_server.errors import Unprocessable
from fhir_server.pipeline import Pipeline
from fhir_server.portal.hooks import Workflow, Workflows, WriteEvent
from fhir_server.rest.messages import FhirRequest
from fhir_server.search.indexes import index_models
from fhir_server.storage.store import Version
from tests.conftest import drop_test_database, make_settings
from tests.integration.test_pipeline import req, verify

Doc = dict[str, Any]
seen: list[tuple[str, str | None, str | None]] = []


async def stamp(ctx: ServerContext, r: FhirRequest, event: WriteEvent) -> Doc | None:
    assert event.new is not None
    if event.new.get("status") == "entered-in-error":
        raise Unprocessable("refused by the workflow", code="business-rule")
    old_note = (event.old or {}).get("note", [{}])[0].get("text")
    return {**event.new, "note": [{"text": f"stamped {event.interaction} after {old_note}"}]}


async def follow(
    ctx: ServerContext, r: FhirRequest, event: WriteEvent, version: Version, session: Any
) -> None:
    seen.append((event.interaction, event.rid, session and "in-transaction"))
    assert event.new is not None
    if event.new.get("payload", [{}])[0].get("contentString") == "fail after":
        raise Unprocessable("the after step failed", code="business-rule")
    await ctx.store.create(
        "Basic",
        {"resourceType": "Basic", "code": {"text": f"follows Communication/{version.id}"}},
        session=session,
    )


@pytest.fixture(scope="module")
async def pipe(mongo_uri: str) -> AsyncIterator[Pipeline]:
    client = open_client(mongo_uri, timeout_ms=10_000)
    settings = make_settings(mongo_uri)
    db = client[settings.database]
    ctx = build_context(settings, db)
    ctx = replace(
        ctx,
        workflows=Workflows(
            (Workflow("test", frozenset({"Communication"}), before=stamp, after=follow),)
        ),
    )
    await ensure_indexes(db, index_models())
    yield Pipeline(ctx, verify=verify)
    await drop_test_database(client, settings.database)
    await client.close()


def message(text: str, status: str = "completed") -> Doc:
    return {
        "resourceType": "Communication",
        "status": status,
        "payload": [{"contentString": text}],
    }


async def followers(p: Pipeline) -> int:
    got = await p.handle(req("GET", "Basic", query="_summary=count"))
    return int(json.loads(got.body)["total"])


async def test_before_completes_and_after_writes_in_the_same_transaction(pipe: Pipeline):
    made = await pipe.handle(req("POST", "Communication", body=message("hello")))
    assert made.status == 201, made.body
    body = json.loads(made.body)
    assert body["note"] == [{"text": "stamped create after None"}]
    assert seen[-1] == ("create", body["id"], "in-transaction")
    assert await followers(pipe) == 1

    # An update sees the stored version as `old`.
    upd = await pipe.handle(
        req("PUT", "Communication", body["id"], body={**message("edited"), "id": body["id"]})
    )
    assert upd.status == 200, upd.body
    assert json.loads(upd.body)["note"] == [
        {"text": "stamped update after stamped create after None"}
    ]
    assert await followers(pipe) == 2


async def test_a_refusal_or_a_failed_after_step_stores_nothing(pipe: Pipeline):
    before = await followers(pipe)
    count = await pipe.handle(req("GET", "Communication", query="_summary=count"))
    messages = json.loads(count.body)["total"]

    refused = await pipe.handle(
        req("POST", "Communication", body=message("x", status="entered-in-error"))
    )
    assert refused.status == 422 and b"refused by the workflow" in refused.body
    failed = await pipe.handle(req("POST", "Communication", body=message("fail after")))
    assert failed.status == 422 and b"the after step failed" in failed.body
    # In a transaction bundle too: the whole bundle rolls back.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": message("ok"), "request": {"method": "POST", "url": "Communication"}},
            {
                "resource": message("fail after"),
                "request": {"method": "POST", "url": "Communication"},
            },
        ],
    }
    rolled = await pipe.handle(req("POST", body=bundle))
    assert rolled.status == 422, rolled.body

    count = await pipe.handle(req("GET", "Communication", query="_summary=count"))
    assert json.loads(count.body)["total"] == messages
    assert await followers(pipe) == before
