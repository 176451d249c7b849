from jejaring_shared.migrations import run_env
from jejaring_supplier.adapters.tables import metadata

run_env(metadata)
