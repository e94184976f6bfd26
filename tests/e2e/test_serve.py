"""`fhir-server serve` on a fresh data directory: embedded database, data kept across restarts."""

from __future__ import annotations

import httpx

JSON = {"Content-Type": "application/fhir+json"}


def test_embedded_server_keeps_data_across_restart(live_server, tmp_path):
    env = {"DATA_DIR": str(tmp_path / "persist"), "AUTO_SEED": "0"}
    first = live_server(**env)
    r = httpx.put(
        f"{first.base}/Patient/keep-me",
        headers=JSON,
        json={"resourceType": "Patient", "id": "keep-me", "gender": "female"},
    )
    assert r.status_code == 201
    assert (tmp_path / "persist" / "secantus.json").exists()
    first.stop()
    # The embedded database stopped with the server (its state file is gone).
    assert not (tmp_path / "persist" / "secantus.json").exists()
    second = live_server(**env)
    again = httpx.get(f"{second.base}/Patient/keep-me")
    assert again.status_code == 200
    assert again.json()["gender"] == "female"
    unknown = httpx.get(f"http://127.0.0.1:{second.port}/nowhere")
    assert unknown.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"


def test_fresh_server_seeds_the_development_population(live_server, tmp_path):
    import time

    server = live_server(DATA_DIR=str(tmp_path / "fresh"))
    for _ in range(150):
        r = httpx.get(f"{server.base}/Patient/adolescent-sophia-carter")
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "1"
