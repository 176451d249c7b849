"""Topic names: one events topic per owning service, one commands topic per service."""

CATALOG_EVENTS = "catalog.events"
STOCK_EVENTS = "stock.events"
TRANSFER_EVENTS = "transfer.events"
SUPPLIER_EVENTS = "supplier.events"
STOCK_COMMANDS = "stock.commands"


def dead_letter_topic(group_id: str) -> str:
    """Each consumer group has its own dead-letter topic."""
    return f"{group_id}.dlq"
