"""Sealing the embedded store: a partition's segments compacted, an hour's counts summed.

Once no sample can land in a partition any more (admission refuses samples older than
`admission.MAX_SKEW_NS`), `seal_partition` compacts its segments into one per machine
plus a columns file (the records without their packet bytes, with a machine number):
what the traffic view reads when it must look at every sample. Once a whole hour is
sealed, `summarize_hour` writes, per group dimension, the hour's counts per 10-s bucket
and key (`tally`'s per-hour rule for ports and addresses), so that a 24 h query opens
tens of small files instead of 1440 partitions. Until then, `summarize_so_far` writes
the columns of the hour's sealed partitions so far after each one is sealed, so that a
query of the hour in progress reads only its last, unsealed minutes row by row; the
summary replaces them. Hand-written numpy files, like the
segments, because they were measured fastest (BENCHMARKS.md) and need no server.

Every result is built in a hidden directory and published by one rename; the raw
segments it replaces are deleted only afterwards. A reader that finds both prefers the
compacted form and skips the raw files its `meta.json` lists; one whose raw files vanish
mid-read retries the partition. A segment that lands in a partition after its hour was
summed (a late append) makes the partition's directory newer than the summary's
"checked_ns", the time before which its partitions had no raw segment of the account:
readers list only such partitions. An hour summary counts only the samples inside the
account's prefixes at sealing time (`meta.json` "nets"); readers use it only while those
prefixes are still the account's, the others (`strays.npy`) are checked row by row.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgepcap.control.samples import hourcols, tally
from edgepcap.formats import samples as records

MACHINE_SEP = "@"
SEALED = ".sealed"
HOURS = "hours"
# An hour in progress: `hours/<hour>/<account><SO_FAR><last partition counted>`.
SO_FAR = ".sofar-"
COLS = np.dtype(
    [
        *[(n, records.STORED.fields[n][0]) for n in records.STORED.names if n != "data"],
        ("machine", "<u2"),
    ]
)
DIMENSIONS = (
    "protocol",
    "source_port",
    "destination_port",
    "source_address",
    "destination_address",
    "machine",
)


def machine_of(name: str) -> str:
    machine, sep, _rest = name.partition(MACHINE_SEP)
    return machine if sep else ""


def raw_names(directory: Path | str) -> list[str]:
    """The published segments of a raw partition directory (none if it is gone)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".seg") and not n.startswith("."))


def columns(rows: np.ndarray, machine: int) -> np.ndarray:
    out = np.zeros(len(rows), dtype=COLS)
    for name in COLS.names[:-1]:
        out[name] = rows[name]
    out["machine"] = machine
    return out


def _publish(tmp: Path, target: Path) -> bool:
    try:
        os.rename(tmp, target)
    except OSError:  # another sealer published it first
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def seal_partition(part_dir: Path, account_id: str) -> bool:
    """Compacts `part_dir/account_id`'s segments into `part_dir/account_id.sealed`."""
    raw = part_dir / account_id
    names = raw_names(raw)
    target = part_dir / f"{account_id}{SEALED}"
    if not names or target.exists():
        return False
    by_machine: dict[str, list[str]] = {}
    for name in names:
        by_machine.setdefault(machine_of(name), []).append(name)
    tmp = part_dir / f".{account_id}.sealing-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    try:
        cols = []
        for number, (machine, files) in enumerate(sorted(by_machine.items())):
            seg = tmp / f"{machine}{MACHINE_SEP}sealed.seg"
            if len(files) == 1:
                os.link(raw / files[0], seg)  # the same bytes, no copy
            else:
                fd = os.open(seg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for name in files:
                        out.write((raw / name).read_bytes())
            cols.append(columns(np.fromfile(seg, dtype=records.STORED), number))
        np.save(tmp / "cols.npy", np.concatenate(cols))
        meta = {"machines": sorted(by_machine), "raw": names}
        (tmp / "meta.json").write_text(json.dumps(meta))
    except FileNotFoundError:  # expired meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    if not _publish(tmp, target):
        return False
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(raw / name)
    with contextlib.suppress(OSError):
        os.rmdir(raw)  # unless a (late) segment arrived meanwhile
    return True


def summarize_hour(
    root: Path,
    hour: int,
    account_id: str,
    partitions: Sequence[int],
    nets: Sequence,
) -> bool:
    """Writes `root/hours/<hour>/<account_id>` from the sealed `partitions` of the hour;
    False (nothing written) while one of them still has raw segments. The hour so far's
    columns (`summarize_so_far`) go once it is published."""
    target = root / HOURS / f"{hour:08d}" / account_id
    if target.exists():
        return False
    done = _summarize(root, hour, account_id, partitions, nets, target, counts=True)
    for old in so_far(root / HOURS / f"{hour:08d}", account_id) if target.exists() else ():
        shutil.rmtree(root / HOURS / f"{hour:08d}" / old, ignore_errors=True)
    return done


def summarize_so_far(
    root: Path, hour: int, account_id: str, partitions: Sequence[int], nets: Sequence
) -> bool:
    """Writes the columns (hourcols.py) and strays of the sealed `partitions` so far of an
    hour in progress, as `root/hours/<hour>/<account_id>.sofar-<last partition>`, then
    drops the older ones: a reader counts the partitions its `meta.json` lists from there,
    the others from their own files. False if that one exists or a partition is unsealed."""
    hours = root / HOURS / f"{hour:08d}"
    target = hours / f"{account_id}{SO_FAR}{partitions[-1]:012d}"
    if target.exists() or (hours / account_id).exists():
        return False
    done = _summarize(root, hour, account_id, partitions, nets, target, counts=False)
    for old in so_far(hours, account_id):
        if old != target.name:
            shutil.rmtree(hours / old, ignore_errors=True)
    return done


def so_far(hours: Path, account_id: str) -> list[str]:
    """The account's published hour-so-far directories in `hours`, oldest first."""
    try:
        names = os.listdir(hours)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(f"{account_id}{SO_FAR}"))


