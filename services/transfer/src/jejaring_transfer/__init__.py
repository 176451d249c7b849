"""Transfer service."""
