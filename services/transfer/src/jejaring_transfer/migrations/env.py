from jejaring_shared.migrations import run_env
from jejaring_transfer.adapters.tables import metadata

run_env(metadata)
