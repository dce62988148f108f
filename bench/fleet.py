"""A fleet of simulated agents in one process: N machines across M colos that speak the
real agent protocol (`/agent/v1`, formats.protocol) to a real API, with no kernel work.

Each simulated agent does what `agent.Agent` and `agent.worker.CaptureWorker` do, minus
the packets: it registers (again on a 409), heartbeats at the interval the registration
answer hands it, long-polls `GET /jobs?wait=20&running=…` with the captures it runs and
is not stopping, and for each new job reports `running` at once and then progress every
`REPORT_EVERY` s until the answer says stop, a poll's `stop` names it or its time limit
passes; then it sends its end report (`done`, with the object name and the end reason),
retried until the control plane takes it.

2 000 agents hold ~4 000 connections and send thousands of requests a second: httpx on
one core could not (each request costs it ~0.3 ms), so this speaks HTTP/1.1 itself over
asyncio streams, keep-alive, one small pool of connections per agent; a kept connection
the API has closed meanwhile is dropped, or the request goes once more on a new one, as
httpx does. `Fleet.run` runs the whole fleet on an event loop in a thread of its own
(`start`, `stop`; `cpu_seconds`: its own CPU, since it shares the cores with the API).
`Counts` notes when each machine's first `running` report and its end report were
answered: what a user waits for after create and stop.

The figures made with it (`bench/fleet_figure.py`, `bench/run --only fleet`) and the
test (tests/bench/test_fleet.py) create and stop captures through the client API and
watch the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from edgepcap.agent.worker import REPORT_EVERY
from edgepcap.formats import protocol

POLL_WAIT = 20  # what the real agent asks for (agent._poll_jobs)
CALL_TIMEOUT = 10.0  # the real agent's connect/write timeout; polls get wait + 15
FINAL_REPORT_PATIENCE = 60.0


def raise_nofile(wanted: int = 65_536) -> int:
    """Raise this process's open-file limit (children it starts inherit it, the API's
    processes too); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:  # as root, the hard limit may rise too
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class HttpError(RuntimeError):
    pass


