"""History at instance, type and system level with _since, _count and paging links."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import FHIR_JSON, make_settings, running_app


async def test_history_levels_and_paging(mongo_uri: str):
    async with running_app(make_settings(mongo_uri)) as client:
        ids = []
        for i in range(5):
            r = await client.post(
                "Basic",
                headers=FHIR_JSON,
                json={"resourceType": "Basic", "code": {"text": f"n{i}"}},
            )
            ids.append(r.json()["id"])
        mark = r.json()["meta"]["lastUpdated"]
        rid = ids[0]
        for i in range(3):
            await client.put(
                f"Basic/{rid}",
                headers=FHIR_JSON,
                json={"resourceType": "Basic", "id": rid, "code": {"text": f"v{i}"}},
            )
        await client.post("Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)

        inst = (await client.get(f"Basic/{rid}/_history")).json()
        assert inst["type"] == "history"
        assert [e["resource"]["meta"]["versionId"] for e in inst["entry"]] == ["4", "3", "2", "1"]

        typed = (await client.get("Basic/_history")).json()
        assert typed["total"] == 8
        assert all(e["resource"]["resourceType"] == "Basic" for e in typed["entry"])

        system = (await client.get("_history")).json()
        assert system["total"] == 9

        since = (await client.get("Basic/_history", params={"_since": mark})).json()
        assert since["total"] == 4  # the last create (same instant) and the three updates

        # Walk system history two at a time through the next links: every version once.
        seen, url, pages = [], "_history?_count=2", 0
        while url:
            page = (await client.get(url)).json()
            seen += [(e["fullUrl"], e["response"]["etag"]) for e in page["entry"]]
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            url = nxt[0] if nxt else ""
            pages += 1
        assert len(seen) == 9
        assert len(set(seen)) == 9
        assert pages == 5

        bad = await client.get("_history", params={"_since": "yesterday"})
        assert bad.status_code == 400
        unknown = await client.get(f"Basic/{uuid.uuid4().hex}/_history")
        assert unknown.status_code == 404


async def test_history_of_unknown_type(client: httpx.AsyncClient):
    r = await client.get("Spaceship/_history")
    assert r.status_code == 404
