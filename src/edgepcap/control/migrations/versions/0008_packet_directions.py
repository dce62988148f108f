"""the directions of a machine's packets: which it sent itself

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 13:20:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Parts that ended before: no runs (their packets' directions are not known, and the
    # pcapng download says so by leaving the flags out: directions_known = 0).
    with op.batch_alter_table("capture_machines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outbound", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("directions_known", sa.BigInteger(), nullable=True))
    op.execute("UPDATE capture_machines SET directions_known = 0")


def downgrade() -> None:
    with op.batch_alter_table("capture_machines", schema=None) as batch_op:
        batch_op.drop_column("directions_known")
        batch_op.drop_column("outbound")
