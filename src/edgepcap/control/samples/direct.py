"""Agents insert their samples into ClickHouse themselves: the ingest path that grows with
the store, not with the API processes.

An API process checks and stores what it is posted on one core per worker (BENCHMARKS.md,
"sampler ingest"); a colo of 100 machines at 1 M pps samples 1 M records/s. With the
ClickHouse store and `EDGEPCAP_SAMPLE_INGEST` (the ClickHouse HTTP address agents reach)
set, registration answers each machine a `protocol.SampleSink`: the machine then posts a
batch's WIRE bytes, unchanged, as `INSERT INTO <its table> FORMAT RowBinary`
(`samples.ROW_BINARY`), and ClickHouse does the rest.

ClickHouse 18.16 has no SQL users or grants: users live in users.xml (and `users.d/*.xml`,
re-read as they change); what a user may touch is whole databases (`allow_databases`) and
its profile's settings. So each machine gets (`users_xml` writes the users.d entry):

* a user whose password is HMAC(ingest key, machine name): the API derives it at each
  registration and stores nothing; `allow_databases` names its own database only; its
  profile has `allow_ddl = 0` (and 18.16 refuses `SET allow_ddl` to a user without it);
* its own database `<db>_in_<machine>` holding one table, `samples`, a Buffer whose
  destination is `<db>.in_<machine>`, a Null table in the store's database.

Why this shape (each point tried on 18.16, and tested in test_direct_ingest):

* The user reads and writes tables of its database only. A Buffer flushes in the server's
  own context, so its rows reach the store's database; reading it reads its destination
  with the user's rights, which is refused: the machine reads nothing, not even its own
  batches. `remote()` to the store's database is refused the same way.
* The view that files the rows cannot live in the machine's database: a user may INSERT
  into a view, which writes the view's target as given (any machine name), and a `TO`
  view is read with the server's rights (every account's samples). So the view,
  `admit_<machine>`, sits in the store's database on the Null table: it stamps the
  machine's name (from its own definition, never from the row), the partition, and keeps
  what admission keeps (`admission.refusals`: timestamps within MAX_SKEW_NS of the server's
  clock, cap_len within SNAPLEN and orig_len). It writes to one shared Buffer, `incoming`,
  which writes `samples` in large blocks: few parts however many machines insert.
* Attribution: a record carries the account the agent filed it under. The store answers
  an account only rows whose source or destination lies in the account's prefixes as they
  are at query time (`chsql.where`, under every sample capture and traffic
  view): the API path's ingest check, applied where it cannot be skipped. What a machine
  files under the wrong account is stored and never shown.

Given up, against the API path: triggers count the batches an API process sees, so they
see none of these; refused records are not counted in /metrics; rows wait in memory
buffers (about 1 to 4 s) before a query sees them, and a crash of ClickHouse (not a clean
stop, which flushes) loses what they hold. A user may still SET other settings (18.16 has
no constraints); every ClickHouse user must have a password, as `url()` from the server
reaches its own loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from xml.sax.saxutils import escape

from edgepcap.control.samples.admission import MAX_SKEW_NS
from edgepcap.control.samples.clickhouse import COLUMNS, ClickHouseStore
from edgepcap.formats import protocol
from edgepcap.formats.samples import ROW_BINARY, SNAPLEN

PROFILE = "edgepcap_ingest"
MACHINE = re.compile(r"^[a-z][a-z0-9-]{1,62}$")  # fleet.MACHINE_NAME: a safe SQL literal
# A machine's buffer passes its rows on within a second (or at once, for a batch over
# its max_rows); the shared one holds up to 3 s or 1 M rows per layer.
MACHINE_BUFFER = "Buffer({db}, {dest}, 1, 0, 1, 0, 1000000, 0, 268435456)"
SHARED_BUFFER = "Buffer({db}, samples, 2, 1, 3, 200000, 1000000, 33554432, 536870912)"
NS = 1_000_000_000


def password(key: str, machine: str) -> str:
    """The machine's ClickHouse password, derived from the ingest key."""
    return hmac.new(key.encode(), f"samples-ingest:{machine}".encode(), hashlib.sha256).hexdigest()


