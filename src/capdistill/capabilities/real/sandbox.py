"""Run untrusted Python (model-written code and its unit tests) in a separate, limited process.

Each program runs in a fresh interpreter (`python -I`: no user site, no environment variables of this
process), in an empty temporary directory, with CPU-time, memory, file-size and process-count limits, in
its own session. A program that outlives `timeout` is killed with everything it started and reported as
timed out.

Where bubblewrap (`bwrap`, the sandbox Flatpak uses) works, the program runs isolated in new Linux
namespaces (user, PID, network, IPC, UTS, cgroup, mount):
- no network: its own network namespace has only a loopback that nothing listens on;
- the only writable paths are its temporary directory (the one `run_python` made) and private tmpfs
  mounts at /tmp and /dev/shm, which vanish with it;
- the interpreter's prefix and /usr are visible read-only; nothing else of the machine is: not /etc,
  not the project or its outputs, not the user's home (but for the path down to the interpreter's prefix,
  when it lives there, as pyenv's does);
- it sees only its own processes, so it can signal nothing outside, and a process it detaches with
  `setsid` dies with the sandbox;
- it may hold at most `processes` processes: RLIMIT_NPROC set inside the sandbox, which the kernel enforces
  for every user but root, and for root a pids cgroup per program where root can create one (the record
  says "no process limit" where it cannot).

Where bubblewrap is missing or cannot create namespaces, model-written code runs only after an explicit
opt-in: `evaluation.allow_unsafe_code=true`, which sets `CAPDISTILL_ALLOW_UNSAFE_CODE=1` for the run and
the processes it starts (lm-eval's convention is `HF_ALLOW_CODE_EVAL=1`). Without it, `run_python` and a
run that would execute code refuse in one line. The time, memory and file-size limits still apply then;
the isolation and the process limit do not.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from capdistill.errors import CapdistillError

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"
UNSAFE = "unsafe"
UNSAFE_ENV = "CAPDISTILL_ALLOW_UNSAFE_CODE"
WORKDIR = "/sandbox"  # where the program's temporary directory appears inside the sandbox
# Run inside the sandbox before the program: a process limit set there counts the processes of the sandbox's own
# user namespace, where one set on bwrap would count every process of the user on the machine.
NPROC_PRELUDE = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NPROC, ({processes}, {processes})); "
    "del sys.argv[0]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | timed out
    detail: str = ""  # the end of stderr of a failed program

    @property
    def passed(self) -> bool:
        return self.status == PASSED


class IsolationUnavailable(CapdistillError):
    """Model-written code would run unisolated and the user has not opted in."""


def interpreter() -> Path:
    """The base interpreter (a virtual environment's `python` is a link to it): the sandbox mounts its
    prefix only, not the environment's site-packages, which `python -I` programs do not need."""
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def bwrap_command(workdir: str) -> list[str]:
    """bubblewrap's arguments for a program in `workdir` (see the module docstring for what each gives)."""
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):  # merged-/usr links, or the directories themselves
        path = Path("/") / top
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            command += ["--ro-bind", str(path), str(path)]
    prefix = Path(sys.base_prefix).resolve()
    if not prefix.is_relative_to("/usr"):
        command += ["--ro-bind", str(prefix), str(prefix)]
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    command += ["--bind", workdir, WORKDIR, "--chdir", WORKDIR]
    return command


@functools.cache
def isolation() -> str | None:
    """'bwrap <version>' when bubblewrap runs a program isolated on this machine (tried once per process),
    else None: not installed, or the kernel refuses it namespaces."""
    if shutil.which("bwrap") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="capdistill-sandbox-") as tmp:
        try:
            tried = subprocess.run(
                [*bwrap_command(tmp), str(interpreter()), "-I", "-c", "pass"], capture_output=True, timeout=60
            )
            version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
    if tried.returncode != 0:
        return None
    return version.stdout.strip() or "bwrap"


def unsafe_allowed() -> bool:
    """Whether the user opted in to run model-written code unisolated (`evaluation.allow_unsafe_code`)."""
    return os.environ.get(UNSAFE_ENV, "") == "1"


