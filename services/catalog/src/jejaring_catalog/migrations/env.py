from jejaring_catalog.adapters.tables import metadata
from jejaring_shared.migrations import run_env

run_env(metadata)
