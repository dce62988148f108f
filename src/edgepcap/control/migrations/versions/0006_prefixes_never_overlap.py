"""prefixes never overlap, enforced by PostgreSQL itself

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:40:00

Two API processes or CLI runs adding overlapping prefixes at once could both pass the
application's check; an exclusion constraint makes the database refuse the second.
SQLite has none: there the check runs under the database's write lock (accounts.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OVERLAPS = sa.text(
    "SELECT a.cidr, a.account_id, b.cidr, b.account_id FROM prefixes a JOIN prefixes b"
    " ON a.id < b.id AND a.cidr::inet && b.cidr::inet ORDER BY a.id, b.id"
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # Overlaps that racing writers left behind would stop the constraint (and the API's
    # start) with PostgreSQL's bare error: name them, and what to do, instead.
    found = bind.execute(OVERLAPS).all()
    if found:
        pairs = "; ".join(f"{a} (account {aa}) and {b} (account {ba})" for a, aa, b, ba in found)
        raise RuntimeError(
            f"cannot add the rule that no two prefixes overlap: {len(found)} pair(s) do: "
            f"{pairs}. Delete one prefix of each pair from the table `prefixes`, then start "
            "edgepcap again."
        )
    # inet's && is false across address families, as the application's check is.
    op.execute(
        "ALTER TABLE prefixes ADD CONSTRAINT ex_prefixes_no_overlap "
        "EXCLUDE USING gist ((cidr::inet) inet_ops WITH &&)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE prefixes DROP CONSTRAINT ex_prefixes_no_overlap")
