"""Locks between processes, on Linux, macOS and Windows alike, and whether a process still lives: one live run
per output folder, turns at a shared record (a job array writing into one folder), a prepared set held while
runs read it.

The operating system's lock is taken where there is one (flock on POSIX, msvcrt on Windows): it is freed on
any exit, a kill too. Where neither imports, a lock file created exclusively stands in; it names its process,
and a later run on the same host removes it once that process is gone.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
try:
    import msvcrt
except ImportError:  # everywhere else
    msvcrt = None

POLL_SECONDS = 0.05


class Busy(Exception):
    """The lock is held by another live process; str() says which, as far as it is known."""


def owner_text() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def process_alive(pid: int) -> bool:
    """Whether process pid lives on this host (os.kill(pid, 0) would end it on Windows)."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.GetLastError() == 5  # access denied: it exists, someone else's
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class FileLock:
    """An exclusive lock on the file path (created if needed), held from acquire() until release() or the
    process's end. The file says who holds it."""

    def __init__(self, path: Path):
        self.path, self._handle, self._soft = Path(path), None, False

    def acquire(self, wait: bool) -> "FileLock":
        """Take the lock; if another process holds it: wait for it, or raise Busy naming the holder."""
        while True:
            holder = self._try()
            if holder is None:
                return self
            if not wait:
                raise Busy(holder)
            time.sleep(POLL_SECONDS)

    def _try(self) -> str | None:
        """Take the lock now -> None, or what the file says of its holder."""
        if fcntl is None and msvcrt is None:
            return self._try_soft()
        handle = open(self.path, "a+")
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:  # held: BlockingIOError on POSIX, PermissionError on Windows
            handle.seek(0)
            try:
                holder = handle.read().strip()
            except OSError:  # Windows: the holder's locked byte cannot be read
                holder = ""
            handle.close()
            return holder or "another process"
        handle.truncate(0)
        handle.write(owner_text() + "\n")
        handle.flush()
        self._handle = handle
        return None

    def _try_soft(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = self.path.read_text().strip()
            except OSError:
                return "another process"
            fields = holder.split()
            if len(fields) == 4 and fields[0] == "pid" and fields[1].isdigit() and \
                    fields[3] == socket.gethostname() and not process_alive(int(fields[1])):
                self.path.unlink(missing_ok=True)  # its process is gone: try again at once
                return self._try_soft()
            return holder or "another process"
        os.write(fd, (owner_text() + "\n").encode())
        os.close(fd)
        self._soft = True
        return None

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # frees the operating system's lock; the file stays for the next run
            self._handle = None
        if self._soft:
            self.path.unlink(missing_ok=True)
            self._soft = False

class FolderLock:
    """A lock on a folder itself (its descriptor: nothing is written there, so read-only folders take it too), on
    POSIX. Shared: held by the runs that read a prepared set; exclusive: by the one that replaces it (it replaces it
    only when no reader holds it), or by a run taking its turn to write there. Elsewhere it holds nothing: there the
    operating system already refuses to move a folder whose files are open."""

    def __init__(self, folder: Path, exclusive=False):
        self.folder, self.exclusive, self._fd = Path(folder), exclusive, None

    def acquire(self, wait=False) -> "FolderLock":
        """Take it (waiting for it, if wait), or raise Busy."""
        if fcntl is None:
            return self
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            raise Busy("a run reading it" if self.exclusive else "a run replacing it") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def turn_in(folder: Path, lock_name: str):
    """An exclusive lock for a short turn at writing into folder, waited for: on the folder itself where flock is
    (no file left there), else on the file lock_name inside it. Use it as a context manager."""
    return _Turn(FolderLock(folder, exclusive=True) if fcntl is not None else FileLock(folder / lock_name))


class _Turn:
    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        self.lock.acquire(wait=True)

    def __exit__(self, *exc):
        self.lock.release()
