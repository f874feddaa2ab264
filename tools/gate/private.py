"""Private state on disk: the state dir is 0700 and the files in it 0600, whatever the umask.

The store holds the audit, pending actions and their reasons; the key files hold the keys that sign
confirmations and the audit chain. Another local user must read none of it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("flexus_ops.state")
_reported: set[Path] = set()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; report, once, an existing one others can read."""
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is cut by the umask; chmod is not
        return path
    report_if_readable(path)
    return path


def report_if_readable(path: Path) -> None:
    """Warn once per process about an existing state dir that other users can read or enter."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077 and path.resolve() not in _reported:
        _reported.add(path.resolve())
        log.warning(
            "state dir %s is readable by other users (mode %o): its store and keys should be private; "
            "run: chmod 700 %s",
            path,
            mode,
            path,
        )


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if it does not exist, and make an existing one 0600."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    os.chmod(path, 0o600)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` for a file that must be 0600 from the first byte (keys, append-only logs)."""
    private_dir(path.parent)
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd
