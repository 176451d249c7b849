"""Process entry points: the ASGI app."""
