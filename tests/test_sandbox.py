"""Model-written code runs isolated: real escape attempts through `run_python`, each checked from outside, and
the one-line refusal (or the explicit opt-in) where the machine cannot isolate it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from capdistill.capabilities.real import sandbox
from capdistill.capabilities.real.sandbox import (
    PASSED,
    TIMED_OUT,
    UNSAFE,
    UNSAFE_ENV,
    IsolationUnavailable,
    execution_mode,
    run_python,
)

PROJECT = Path(__file__).resolve().parents[1]

needs_isolation = pytest.mark.skipif(
    sandbox.isolation() is None and not os.environ.get("CI"),
    reason="bubblewrap cannot isolate programs on this machine (make install installs it where it can)",
)


def token() -> str:
    return f"capdistill-escape-{uuid.uuid4().hex}"


def alive(marker: str) -> list[int]:
    """The processes on this machine whose command line holds `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def writes(path: Path) -> str:
    return f"open({str(path)!r}, 'w').write('x')"


def shell_writes(path: Path) -> str:
    return f"import subprocess; subprocess.run(['sh', '-c', 'echo hi > {path}'], check=True)"


def interpreter_path_in(home: Path) -> list[str]:
    """What the sandbox shows of `home`: nothing, or the directory leading to the interpreter's prefix."""
    prefix = Path(sys.base_prefix).resolve()
    return [prefix.relative_to(home).parts[0]] if prefix.is_relative_to(home) else []


READS_HOST_FILES = (  # /etc/passwd, the home directory, a file of the project; exit 1 if any was seen
    "import os\n"
    "seen = []\n"
    f"for read in (lambda: open('/etc/passwd').read(),\n"
    f"             lambda: [f for f in os.listdir({str(Path.home())!r}) if f not in {interpreter_path_in(Path.home())!r}],\n"
    f"             lambda: open({str(PROJECT / 'pyproject.toml')!r}).read()):\n"
    "    try:\n"
    "        seen.append(bool(read()))\n"
    "    except OSError:\n"
    "        seen.append(False)\n"
    "assert not any(seen), seen\n"
)


ESCAPES = {
    "write /tmp": ("/tmp", writes),
    "shell writes /tmp": ("/tmp", shell_writes),
    "write /dev/shm": ("/dev/shm", writes),
}


@needs_isolation
@pytest.mark.parametrize("escape", list(ESCAPES))
def test_writes_outside_the_sandbox_stay_inside_it(escape: str) -> None:
    directory, program = ESCAPES[escape]
    target = Path(directory) / token()
    run_python(program(target))
    assert not target.exists()


@needs_isolation
def test_the_machine_s_files_are_not_visible() -> None:
    outcome = run_python(READS_HOST_FILES)
    assert outcome.status == PASSED, outcome.detail  # the program asserts that every read failed


@needs_isolation
def test_no_network_reaches_the_host() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        outcome = run_python(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert outcome.status != PASSED and "ConnectionRefused" in outcome.detail
        with pytest.raises(TimeoutError):
            server.accept()


@needs_isolation
def test_no_host_process_can_be_signalled() -> None:
    victim = subprocess.Popen(["sleep", "30"])
    try:
        outcome = run_python(f"import os, signal; os.kill({victim.pid}, signal.SIGKILL)")
        assert outcome.status != PASSED and "ProcessLookupError" in outcome.detail
        # its parent, from inside, is the sandbox's own init
        run_python("import os, signal; os.kill(os.getppid(), signal.SIGKILL)")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@needs_isolation
def test_a_detached_process_dies_with_the_sandbox_at_the_timeout() -> None:
    marker = token()
    program = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        f"    os.setsid(); os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "time.sleep(60)\n"
    )
    assert run_python(program, timeout=2).status == TIMED_OUT
    deadline = time.time() + 5
    while alive(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert alive(marker) == []


@needs_isolation
def test_forks_are_held_to_the_process_limit() -> None:
    fifty = "import os, time\nfor _ in range(50):\n    if os.fork() == 0:\n        time.sleep(3); os._exit(0)\n"
    assert run_python(fifty, processes=16).status != PASSED
    marker = token()
    bomb = (
        f"import os\nMARK = {marker!r}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    start = time.time()
    assert run_python(bomb, timeout=2, processes=16).status == TIMED_OUT
    assert time.time() - start < 30


@needs_isolation
def test_the_record_names_the_isolation_tool() -> None:
    assert execution_mode().startswith("isolated (bubblewrap ")
    assert execution_mode(allow_unsafe=True).startswith("isolated")  # isolation wins where it exists


def test_without_isolation_code_runs_only_after_the_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "isolation", lambda: None)
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    with pytest.raises(IsolationUnavailable, match="evaluation.allow_unsafe_code=true"):
        run_python("pass")
    monkeypatch.setenv(UNSAFE_ENV, "1")
    assert execution_mode() == UNSAFE
    # unisolated, the same write and read escape: what the isolated tests above check can fail
    target = Path("/tmp") / token()
    try:
        assert run_python(writes(target)).status == PASSED and target.exists()
    finally:
        target.unlink(missing_ok=True)
    assert "AssertionError" in run_python(READS_HOST_FILES).detail


def test_a_world_says_whether_its_scoring_runs_model_written_code() -> None:
    from capdistill.capabilities import WorldParams
    from capdistill.capabilities.paper import PaperSuite
    from capdistill.capabilities.real.code import code_source
    from capdistill.capabilities.real.humaneval_problems import TASK
    from capdistill.capabilities.sources import WorldSources

    code = code_source({"train": 2, "dev": 2, "probe": 2, "eval": 2})
    assert code.runs_code
    assert WorldSources(None, {"code": code}, {}, 2, 2).runs_code
    assert PaperSuite({"code": [TASK]}).runs_code and not PaperSuite({"math": ["gsm8k"]}).runs_code
    assert not WorldSources.from_params(WorldParams()).runs_code


def test_a_run_that_would_run_code_unisolated_is_refused_before_any_model_loads_unless_allowed(
    run_micro, monkeypatch: pytest.MonkeyPatch
) -> None:
    from capdistill.capabilities.sources import WorldSources
    from capdistill.distill import roles

    monkeypatch.setattr(WorldSources, "runs_code", property(lambda self: True))
    monkeypatch.setattr(sandbox, "isolation", lambda: None)
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    loaded = []
    real = roles.ensure_model
    monkeypatch.setattr(roles, "ensure_model", lambda *a, **k: loaded.append(1) or real(*a, **k))
    fixed = ("allocator=fixed", "allocator.weights={math:1}", "budget.rounds=1")
    with pytest.raises(IsolationUnavailable, match="evaluation.allow_unsafe_code=true") as err:
        run_micro(*fixed)
    assert "\n" not in str(err.value) and loaded == []
    record, _ = run_micro(*fixed, "evaluation.allow_unsafe_code=true")
    assert record["code_execution"] == UNSAFE and os.environ[UNSAFE_ENV] == "1"
