"""Real text with queries and labels taken from the corpus's own structure, encoded with all-MiniLM-L6-v2.

Corpora: Debian's GCIDE dictionary (`apt-get install dict-gcide`: one headword, several numbered senses) or,
always present, the Python standard library's docstrings (one object, several paragraphs). Either way the
items form groups; a query is one item of a group held out of the corpus, and its relevant documents are the
rest of its group ("which word / which function does this passage describe?"). With query="name" the query
is the held-out item's group name instead, a headword or an object's dotted name ("what does this word mean?"),
over the same documents.
"""
from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np

from .data import Dataset, normalize

GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_SENSE = re.compile(r"^ {3}(\d+)\. ", re.M)


def _b64(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + _B64[c]
    return v


def _clean(text: str) -> str:
    text = re.sub(r"\[[^\]]*\]", " ", text)  # sources and etymologies: [1913 Webster], [OE. appel ...]
    text = text.replace("{", "").replace("}", "")
    return " ".join(text.split())


def gcide_groups(path: Path = GCIDE, max_chars: int = 400) -> tuple[list[str], list[str]]:
    """(group, text) per numbered sense of every GCIDE headword; text is 'headword: sense'."""
    index = path.with_name(path.name.replace(".dict.dz", ".index"))
    raw = gzip.open(path).read()
    groups, texts = [], []
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database"):
            continue
        word, off, size = parts[0], _b64(parts[1]), _b64(parts[2])
        entry = raw[off:off + size].decode("utf-8", errors="replace")
        cuts = [m.start() for m in _SENSE.finditer(entry)]
        for a, b in zip(cuts, cuts[1:] + [len(entry)]):
            sense = _clean(_SENSE.sub("", entry[a:b].split("\n\n")[0], count=1))
            if len(sense) >= 20:
                groups.append(word.lower())
                texts.append(f"{word}: {sense[:max_chars]}")
    return groups, texts


def stdlib_groups() -> tuple[list[str], list[str]]:
    """(group, text) per docstring passage of the Python standard library; group is the object's name."""
    from matryoshka.indexing.stdlib_docs import stdlib_passages
    ids, texts = stdlib_passages()
    return [i.split("#")[0] for i in ids], texts


def held_out_task(groups: list[str], texts: list[str], limit: int, n_queries: int, seed: int = 0,
                  query_part: str = "text"):
    """(doc texts, query texts, qrels): whole groups up to `limit` docs; one item of some groups becomes a query,
    its passage without its headword / object name ("text") or that name alone ("name")."""
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    names = list(by_group)
    np.random.default_rng(seed).shuffle(names)
    docs, queries, qrels = [], [], {}
    for g in names:
        items = by_group[g]
        if len(docs) + len(items) > limit:
            continue
        if len(items) >= 2 and len(queries) < n_queries:
            q = items[0]
            parts = texts[q].split(": ", 1)  # the passage without its headword / object name, or that name
            query = parts[0] if query_part == "name" else parts[-1]
            qrels[len(queries)] = {len(docs) + j: 1.0 for j in range(len(items) - 1)}
            queries.append(query)
            items = items[1:]
        docs += [texts[i] for i in items]
        if len(docs) >= limit and len(queries) >= n_queries:
            break
    return docs, queries, qrels


def encode_cached(texts: list[str], workdir: Path, model_name: str) -> np.ndarray:
    """Normalized embeddings, cached in workdir by a hash of the texts and the model name."""
    h = hashlib.sha256(model_name.encode())
    for t in texts:
        h.update(t.encode() + b"\0")
    path = Path(workdir) / f"emb-{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    from matryoshka.core import encoder
    x = normalize(encoder.encode(encoder.load_model(model_name), texts))
    Path(workdir).mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def text_dataset(workdir: Path, corpus: str = "auto", limit: int = 20_000, n_queries: int = 500,
                 model_name: str = "sentence-transformers/all-MiniLM-L6-v2", seed: int = 0,
                 query_part: str = "text") -> Dataset:
    """A labelled text dataset: 'gcide' (if installed), 'stdlib', or 'auto' (gcide when present)."""
    if corpus == "auto":
        corpus = "gcide" if GCIDE.exists() else "stdlib"
    if corpus == "gcide":
        if not GCIDE.exists():
            raise FileNotFoundError(f"{GCIDE} is missing: run `apt-get update && apt-get install dict-gcide`, "
                                    "or use --corpus stdlib")
        groups, texts = gcide_groups()
    elif corpus == "stdlib":
        groups, texts = stdlib_groups()
    else:
        raise ValueError(f"unknown corpus {corpus!r}; choose gcide, stdlib or auto")
    docs, queries, qrels = held_out_task(groups, texts, limit, n_queries, seed, query_part)
    x = encode_cached(docs, workdir, model_name)
    q = encode_cached(queries, workdir, model_name)
    meta = {"kind": "text", "corpus": corpus, "model": model_name, "docs": len(docs), "labelled_queries": len(qrels),
            "task": f"a held-out item of a group ({query_part}) is the query; the rest of its group is relevant"}
    return Dataset(f"text-{corpus}" + ("-names" if query_part == "name" else ""), x, q, qrels, None, meta)
