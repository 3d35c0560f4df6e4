"""The documentation site builds with warnings as errors: every page in the nav, every link and anchor valid,
every API page's module importable."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists(),
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    p = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_500
    for page in ("docs/usage.md", "docs/measurements.md", "docs/guarantees.md", "docs/operations.md"):
        assert page in readme and (ROOT / page).exists()