def _summarize(root, hour, account_id, partitions, nets, target: Path, counts: bool) -> bool:
    machines: dict[str, int] = {}
    cols, included, manifest = [], [], []
    checked = time.time_ns()  # no raw segment of the account in `partitions` from here
    for p in partitions:
        part = root / f"{p:012d}"
        if raw_names(part / account_id):
            return False  # not sealed yet
        try:
            meta = json.loads((part / f"{account_id}{SEALED}" / "meta.json").read_text())
            mine = np.load(part / f"{account_id}{SEALED}" / "cols.npy")
        except FileNotFoundError:
            continue  # no samples of the account in this partition
        codes = np.array([machines.setdefault(m, len(machines)) for m in meta["machines"]])
        mine["machine"] = codes[mine["machine"]] if len(codes) else mine["machine"]
        cols.append(mine)
        included.append(p)
        manifest += meta["raw"]
    rows = np.concatenate(cols) if cols else np.zeros(0, dtype=COLS)
    owned = records.owned(rows, list(nets))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.parent / f".{account_id}.summing-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    strays = rows[~owned]
    np.save(tmp / "strays.npy", strays)
    rows = rows[owned]
    buckets = (rows["ts"] - hour * tally.HOUR_NS) // tally.QUANTUM_NS
    # Each side's addresses sorted once, for its summary and its columns.
    sides = {side: hourcols.address_codes(rows, side) for side in ("src", "dst")}
    for dim in DIMENSIONS if counts else ():
        top = tally.HOUR_GROUPS if dim in tally.CAPPED else None
        nbytes = rows["orig_len"].astype(np.int64)
        if tally.is_address(dim):
            uniq, codes = sides["src" if dim == "source_address" else "dst"]
            k, b, s, y = tally.reduce(codes, buckets, np.ones(len(rows)), nbytes, top)
            k = _address_keys(uniq, k)
        else:
            keys = tally.encode(rows, dim, rows["machine"])
            k, b, s, y = tally.reduce(keys, buckets, np.ones(len(rows)), nbytes, top)
        out = np.zeros(len(k), dtype=[("key", k.dtype), ("b", "<u2"), ("s", "<i8"), ("y", "<i8")])
        out["key"], out["b"], out["s"], out["y"] = k, b, s, y
        np.save(tmp / f"{dim}.npy", out)
    offsets = hourcols.write(tmp, rows, buckets, sides)
    meta = {
        "columns": hourcols.VERSION,
        "offsets": offsets,
        "strays": len(strays),
        "machines": list(machines),
        "nets": [str(n) for n in nets],
        "partitions": included,
        "raw": manifest,
        "checked_ns": checked,
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    return _publish(tmp, target)


def _address_keys(uniq: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Address keys of `reduce`'s codes (ints, INT_OTHER for the rest): codes sort as
    their keys do, so the cut and its ties are those of a reduce over the addresses."""
    out = np.zeros(len(codes), dtype=tally.ADDRESS)
    mine = codes != tally.INT_OTHER
    out[mine] = uniq[codes[mine]]
    out["fam"][~mine] = tally.ADDRESS_OTHER
    return out


def drop_expired(root: Path, cutoff: int, partition_ns: int) -> None:
    """Removes every hour summary (and hour so far) that counts a partition ending by
    `cutoff`: whole hours past it, and the summaries of the hour it falls in whose first
    partition is past it (`SegmentStore.seal` sums the rest of that hour again)."""
    per_hour = max(1, tally.HOUR_NS // partition_ns)
    hours = root / HOURS
    try:
        entries = os.listdir(hours)
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.isdigit() or (int(entry) * per_hour + 1) * partition_ns > cutoff:
            continue
        hour_dir = hours / entry
        if (int(entry) + 1) * per_hour * partition_ns <= cutoff:
            shutil.rmtree(hour_dir, ignore_errors=True)
            continue
        for name in os.listdir(hour_dir):
            try:
                counted = json.loads((hour_dir / name / "meta.json").read_text())["partitions"]
            except (FileNotFoundError, NotADirectoryError):
                continue  # being built, or gone
            if counted and (counted[0] + 1) * partition_ns <= cutoff:
                shutil.rmtree(hour_dir / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            hour_dir.rmdir()  # if that was all of it
