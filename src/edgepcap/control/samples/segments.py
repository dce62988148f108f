"""The embedded sample store: per-partition, per-account segment files of fixed-size records.

Chosen by measurement over chDB, DuckDB and Parquet: per-minute numpy files answered a
cold 10 000-packet query fastest, and need no server and no file lock, so several API
processes can share them (BENCHMARKS.md, sample captures). Each append writes new segments
under a hidden name and publishes them by rename: a reader never sees half a file.
Retention drops whole partition directories (and the hour summaries that overlap them).

`seal` (the leading API process's supervisor calls it) compacts partitions that can no
longer receive samples and sums whole hours (sealing.py); `traffic` counts from the hour
summaries where the account's prefixes still cover them (their counts without a filter,
their columns with one: hourcols.py), from the columns of the hour in progress's sealed
partitions so far likewise, from sealed partitions' columns elsewhere, and from raw
segments for the recent minutes.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from edgepcap.control.samples import hourcols, sealing
from edgepcap.control.samples.admission import MAX_SKEW_NS
from edgepcap.control.samples.sealing import HOURS, SEALED, machine_of, raw_names
from edgepcap.control.samples.store import SampleQuery, matching, newest
from edgepcap.control.samples.tally import HOUR_NS, QUANTUM_NS, Tally
from edgepcap.control.samples.traffic import Groups, TrafficQuery
from edgepcap.formats import samples as records

NS = 1_000_000_000
# Records a sample capture reads at a time (~7 MB): its memory is bounded by this and its
# answer, whatever the window holds.
CHUNK_ROWS = 32_768
# A segment's name starts with the machine that sampled it and this separator (machine
# names are lowercase letters, digits and '-'); names without it are of no known machine.
MACHINE_SEP = sealing.MACHINE_SEP
# A partition is sealed this long after admission stops taking samples for it: batches
# admitted just before then may still be on their way to `append`.
SEAL_GRACE_NS = 30 * NS
RETRIES = 5
# File timestamps come from a clock that lags the real one by up to a tick.
TIMESTAMP_SLACK_NS = NS
SEAL_LOCK = ".sealing.lock"
T = TypeVar("T")
Prefixes = Callable[[str], Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] | None]


class SegmentStore:
    """Samples as files under `root`: one directory per partition (`partition_seconds`
    of time) and account, one segment file per append. `append` keeps what is inside the
    retention; `query` reads only the account's directories of the partitions in the
    window, then filters in numpy; `expire` removes partitions past the retention."""

    def __init__(self, root: Path, retention: dt.timedelta, partition_seconds: int = 60) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.retention = retention
        self.partition_ns = partition_seconds * NS
        self._writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = 0
        self._sealed_upto = -1  # partitions up to this one were looked at by `seal`
        self._summed_upto = -1  # hours likewise

    def _dir(self, partition: int, account_id: str) -> Path:
        return self.root / f"{partition:012d}" / account_id

    def append(self, wire: np.ndarray, machine: str = "") -> int:
        if len(wire) == 0:
            return 0
        oldest = _now_ns() - int(self.retention.total_seconds() * NS)
        wire = wire[wire["ts"] >= oldest]
        partitions = wire["ts"] // self.partition_ns
        for account in np.unique(wire["account"]):
            mine = wire["account"] == account
            account_id = bytes(account).hex()
            for partition in np.unique(partitions[mine]):
                rows = records.stored(wire[mine & (partitions == partition)])
                directory = self._dir(int(partition), account_id)
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._seq += 1
                name = f"{machine}{MACHINE_SEP}{self._writer}-{self._seq:09d}.seg"
                hidden = directory / f".{name}.tmp"
                # Customers' packets: readable by the service's user only, from creation.
                fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    rows.tofile(fh)
                os.rename(hidden, directory / name)
        return len(wire)

    def _partition(
        self,
        partition: int,
        account_id: str,
        summary: dict | None = None,
        inside: bool = False,
    ) -> list[tuple[np.ndarray, list[str], np.ndarray, bool]]:
        """The account's samples in one partition, as (columns, machine names, each row's
        machine index, counted by `summary`?) chunks. What the hour `summary` counted is not
        read when the partition is `inside` the part of the hour the summary answers."""
        empty: list[tuple[np.ndarray, list[str], np.ndarray, bool]] = []
        return _retried(lambda: self._read_partition(partition, account_id, summary, inside), empty)

    def _read_partition(self, partition, account_id, summary, inside):
        summed = summary is not None and partition in _indexed(summary)["partition_set"]
        if summed and inside:
            # Counted by the hour's summary or columns: only raw segments it did not list
            # are read (none, but for a race). Plain strings: a 24 h query passes here
            # for 1 440 partitions, and pathlib cost more than the rest of each visit.
            raw = f"{self.root}/{partition:012d}/{account_id}"
            late = []
            for name in raw_names(raw):
                if name not in summary["raw_set"]:
                    rows = np.fromfile(f"{raw}/{name}", dtype=records.STORED)
                    late.append((rows, [machine_of(name)], np.zeros(len(rows), int), False))
            return late
        part = self.root / f"{partition:012d}"
        sealed = part / f"{account_id}{SEALED}"
        out = []
        try:
            meta = json.loads((sealed / "meta.json").read_text())
        except FileNotFoundError:
            meta = None
        manifest = set(meta["raw"]) if meta else set()
        if meta:
            cols = np.load(sealed / "cols.npy")
            out.append((cols, meta["machines"], cols["machine"], summed))
        for name in raw_names(part / account_id):
            if name not in manifest:
                rows = np.fromfile(part / account_id / name, dtype=records.STORED)
                out.append((rows, [machine_of(name)], np.zeros(len(rows), int), False))
        if not manifest and sealed.exists():
            raise FileNotFoundError(sealed)  # sealed while the raw files were read
        return out

    def query(self, q: SampleQuery) -> np.ndarray:
        """The newest `q.limit` matches, read a partition at a time and a chunk of
        `CHUNK_ROWS` records at a time: memory is bounded by the answer, not the window."""
        kept = np.zeros(0, dtype=records.STORED)
        for p in range(q.start_ns // self.partition_ns, q.end_ns // self.partition_ns + 1):
            found = _retried(lambda p=p: self._newest_in(p, q), kept[:0])
            kept = newest(np.concatenate([kept, found]), q.limit)
        return kept

    def _newest_in(self, partition: int, q: SampleQuery) -> np.ndarray:
        """One partition's newest `q.limit` matches (FileNotFoundError: read it again)."""
        part = self.root / f"{partition:012d}"
        sealed = part / f"{q.account_id}{SEALED}"
        try:
            meta = json.loads((sealed / "meta.json").read_text())
        except FileNotFoundError:
            meta = None
        manifest = set(meta["raw"]) if meta else set()
        paths = [sealed / f"{m}{MACHINE_SEP}sealed.seg" for m in meta["machines"]] if meta else []
        paths += [part / q.account_id / n for n in raw_names(part / q.account_id)]
        paths = [path for path in paths if path.name not in manifest]
        if not manifest and sealed.exists():
            raise FileNotFoundError(sealed)  # sealed while the raw files were listed
        kept = np.zeros(0, dtype=records.STORED)
        for path in paths:
            # Opened once: a file deleted by sealing after this is still read whole.
            with path.open("rb") as fh:
                while len(chunk := np.fromfile(fh, records.STORED, count=CHUNK_ROWS)):
                    kept = newest(np.concatenate([kept, matching(chunk, q)]), q.limit)
        return kept

    def traffic(self, q: TrafficQuery) -> Groups:
        t = Tally(q)
        window = q.window()
        end10 = q.end_ns - q.end_ns % QUANTUM_NS
        plain = not any(v is not None for v in q.filter.model_dump().values())
        P = self.partition_ns
        for hour in range(q.start_ns // HOUR_NS, (q.end_ns - 1) // HOUR_NS + 1):
            h0, h1 = hour * HOUR_NS, (hour + 1) * HOUR_NS
            lo, hi = max(q.start_ns, h0), min(end10, h1)
            summary = None
            if HOUR_NS % P == 0 and lo < hi:
                summary = self._summary(t, q, hour, lo, hi, plain)
            skip = (lo, hi) if summary else None
            first, last = max(q.start_ns, h0) // P, (min(q.end_ns, h1) - 1) // P
            for p in range(first, last + 1):
                inside = skip is not None and skip[0] <= p * P and (p + 1) * P <= skip[1]
                if inside and self._untouched(p, summary):
                    continue
                for rows, names, numbers, summed in self._partition(
                    p, q.account_id, summary, inside
                ):
                    codes = t.code(names)[numbers]
                    t.add_rows(rows, codes, window, skip if summed else None)
            t.end_hour()
        return t.groups()

    def _untouched(self, partition: int, summary: dict | None) -> bool:
        """Whether `summary` counted the partition and nothing can have landed in it since:
        its directory is older than the summary's check by more than a timestamp's
        coarseness (one stat instead of a listing)."""
        checked = summary.get("checked_ns") if summary else None
        if checked is None or partition not in _indexed(summary)["partition_set"]:
            return False
        try:
            changed = os.stat(f"{self.root}/{partition:012d}").st_mtime_ns
        except FileNotFoundError:
            return True
        return changed < checked - TIMESTAMP_SLACK_NS

    def _summary(
        self, t: Tally, q: TrafficQuery, hour: int, lo: int, hi: int, plain: bool
    ) -> dict | None:
        """Adds what the hour's summary, or the columns of its sealed partitions so far,
        count of [lo, hi) to `t`; their meta (which partitions they counted), or None if
        there are none, or the account's prefixes no longer cover them. Read again when
        they are replaced while read."""
        for _ in range(RETRIES):
            try:
                return self._counted(t, q, hour, lo, hi, plain)
            except FileNotFoundError:
                t.drop_hour()  # replaced (or expired) while read: again, from what is there
        return None

    def _counted(self, t, q, hour, lo, hi, plain) -> dict | None:
        """`_summary` once: the summary's counts (`plain`: no filter) or its columns
        (hourcols.py), else the hour so far's columns; with their strays."""
        hours = self.root / HOURS / f"{hour:08d}"
        directory = hours / q.account_id
        try:
            meta = json.loads((directory / "meta.json").read_text())
        except FileNotFoundError:
            sofar = sealing.so_far(hours, q.account_id)
            if not sofar:
                return None  # nothing sealed (yet), or expired
            directory, plain = hours / sofar[-1], False  # the hour so far has only columns
            meta = json.loads((directory / "meta.json").read_text())
        nets = [ipaddress.ip_network(n) for n in meta["nets"]]
        if not all(_covered(n, q.prefixes) for n in nets):
            return None
        cut = q.window()
        cut = SampleQuery(cut.account_id, lo, hi - 1, cut.filter, 0, cut.prefixes)
        machines = t.code(meta["machines"])
        if not plain:
            if meta.get("columns") != hourcols.VERSION:
                return None  # summed before the columns were
            coded = hourcols.count(directory, meta, machines, q, t.dim, lo, hi)
            if coded is not None:
                t.add_coded(coded)
            if meta["strays"]:
                strays = np.load(directory / "strays.npy")
                t.add_rows(strays, machines[strays["machine"]], cut)
            return meta
        counts = np.load(directory / f"{t.dim}.npy")
        strays = np.load(directory / "strays.npy") if meta.get("strays", 1) else None
        start = hour * HOUR_NS + counts["b"].astype(np.int64) * QUANTUM_NS
        within = (start >= lo) & (start < hi)
        counts, start = counts[within], start[within]
        keys = counts["key"]
        if t.dim == "machine":
            keys = machines[keys] if len(keys) else keys
        bucket = (start - q.start_ns) // q.step_ns
        t.add(keys, bucket, counts["s"], counts["y"])
        if strays is not None:
            t.add_rows(strays, machines[strays["machine"]], cut)
        return meta

    def seal(self, now_ns: int, prefixes: Prefixes, wait: bool = False) -> int:
        """Compacts every partition no sample can reach any more, then sums every such
        whole hour of each account `prefixes` knows (None: not summed); returns how many
        partitions were compacted. One sealer at a time per store (a lock file in it):
        while another process seals the same files (a second data dir on this store, a
        tool), this one returns 0 and leaves the work to it, or with `wait` waits for it
        and then seals what is left."""
        fd = os.open(self.root / SEAL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return 0
            return self._seal(now_ns, prefixes)
        finally:
            os.close(fd)

    def _seal(self, now_ns: int, prefixes: Prefixes) -> int:
        ready = (now_ns - MAX_SKEW_NS - SEAL_GRACE_NS) // self.partition_ns  # first open one
        sealed = 0
        parts = sorted(int(e) for e in os.listdir(self.root) if e.isdigit())
        for p in parts:
            if self._sealed_upto < p < ready:
                for account_id in _accounts(self.root / f"{p:012d}"):
                    sealed += sealing.seal_partition(self.root / f"{p:012d}", account_id)
        self._sealed_upto = max(self._sealed_upto, ready - 1)
        if HOUR_NS % self.partition_ns or not parts:
            return sealed
        per_hour = HOUR_NS // self.partition_ns
        first_hour = max(self._summed_upto + 1, parts[0] // per_hour)
        last_hour = ready // per_hour  # the first hour with an open partition
        oldest = parts[0] // per_hour
        if parts[0] % per_hour and oldest < first_hour:
            # The oldest hour, partly expired (its summary went with its first partition):
            # what is left of it, summed again, so that a 24 h query need not read it row by
            # row. Once per account and expired partition at most.
            partitions = range(parts[0], (oldest + 1) * per_hour)
            self._sum_accounts(sealing.summarize_hour, oldest, partitions, prefixes)
        for hour in range(first_hour, last_hour):
            partitions = range(hour * per_hour, (hour + 1) * per_hour)
            self._sum_accounts(sealing.summarize_hour, hour, partitions, prefixes)
        self._summed_upto = max(self._summed_upto, last_hour - 1)
        if ready % per_hour:  # the hour in progress: its sealed partitions so far
            partitions = range(last_hour * per_hour, ready)
            self._sum_accounts(sealing.summarize_so_far, last_hour, partitions, prefixes)
        return sealed

    def _sum_accounts(
        self, summarize: Callable, hour: int, partitions: range, prefixes: Prefixes
    ) -> None:
        """`summarize` the partitions of `hour` for each account with samples in them whose
        prefixes are known."""
        accounts: set[str] = set()
        for p in partitions:
            accounts.update(_accounts(self.root / f"{p:012d}"))
        for account_id in sorted(accounts):
            nets = prefixes(account_id)
            if nets is not None:
                summarize(self.root, hour, account_id, partitions, nets)

    def expire(self, now_ns: int) -> int:
        cutoff = now_ns - int(self.retention.total_seconds() * NS)
        dropped = 0
        # Summaries first: they must not count what retention dropped.
        sealing.drop_expired(self.root, cutoff, self.partition_ns)
        for entry in os.listdir(self.root):
            if entry.isdigit() and (int(entry) + 1) * self.partition_ns <= cutoff:
                shutil.rmtree(self.root / entry, ignore_errors=True)
                dropped += 1
        return dropped

    def close(self) -> None:
        pass


def _indexed(summary: dict) -> dict:
    """The summary with sets of its partitions and raw names (made once, looked up often)."""
    if "raw_set" not in summary:
        summary["raw_set"] = set(summary["raw"])
        summary["partition_set"] = set(summary["partitions"])
    return summary


def _retried(read: Callable[[], T], gone: T) -> T:
    """`read()`, again while files it reads vanish (sealed or expired meanwhile: what is
    there now is read), up to RETRIES times; `gone` if they keep vanishing."""
    for _ in range(RETRIES):
        try:
            return read()
        except FileNotFoundError:
            continue
    return gone


def _covered(net, prefixes) -> bool:
    return any(net.version == p.version and net.subnet_of(p) for p in prefixes)


def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _accounts(part: Path) -> set[str]:
    """The accounts with samples (raw or sealed) in a partition directory."""
    return {e.removesuffix(SEALED) for e in _listdir(part) if not e.startswith(".") and e != HOURS}


def _now_ns() -> int:
    import time

    return time.time_ns()
