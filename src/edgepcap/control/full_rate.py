"""The per-account rate of full captures: at most N creates per one-minute window.

Each full capture installs nftables tables on every machine of its colo and removes them
when it ends, so a create→stop loop (or creates to a colo with no live machine, which
fail at once) would churn the whole colo. The rate counts every full create that gets as
far as making a capture, whether it then runs or fails at once.

The window lives on the account's row and one conditional UPDATE takes a place in it, so
that every API process sharing the database agrees (as the sample limit does). A window
is the minute from the first create after the previous window closed, and lets at most N
through; any 60 s overlap at most two windows, so never more than 2N.
"""

from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from edgepcap.control.errors import FullRateLimited
from edgepcap.control.models import Account

WINDOW = dt.timedelta(minutes=1)


def take_slot(session: Session, account_id: str, now: dt.datetime, rate: int) -> None:
    """Count one full create against the account's window of `rate` (0: no limit), or
    raise FullRateLimited.

    Runs in the create's transaction: a create refused later (an active full capture)
    rolls its place back with everything else.
    """
    if rate == 0:
        return
    start, count = Account.full_window_start, Account.full_window_count
    fresh = or_(start.is_(None), start <= now - WINDOW)
    # SET reads the row as it was: a closed window restarts at one, an open one counts up.
    result = session.execute(
        update(Account)
        .where(Account.id == account_id, or_(fresh, count < rate))
        .values(
            full_window_start=case((fresh, now), else_=start),
            full_window_count=case((fresh, 1), else_=count + 1),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    began = session.scalar(select(start).where(Account.id == account_id)) or now
    # Bounded by the window: another API host's clock may run ahead of this one's.
    left = (began + WINDOW - now).total_seconds()
    seconds = min(math.ceil(WINDOW.total_seconds()), max(1, math.ceil(left)))
    captures = "full capture" if rate == 1 else "full captures"
    raise FullRateLimited(
        f"at most {rate} {captures} per minute per account (counting those that fail "
        f"at once, e.g. for lack of a live machine): {rate} created since "
        f"{began:%H:%M:%S} UTC; retry in {seconds} s",
        seconds,
    )
