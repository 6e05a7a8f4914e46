"""The package as users install it: a wheel in a fresh venv outside the checkout, run from a temporary
working directory with a user's own config directory, and a CLI that starts without the heavy stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER = Path(__file__).parent / "data" / "user_config"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["collect", "--help"],
        ["plot", "--help"],
        ["distill", "experiment=micro", "--cfg", "job", "--package", "budget"],
    ],
)
def test_the_cli_starts_without_torch_transformers_or_lm_eval(argv: list[str]) -> None:
    code = (
        "import sys\nfrom capdistill.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'lm_eval', 'pytorch_lightning') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = run(sys.executable, "-c", code, *argv)
    assert "HEAVY []" in out, out[-500:]


@pytest.mark.slow
def test_a_wheel_installs_and_runs_a_user_experiment_from_a_temporary_directory(
    tmp_path: Path, micro_cache: Path
) -> None:
    """Build the wheel, install it (no deps: they come from the test's environment, not the checkout)
    into a fresh venv, and run a user's experiment (the packaged micro world with the user's own
    allocator and loss) from an empty working directory with `--config-dir`."""
    source = tmp_path / "source"  # built from a copy: a build writes build/ and egg-info beside the sources
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source
    )
    (wheel,) = (tmp_path / "dist").glob("capdistill-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "capdistill/conf/train.yaml" in names and "capdistill/conf/experiment/micro.yaml" in names
    assert "hydra_plugins/capdistill_sweeper/checked_sweeper.py" in names  # the sweeper every sweep runs under
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = next((venv / "lib").glob("python*/site-packages"))
    # the dependencies, but not the checkout's editable capdistill: a plain path (its .pth files are not read)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel)
    work = tmp_path / "work"
    work.mkdir()
    env = {**ENV, "PYTHONPATH": str(USER)}  # where the user's own components live
    where = run(venv / "bin" / "python", "-c", "import capdistill; print(capdistill.__file__)", cwd=work, env=env)
    assert str(site) in where and str(ROOT) not in where
    run(
        venv / "bin" / "capdistill",
        "distill",
        "--config-dir",
        USER / "conf",
        "experiment=mine",
        f"paths.cache_dir={micro_cache}",
        cwd=work,
        env=env,
    )
    (record_path,) = (work / "outputs" / "distill").glob("*/record.json")  # under the working directory
    record = json.loads(record_path.read_text())
    assert (record["allocator"], record["loss"], record["experiment"]) == ("alternating", "skl", "mine")
    assert [r["allocation"]["math"] for r in record["rounds"]] == [1.0, pytest.approx(1 / 9)]
