"""Registry codes for the provincial platforms: 行政区划 of halls and units, USCC, 事项编码.

Every new column is optional (existing halls have none), so existing rows keep their data
and get NULL (a plain ADD COLUMN on SQLite and PostgreSQL, no table rebuild); the codes are
checked by the API and the import (server/registry/codes.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

# table -> its new columns (name, length)
COLUMNS: dict[str, tuple[tuple[str, int], ...]] = {
    "halls": (("area_code", 12),),
    "units": (("uscc", 18), ("area_code", 12)),
    "service_items": (("catalog_code", 64),),
}


def upgrade() -> None:
    """Add the nullable code columns."""
    for table, columns in COLUMNS.items():
        for name, length in columns:
            op.add_column(table, sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    """Drop the code columns (their values are lost).

    Plain ALTER TABLE … DROP COLUMN (SQLite 3.35+, Debian 12 has 3.40): a batch rebuild
    would drop and recreate `halls`, which the units' foreign keys forbid.
    """
    for table, columns in COLUMNS.items():
        for name, _length in reversed(columns):
            op.drop_column(table, name)
