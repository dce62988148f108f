"""capture triggers: triggers, their events and per-second counts; pcaps.trigger_id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 15:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("filter_v1", sa.JSON(), nullable=False),
        sa.Column("threshold_pps", sa.BigInteger(), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("cooldown", sa.Integer(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("capture", sa.JSON(), nullable=False),
        sa.Column("quiet_until", sa.DateTime(), nullable=True),
        sa.Column("last_fired", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_triggers_account_id", "triggers", ["account_id"])
    op.create_index("ix_triggers_expires", "triggers", ["expires"])
    op.create_table(
        "trigger_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("estimated_pps", sa.BigInteger(), nullable=False),
        sa.Column("pcap_id", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trigger_events_trigger_id", "trigger_events", ["trigger_id"])
    op.create_table(
        "trigger_counts",
        sa.Column("trigger_id", sa.String(length=32), nullable=False),
        sa.Column("second", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trigger_id", "second"),
    )
    with op.batch_alter_table("pcaps") as batch:
        batch.add_column(sa.Column("trigger_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pcaps") as batch:
        batch.drop_column("trigger_id")
    op.drop_table("trigger_counts")
    op.drop_index("ix_trigger_events_trigger_id", "trigger_events")
    op.drop_table("trigger_events")
    op.drop_index("ix_triggers_expires", "triggers")
    op.drop_index("ix_triggers_account_id", "triggers")
    op.drop_table("triggers")
