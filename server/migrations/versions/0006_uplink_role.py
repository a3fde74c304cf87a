"""Broker accounts: the hall-to-centre link's role is called `uplink` (was `bridge`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Rename the role `bridge` to `uplink`."""
    op.execute("UPDATE broker_accounts SET role = 'uplink' WHERE role = 'bridge'")


def downgrade() -> None:
    """Rename the role `uplink` back to `bridge`."""
    op.execute("UPDATE broker_accounts SET role = 'bridge' WHERE role = 'uplink'")