class Http:
    """One agent's HTTP/1.1 client: keep-alive connections, taken from its idle pool or
    opened, one request at a time on each; JSON in and out (Content-Length bodies)."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.auth = f"Bearer {key}"
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(
        self, method: str, path: str, body: Any = None, timeout: float = CALL_TIMEOUT
    ) -> tuple[int, Any]:
        while True:
            conn = self._idle_connection()
            reused = conn is not None
            if conn is None:
                opening = asyncio.open_connection(self.host, self.port)
                conn = await asyncio.wait_for(opening, timeout)
            reader, writer = conn
            try:
                status, data, keep = await asyncio.wait_for(
                    self._exchange(reader, writer, method, path, body), timeout
                )
                break
            except asyncio.IncompleteReadError as exc:
                writer.close()
                # The server closed a kept-alive connection as it was reused, before any
                # answer (as httpx, once more on a new one).
                if not (reused and not exc.partial):
                    raise
            except BaseException:
                writer.close()
                raise
        if keep:
            self.idle.append(conn)
        else:
            writer.close()
        return status, json.loads(data) if data else None

    def _idle_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A kept-alive connection the server has not closed meanwhile, if any."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        body: Any,
    ) -> tuple[int, bytes, bool]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} /agent/v1{path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: {self.auth}\r\nContent-Length: {len(payload)}\r\n"
        )
        if body is not None:
            head += "Content-Type: application/json\r\n"
        writer.write(head.encode() + b"\r\n" + payload)
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if headers.get("transfer-encoding") == "chunked":
            data = b""
            while size := int((await reader.readline()).strip(), 16):
                data += (await reader.readexactly(size + 2))[:-2]
            await reader.readline()
        else:
            data = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, data, headers.get("connection") != "close"

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class Counts:
    """What the fleet did, for the figures' details and the test."""

    registered: int = 0
    heartbeats: int = 0
    polls: int = 0
    reports: int = 0
    jobs: int = 0
    ended: int = 0
    errors: int = 0
    last_error: str = ""
    # When (time.monotonic) each machine's first `running` report and its end report were
    # answered 200, by capture: what a user waits for after create and stop.
    running_at: dict[str, list[float]] = field(default_factory=dict)
    ended_at: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class SimAgent:
    """One simulated machine's agent."""

    http: Http
    colo: str
    machine: str
    counts: Counts
    heartbeat_interval: float = 1.0
    boot_id: str = field(default_factory=lambda: secrets.token_hex(16))
    captures: dict[str, asyncio.Event] = field(default_factory=dict)  # its stop, by id
    seen: set[str] = field(default_factory=set)
    stopping: bool = False

    @property
    def me(self) -> dict[str, str]:
        return {"machine": self.machine, "boot_id": self.boot_id}

    def _error(self, what: str) -> None:
        self.counts.errors += 1
        self.counts.last_error = f"{self.machine}: {what}"

    async def register(self) -> None:
        while not self.stopping:
            try:
                status, answer = await self.http.call(
                    "POST", "/register", {"colo": self.colo, **self.me}
                )
                if status == 200:
                    self.heartbeat_interval = float(answer.get("heartbeat_interval", 1.0))
                    self.counts.registered += 1
                    return
                self._error(f"register: HTTP {status} {answer}")
            except Exception as exc:
                self._error(f"register: {exc!r}")
            await asyncio.sleep(1.0)

    async def heartbeats(self) -> None:
        # Agents start at random moments: their beats are spread over the interval.
        await asyncio.sleep(random.uniform(0, self.heartbeat_interval))  # noqa: S311
        while not self.stopping:
            try:
                status, _ = await self.http.call("POST", "/heartbeat", {**self.me, "stats": {}})
                self.counts.heartbeats += 1
                if status == 409:
                    await self.register()
                elif status != 200:
                    self._error(f"heartbeat: HTTP {status}")
            except Exception as exc:
                self._error(f"heartbeat: {exc!r}")
            await asyncio.sleep(self.heartbeat_interval)

    async def poll(self) -> None:
        while not self.stopping:
            running = [i for i, stop in self.captures.items() if not stop.is_set()]
            query = urlencode({**self.me, "wait": POLL_WAIT, "running": ",".join(running)})
            asked = time.monotonic()
            try:
                status, answer = await self.http.call(
                    "GET", f"/jobs?{query}", timeout=POLL_WAIT + 15
                )
            except Exception as exc:
                if not self.stopping:
                    self._error(f"poll: {exc!r}")
                    await asyncio.sleep(1.0)
                continue
            self.counts.polls += 1
            if status == 409:
                await self.register()
                continue
            if status != 200:
                self._error(f"poll: HTTP {status}")
                await asyncio.sleep(1.0)
                continue
            for stop in answer["stop"]:
                if (event := self.captures.get(stop["id"])) is not None:
                    event.set()
            for job in answer["jobs"]:
                if job["id"] not in self.seen:
                    self.seen.add(job["id"])
                    self.captures[job["id"]] = asyncio.Event()
                    asyncio.get_running_loop().create_task(self.capture(job))
            if not answer["jobs"] and not answer["stop"] and time.monotonic() - asked < 1:
                await asyncio.sleep(0.5)  # that API process is stopping (as the agent does)

    async def capture(self, job: dict[str, Any]) -> None:
        """A CaptureWorker without packets: progress reports until told to stop, then the end."""
        self.counts.jobs += 1
        pcap_id, stop = job["id"], self.captures[job["id"]]
        deadline = time.monotonic() + int(job["time_limit"])
        reason = None
        path = f"/captures/{pcap_id}/report"
        first = True
        while not stop.is_set() and not self.stopping:
            if time.monotonic() >= deadline:
                reason = protocol.TIME_LIMIT
                break
            progress = {**self.me, "state": protocol.RUNNING, "packets": 0, "bytes": 0}
            try:
                status, answer = await self.http.call("POST", path, progress)
                self.counts.reports += 1
                if status == 200 and first:
                    first = False
                    self.counts.running_at.setdefault(pcap_id, []).append(time.monotonic())
                if status == 200 and answer.get("stop"):
                    reason = answer.get("reason") or protocol.STOP
                    stop.set()
            except Exception as exc:
                self._error(f"report: {exc!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_EVERY)
        stop.set()
        end = {
            **self.me,
            "state": protocol.DONE,
            "end_reason": reason or protocol.STOP,
            "object_name": job["object_name"],
            "directions_known": 0,
        }
        give_up = time.monotonic() + FINAL_REPORT_PATIENCE
        while time.monotonic() < give_up:
            try:
                status, _ = await self.http.call("POST", path, end)
                self.counts.reports += 1
                if status == 200:
                    self.counts.ended_at.setdefault(pcap_id, []).append(time.monotonic())
                    break
                self._error(f"end report: HTTP {status}")
                if status < 500:
                    break
            except Exception as exc:
                self._error(f"end report: {exc!r}")
            await asyncio.sleep(0.2)
        self.counts.ended += 1
        self.captures.pop(pcap_id, None)

    async def run(self) -> None:
        await self.register()
        beats = asyncio.get_running_loop().create_task(self.heartbeats())
        try:
            await self.poll()
        finally:
            beats.cancel()


class Fleet:
    """Simulated agents for `keys` ((colo, machine, agent key) each), run on an event loop
    in a thread: `start` returns once every agent has registered."""

    def __init__(self, url: str, keys: list[tuple[str, str, str]], start_rate: float = 400):
        self.url = url
        self.counts = Counts()
        self.agents = [SimAgent(Http(url, key), c, m, self.counts) for c, m, key in keys]
        self.start_rate = start_rate  # registrations a second at the start
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _start(self) -> None:
        for agent in self.agents:
            self._tasks.append(asyncio.get_running_loop().create_task(agent.run()))
            await asyncio.sleep(1 / self.start_rate)

    def start(self, timeout: float = 120) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout)
        deadline = time.monotonic() + timeout
        while self.counts.registered < len(self.agents):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.counts.registered}/{len(self.agents)} registered")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """The CPU time the fleet's thread (the whole simulation) has used."""
        assert self._thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))

    def stop(self) -> None:
        async def _stop() -> None:
            for agent in self.agents:
                agent.stopping = True
            # The agents' tasks and those they started (heartbeats, captures, calls).
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for agent in self.agents:
                agent.http.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
