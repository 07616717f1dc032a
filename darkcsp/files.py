"""Files in and out: the one place that decides what darkcsp may read and where it may write.

Inputs are read only when they are regular files (a fifo would hang the reader, a directory or a
device is never what the user meant). Outputs are resolved before any work starts, so that a
mistake costs nothing: an output that is, or would replace, one of the command's inputs is
refused; writing into a non-empty folder needs ``exist_ok``; two outputs with the same name get
unique names. Every file is written atomically (temporary file, fsync, rename; the temporary file
is removed on any failure), and a run folder is held by a lock file so that two live runs never
mix their files.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Sequence

from darkcsp.errors import DarkcspError

PathLike = str | os.PathLike
LOCK_NAME = ".darkcsp.lock"


class FileRefused(DarkcspError, ValueError):
    """An input that is not a regular file, or an output that would lose the user's data."""


def regular_file(path: PathLike, what: str = "file") -> Path:
    """``path`` if it names an existing regular file (symlinks followed), else a clear error."""
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        raise FileRefused(f"{what} {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise FileRefused(f"{what} {os.fspath(path)!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise FileRefused(f"{what} {os.fspath(path)!r} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise FileRefused(f"{what} {os.fspath(path)!r} is not a regular file (a fifo, socket or "
                          "device); darkcsp reads only regular files")
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _identity(path: PathLike) -> Path:
    return Path(os.path.abspath(os.fspath(path)))


def output_file(path: PathLike, inputs: Iterable[PathLike] = (), what: str = "output", *,
                exist_ok: bool = True) -> Path:
    """``path`` checked as a file darkcsp is about to write: never one of ``inputs`` (same path
    or same file through a link), never an existing directory, and its folder must be one; an
    existing file only with ``exist_ok`` (the commands pass their ``--exist-ok``)."""
    target = Path(path)
    for source in inputs:
        if _identity(target) == _identity(source) or _same_file(target, Path(source)):
            raise FileRefused(f"{what} {os.fspath(path)!r} is an input of this command; "
                              "choose another output path (darkcsp never replaces its inputs)")
    if target.is_dir():
        raise FileRefused(f"{what} {os.fspath(path)!r} is a directory; give a file path")
    if not exist_ok and (target.exists() or target.is_symlink()):
        raise FileRefused(f"{what} {os.fspath(path)!r} already exists; choose a new path or "
                          "pass --exist-ok to replace it")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise FileRefused(f"{what} {os.fspath(path)!r}: {os.fspath(parent)!r} is not a directory")
    return target


def output_dir(path: PathLike, inputs: Iterable[PathLike] = (), *, exist_ok: bool = False,
               what: str = "output folder") -> Path:
    """``path`` checked as a folder darkcsp is about to fill (not created yet).

    A file there is an error; a non-empty folder is refused unless ``exist_ok`` (the files the
    command writes are then still checked one by one with :func:`output_file`); a folder that
    holds an input is refused unless ``exist_ok``, so an export can never land on its sources.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FileRefused(f"{what} {os.fspath(path)!r} is a file, not a folder")
    if folder.is_dir() and not exist_ok:
        holds_input = [os.fspath(s) for s in inputs
                       if _identity(Path(s).parent) == _identity(folder)]
        if holds_input:
            raise FileRefused(f"{what} {os.fspath(path)!r} holds this command's input "
                              f"{holds_input[0]!r}; write elsewhere (or pass --exist-ok to "
                              "write beside it; inputs are still never replaced)")
        if any(folder.iterdir()):
            raise FileRefused(f"{what} {os.fspath(path)!r} is not empty; choose a new folder "
                              "or pass --exist-ok")
    return folder


def unique_name(folder: Path, name: str, taken: set[str]) -> Path:
    """``folder/name``, or ``folder/stem_2.ext``, ``stem_3.ext``... when an earlier output of
    the same command already took that name (``taken`` is updated)."""
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}_{number}{suffix}"
    taken.add(candidate)
    return folder / candidate


def new_run_dir(root: PathLike, name: str) -> Path:
    """The next free run folder ``root/name``, ``root/name2``, ``root/name3``... (a folder that
    exists but is empty counts as free), as YOLO users know it."""
    base = Path(root)
    number = 1
    while True:
        candidate = base / (name if number == 1 else f"{name}{number}")
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate
        number += 1


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """A lock file in a run folder: a second live run into the same folder is refused; a lock
    left by a process that no longer exists (kill -9) is taken over."""

    def __init__(self, folder: PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise FileRefused(f"{os.fspath(self.path.parent)!r} is in use by another "
                                      f"darkcsp run (pid {pid}); use another folder") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.getpid()}\n")
            self.held = True
            return self
        raise FileRefused(f"cannot lock {os.fspath(self.path.parent)!r}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def atomic_write_with(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file beside it, fsync, then
    rename over ``path``: a crash or Ctrl-C leaves either the old file or the new one, and no
    temporary file. The result gets the usual umask-based permissions."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                               dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: PathLike, data: bytes) -> None:
    """:func:`atomic_write_with` for bytes already in memory."""
    atomic_write_with(path, lambda handle: handle.write(data))


def check_outputs_distinct(paths: Sequence[PathLike]) -> None:
    """Refuse two outputs of one command that name the same file."""
    seen: dict[Path, str] = {}
    for path in paths:
        key = _identity(path)
        if key in seen:
            raise FileRefused(f"two outputs name the same file {os.fspath(path)!r}")
        seen[key] = os.fspath(path)
