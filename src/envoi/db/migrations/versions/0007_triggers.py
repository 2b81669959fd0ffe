"""triggers: the firing queue of event-driven automated campaigns, their trigger

Revision ID: 0007_triggers
Revises: 0006_ab_tests
Create Date: 2026-11-23 11:12:02.793666
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import envoi.db.base

revision: str = "0007_triggers"
down_revision: str | None = "0006_ab_tests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_triggers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("profile_id", sa.Integer(), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("fired_at", envoi.db.base.UTCDateTime(), nullable=False),
        sa.Column("due_at", envoi.db.base.UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("send_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("processed_at", envoi.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_triggers_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["api_events.id"],
            name=op.f("fk_campaign_triggers_event_id_api_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_campaign_triggers_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_campaign_triggers_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_triggers")),
        sa.UniqueConstraint(
            "campaign_id", "event_id", name=op.f("uq_campaign_triggers_campaign_id_event_id")
        ),
    )
    with op.batch_alter_table("campaign_triggers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaign_triggers_campaign_id"), ["campaign_id"], unique=False
        )
        batch_op.create_index("ix_campaign_triggers_due", ["state", "due_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_campaign_triggers_profile_id"), ["profile_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_campaign_triggers_project_id"), ["project_id"], unique=False
        )

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "trigger",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("trigger_on", sa.String(length=300), nullable=True))
        batch_op.create_index("ix_campaigns_trigger_on", ["project_id", "trigger_on"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_trigger_on")
        batch_op.drop_column("trigger_on")
        batch_op.drop_column("trigger")

    with op.batch_alter_table("campaign_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_triggers_project_id"))
        batch_op.drop_index(batch_op.f("ix_campaign_triggers_profile_id"))
        batch_op.drop_index("ix_campaign_triggers_due")
        batch_op.drop_index(batch_op.f("ix_campaign_triggers_campaign_id"))

    op.drop_table("campaign_triggers")
