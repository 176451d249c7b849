from jejaring_shared.migrations import run_env
from jejaring_catalog.adapters.tables import metadata

run_env(metadata)
