"""Broker accounts and provisioning codes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the broker_accounts and provisioning_codes tables."""
    op.create_table(
        "broker_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("hall", sa.String(64), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_broker_accounts_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_broker_accounts"),
        sa.UniqueConstraint("username", name="uq_broker_accounts_username"),
        sa.UniqueConstraint("device_id", name="uq_broker_accounts_device_id"),
    )
    op.create_table(
        "provisioning_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["broker_accounts.id"],
            name="fk_provisioning_codes_account_id_broker_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_provisioning_codes"),
        sa.UniqueConstraint("code_hash", name="uq_provisioning_codes_code_hash"),
    )
    op.create_index("ix_provisioning_codes_account_id", "provisioning_codes", ["account_id"])


def downgrade() -> None:
    """Drop the tables of this revision."""
    op.drop_index("ix_provisioning_codes_account_id", table_name="provisioning_codes")
    op.drop_table("provisioning_codes")
    op.drop_table("broker_accounts")
