"""The import contract (.importlinter): every module is in a layer (the contract itself is checked against the
installed wheel, in test_packaging), and every package sets OpenMP's wait policy first."""
import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("indexing", "retrieval", "rerank", "benchmarks", "integrations")  # top-level folders: matryoshka.<name>
PACKAGES = ("matryoshka", *(f"matryoshka.{t}" for t in TOP))


def test_every_module_is_in_a_layer():
    """A new module outside every layer would escape the contract: name its layer in .importlinter."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    layers = {name for line in cfg["importlinter:contract:layers"]["layers"].split("\n")
              for name in re.split(r"[|:]", line) if name.strip()}
    layers = {name.strip() for name in layers}
    def under(folder, prefix):
        return [".".join((*prefix, *p.relative_to(folder).with_suffix("").parts)) for p in folder.rglob("*.py")
                if p.name != "__init__.py" and not set(p.relative_to(folder).parts[:1]) & set(TOP)]
    modules = under(ROOT / "matryoshka", ("matryoshka",)) + [m for t in TOP for m in under(ROOT / t, ("matryoshka", t))]
    outside = [m for m in modules if not any(m == layer or m.startswith(layer + ".") for layer in layers)]
    assert not outside, f"modules in no layer of .importlinter: {outside}"


@pytest.mark.slow
def test_every_package_sets_openmps_wait_policy_before_faiss_and_torch_load():
    """faiss's and torch's OpenMP runtimes spin against each other unless told to sleep (see matryoshka): the
    policy must be in the environment when the first of them is imported, whichever package is imported."""
    import json
    import os
    spy = ("import json, os, sys\n"
           "seen = {{}}\n"
           "class Spy:\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           "        if name in ('faiss', 'torch'):\n"
           "            seen.setdefault(name, os.environ.get('OMP_WAIT_POLICY'))\n"
           "sys.meta_path.insert(0, Spy())\n"
           "import {pkg}\n"
           "import faiss, torch\n"
           "print(json.dumps(seen))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    # a user's own choice is kept; one fresh interpreter per case, all at once
    cases = [(p, None) for p in PACKAGES] + [("matryoshka.retrieval", "ACTIVE")]
    runs = [subprocess.Popen([sys.executable, "-c", spy.format(pkg=pkg)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=env if policy is None else {**env, "OMP_WAIT_POLICY": policy}) for pkg, policy in cases]
    for (pkg, policy), run in zip(cases, runs):
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
        assert json.loads(out) == {"faiss": policy or "PASSIVE", "torch": policy or "PASSIVE"}, pkg


def test_opening_an_index_and_starting_the_command_line_import_no_torch(small_index):
    """torch takes over a second to import: encoding texts, converting float16 rows and re-scoring on a device
    need it; opening an index (every command line call does) and the command line's start do not."""
    code = ("import sys\nfrom matryoshka import retrieval\n"
            f"ix = retrieval.open_index({str(small_index)!r})\n"
            "ix.info()\nimport matryoshka.retrieval.cli\nprint('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["False"]
