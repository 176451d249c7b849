from jejaring_shared.migrations import run_env
from support.probe import Effect

run_env(Effect.metadata)
