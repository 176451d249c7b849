"""restock_requests.open_key is "outlet|sku" (it was "outlet:sku", and ids may contain ":")

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE restock_requests SET open_key = outlet_id || '|' || sku WHERE open_key IS NOT NULL"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE restock_requests SET open_key = outlet_id || ':' || sku WHERE open_key IS NOT NULL"
    )
