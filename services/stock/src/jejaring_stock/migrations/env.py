from jejaring_shared.migrations import run_env
from jejaring_stock.adapters.tables import metadata

run_env(metadata)
