"""The API across a PostgreSQL restart: 503 while it is down, no error once it is back."""

from __future__ import annotations

import httpx

from tests.support.servers import new_account, start_server, stop_server


def test_reads_and_writes_survive_a_restart_without_a_failed_request(private_postgres, tmp_path):
    database = private_postgres.new_database()
    server = start_server(tmp_path, database, {"EDGEPCAP_SAMPLE_INTERVAL": "0"})
    try:
        info = new_account(server, "restart")
        client = httpx.Client(
            base_url=f"{server.api}/accounts/{info['id']}",
            headers={"Authorization": f"Bearer {info['api_token']}"},
            timeout=30,
        )
        body = {"system": "magic-transit", "type": "simple", "time_limit": 60, "packet_limit": 5}
        r = client.post("/pcaps", json=body)
        assert r.status_code == 200, r.text
        first = r.json()["result"]["id"]
        for _ in range(5):  # pooled connections, all of which the restart kills
            assert client.get("/pcaps").status_code == 200

        # A restart between two requests: the next ones meet dead pooled connections;
        # reads retry on a fresh one, writes pre-ping. Not one of them fails.
        private_postgres.crash()
        private_postgres.start()
        assert client.get(f"/pcaps/{first}").status_code == 200
        assert [p["id"] for p in client.get("/pcaps").json()["result"]] == [first]
        r = client.post("/pcaps", json=body)
        assert r.status_code == 200, r.text

        # While it is down: a clear 503, then service as soon as it is back.
        private_postgres.crash()
        r = client.get(f"/pcaps/{first}")
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == 1501 and "Retry-After" in r.headers
        private_postgres.start()
        assert len(client.get("/pcaps").json()["result"]) == 2
        assert client.post("/pcaps", json=body).status_code == 200
    finally:
        stop_server(server)
