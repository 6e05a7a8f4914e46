"""A run directory: one process at a time (`run.lock`), Ctrl-C and a full disk each end a run in one line, and the
same command resumes from the rounds kept."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from capdistill.distill import run as run_module
from capdistill.distill.resume import save_torch
from capdistill.errors import CapdistillError
from capdistill.io import (
    LOCK_FILE,
    DirectoryHeld,
    atomic_dir,
    atomic_file,
    atomic_write_text,
    full_disk,
    holding,
    writer_id,
)
from conftest import compose_config
from test_cli import ENV, capdistill

HOST = socket.gethostname()
WHERE = writer_id().rpartition("-")[0]  # this host and PID namespace


def micro(run: Path, cache: Path, rounds: int) -> list[str]:
    """The command line of a small micro run into `run` (no lm-eval: the rounds are what these tests watch)."""
    return [
        "distill",
        "experiment=micro",
        "allocator=uniform",
        f"budget.rounds={rounds}",
        "evaluation.lmeval=false",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={run}",
    ]


def resumes(run: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The run of `micro(run, cache, 2)` run again, here (the command's process adds only its imports): it resumes
    from the one round kept and completes the record."""
    with caplog.at_level(logging.INFO, logger="capdistill"):
        record = run_module.distill(compose_config(micro(run, cache, 2)[1:-2], run, cache))
    assert "resuming after round 1 of 2" in caplog.text
    assert [e["round"] for e in record["rounds"]] == [0, 1]
    assert json.loads((run / "record.json").read_text()) == record


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "capdistill", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[str], timeout: float = 600) -> None:
    """Poll `ready` while `process` runs (its output as the failure if it ends first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended first ({process.returncode}): {(out + err)[-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def lock_of(pid: int, where: str = WHERE, host: str = HOST) -> str:
    """A lock as `holding` writes it, for process `pid` of `where` (host and PID namespace)."""
    return json.dumps({"host": host, "pid": pid, "writer": f"{where}-{pid}", "since": "2026-01-01 00:00:00"}) + "\n"


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A live process of this host and namespace, other than this one."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def snapshot(directory: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.rglob("*")}


# --------------------------------------------------------------------------- the lock


@pytest.mark.parametrize("holder", ["dead", "this pid"])
def test_a_stale_lock_is_taken_over_and_released(tmp_path: Path, holder: str) -> None:
    """A lock whose process is gone (or is a former process with this PID) is taken over, and removed after."""
    lock = tmp_path / LOCK_FILE
    lock.write_text(lock_of(dead_pid() if holder == "dead" else os.getpid()))
    with holding(tmp_path):
        assert json.loads(lock.read_text())["writer"] == writer_id()
    assert sorted(tmp_path.iterdir()) == []  # released, and no temporary left from the takeover


@pytest.mark.parametrize("other", ["process", "host"])
def test_a_live_or_foreign_lock_refuses_the_directory_in_one_line(tmp_path: Path, live_pid: int, other: str) -> None:
    """A live process's lock is respected, and so is another host's (its process cannot be checked from here)."""
    lock = tmp_path / LOCK_FILE
    held = lock_of(live_pid) if other == "process" else lock_of(4242, where="elsewhere_1", host="elsewhere")
    lock.write_text(held)
    with pytest.raises(DirectoryHeld) as refused, holding(tmp_path):
        pytest.fail("entered a held directory")
    who = f"process {live_pid} on {HOST}" if other == "process" else "process 4242 on elsewhere"
    assert f"{tmp_path} is in use by {who}" in str(refused.value) and "\n" not in str(refused.value)
    assert lock.read_text() == held


def test_the_lock_is_released_on_error_and_on_ctrl_c(tmp_path: Path) -> None:
    for stop in (ValueError("failed"), KeyboardInterrupt()):
        with pytest.raises(type(stop)), holding(tmp_path):
            raise stop
        assert not (tmp_path / LOCK_FILE).exists()


def test_a_refused_run_reads_and_writes_nothing(make_cfg, live_pid: int) -> None:
    """A run into a directory another live process holds stops before reading it: every file stays as it was."""
    cfg = make_cfg("experiment=micro")
    out = Path(cfg.paths.output_dir)
    (out / "rounds" / "round-000").mkdir(parents=True)
    (out / "rounds" / "round-000" / "round.json").write_text("{not json: read, it would fail otherwise")
    (out / LOCK_FILE).write_text(lock_of(live_pid))
    before = snapshot(out)
    with pytest.raises(DirectoryHeld, match=f"in use by process {live_pid} on {HOST}"):
        run_module.distill(cfg)
    assert snapshot(out) == before


def test_a_process_that_trains_along_is_not_refused_by_the_leaders_lock(
    make_cfg, live_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node 1's process (or a copy Lightning starts per device) reads what the leading process writes: it takes
    no lock, and goes on past the leader's to read the directory."""
    cfg = make_cfg("experiment=micro")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True)
    (out / LOCK_FILE).write_text(lock_of(live_pid))

    def reads(directory: Path, identity: dict) -> None:
        raise RuntimeError(f"read {directory}")

    monkeypatch.setattr(run_module, "finished_record", reads)
    monkeypatch.setenv("NODE_RANK", "1")
    with pytest.raises(RuntimeError, match="read"):
        run_module.distill(cfg)
    assert (out / LOCK_FILE).read_text() == lock_of(live_pid)


