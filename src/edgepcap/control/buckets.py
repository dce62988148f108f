"""Bucket ownership: a challenge file written into the bucket, proven by reading it back.

Buckets are stored and looked up by their canonical `destination_conf`, so one bucket is
one row however it is spelt. Until a caller has proven a bucket, a failure to write or
read its challenge says the same whatever the cause (missing, denied, a link, full):
otherwise the API would answer which buckets exist and which this server reaches. The
cause goes to the server's log.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgepcap.bucket_urls import DestinationError, canonical
from edgepcap.control.credentials import hash_secret, matches, new_id
from edgepcap.control.errors import ChallengeMismatch, ChallengeUnreachable, NotFound
from edgepcap.control.models import Bucket, utcnow
from edgepcap.destinations import StoreSettings, parse

log = logging.getLogger("edgepcap.api")


def list_buckets(session: Session, account_id: str) -> list[Bucket]:
    return list(
        session.scalars(
            select(Bucket).where(Bucket.account_id == account_id).order_by(Bucket.submitted)
        )
    )


def add(session: Session, account_id: str, conf: str, settings: StoreSettings) -> Bucket:
    """Write a fresh challenge into the bucket; a validated bucket is returned as it is."""
    dest = parse(conf, settings)
    bucket = find_bucket(session, account_id, dest.conf)
    if bucket is not None and bucket.status == "success":
        return bucket
    token = secrets.token_hex(32)
    filename = f"ownership-challenge-{secrets.token_hex(8)}.txt"
    try:
        dest.put(filename, token.encode())
    except DestinationError as exc:
        log.warning("account %s: ownership challenge not written: %s", account_id, exc)
        raise ChallengeUnreachable(
            f"could not write an ownership challenge into {dest.conf}: the bucket does not "
            "exist or this server may not write into it (the cause is not told before "
            "ownership is proven)"
        ) from None
    if bucket is None:
        bucket = Bucket(id=new_id(), account_id=account_id, destination_conf=dest.conf)
        session.add(bucket)
    elif bucket.filename:
        # The old challenge is void now; leave no stale file in the customer's bucket.
        try:
            dest.delete(bucket.filename)
        except DestinationError as exc:
            log.warning("account %s: old ownership challenge not removed: %s", account_id, exc)
    bucket.filename = filename
    bucket.challenge_hash = hash_secret(token)
    bucket.status = "pending"
    bucket.submitted = utcnow()
    bucket.validated = None
    session.flush()
    return bucket


def validate(
    session: Session, account_id: str, conf: str, challenge: str, settings: StoreSettings
) -> Bucket:
    conf = canonical(conf)
    bucket = find_bucket(session, account_id, conf)
    if bucket is None:
        raise NotFound(f"no bucket {conf!r} in this account: add it with POST /pcaps/ownership")
    if bucket.status == "success":
        return bucket
    dest = parse(conf, settings)
    try:
        stored = dest.get(bucket.filename).decode("utf-8", "replace").strip()
    except DestinationError as exc:
        log.warning("account %s: ownership challenge not read: %s", account_id, exc)
        raise ChallengeUnreachable(
            f"could not read the ownership challenge {bucket.filename} back from {dest.conf}: "
            "it is missing, not a file this server wrote, or the bucket is not reachable "
            "(the cause is not told before ownership is proven)"
        ) from None
    given = challenge.strip()
    if (
        not given
        or not secrets.compare_digest(given.encode(), stored.encode())
        or not matches(given, bucket.challenge_hash)
    ):
        bucket.status = "failed"
        session.flush()
        raise ChallengeMismatch(
            f"`ownership_challenge` does not match the contents of {bucket.filename} in the "
            "bucket: copy the file's contents exactly",
        )
    bucket.status = "success"
    bucket.validated = utcnow()
    session.flush()
    return bucket


def find_bucket(session: Session, account_id: str, conf: str) -> Bucket | None:
    return session.scalar(
        select(Bucket).where(Bucket.account_id == account_id, Bucket.destination_conf == conf)
    )


def delete(session: Session, account_id: str, bucket_id: str) -> None:
    bucket = session.get(Bucket, bucket_id)
    if bucket is None or bucket.account_id != account_id:
        raise NotFound(f"no bucket {bucket_id} in this account")
    session.delete(bucket)
    session.flush()
