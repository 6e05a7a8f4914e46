"""Run untrusted Python (model-written code and its unit tests) in a separate, limited process.

Each program runs in a fresh interpreter (`python -I`: no user site, no environment
variables of this process), in an empty temporary directory, with a CPU-time, memory and
file-size limit, in its own process group. A program that outlives `timeout` is killed
with its whole group and reported as timed out; nothing it does can reach the caller's
interpreter. This is a guard against accidents, not a security boundary against an
adversary: run evaluations of untrusted models inside a container as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | timed out
    detail: str = ""  # the end of stderr of a failed program

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def _limits(timeout: float, memory_mb: int) -> None:
    """Applied in the child before exec: CPU seconds, address space, file size, no core dumps."""
    import resource

    cpu = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (10 << 20, 10 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python(program: str, timeout: float = 5.0, memory_mb: int = 2048) -> Outcome:
    """Run `program` as a script; passed if it exits 0 within `timeout` seconds of wall time."""
    with tempfile.TemporaryDirectory(prefix="capdistill-sandbox-") as tmp:
        script = Path(tmp) / "program.py"
        script.write_text(program)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(script)],
            cwd=tmp,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=lambda: _limits(timeout, memory_mb),
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Outcome(TIMED_OUT)
        if proc.returncode == 0:
            return Outcome(PASSED)
        return Outcome(FAILED, stderr.decode(errors="replace")[-500:])
