"""Where things live: the repository root, the download cache, local data, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

#: A file that only exists at the repository root; used to recognise it.
ROOT_MARKER = Path("deploy") / "kafka" / "pom.xml"


class RepoRootNotFoundError(RuntimeError):
    """The repository root could not be located."""


def repo_root() -> Path:
    """Return the repository root.

    ``$JEJARING_ROOT`` wins; otherwise walk up from this file to the first folder that
    holds ``deploy/kafka/pom.xml`` (works for editable installs and workspace checkouts).
    """
    env = os.environ.get("JEJARING_ROOT")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / ROOT_MARKER).is_file():
            raise RepoRootNotFoundError(f"JEJARING_ROOT={env} does not contain {ROOT_MARKER}")
        return root
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / ROOT_MARKER).is_file():
            return parent
    raise RepoRootNotFoundError(
        f"cannot find the Jejaring repository root (no {ROOT_MARKER} above {here}); "
        "set JEJARING_ROOT to the checkout"
    )


def cache_dir() -> Path:
    """Download cache (Kafka jars, ...): ``$JEJARING_CACHE_DIR`` or ``<repo>/.cache``."""
    env = os.environ.get("JEJARING_CACHE_DIR")
    path = Path(env).expanduser() if env else repo_root() / ".cache"
    return path.resolve()


def data_dir() -> Path:
    """Local runtime data (broker logs, database files): ``<repo>/.data``."""
    return repo_root() / ".data"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