def names(database: str, machine: str) -> tuple[str, str]:
    """(the machine's database and user, its Null table in the store's database)."""
    if not MACHINE.match(machine):
        raise ValueError(f"bad machine name {machine!r}")
    safe = machine.replace("-", "_")  # machine names have no "_": still one name each
    return f"{database}_in_{safe}", f"in_{safe}"


def users_xml(database: str, key: str, machines: list[str], networks: str = "::/0") -> str:
    """The users.d file that lets `machines` insert (and nothing else): one user each."""
    users = []
    for machine in machines:
        own, _null = names(database, machine)
        digest = hashlib.sha256(password(key, machine).encode()).hexdigest()
        users.append(
            f"    <{own}><password_sha256_hex>{digest}</password_sha256_hex>"
            f"<networks><ip>{escape(networks)}</ip></networks><profile>{PROFILE}</profile>"
            f"<quota>default</quota><allow_databases><database>{own}</database>"
            f"</allow_databases></{own}>"
        )
    return (
        "<yandex>\n  <profiles><"
        + PROFILE
        + "><readonly>0</readonly><allow_ddl>0</allow_ddl></"
        + PROFILE
        + "></profiles>\n  <users>\n"
        + "\n".join(users)
        + "\n  </users>\n</yandex>\n"
    )


class DirectIngest:
    """Makes each registering machine's tables (once per process) and tells it where to
    insert. DDL on a client of its own: the store's serves queries."""

    def __init__(self, store: ClickHouseStore, url: str, key: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.key = key
        self.database = store.database
        self.partition_ns = store.partition_ns
        self.client = store.new_client()
        self.lock = threading.Lock()
        self.ready: set[str] = set()
        self.client.execute(
            f"CREATE TABLE IF NOT EXISTS incoming AS samples ENGINE = "
            f"{SHARED_BUFFER.format(db=self.database)}"
        )

    def sink(self, machine: str) -> protocol.SampleSink:
        own, _null = names(self.database, machine)
        with self.lock:
            if machine not in self.ready:
                self._provision(machine)
                self.ready.add(machine)
        return {
            "url": self.url,
            "user": own,
            "password": password(self.key, machine),
            "table": f"{own}.samples",
        }

    def _provision(self, machine: str) -> None:
        own, null = names(self.database, machine)
        columns = ", ".join(f"{name} {kind}" for name, kind in ROW_BINARY)
        skew = MAX_SKEW_NS // NS
        now_ns = f"toInt64(now()) * {NS}"
        stamped = [
            "toFixedString(lower(hex(account)), 32) AS account",
            f"toUInt32(intDiv(ts, {self.partition_ns})) AS part",
            *(c for c in COLUMNS),
            "substring(data, 1, cap_len) AS data",
            f"'{machine}' AS machine",
        ]
        statements = [
            f"CREATE TABLE IF NOT EXISTS {null} ({columns}) ENGINE = Null",
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS admit_{null[3:]} TO incoming AS "  # noqa: S608
            f"SELECT {', '.join(stamped)} FROM {self.database}.{null} "
            f"WHERE cap_len <= {SNAPLEN} AND cap_len <= orig_len "
            f"AND ts >= {now_ns} - {skew * NS} AND ts <= {now_ns} + {skew * NS}",
            f"CREATE DATABASE IF NOT EXISTS {own}",
            f"CREATE TABLE IF NOT EXISTS {own}.samples ({columns}) ENGINE = "
            + MACHINE_BUFFER.format(db=self.database, dest=null),
        ]
        # Names and literals here are checked machine names, the store's checked database
        # name and constants: no value from a request but the machine's name.
        for sql in statements:
            self.client.execute(sql)

    def close(self) -> None:
        self.client.disconnect()
