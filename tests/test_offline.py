"""Without a network: a model name that is not cached fails at once with the engine's error, not after a minute
of hub retries. The hub is made unreachable for real by pointing HF_ENDPOINT at a closed local port."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matryoshka.core.encoder import OFFLINE_NOTE

ROOT = Path(__file__).resolve().parent.parent


def run_offline(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with HF_HUB_OFFLINE unset and no reachable model hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_a_name_that_is_not_cached_fails_fast_when_the_hub_is_unreachable():
    p = run_offline("""
        import json, time
        from matryoshka.core.encoder import load_model
        from matryoshka.core.errors import InputError, RerankerUnavailable
        from matryoshka.rerank.cross_encoder import CrossEncoderReranker
        seconds = {}
        for what, load, error in (("model", load_model, InputError),
                                  ("reranker", CrossEncoderReranker, RerankerUnavailable)):
            t = time.perf_counter()
            try:
                load("no-such-org/no-such-model")
            except error:
                seconds[what] = time.perf_counter() - t
        print(json.dumps(seconds))
    """)
    assert p.returncode == 0, p.stderr
    seconds = json.loads(p.stdout)
    assert set(seconds) == {"model", "reranker"}, p.stderr
    assert seconds["model"] < 20 and seconds["reranker"] < 20, seconds
    assert p.stderr.count(OFFLINE_NOTE) == 1, p.stderr  # once per process, however many names


@pytest.mark.slow
def test_the_packaged_model_loads_without_probing_the_hub():
    p = run_offline("""
        import os
        from matryoshka.core.encoder import load_model
        load_model("all-MiniLM-L6-v2")
        print(os.environ.get("HF_HUB_OFFLINE"))
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "None" and OFFLINE_NOTE not in p.stderr


def test_an_empty_or_zero_offline_flag_leaves_the_hub_check_on(monkeypatch):
    """huggingface_hub reads "" and "0" as online: so must the check, or an unreachable hub costs a minute."""
    from matryoshka.core import encoder
    for value in ("", "0", "false", "off"):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert not encoder._truthy("HF_HUB_OFFLINE"), value
    for value in ("1", "ON", "yes", "True"):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert encoder._truthy("HF_HUB_OFFLINE"), value
