"""API throughput: 50 concurrent clients in another process against `edgepcap api`.

Run as `python -m bench.api_load URL ACCOUNT TOKEN PCAP_ID SECONDS CONCURRENCY`; prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def main(
    url: str, account: str, token: str, pcap_id: str, seconds: float, concurrency: int
) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"{url}/client/v4/accounts/{account}",
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=30,
    ) as client:

        async def worker(i: int) -> None:
            nonlocal errors
            n = 0
            while time.monotonic() < deadline:
                path = "/pcaps" if (i + n) % 2 else f"/pcaps/{pcap_id}"
                start = time.perf_counter()
                r = await client.get(path)
                latencies.append(time.perf_counter() - start)
                errors += r.status_code != 200
                n += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(0.5) * 1000,
        "p99_ms": pick(0.99) * 1000,
    }


if __name__ == "__main__":
    url, account, token, pcap_id, seconds, concurrency = sys.argv[1:7]
    print(
        json.dumps(
            asyncio.run(main(url, account, token, pcap_id, float(seconds), int(concurrency)))
        )
    )
