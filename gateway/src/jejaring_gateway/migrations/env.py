from jejaring_gateway.adapters.keystore import metadata
from jejaring_shared.migrations import run_env

run_env(metadata)
