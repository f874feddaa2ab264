"""Private state on disk: the state dir is 0700 and the files in it 0600, whatever the umask, and none of
it is trusted unless this user owns it.

The store holds the audit, pending actions and their reasons; the key files hold the keys that sign
confirmations and the audit chain; the policy says who may do what. Another local user must read none
of it, and must not be able to plant any of it (a state dir they own, a key they know, a policy that
names them admin).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ..core.errors import ConfigurationError

log = logging.getLogger("flexus_ops.state")
_reported: set[Path] = set()


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700; refuse an existing one this user does not own or
    others can write; report, once, one others can read."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it meanwhile: checked below like any existing one
        os.chmod(directory, 0o700)  # mkdir's mode is cut by the umask; chmod is not
    trusted(path, "state dir")
    report_if_readable(path)
    return path


def trusted(path: Path, what: str, *, secret: bool = False, root_may_own: bool = False) -> None:
    """Refuse ``path`` unless this user (or, where allowed, root) owns it and no one else can write it;
    a ``secret`` must not be readable by others either."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(found.st_mode)
    owners = {os.geteuid(), 0} if root_may_own else {os.geteuid()}
    if found.st_uid not in owners:
        raise ConfigurationError(
            f"{what} {path} belongs to uid {found.st_uid}, not to you (uid {os.geteuid()}): refusing to trust "
            "keys, policies or records another user controls; use a state dir of your own (FLEXUS_STATE_DIR)"
        )
    if mode & 0o022 or (secret and mode & 0o077):
        kind = "readable or writable" if secret else "writable"
        fix = "600" if secret else "go-w"
        raise ConfigurationError(
            f"{what} {path} is {kind} by other users (mode {mode:o}): it cannot be trusted; run: chmod {fix} {path}"
        )


def report_if_readable(path: Path) -> None:
    """Warn once per process about an existing state dir that other users can read or enter."""
    try:
        found = path.stat()
    except OSError:
        return
    if not stat.S_ISDIR(found.st_mode):
        return  # not a directory at all: using it fails with its own one line, a warning would be noise
    mode = stat.S_IMODE(found.st_mode)
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
    """Create ``path`` empty as 0600 if it does not exist, and make an existing one (ours) 0600."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        if path.stat().st_uid != os.geteuid():
            trusted(path, "file")  # raises: someone else's file
    os.chmod(path, 0o600)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` for a file that must be 0600 from the first byte (keys, append-only logs)."""
    private_dir(path.parent)
    trusted(path, "file")
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd
