"""The package as users get it: a wheel built from the repository, installed in a fresh venv, imported from
outside the repository; and the import contract (.importlinter) checked against that installed copy, where
every subpackage sits under `matryoshka/` as setuptools' package-dir maps it."""
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "LICENSE", "matryoshka", "indexing", "retrieval", "rerank",
           "benchmarks", "integrations")
SUBPACKAGES = ("core", "storage", "indexing", "retrieval", "rerank", "benchmarks", "integrations",
               "integrations.server")


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory):
    """(python of a fresh venv holding only the wheel, its environment): dependencies come from this venv's
    site-packages on PYTHONPATH, whose editable-install hook (a .pth file) is not read from there."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so that the build's own folders (build/, *.egg-info) stay out of the checkout
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__", "results")}
                                         if (ROOT / name).is_dir() else {}))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    wheel, = (tmp / "dist").glob("*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                          str(wheel)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return python, env, tmp


def test_every_package_folder_is_listed_for_setuptools():
    """pyproject lists the packages (package-dir maps them): a new subpackage left out would miss the wheel."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"matryoshka" + "".join("." + p for p in init.parent.relative_to(ROOT / "matryoshka").parts)
             for init in (ROOT / "matryoshka").rglob("__init__.py")}
    found |= {".".join(("matryoshka", *init.parent.relative_to(ROOT).parts))
              for top in ("indexing", "retrieval", "rerank", "benchmarks", "integrations")
              for init in (ROOT / top).rglob("__init__.py")}
    assert found == listed


def test_the_repository_holds_no_symlinks():
    files = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert [line for line in files.splitlines() if line.startswith("120000")] == []


def test_the_wheel_installs_and_every_subpackage_imports_from_outside_the_repository(installed_wheel):
    python, env, tmp = installed_wheel
    code = ("import importlib, matryoshka\n"
            f"for name in {SUBPACKAGES!r}:\n"
            "    m = importlib.import_module('matryoshka.' + name)\n"
            "    assert '/site-packages/matryoshka/' in m.__file__, m.__file__\n"
            "import matryoshka.retrieval.cli, matryoshka.integrations.server.app, matryoshka.benchmarks.gpu_check\n"
            "print('ok')")
    run = subprocess.run([str(python), "-c", code], cwd=tmp, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def test_import_contracts_are_kept_by_the_installed_package(installed_wheel):
    python, env, tmp = installed_wheel
    run = subprocess.run([str(python), "-c", "import sys; from importlinter.cli import lint_imports; "
                          f"sys.exit(lint_imports(config_filename={str(ROOT / '.importlinter')!r}, no_cache=True))"],
                         cwd=tmp, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
