"""feedback: reports the inbound listener applied (idempotence, soft-bounce counts)

Revision ID: 0003_feedback
Revises: 0002_delivery
Create Date: 2026-11-23 04:37:01.968171
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import envoi.db.base

revision: str = "0003_feedback"
down_revision: str | None = "0002_delivery"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_reports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("send_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("received_at", envoi.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_inbound_reports_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_reports")),
        sa.UniqueConstraint(
            "send_id", "message_key", name=op.f("uq_inbound_reports_send_id_message_key")
        ),
    )
    with op.batch_alter_table("inbound_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbound_reports_address", ["project_id", "recipient", "received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbound_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_reports_address")

    op.drop_table("inbound_reports")