@pytest.mark.slow
def test_a_second_run_into_a_live_run_directory_is_refused_and_the_first_finishes(
    tmp_path: Path, micro_cache: Path
) -> None:
    """The same command started twice into one directory: the second stops in one line naming the first (host,
    PID) while it runs, and writes nothing; the first finishes as if alone and releases the directory."""
    run = tmp_path / "run"
    args = micro(run, micro_cache, rounds=2)
    first = start(args)
    wait_until(lambda: (run / LOCK_FILE).is_file() and (run / LOCK_FILE).read_text().endswith("\n"), first)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == first.pid
    first.send_signal(signal.SIGSTOP)  # alive (and holding) however fast it would run: the second meets it
    try:
        second = start(args)
        out, err = second.communicate(timeout=300)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and out == ""  # nothing logged (so nothing in the job log either)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{run} is in use by process {first.pid} on {HOST} (since " in lines[0], err
    assert lines[0].startswith("capdistill distill: error: ")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert [e["round"] for e in json.loads((run / "record.json").read_text())["rounds"]] == [0, 1]
    assert "resuming" not in out + err
    assert not (run / LOCK_FILE).exists()
    assert not [p for p in run.rglob("*") if f"-{second.pid}." in p.name]  # no temporary of the second's


@pytest.mark.slow
def test_a_relaunched_sweep_skips_a_job_another_process_runs(tmp_path: Path, micro_cache: Path, live_pid: int) -> None:
    """A sweep launched again while its first launch still runs a job skips that job in one line (its process
    completes it) and goes on with the others; it leaves the live job's files alone (Hydra still rewrites the
    job's .hydra/ before capdistill runs)."""
    sweep = tmp_path / "sweep"
    held = sweep / "1"
    held.mkdir(parents=True)
    (held / LOCK_FILE).write_text(lock_of(live_pid))
    (held / "rounds").mkdir()
    (held / "distill.log").write_text("the live job's log\n")
    before = snapshot(held)
    result = capdistill(
        "distill",
        "-m",
        "experiment=micro",
        "allocator=uniform",
        "evaluation.lmeval=false",
        "budget.rounds=1,2",
        f"paths.cache_dir={micro_cache}",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = [line for line in result.stderr.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and f"in use by process {live_pid} on {HOST}" in skipped[0], result.stderr
    assert (sweep / "0" / "record.json").is_file() and not (sweep / "0" / LOCK_FILE).exists()
    after = {p: s for p, s in snapshot(held).items() if held / ".hydra" not in (p, *p.parents)}
    assert after == before


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "what"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_keeps_the_saved_rounds_says_so_in_one_line_and_the_same_command_resumes(
    tmp_path: Path, micro_cache: Path, caplog: pytest.LogCaptureFixture, signum: int, status: int, what: str
) -> None:
    """Ctrl-C, or SIGTERM (`kill`, a scheduler's preemption), mid-run: the finished round is kept, the run says so
    in one line with the status a shell gives for that signal, releases its directory, and resumes."""
    run = tmp_path / "run"
    args = micro(run, micro_cache, rounds=2)
    first = start(args)
    wait_until((run / "rounds" / "round-000" / "round.json").is_file, first)
    first.send_signal(signum)
    out, err = first.communicate(timeout=300)
    assert first.returncode == status, err[-2000:]
    assert "Traceback" not in out + err
    said = f"capdistill distill: {what}; 1 of 2 rounds kept in {run / 'rounds'}: run the same command again"
    assert err.strip().splitlines()[-1].startswith(said) and err.count(what) == 1, err
    assert not (run / LOCK_FILE).exists()

    resumes(run, micro_cache, caplog)


# --------------------------------------------------------------------------- a full disk


def test_torch_save_through_a_file_reports_a_full_disk_as_such() -> None:
    """/dev/full: torch.save to a path words a full disk as `unexpected pos`; through a Python file (`save_torch`,
    what the rounds and supervision are saved with) the OSError itself arrives."""
    state = {"x": torch.zeros(4096)}
    with pytest.raises(RuntimeError) as by_path:
        torch.save(state, "/dev/full")
    assert full_disk(by_path.value) is None
    with pytest.raises(OSError) as by_file:
        save_torch(state, Path("/dev/full"))
    assert by_file.value.errno == errno.ENOSPC and full_disk(by_file.value) == "no space left on device"
    wrapped = Exception("Error while serializing: I/O error: No space left on device (os error 28)")  # safetensors'
    assert full_disk(wrapped) == "no space left on device"


def full(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["text", "file", "dir"])
def test_a_full_disk_is_one_line_naming_the_file_and_the_old_one_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    target = tmp_path / ("record.json" if writer != "dir" else "round-001")
    if writer == "dir":
        target.mkdir()
        (target / "round.json").write_text("old")
    else:
        target.write_text("old")
    before = snapshot(tmp_path)
    with pytest.raises(CapdistillError) as stopped:
        if writer == "text":
            monkeypatch.setattr(os, "fsync", full)  # where NFS reports it
            atomic_write_text(target, "new")
        elif writer == "file":
            with atomic_file(target) as tmp:
                tmp.write_text("half")
                full()
        else:
            with atomic_dir(target, replace=True) as tmp:
                (tmp / "round.json").write_text("half")
                full()
    assert str(stopped.value) == f"no space left on device writing {target}"
    assert snapshot(tmp_path) == before  # the old file as it was, and no temporary beside it


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_keeping_its_rounds(
    tmp_path: Path, micro_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real full disk: a small tmpfs (mounted in a user namespace), filled up once the first round is saved.
    The run stops in one line; the round kept resumes once there is space (here: in a copy of the directory)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to mount a tmpfs")
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    command = " ".join(f"'{a}'" for a in [sys.executable, "-m", "capdistill", *micro(disk / "run", micro_cache, 2)])
    script = f"""
        mount -t tmpfs -o size=4m tmpfs {disk} || exit 97
        {command} > {tmp_path}/stdout 2> {tmp_path}/stderr &
        run=$!
        while [ ! -f {disk}/run/rounds/round-000/round.json ] && kill -0 $run 2>/dev/null; do sleep 0.1; done
        dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null
        wait $run; echo $? > {tmp_path}/rc
        rm {disk}/fill; cp -a {disk}/run {copy}
    """
    mounted = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, timeout=600)
    if mounted.returncode == 97:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    err = (tmp_path / "stderr").read_text()
    assert (tmp_path / "rc").read_text().strip() == "2", err[-2000:]
    assert "Traceback" not in err + (tmp_path / "stdout").read_text()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capdistill distill: error: no space left on device writing "), err
    assert lines[0].endswith(
        f"; 1 of 2 rounds kept in {disk / 'run' / 'rounds'}: free some space and run the same command again to resume"
    )
    assert sorted(p.name for p in (copy / "rounds").iterdir() if p.name.startswith(".")) == []  # no half-written file
    assert not (copy / LOCK_FILE).exists()

    resumes(copy, micro_cache, caplog)
