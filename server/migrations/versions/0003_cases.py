"""Negative-rating cases, their history, the holiday calendar and the poller's watermark.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the cases, case_events, holidays and case_pollers tables."""
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rating_id", sa.String(36), nullable=False),
        sa.Column("hall", sa.String(64), nullable=False),
        sa.Column("window", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("scale", sa.Integer(), nullable=False),
        sa.Column("staff", sa.String(64), nullable=True),
        sa.Column("ticket", sa.String(64), nullable=True),
        sa.Column("item", sa.String(64), nullable=True),
        sa.Column("reasons", sa.String(500), nullable=False),
        sa.Column("rating_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due", sa.Date(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("appeal_kind", sa.String(16), nullable=True),
        sa.Column("appeal_reason", sa.Text(), nullable=True),
        sa.Column("appeal_state", sa.String(16), nullable=True),
        sa.Column("appeal_by", sa.String(64), nullable=True),
        sa.Column("appeal_filed", sa.DateTime(timezone=True), nullable=True),
        sa.Column("appeal_decided_by", sa.String(64), nullable=True),
        sa.Column("appeal_decided", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue_notified", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("rating_id", name="uq_cases_rating_id"),
        sa.CheckConstraint(
            "state IN ('open', 'contacted', 'rectified', 'closed')", name="ck_cases_state"
        ),
        sa.CheckConstraint(
            "appeal_kind IS NULL OR appeal_kind IN ('mistaken', 'malicious')",
            name="ck_cases_appeal_kind",
        ),
        sa.CheckConstraint(
            "appeal_state IS NULL OR appeal_state IN ('pending', 'approved', 'rejected')",
            name="ck_cases_appeal_state",
        ),
    )
    op.create_index("ix_cases_hall", "cases", ["hall"])
    op.create_index("ix_cases_state", "cases", ["state"])
    op.create_index("ix_cases_due", "cases", ["due"])
    op.create_index("ix_cases_rating_ts", "cases", ["rating_ts"])
    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=True),
        sa.Column("to_state", sa.String(16), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_case_events"),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name="fk_case_events_case_id_cases", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_case_events_case_id", "case_events", ["case_id"])
    op.create_table(
        "holidays",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("hall", sa.String(64), nullable=True),
        sa.Column("working", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_holidays"),
        sa.UniqueConstraint("date", "hall", name="uq_holidays_date_hall"),
    )
    op.create_index("ix_holidays_date", "holidays", ["date"])
    op.create_table(
        "case_pollers",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_case_pollers"),
    )


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_table("case_pollers")
    op.drop_index("ix_holidays_date", table_name="holidays")
    op.drop_table("holidays")
    op.drop_index("ix_case_events_case_id", table_name="case_events")
    op.drop_table("case_events")
    op.drop_index("ix_cases_rating_ts", table_name="cases")
    op.drop_index("ix_cases_due", table_name="cases")
    op.drop_index("ix_cases_state", table_name="cases")
    op.drop_index("ix_cases_hall", table_name="cases")
    op.drop_table("cases")
