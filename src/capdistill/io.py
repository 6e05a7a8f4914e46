"""Atomic writes: readers see the old file (or directory) or the new one, never half of one.

The temporary file or directory is private while it is written (mkstemp's 0600, mkdtemp's 0700)
and gets the usual mode (0644 / 0755 under the common umask 022) before it is renamed into place,
so outputs on shared lab storage are readable like any other file. A temporary is named for its
target and its writer (`.record.json.<host>_<pid namespace>-<pid>.x1y2`), so `remove_stale_temporaries` can clear
what a killed run left on the next run without touching another live job's. A full device or quota stops a write
with a one-line error naming its target, which keeps its old content. `holding` keeps a directory to one process
at a time, by the same rule of which writers are gone."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capdistill.errors import CapdistillError

LOCK_FILE = "run.lock"
FULL = (errno.ENOSPC, errno.EDQUOT)  # the device, or the user's quota on it, is full


def umask() -> int:
    """The process's umask: from /proc where it is listed (no change to the process), else read by setting it
    and setting it straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(path: str | Path) -> None:
    """Give a private temporary file or directory the mode a plain create would: 0666 / 0777 less the umask."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask())


def writer_id() -> str:
    """This process as `<host>_<pid namespace>-<pid>`: a PID is only meaningful on its host and in its PID
    namespace (containers on one host may share a host name but not their PIDs)."""
    host = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{host}_{namespace}-{os.getpid()}"


def temporary_prefix(path: Path) -> str:
    """`.<name>.<writer>.`: a temporary names its target and the process writing it, so a later run can tell
    one whose writer died from one still being written (another job of a sweep)."""
    return f".{path.name}.{writer_id()}."


STALE = re.compile(r"^\.(?P<name>.+)\.(?P<where>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+(?P<old>\.old)?$")


def writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def writer_gone(where: str, pid: int) -> bool:
    """Whether the writer `<where>-<pid>` (see `writer_id`) has died: a process of this host and PID namespace
    that no longer runs. Another host's or namespace's cannot be checked from here: it counts as alive."""
    return where == writer_id().rpartition("-")[0] and not writer_alive(pid)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Clear what a killed run's atomic writes left in `directory`: the temporaries whose writer is gone
    (`writer_gone`). Another host's or namespace's, or a live process's, are left alone. A writer killed
    between moving the old target aside and renaming the new one into place left a complete new one (its
    `.old` sibling shows it got that far): it is renamed into place, not removed."""
    removed = []
    for tmp in sorted(Path(directory).glob(".*")):
        match = STALE.match(tmp.name)
        if not match or not writer_gone(match["where"], int(match["pid"])) or not tmp.exists():
            continue
        target = tmp.parent / match["name"]
        if not match["old"] and tmp.with_name(tmp.name + ".old").exists() and not target.exists():
            os.replace(tmp, target)  # the new output was complete: keep it
        else:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def full_disk(err: BaseException | None) -> str | None:
    """The OS's words for it ("no space left on device", "disk quota exceeded") if `err`, or an error it was
    raised from, is a full device or quota: an OSError's errno, or the OS's message inside a writer's own
    error (safetensors words it so); None otherwise."""
    while err is not None:
        for code in FULL:
            if (isinstance(err, OSError) and err.errno == code) or os.strerror(code) in str(err):
                return os.strerror(code).lower()
        err = err.__cause__ or err.__context__
    return None


def full_disk_line(err: BaseException, path: str | Path) -> str | None:
    """The one line that says `err` is a full device or quota met writing `path` (a CapdistillError's own: a
    nested write named its file already); None if `err` is not one."""
    reason = full_disk(err)
    if reason is None:
        return None
    return str(err) if isinstance(err, CapdistillError) else f"{reason} writing {path}"


