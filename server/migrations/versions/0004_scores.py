"""Score tables: rating_daily and rating_monthly rollups, rollup_days, rating_flags.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the score tables."""
    op.create_table(
        "rating_daily",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hall", sa.String(64), nullable=False),
        sa.Column("window", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("staff", sa.String(64), nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("repeat", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rating_daily"),
    )
    op.create_index("ix_rating_daily_day", "rating_daily", ["day"])
    op.create_table(
        "rating_monthly",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("hall", sa.String(64), nullable=False),
        sa.Column("window", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("staff", sa.String(64), nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("repeat", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rating_monthly"),
    )
    op.create_index("ix_rating_monthly_month", "rating_monthly", ["month"])
    op.create_table(
        "rollup_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("ratings", sa.Integer(), nullable=False),
        sa.Column("built", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_rollup_days"),
    )
    op.create_table(
        "rating_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rating_id", sa.String(36), nullable=False),
        sa.Column("rule", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("hall", sa.String(64), nullable=False),
        sa.Column("window", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("staff", sa.String(64), nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("ticket", sa.String(64), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("repeat", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewed_by", sa.String(64), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rating_flags"),
        sa.UniqueConstraint("rating_id", "rule", name="uq_rating_flags_rating_id_rule"),
    )
    op.create_index("ix_rating_flags_rating_id", "rating_flags", ["rating_id"])
    op.create_index("ix_rating_flags_day", "rating_flags", ["day"])
    op.create_index("ix_rating_flags_hall", "rating_flags", ["hall"])
    op.create_index("ix_rating_flags_status", "rating_flags", ["status"])


def downgrade() -> None:
    """Drop the score tables."""
    op.drop_table("rating_flags")
    op.drop_table("rollup_days")
    op.drop_index("ix_rating_monthly_month", table_name="rating_monthly")
    op.drop_table("rating_monthly")
    op.drop_index("ix_rating_daily_day", table_name="rating_daily")
    op.drop_table("rating_daily")
