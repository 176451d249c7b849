"""Process entry points: the ASGI app (relay and consumers run inside it)."""
