"""prefixes never overlap, enforced by PostgreSQL itself

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:40:00

Two API processes or CLI runs adding overlapping prefixes at once could both pass the
application's check; an exclusion constraint makes the database refuse the second.
SQLite has none: there the check runs under the database's write lock (accounts.py).
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # inet's && is false across address families, as the application's check is.
        op.execute(
            "ALTER TABLE prefixes ADD CONSTRAINT ex_prefixes_no_overlap "
            "EXCLUDE USING gist ((cidr::inet) inet_ops WITH &&)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE prefixes DROP CONSTRAINT ex_prefixes_no_overlap")
