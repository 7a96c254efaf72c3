"""The writer lock of a state directory: one ``flock`` elects the one writing process."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ("WriterLock",)


class WriterLock:
    """An exclusive, non-blocking ``flock`` on *path*; whoever holds it is the writer.

    The kernel drops the lock when the holder exits, however it exits, so a reader can
    take over from a writer that crashed. Not thread-safe: the owning
    :class:`~cacheplug.persistence.StateStore` calls it under its own lock.

    :param path: the lock file; created with mode 0600 on the first :meth:`try_acquire`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: the open, locked file descriptor; None while not held
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self.fd is not None

    def try_acquire(self) -> bool:
        """Take the lock without blocking. Idempotent.

        :returns: False if another process holds it.
        :raises OSError: if the lock file cannot be opened.
        """
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        """Unlock and close the file; a no-op when not held."""
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
