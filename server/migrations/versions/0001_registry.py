"""Registry tables: halls, units, windows, devices, staff, service items.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.Column[int]:
    """Return the integer primary key column."""
    return sa.Column("id", sa.Integer(), nullable=False)


def upgrade() -> None:
    """Create the registry tables."""
    op.create_table(
        "halls",
        _id(),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_halls"),
        sa.UniqueConstraint("code", name="uq_halls_code"),
    )
    op.create_table(
        "service_items",
        _id(),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_items"),
        sa.UniqueConstraint("code", name="uq_service_items_code"),
    )
    op.create_table(
        "units",
        _id(),
        sa.Column("hall_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.id"], name="fk_units_hall_id_halls", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("hall_id", "code", name="uq_units_hall_id_code"),
    )
    op.create_index("ix_units_hall_id", "units", ["hall_id"])
    op.create_table(
        "windows",
        _id(),
        sa.Column("hall_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_windows"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.id"], name="fk_windows_hall_id_halls", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name="fk_windows_unit_id_units", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("hall_id", "code", name="uq_windows_hall_id_code"),
    )
    op.create_index("ix_windows_hall_id", "windows", ["hall_id"])
    op.create_index("ix_windows_unit_id", "windows", ["unit_id"])
    op.create_table(
        "devices",
        _id(),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("hall_id", sa.Integer(), nullable=False),
        sa.Column("window_id", sa.Integer(), nullable=True),
        sa.Column("test_device", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.id"], name="fk_devices_hall_id_halls", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["window_id"], ["windows.id"], name="fk_devices_window_id_windows", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("code", name="uq_devices_code"),
    )
    op.create_index("ix_devices_hall_id", "devices", ["hall_id"])
    op.create_index("ix_devices_window_id", "devices", ["window_id"])
    op.create_table(
        "staff",
        _id(),
        sa.Column("hall_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.ForeignKeyConstraint(
            ["hall_id"], ["halls.id"], name="fk_staff_hall_id_halls", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name="fk_staff_unit_id_units", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("hall_id", "number", name="uq_staff_hall_id_number"),
    )
    op.create_index("ix_staff_hall_id", "staff", ["hall_id"])
    op.create_index("ix_staff_unit_id", "staff", ["unit_id"])


def downgrade() -> None:
    """Drop the registry tables."""
    op.drop_index("ix_staff_unit_id", table_name="staff")
    op.drop_index("ix_staff_hall_id", table_name="staff")
    op.drop_table("staff")
    op.drop_index("ix_devices_window_id", table_name="devices")
    op.drop_index("ix_devices_hall_id", table_name="devices")
    op.drop_table("devices")
    op.drop_index("ix_windows_unit_id", table_name="windows")
    op.drop_index("ix_windows_hall_id", table_name="windows")
    op.drop_table("windows")
    op.drop_index("ix_units_hall_id", table_name="units")
    op.drop_table("units")
    op.drop_table("service_items")
    op.drop_table("halls")
