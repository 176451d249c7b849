"""HTTP clients to the services."""
