"""Atomic writes: readers see the old file (or directory) or the new one, never half of one.

The temporary file or directory is private while it is written (mkstemp's 0600, mkdtemp's 0700)
and gets the usual mode (0644 / 0755 under the common umask 022) before it is renamed into place,
so outputs on shared lab storage are readable like any other file. A temporary is named for its
target and its writer (`.record.json.<host>_<pid namespace>-<pid>.x1y2`), so `remove_stale_temporaries` can clear
what a killed run left on the next run without touching another live job's."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Clear what a killed run's atomic writes left in `directory`: the temporaries whose writer, a process
    of this host and PID namespace, has died. Another host's or namespace's, or a live process's, are left
    alone. A writer killed between moving the old target aside and renaming the new one into place left a
    complete new one (its `.old` sibling shows it got that far): it is renamed into place, not removed."""
    where = writer_id().rpartition("-")[0]
    removed = []
    for tmp in sorted(Path(directory).glob(".*")):
        match = STALE.match(tmp.name)
        if not match or match["where"] != where or writer_alive(int(match["pid"])) or not tmp.exists():
            continue
        target = tmp.parent / match["name"]
        if not match["old"] and tmp.with_name(tmp.name + ".old").exists() and not target.exists():
            os.replace(tmp, target)  # the new output was complete: keep it
        else:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
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
