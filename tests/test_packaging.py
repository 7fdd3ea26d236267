"""csft installs like a package: the wheel carries conf/ (as csft.conf) and py.typed, and
`csft-train` composes its config from any directory, editable install or not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import CONF, ROOT

# What pyproject.toml builds from (tests/, docs/, notebooks/ are not shipped).
SOURCES = ["pyproject.toml", "README.md", "MANIFEST.in", "csft", "conf"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def shipped_files() -> list[str]:
    """Every file the wheel must hold: conf/ as csft/conf/, csft's packages, py.typed."""
    conf = [
        f"csft/conf/{p.relative_to(CONF).as_posix()}"
        for p in CONF.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    packages = [p.relative_to(ROOT).as_posix() for p in (ROOT / "csft").rglob("__init__.py")]
    return [*conf, *packages, "csft/py.typed"]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None):
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def test_editable_install_reads_conf_from_the_repository(tmp_path):
    """What the venv and CI use (`pip install -e .`): pkg://csft.conf is the repo's conf/."""
    import csft.conf

    assert Path(csft.conf.__file__).resolve().parent == CONF
    done = run([sys.executable, "-m", "csft.train", "--cfg", "job", "data=csv"], cwd=tmp_path)
    assert "task_name: train" in done.stdout and "text_column:" in done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel .` on a copy of the sources (the build leaves build/ and egg-info behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=IGNORE)
        elif path.is_file():
            shutil.copy2(path, source / name)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*pip_wheel, "-q", "-w", str(tmp / "dist"), str(source)], cwd=tmp)
    (built,) = (tmp / "dist").glob("csft-*.whl")
    return built


def test_wheel_ships_every_config_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"csft/conf/train.yaml", "csft/conf/data/banking77.yaml", "csft/py.typed"} <= names
    missing = [name for name in shipped_files() if name not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert not [name for name in names if name.startswith(("conf/", "tests/"))]


@pytest.mark.slow  # a fresh venv and a process per install
def test_installed_wheel_composes_its_config_from_any_directory(wheel, tmp_path):
    """The wheel alone (--no-deps) in a fresh venv, whose .pth adds this environment's
    site-packages for torch & co. A plain path line there does not run this environment's
    editable-install hook, so the venv's own csft is the one imported."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site,) = {Path(p) for p in (venv / "lib").glob("python*/site-packages")}
    (site / "this_environment.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    run([*pip_install, "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    show = "import csft, csft.conf; print(csft.__file__); print(csft.conf.__file__)"
    where = run([str(python), "-c", show], elsewhere, env)
    assert all(Path(f).is_relative_to(venv) for f in where.stdout.split()), where.stdout
    done = run([str(venv / "bin" / "csft-train"), "--cfg", "all", "data=csv"], elsewhere, env)
    assert "task_name: train" in done.stdout and "text_column:" in done.stdout
    assert "hydra/job_logging: csft" in done.stdout  # conf/hydra/ came along
    assert not (elsewhere / "outputs").exists()
