"""capture retention and the full-capture rate

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 10:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("full_window_start", sa.DateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("full_window_count", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_index("ix_pcaps_finished", "pcaps", ["finished"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_pcaps_finished", table_name="pcaps")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("full_window_count")
        batch_op.drop_column("full_window_start")
