"""agent keys bound to one machine; refused samples

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 10:00:00.000000

Keys minted before this revision keep NULL colo/machine: the API refuses them (403,
naming the key id) until the operator mints bound keys and revokes the old ones; no key
is silently bound to a machine it may never have been given to.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("colo", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("machine", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("revoked", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_agent_keys_machine"), ["machine"], unique=False)
    op.create_table(
        "refused_samples",
        sa.Column("machine", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("machine", "reason"),
    )


def downgrade() -> None:
    op.drop_table("refused_samples")
    with op.batch_alter_table("agent_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_keys_machine"))
        batch_op.drop_column("revoked")
        batch_op.drop_column("machine")
        batch_op.drop_column("colo")