# cgroup v1's pids hierarchy, then v2's unified one: where root's sandboxes get their process limit
PIDS_CGROUPS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


@functools.cache
def process_limit() -> str | None:
    """How a sandbox's process count is held: 'rlimit' (RLIMIT_NPROC, set inside the sandbox, which the kernel
    enforces for every user but root), 'cgroup' (root: a pids cgroup per program), or None (root on a machine
    whose pids cgroups it cannot create)."""
    if os.geteuid() != 0:
        return "rlimit"
    with contextlib.suppress(OSError), pids_cgroup(1) as procs:
        return "cgroup" if procs is not None else None
    return None


@contextlib.contextmanager
def pids_cgroup(limit: int) -> Iterator[Path | None]:
    """A new pids cgroup holding at most `limit` processes (its `cgroup.procs`, which a child joins before it
    execs), removed afterwards; None where none can be created."""
    for root in PIDS_CGROUPS:
        group = root / f"capdistill-sandbox-{os.getpid()}-{time.monotonic_ns()}"
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            if not (group / "pids.max").is_file():
                continue
            (group / "pids.max").write_text(str(limit))
            yield group / "cgroup.procs"
            return
        finally:
            for _ in range(100):  # the killed sandbox's processes leave the group as the kernel reaps them
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)
    yield None


def execution_mode(allow_unsafe: bool | None = None) -> str:
    """How model-written code runs here, as the record says it: 'isolated (bwrap 0.8.0)', or 'unsafe' where
    isolation is not available and the user opted in (`allow_unsafe`, default: the environment's opt-in).
    Refused in one line otherwise."""
    tool = isolation()
    if tool is not None:
        return f"isolated ({tool})" if process_limit() else f"isolated ({tool}; no process limit)"
    if allow_unsafe if allow_unsafe is not None else unsafe_allowed():
        return UNSAFE
    raise IsolationUnavailable(
        "this run executes model-written code, and bubblewrap cannot isolate it on this machine (install it: "
        "apt-get install bubblewrap; it needs unprivileged user namespaces); to run the code unisolated anyway, "
        "set evaluation.allow_unsafe_code=true"
    )


def _limits(timeout: float, memory_mb: int, cgroup: Path | None) -> None:
    """Applied in the child before exec: CPU seconds, address space, file size, no core dumps; and it joins
    its pids cgroup, if it has one."""
    import resource

    if cgroup is not None:
        cgroup.write_text(str(os.getpid()))
    cpu = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(program: str, timeout: float = 5.0, memory_mb: int = 2048, processes: int = 32) -> Outcome:
    """Run `program` as a script; passed if it exits 0 within `timeout` seconds of wall time. Isolated where
    bubblewrap works; elsewhere only with the opt-in (`execution_mode`), else IsolationUnavailable."""
    isolated = execution_mode() != UNSAFE
    with (
        tempfile.TemporaryDirectory(prefix="capdistill-sandbox-") as tmp,
        pids_cgroup(processes) if isolated and process_limit() == "cgroup" else contextlib.nullcontext() as cgroup,
    ):
        Path(tmp, "program.py").write_text(program)
        where = WORKDIR if isolated else tmp
        command = [str(interpreter()), "-I", "-B"]
        if isolated:  # RLIMIT_NPROC set inside the sandbox's user namespace counts the sandbox's processes only
            command = [*bwrap_command(tmp), *command, "-c", NPROC_PRELUDE.format(processes=processes)]
        proc = subprocess.Popen(
            [*command, f"{where}/program.py"],
            cwd=tmp,
            env={"PATH": "/usr/bin:/bin", "HOME": where, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: _limits(timeout, memory_mb, cgroup),
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # isolated: bwrap dies, and its PID namespace with it
            proc.communicate()
            return Outcome(TIMED_OUT)
        if proc.returncode == 0:
            return Outcome(PASSED)
        return Outcome(FAILED, stderr.decode(errors="replace")[-500:])
