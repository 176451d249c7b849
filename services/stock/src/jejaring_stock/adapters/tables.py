"""Tables owned by this service; imported by migrations/env.py for autogenerate."""

from sqlmodel import SQLModel

import jejaring_shared.tables  # noqa: F401  (outbox and inbox belong to every service)

metadata = SQLModel.metadata
