"""buckets are stored by their canonical destination_conf

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:20:00

Rows written before hold the URL as it was sent: `file:///r//B/` and `file:///r/B` could be
two rows of one account for one bucket, and a lookup by the canonical form would miss both.
Each row gets the canonical form; of the rows of one account that become the same, the one
that proves the most is kept (validated first, then the newest). A row whose URL no longer
parses is left as it is: it cannot be used, and the account can delete it.
"""

import sqlalchemy as sa
from alembic import op

from edgepcap.bucket_urls import DestinationError, canonical

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    buckets = sa.table(
        "buckets",
        sa.column("id", sa.String),
        sa.column("account_id", sa.String),
        sa.column("destination_conf", sa.Text),
        sa.column("status", sa.String),
        sa.column("submitted", sa.DateTime),
        sa.column("validated", sa.DateTime),
    )
    groups: dict[tuple[str, str], list[sa.Row]] = {}
    for row in conn.execute(sa.select(buckets)):
        try:
            conf = canonical(row.destination_conf)
        except DestinationError:
            continue
        groups.setdefault((row.account_id, conf), []).append(row)
    for (_account, conf), rows in groups.items():
        rows.sort(
            key=lambda r: (r.status == "success", r.validated or r.submitted, r.submitted),
            reverse=True,
        )
        kept, *others = rows
        if others:
            conn.execute(sa.delete(buckets).where(buckets.c.id.in_([r.id for r in others])))
        if kept.destination_conf != conf:
            conn.execute(
                sa.update(buckets).where(buckets.c.id == kept.id).values(destination_conf=conf)
            )


def downgrade() -> None:
    pass  # the canonical form is a valid spelling for the older code too
