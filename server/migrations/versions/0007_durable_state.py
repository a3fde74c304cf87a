"""Durable state: the webhook outbox, export jobs and failed-login counts as tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    """Return a timestamp column with its zone."""
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the webhook_outbox, export_jobs and login_failures tables."""
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _ts("created"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt"),
        _ts("delivered", nullable=True),
        _ts("gave_up", nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
    )
    for column in ("delivery_id", "case_id", "next_attempt", "delivered"):
        op.create_index(f"ix_webhook_outbox_{column}", "webhook_outbox", [column])
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.Integer(), nullable=False),
        sa.Column("owner_name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("period_from", sa.String(10), nullable=False),
        sa.Column("period_to", sa.String(10), nullable=False),
        sa.Column("hall", sa.String(64), nullable=True),
        sa.Column("done_days", sa.Integer(), nullable=False),
        sa.Column("total_days", sa.Integer(), nullable=False),
        sa.Column("file", sa.String(255), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created"),
        _ts("updated"),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'failed')", name="ck_export_jobs_state"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_export_jobs"),
    )
    for column in ("owner", "state", "created"):
        op.create_index(f"ix_export_jobs_{column}", "export_jobs", [column])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        _ts("at"),
        sa.PrimaryKeyConstraint("id", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_key", "login_failures", ["key"])


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_index("ix_login_failures_key", table_name="login_failures")
    op.drop_table("login_failures")
    for column in ("owner", "state", "created"):
        op.drop_index(f"ix_export_jobs_{column}", table_name="export_jobs")
    op.drop_table("export_jobs")
    for column in ("delivery_id", "case_id", "next_attempt", "delivered"):
        op.drop_index(f"ix_webhook_outbox_{column}", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
