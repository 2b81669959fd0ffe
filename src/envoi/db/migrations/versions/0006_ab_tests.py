"""ab tests: the test and main phases of A/B campaigns

Revision ID: 0006_ab_tests
Revises: 0005_sends
Create Date: 2026-11-23 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import envoi.db.base

revision: str = "0006_ab_tests"
down_revision: str | None = "0005_sends"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign_audience", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ab_variant", sa.Integer(), nullable=True))

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ab_phase", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("ab_winner", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ab_decided_at", envoi.db.base.UTCDateTime(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "ab_figures",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_column("ab_figures")
        batch_op.drop_column("ab_decided_at")
        batch_op.drop_column("ab_winner")
        batch_op.drop_column("ab_phase")

    with op.batch_alter_table("campaign_audience", schema=None) as batch_op:
        batch_op.drop_column("ab_variant")