@contextmanager
def full_disk_reported(path: Path) -> Iterator[None]:
    """A full device or quota while the block writes `path` becomes a one-line error naming `path` (a
    CapdistillError already, from a write nested inside, passes as it is)."""
    try:
        yield
    except Exception as err:
        line = full_disk_line(err, path)
        if line is None or isinstance(err, CapdistillError):
            raise
        raise CapdistillError(line) from err


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    with full_disk_reported(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            publish(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (pandas, matplotlib);
    renamed over `path` when the block ends without error, removed otherwise."""
    path = Path(path)
    with full_disk_reported(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            publish(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_dir(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Fill a temporary directory beside `path` (yielded), then rename it into place.

    A crash inside the block leaves no directory at `path`. An existing `path` is kept
    (another writer finished first) unless `replace`, when it is moved aside first and
    deleted after the rename.
    """
    path = Path(path)
    with full_disk_reported(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), dir=path.parent))
        old = path.parent / f"{tmp.name}.old"
        try:
            yield tmp
            publish(tmp)
            if replace and path.exists():
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                if not path.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)


class DirectoryHeld(CapdistillError):
    """Another process holds the directory (`holding`)."""


@contextmanager
def holding(directory: str | Path) -> Iterator[Path]:
    """Hold `directory` for this process while the block runs: its `run.lock`, created exclusively before the
    block reads or writes anything there, names this process (host, PID, `writer_id`) and is removed when the
    block ends, however it ends. A lock whose process is gone (`writer_gone`, the temporaries' rule) is taken
    over; one of a live process, or of another host or PID namespace (which cannot be checked from here),
    refuses the directory in one line naming its holder (`DirectoryHeld`)."""
    lock = Path(directory) / LOCK_FILE
    mine = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "writer": writer_id(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with full_disk_reported(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                set_aside_if_stale(lock)
                continue
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps(mine) + "\n")
            except BaseException:
                lock.unlink(missing_ok=True)
                raise
            break
    try:
        yield lock
    finally:
        if lock_holder(lock).get("writer") == mine["writer"]:
            lock.unlink(missing_ok=True)


def lock_holder(lock: Path) -> dict[str, Any]:
    """What `lock` says of its process ({} if it is gone or unreadable)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def set_aside_if_stale(lock: Path) -> None:
    """Remove `lock` if its process is gone (or had this process's PID: then it is not this process's, which has
    not taken it yet); otherwise refuse its directory. Of processes taking over one stale lock at once, one moves
    it aside (a rename is atomic) and removes it; one that moved a fresh lock aside (another process took the
    stale one over first) puts it back, then finds it held."""
    try:
        with open(lock) as handle:
            inode = os.fstat(handle.fileno()).st_ino
            holder = json.loads(handle.read())
        where, _, pid = holder["writer"].rpartition("-")
        gone = holder["writer"] == writer_id() or writer_gone(where, int(pid))
        who = f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
    except FileNotFoundError:  # released meanwhile
        return
    except (ValueError, TypeError, KeyError, AttributeError):  # not a lock `holding` wrote, or one being written
        raise DirectoryHeld(f"{lock} is unreadable: if no process runs in {lock.parent}, delete {lock}") from None
    if not gone:
        raise DirectoryHeld(
            f"{lock.parent} is in use by {who}: wait for it to end, or, if it no longer runs, delete {lock}"
        )
    aside = lock.with_name(f"{temporary_prefix(lock)}stale")  # a temporary: cleared if this process dies here
    try:
        os.rename(lock, aside)
    except FileNotFoundError:  # another process took it over first
        return
    if os.stat(aside).st_ino == inode:
        aside.unlink()
    else:
        os.rename(aside, lock)


def checksums(directory: Path, suffixes: tuple[str, ...] = (".safetensors",)) -> dict[str, str]:
    """sha256 of each file in `directory` with one of `suffixes` (stored at write time, checked at load)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).iterdir())
        if p.suffix in suffixes
    }


def changed_files(directory: Path, expected: dict[str, str]) -> list[str]:
    """The files of `expected` that are missing from `directory` or no longer match their checksum."""
    found = checksums(directory, tuple({Path(name).suffix for name in expected}))
    return [name for name, digest in expected.items() if found.get(name) != digest]


def interactive() -> bool:
    """Whether progress bars belong on stderr: a terminal (not a log file or a pipe), unless CAPDISTILL_PROGRESS=0."""
    return os.environ.get("CAPDISTILL_PROGRESS", "1") != "0" and sys.stderr.isatty()
