"""live viewers: API processes and the captures they watch

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 13:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_processes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("seen", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "live_watches",
        sa.Column("pcap_id", sa.String(length=32), nullable=False),
        sa.Column("process_id", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pcap_id"], ["pcaps.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pcap_id", "process_id"),
    )


def downgrade() -> None:
    op.drop_table("live_watches")
    op.drop_table("api_processes")
