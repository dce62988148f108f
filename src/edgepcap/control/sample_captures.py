"""Sample captures: the per-account interval between them, and answering one at once from
the sample store's history as a PCAP file."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edgepcap.control.accounts import Network
from edgepcap.control.errors import SampleRateLimited
from edgepcap.control.models import Account, Pcap, PcapBlob, unix_ns, utcnow
from edgepcap.control.samples.store import SampleQuery, SampleStore
from edgepcap.formats import pcapfile as pcap_format
from edgepcap.formats.filters import FilterV1
from edgepcap.formats.samples import SNAPLEN

SAMPLE_RATE = 100


def sample_records(rows: np.ndarray) -> bytes:
    """PCAP records of stored samples, built with numpy: no per-packet Python work."""
    return pcap_format.records(rows["ts"], rows["cap_len"], rows["orig_len"], rows["data"])


def answer_sample(
    session: Session,
    pcap: Pcap,
    samples: SampleStore,
    flt: FilterV1,
    prefixes: Sequence[Network],
) -> None:
    """Answer a sample capture from history at once: the newest matching samples of the
    account's `prefixes` (each matched within its own address family)."""
    end = pcap.offset_time or pcap.submitted
    start = end - dt.timedelta(seconds=pcap.time_limit)
    to_ns = unix_ns
    rows = samples.query(
        SampleQuery(
            pcap.account_id,
            to_ns(start),
            to_ns(end),
            flt,
            pcap.packet_limit or 1,
            tuple(prefixes),
        )
    )
    body = pcap_format.global_header(pcap_format.LINKTYPE_RAW, SNAPLEN) + sample_records(rows)
    session.add(PcapBlob(pcap_id=pcap.id, data=body))
    pcap.status = "success"
    pcap.finished = utcnow()
    pcap.packets_captured = len(rows)
    pcap.bytes_captured = int(rows["cap_len"].sum()) if len(rows) else 0
    if not len(rows):
        pcap.error_message = (
            f"no sampled packets of this account matched the filter between "
            f"{start:%Y-%m-%dT%H:%M:%S}Z and {end:%Y-%m-%dT%H:%M:%S}Z "
            f"(1 in {SAMPLE_RATE} packets are sampled)"
        )
    session.flush()


def take_slot(session: Session, account: Account, now: dt.datetime, interval: dt.timedelta) -> None:
    """Take the account's sample capture slot (one per `interval`), or raise
    SampleRateLimited."""
    # One conditional UPDATE decides the race: whichever process sets
    # last_sample_at first wins; the database serialises the rest.
    cutoff = now - interval
    result = session.execute(
        update(Account)
        .where(Account.id == account.id)
        .where((Account.last_sample_at.is_(None)) | (Account.last_sample_at <= cutoff))
        .values(last_sample_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    last = session.scalar(select(Account.last_sample_at).where(Account.id == account.id))
    wait = interval - (now - last) if last else interval
    seconds = max(1, math.ceil(wait.total_seconds()))
    raise SampleRateLimited(
        f"one sample capture per {_interval_words(interval)} per account: retry in {seconds} s",
        seconds,
    )


def _interval_words(interval: dt.timedelta) -> str:
    seconds = interval.total_seconds()
    return "minute" if seconds == 60 else f"{seconds:g} s"
