"""The import contract (.importlinter): layers import one way only and no package has an import cycle."""
import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("matryoshka", "indexing", "retrieval", "rerank", "benchmarks")


def test_import_contracts_are_kept():
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          "sys.exit(lint_imports(no_cache=True))"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_every_module_is_in_a_layer():
    """A new module outside every layer would escape the contract: name its layer in .importlinter."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    layers = {name for line in cfg["importlinter:contract:layers"]["layers"].split("\n")
              for name in re.split(r"[|:]", line) if name.strip()}
    layers = {name.strip() for name in layers}
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts) for pkg in PACKAGES
               for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py"]
    outside = [m for m in modules if not any(m == layer or m.startswith(layer + ".") for layer in layers)]
    assert not outside, f"modules in no layer of .importlinter: {outside}"
