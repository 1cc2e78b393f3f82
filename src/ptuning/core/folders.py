"""Writing a folder whole: stage it beside its target, then swap it in, so a crash never leaves half of it.

Checkpoints, a run's resumable state and exported adapters are folders that must never be seen half
written where a good one was. ``staging_dir`` gives the hidden sibling to write in, ``replace_dir`` swaps it
in (one ``renameat2(RENAME_EXCHANGE)`` on Linux), and ``recover_dir`` (run by every load and save) finishes
or undoes a swap that a crash cut short. ``permit_as_umask`` gives the staged files the modes a plain write
would have had. One file is written whole the same way (``file_whole``, ``write_text_whole``);
``check_replaceable`` refuses a target that a whole-folder swap would destroy, and ``exclusive_lock`` keeps
a second training run out of a folder one is training into.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

try:
    import fcntl
except ImportError:  # Windows: runs into one folder are not serialized there
    fcntl = None  # type: ignore[assignment]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
RUN_LOCK = ".ptuning.lock"  # locked by the run training in a folder (exclusive_lock); not part of its content


def sync_to_disk(path: Path) -> None:
    """fsync a file or folder; a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def followed(target: str | Path) -> Path:
    """The folder a symlinked ``target`` points to (``target`` itself otherwise): saving through a link
    replaces what it points to and keeps the link; swapped in where the link sat, the new folder replaced the
    link and left its target stale."""
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def staging_dir(target: Path) -> Path:
    """A new folder to write ``target``'s next version in, for ``replace_dir``: a hidden sibling that names its
    writer, so that ``recover_dir`` deletes it once that process is gone (a save killed mid-write)."""
    target = followed(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.new-{os.getpid()}-", dir=target.parent))


def permit_as_umask(folder: Path) -> None:
    """Give a staged folder and its files the modes a plain ``mkdir`` and ``open`` would have: ``mkdtemp``
    makes folders 0700 and safetensors writes files 0600, so a checkpoint saved by one account could not be
    read by another (a server's) even where the umask shares everything else."""
    umask = _umask()
    for path in (folder, *folder.rglob("*")):
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _umask() -> int:
    """The process umask, read from /proc where there is one: ``os.umask`` can only be read by setting it, and
    a file another thread creates meanwhile (a log) would get the mode set for that instant."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o077)  # elsewhere: set-and-restore, with the strictest mode for the instant
    os.umask(umask)
    return umask


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.old-{os.getpid()}")


def replace_dir(new: Path, target: Path) -> None:
    """Swap the complete folder ``new`` into ``target``.

    On Linux this is one ``renameat2(RENAME_EXCHANGE)`` system call: at every instant ``target`` is the
    complete old or the complete new folder, and the old one is then deleted from ``new``'s place. Where
    that call is missing (other systems, some file systems) it takes two renames, and a crash between them
    leaves no ``target`` but the complete old folder at ``.<name>.old-<pid>``; ``recover_dir``, run by every
    load and save, moves it back. Leftovers of a crash after the swap are deleted by ``recover_dir`` too.
    """
    new, target = Path(new), followed(target)
    permit_as_umask(new)
    recover_dir(target)
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old folder
        return
    old = _old_name(target)
    os.replace(target, old)
    os.replace(new, target)  # a crash before this line: recover_dir moves ``old`` back
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: str | Path) -> None:
    """Undo or finish a ``replace_dir`` that a crash interrupted, so ``target`` is a complete folder again.

    * ``target`` missing and ``.<name>.old-*`` present (a crash between the two renames of the fallback):
      the newest old folder becomes ``target`` again, i.e. the save that crashed never happened;
    * ``.<name>.old-*`` beside an existing ``target`` (a crash after the swap): deleted;
    * ``.<name>.new-<pid>-*`` staging folders whose writing process is gone: deleted (a live writer's
      staging folder is left alone).
    """
    # a read-only or vanishing folder: nothing to recover here, loading reports the rest
    with contextlib.suppress(OSError):
        _recover(followed(target))


def _recover(target: Path) -> None:
    parent = target.parent
    if not parent.is_dir():
        return
    siblings = [entry for entry in parent.iterdir() if entry.name.startswith(f".{target.name}.")]
    olds = sorted(
        (entry for entry in siblings if entry.name.startswith(f".{target.name}.old-")),
        key=lambda entry: entry.stat().st_mtime_ns,
    )
    if olds and not os.path.lexists(target):
        os.replace(olds.pop(), target)
    for old in olds:
        _remove(old)
    for entry in siblings:
        if entry.name.startswith(f".{target.name}.new-") and not _writer_alive(entry.name):
            _remove(entry)


def _remove(entry: Path) -> None:
    """Delete a leftover folder, or a link or file in its place (``rmtree`` refuses a link, and it stayed)."""
    if entry.is_symlink() or not entry.is_dir():
        with contextlib.suppress(OSError):
            entry.unlink()
    else:
        shutil.rmtree(entry, ignore_errors=True)


def _writer_alive(staging_name: str) -> bool:
    try:
        pid = int(staging_name.rsplit(".new-", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return True  # not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@functools.cache
def _renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two existing paths; False where the system or file system cannot."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(second))


def write_text_whole(path: Path | str, text: str) -> None:
    """Write ``text`` beside ``path`` and swap it in: a crash or a full disk never leaves a half-written file
    where a whole one was (a cut config.json blocked --resume, a cut summary.json a sweep)."""
    with file_whole(path) as stream:
        stream.write(text.encode("utf-8"))


@contextlib.contextmanager
def file_whole(path: Path | str) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace ``path`` whole when the block ends, and nothing when it raises.

    The staging file has a name of its own (``mkstemp`` beside the target): two writers of one path (two
    ``predict --output`` runs) each swap in a whole file, where a shared staging name let one rename the
    other's half-written file. It is on disk (fsync) before the swap, so a power loss cannot swap in an empty
    file. A symlinked ``path`` is written through: the file it points to is replaced, the link kept."""
    path = followed(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    staging = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        staging.chmod(0o666 & ~_umask())  # mkstemp's 0600: the mode a plain write would have given
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    sync_to_disk(path.parent)


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot take a new file (the system's words), or None: asked before work whose result
    would then have nowhere to go. The probe is an anonymous file, so it races no writer of a real name."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as failure:
        return reason(failure)
    return None


def reason(error: BaseException) -> str:
    """What the system said, for a one-line error: ``strerror`` of an OSError ("No space left on device"),
    else the message (safetensors wraps the OS error in its own text)."""
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def check_replaceable(target: Path | str, marker: str, kind: str, error: type[Exception]) -> None:
    """Raise ``error`` unless a folder of ``kind`` (one holding ``marker``) may be swapped in at ``target``.

    ``replace_dir`` replaces the whole folder, so ``target`` may only be new, empty or already of that kind:
    never a file, nor a folder of other files (a run folder given by mistake lost its config, summary and
    resumable state). The folder it is written in must take a new entry: checked before the work, which a
    bad path would otherwise throw away (an export loads a model first)."""
    target = followed(target)
    if os.path.lexists(target) and not target.is_dir():
        raise error(f"{target} is a file; {kind} is a folder: give a new folder's path")
    other = target.is_dir() and any(entry.name != RUN_LOCK for entry in target.iterdir())
    if other and not (target / marker).is_file():
        raise error(
            f"{target} holds other files and no {marker}; {kind} replaces its folder whole, so give a new "
            f"(or empty) folder, or one holding {kind} to replace"
        )
    existing = target.parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"{target} is inside {existing}, which is a file; give a folder's path")
    if (why := unwritable(existing)) is not None:
        raise error(f"{target}: cannot write in {existing} ({why})")


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block, without
    waiting: ``BlockingIOError`` when another process holds it. An ``flock`` belongs to the open file, so the
    system releases it when its process ends however it ends: a killed run never leaves its folder locked.
    No lock where ``fcntl`` is missing (Windows)."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)  # releases the lock
