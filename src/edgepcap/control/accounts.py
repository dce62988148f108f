"""Accounts, their prefixes and their credentials."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgepcap.control.credentials import hash_secret, new_id, new_secret
from edgepcap.control.models import Account, Prefix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Samples keep IPv4 addresses in this range's form (edgepcap.samples.records), and no IPv6
# packet on the wire is addressed in it: an IPv6 prefix that overlaps it is nobody's.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says why."""


def parse_prefix(cidr: str) -> Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise AccountError(
            f"{cidr!r} is not a network prefix: give an address with its prefix length "
            "and no host bits set, e.g. 203.0.113.0/24 or 2001:db8::/48"
        ) from exc
    if isinstance(net, ipaddress.IPv6Network) and net.overlaps(IPV4_MAPPED):
        if net.subnet_of(IPV4_MAPPED):
            raise AccountError(f"{cidr!r} is IPv4-mapped IPv6: give the IPv4 prefix itself")
        raise AccountError(
            f"{cidr!r} covers the IPv4-mapped IPv6 range {IPV4_MAPPED}, which stands for "
            "IPv4 addresses and cannot be held as IPv6: give a prefix outside it"
        )
    return net


@dataclass
class Credentials:
    api_token: str
    api_key: str


def _serialise_prefix_changes(session: Session) -> None:
    """Make the overlap check and the insert one step against every other writer.

    PostgreSQL's exclusion constraint (`ex_prefixes_no_overlap`) refuses an overlapping
    insert whoever checked first. SQLite has no such constraint, so the transaction takes
    the database's write lock before it reads the prefixes (a write that changes nothing
    takes it): a second writer waits for the first to commit, then sees its prefixes.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE prefixes SET cidr = cidr WHERE 0"))


def _check_free(session: Session, nets: list[Network], account_id: str | None = None) -> None:
    """Refuse prefixes that overlap another account's: a packet must have one owner."""
    _serialise_prefix_changes(session)
    for i, net in enumerate(nets):
        for other in nets[i + 1 :]:
            if net.version == other.version and net.overlaps(other):  # type: ignore[arg-type]
                raise AccountError(f"prefixes {net} and {other} overlap")
    for row in session.scalars(select(Prefix)):
        held = ipaddress.ip_network(row.cidr)
        for net in nets:
            if held.version == net.version and held.overlaps(net):  # type: ignore[arg-type]
                owner = "this account" if row.account_id == account_id else "another account"
                raise AccountError(f"prefix {net} overlaps {held}, which {owner} already holds")


def create_account(
    session: Session, name: str, prefixes: list[str], email: str | None = None
) -> tuple[Account, Credentials]:
    if not name.strip():
        raise AccountError("the account name must not be empty")
    nets = [parse_prefix(p) for p in prefixes]
    if not nets:
        raise AccountError("an account needs at least one prefix (--prefix CIDR)")
    _check_free(session, nets)
    account_id = new_id()
    email = email or f"{account_id[:12]}@accounts.edgepcap.invalid"
    if session.scalar(select(Account).where(Account.email == email)) is not None:
        raise AccountError(f"email {email} already belongs to an account")
    creds = Credentials(api_token=new_secret("ept"), api_key=new_secret("epk"))
    account = Account(
        id=account_id,
        name=name.strip(),
        email=email,
        api_token_hash=hash_secret(creds.api_token),
        api_key_hash=hash_secret(creds.api_key),
        prefixes=[Prefix(cidr=str(n)) for n in nets],
    )
    session.add(account)
    _flush_prefixes(session, nets)
    return account, creds


def get_account(session: Session, account_id: str) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise AccountError(f"no account with id {account_id}")
    return account


def add_prefix(session: Session, account_id: str, cidr: str) -> Account:
    account = get_account(session, account_id)
    net = parse_prefix(cidr)
    _check_free(session, [net], account_id)
    account.prefixes.append(Prefix(cidr=str(net)))
    _flush_prefixes(session, [net])
    return account


def _flush_prefixes(session: Session, nets: list[Network]) -> None:
    """Write new prefixes; one that another transaction took meanwhile is refused as such."""
    try:
        session.flush()
    except IntegrityError as exc:
        if "prefixes" not in str(exc.orig):
            raise
        listed = ", ".join(str(n) for n in nets)
        raise AccountError(
            f"prefix {listed} overlaps a prefix that another account took at the same time"
        ) from exc


def rotate_credentials(session: Session, account_id: str) -> tuple[Account, Credentials]:
    """Replace both the API token and the API key; the old ones stop working at once."""
    account = get_account(session, account_id)
    creds = Credentials(api_token=new_secret("ept"), api_key=new_secret("epk"))
    account.api_token_hash = hash_secret(creds.api_token)
    account.api_key_hash = hash_secret(creds.api_key)
    session.flush()
    return account, creds


def account_networks(account: Account) -> list[Network]:
    return [ipaddress.ip_network(p.cidr) for p in account.prefixes]


def describe(account: Account, creds: Credentials | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": account.id,
        "name": account.name,
        "prefixes": [p.cidr for p in account.prefixes],
        "email": account.email,
    }
    if creds is not None:
        out["api_token"] = creds.api_token
        out["api_key"] = creds.api_key
    return out
