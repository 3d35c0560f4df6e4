"""The `matryoshka` command: build, add, delete, compact, search, info, verify, plan-size, demo, and the commands other
packages register under the `matryoshka.commands` entry point group (the benchmark suite adds `bench`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from matryoshka.core.cli_help import HelpFormatter, positive_int
from matryoshka.core.errors import MatryoshkaError
# a constant: sentence-transformers loads only when scoring
from matryoshka.rerank.cross_encoder import DEFAULT_RERANKER

if TYPE_CHECKING:
    import numpy as np

PLUGIN_GROUP = "matryoshka.commands"
FAST_SCAN_HELP = ("4-bit fast-scan PQ codes (--fast-scan) or 8-bit PQ (--no-fast-scan); default: measured on a CPU "
                  "build (fast-scan without --select), 8-bit on a GPU build")
QUERIES_FORMAT = "a Parquet file with a `qid` column and an `embedding` or a `text` column"


def memory_budget(text: str) -> str:
    """An argparse type: a memory budget as given (e.g. 8G), refused here (exit 2) when it is no size."""
    from matryoshka.storage.tiers import parse_bytes
    try:
        parse_bytes(text, "the size")
    except MatryoshkaError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="Parquet file/folder (id, embedding[, text]) or a .npy matrix")
    p.add_argument("--out", required=True, help="index folder to create (or resume)")
    p.add_argument("--ids", help="ids for a .npy input: a .npy or a Parquet file with column `id`")
    p.add_argument("--model", help="sentence-transformers model that made the vectors (enables text queries), "
                                   "or that encodes a text-only Parquet input")
    p.add_argument("--index-dim", type=int, default=256, help="dims of the short vectors")
    p.add_argument("--transform", choices=("prefix", "pca", "auto"), default="auto",
                   help="prefix for Matryoshka models, pca for the rest, auto measures both")
    p.add_argument("--metric", choices=("cosine", "ip", "l2"), default="cosine",
                   help="similarity: cosine (vectors are normalized), ip (inner product) or l2 (distance)")
    p.add_argument("--pq-bytes", type=int, default=32, help="PQ code bytes per vector")
    p.add_argument("--fast-scan", action=argparse.BooleanOptionalAction, help=FAST_SCAN_HELP)
    p.add_argument("--nlist", type=int, help="IVF lists (default: measured around 4 sqrt(N), at most 8192)")
    p.add_argument("--shard-size", type=int, default=1_000_000, help="max vectors per shard")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="recall@10 the plan (--select) and the default operating point (--tune) are measured for")
    p.add_argument("--select", action=argparse.BooleanOptionalAction, default=True,
                   help="measure nlist, code and rotation on the training sample (see indexing.selection)")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True,
                   help="measure the default nprobe / k1 / k2 on a sample at the end of the build (see `tune`)")
    p.add_argument("--batch-rows", type=int, default=16384, help="rows read and encoded per batch (bounds RAM)")
    p.add_argument("--train-size", type=int, help="training sample size (default: from nlist)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where to train and encode: auto takes the GPU when faiss has one")
    p.add_argument("--threads", type=positive_int, help="CPU threads for faiss, torch and BLAS (default: every core)")
    p.add_argument("--overwrite", action="store_true", help="replace an index built with other settings")
    p.add_argument("--lexical", action="store_true", help="also index the texts for BM25 (search --mode lexical / "
                                                          "hybrid)")
    p.add_argument("--memory-budget", metavar="SIZE", type=memory_budget,
                   help="RAM the index will be served with (e.g. 8G): the default operating point is measured for "
                        "the stores it leaves on SSD")
    p.add_argument("--row-order", choices=("input", "lists"), default="input",
                   help="lists: store the int8 and full vectors in IVF-list order, so the candidates of a probed list "
                        "share pages (fewer reads from SSD; 4 bytes per vector more in RAM)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.add_argument("--ray", metavar="ADDRESS", help="build the shards as Ray tasks on the cluster at ADDRESS "
                                                    "(or auto); input and --out on storage every node sees")
    p.add_argument("--ray-gpus", type=float, default=0.0, help="with --ray: GPUs per shard task / encoder actor")
    p.add_argument("--queries", help="real queries to measure the default operating point on (" + QUERIES_FORMAT +
                   "); default: a sample of the index's own vectors, which are easier")
    p.add_argument("--plan-from", metavar="INDEX", help="repeat the plan of another index exactly, measuring none "
                   "of it: its dims, metric, shortening, partition, code and rotation replace those flags")


def cmd_build(a) -> None:
    from matryoshka.indexing import BuildOptions, build_index, open_source
    from matryoshka.retrieval.api import tune_new_index
    from matryoshka.indexing.options import plan_options
    given = dict(index_dim=a.index_dim, transform=a.transform, metric=a.metric, pq_bytes=a.pq_bytes,
                 fast_scan=a.fast_scan, nlist=a.nlist, shard_size=a.shard_size, batch_rows=a.batch_rows,
                 train_size=a.train_size, device=a.device, threads=a.threads, quiet=a.quiet, overwrite=a.overwrite,
                 tune=a.tune, select=a.select, target_recall=a.target_recall, lexical=a.lexical,
                 memory_budget=a.memory_budget, row_order=a.row_order)
    if a.plan_from:  # the other index's plan replaces the flags it covers
        given.update(plan_options(a.plan_from))
    opts = BuildOptions(**given)
    finish = partial(tune_new_index, queries=read_queries(a.queries)[1] if a.queries else None)
    if a.ray:
        from matryoshka.indexing.distributed_build import build_distributed
        out = build_distributed(a.out, a.input, ids=a.ids, model=a.model, options=opts, address=a.ray,
                                num_gpus=a.ray_gpus, finish=finish)
    else:
        out = build_index(a.out, open_source(a.input, ids=a.ids, model=a.model), opts, model_name=a.model,
                          finish=finish)
    if not a.quiet:
        print(f"index ready: {out}")


def cmd_add(a) -> None:
    from matryoshka.indexing import add
    record = add(a.index, a.input, ids=a.ids, model=a.model, upsert=a.upsert, quiet=a.quiet, threads=a.threads,
                 ray=a.ray)
    print(json.dumps({k: v for k, v in record.items() if k != "fingerprint"}, default=str))


def read_id_args(values: list[str]) -> list:
    """Ids from the command line: one Parquet file (column `id`), one text file (an id per line), or the ids."""
    from pathlib import Path

    from matryoshka.indexing.sources import load_ids
    path = Path(values[0]) if len(values) == 1 else None
    if path is not None and path.suffix in (".parquet", ".npy"):  # a file, or a refusal naming it
        return list(load_ids(path))
    if path is not None and path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return values


def cmd_delete(a) -> None:
    from matryoshka.core.errors import InputError
    from matryoshka.indexing import delete
    if a.ids is None and a.where is None:
        raise InputError("give --ids, --where, or both (the ids that pass the condition)")
    record = delete(a.index, None if a.ids is None else read_id_args(a.ids), where=condition(a.where, "--where"),
                    missing_ok=a.missing_ok, quiet=a.quiet)
    print(json.dumps({k: v for k, v in record.items() if k != "fingerprint"}, default=str))


def cmd_compact(a) -> None:
    from matryoshka.indexing import compact
    print(json.dumps(compact(a.index, min_dead=a.min_dead, quiet=a.quiet), default=str))


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index folder")
    p.add_argument("query", nargs="?", help="free-text query (or use --queries)")
    p.add_argument("--queries", help="Parquet file with `qid` and `embedding` or `text` (both: the text feeds "
                                     "the cross-encoder)")
    p.add_argument("--output", help="Parquet file for results: qid, rank, id, score, score_<stage>")
    p.add_argument("--where", help="keep documents whose attributes pass this SQL condition, e.g. \"lang = 'en' "
                                   "AND year >= 2020\", or a JSON dict filter, e.g. '{\"lang\": \"en\"}' (per "
                                   "query: a `where` column in --queries)")
    p.add_argument("--k", type=int, default=10, help="results per query")
    p.add_argument("--explain", action="store_true", help="print the plan the search would run, each choice with "
                                                          "its reason, and search nothing")
    p.add_argument("--nprobe", type=int, help="IVF lists scanned per query (more: better recall, slower; default: "
                                              "the index's measured operating point, see `matryoshka info`)")
    p.add_argument("--k1", type=int, help="first-pass depth (default: the index's operating point)")
    p.add_argument("--k2", type=int, help="kept after int8 re-scoring (default: the index's operating point)")
    p.add_argument("--probe-margin", type=float, help="with --nprobe as a cap, skip lists whose centroid score trails "
                                                       "the nearest's by more than this (default: the index's "
                                                       "operating point)")
    p.add_argument("--k3", type=int, default=50, help="kept after full re-scoring, for the cross-encoder")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 re-scoring stage")
    p.add_argument("--no-full", action="store_true", help="skip the float16 full-vector re-scoring stage")
    p.add_argument("--full-dims", type=int, help="re-score with only the first dims (a cheaper tier)")
    p.add_argument("--mode", choices=("dense", "lexical", "hybrid"), default="dense",
                   help="dense: the vector cascade; lexical: BM25 over the texts; hybrid: both, fused (needs an "
                        "index built with --lexical)")
    p.add_argument("--k-lexical", type=int, default=100, help="hybrid: BM25 candidates joined to the first pass")
    p.add_argument("--fusion", choices=("rrf", "weighted"), default="weighted",
                   help="hybrid: reciprocal-rank fusion or a weighted sum of min-max normalized scores")
    p.add_argument("--lexical-weight", type=float, default=0.5, help="hybrid: weight of the BM25 side")
    p.add_argument("--lexical-syntax", action="store_true",
                   help="read the query in tantivy's query language (AND, OR, NOT, \"phrases\"); default: plain words")
    p.add_argument("--coarse-ef", type=int, help="indexes with an HNSW coarse quantizer: how deep its graph is "
                                                 "searched for the nprobe lists (default 2 x nprobe, at least 64)")
    p.add_argument("--reranker", help="cross-encoder name or path (e.g. cross-encoder/ms-marco-MiniLM-L6-v2)")
    p.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder stage")
    p.add_argument("--model", help="query model (default: the model recorded in the index)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where the first pass runs: auto takes the GPU when faiss has one")
    p.add_argument("--threads", type=positive_int, help="CPU threads for faiss, torch and BLAS (default: every core)")
    _tier_args(p)
    p.add_argument("--quiet", action="store_true", help="no notes on stderr (loading the query model, the "
                                                        "cross-encoder stage off); warnings stay")
    p.add_argument("--ray", metavar="ADDRESS", help="search with Ray actors on the cluster at ADDRESS (or auto)")
    p.add_argument("--allow-partial", action="store_true",
                   help="with --ray: return results marked partial when shard workers are lost, not an error")
    p.add_argument("--ray-gpus", type=float, default=0.0, help="with --ray: GPUs per shard worker (first pass)")
    p.add_argument("--ray-workers", type=int, help="with --ray: shard workers (default: one per shard)")


def _tier_args(p) -> None:
    p.add_argument("--memory-budget", metavar="SIZE", type=memory_budget,
                   help="RAM the index may hold, e.g. 8G: the codes, then the int8 and full vectors and texts while "
                        "they fit are read into RAM; the rest is read from SSD, and the operating point measured "
                        "for that placement (`matryoshka tune --memory-budget`) is used (default: every store "
                        "memory-mapped)")
    p.add_argument("--gpu-memory-budget", metavar="SIZE", type=memory_budget,
                   help="GPU memory the int8 store may take, e.g. 40G (re-scoring on the GPU reads it there); "
                        "one that does not fit is held in pinned host memory (default: no GPU tier)")
    p.add_argument("--ssd-reads", choices=("pread", "uring", "willneed", "mmap", "direct"),
                   help="how stores on SSD are read (default willneed: madvise(WILLNEED) on exactly the pages a stage "
                        "needs, then the copy, the fastest measured; pread: a thread pool, 32 reads in flight; "
                        "direct: the same with O_DIRECT, bypassing the page cache)")


def _tiers(a) -> dict:
    out = {"memory_budget": a.memory_budget}
    if getattr(a, "gpu_memory_budget", None) is not None:
        out["gpu_memory_budget"] = a.gpu_memory_budget
    if a.ssd_reads is not None:
        out["ssd_reads"] = {"method": "pread", "direct": True} if a.ssd_reads == "direct" else {"method": a.ssd_reads}
    return out


def cmd_search(a) -> None:
    import pyarrow.parquet as pq

    from matryoshka.core.errors import InputError
    from matryoshka.retrieval import open_index
    if (a.query is None) == (a.queries is None):
        raise InputError("give either a free-text QUERY or --queries Q.parquet")
    qids, queries, texts = (["q"], [a.query], [a.query]) if a.queries is None else read_queries(a.queries)
    extra = {"allow_partial": a.allow_partial, "num_gpus": a.ray_gpus, "workers": a.ray_workers} if a.ray else {}
    given = {name: getattr(a, name) for name in ("nprobe", "k1", "k2", "probe_margin") if getattr(a, name) is not None}
    with open_index(a.index, device=a.device, model=a.model, threads=a.threads,
                    reranker=None if a.no_rerank else a.reranker, ray=a.ray, **extra,
                    **_tiers(a)) as index:  # closing stops Ray
        opts = dict(k=a.k, k3=a.k3, int8=not a.no_int8, full=not a.no_full, full_dims=a.full_dims,
                    rerank=False if a.no_rerank else None, mode=a.mode, k_lexical=a.k_lexical, fusion=a.fusion,
                    lexical_weight=a.lexical_weight, lexical_syntax=a.lexical_syntax, coarse_ef=a.coarse_ef,
                    **given)
        params = index.params.updated(**opts)
        where = _where(a)
        if a.explain:
            _explain(index, queries, opts, where)
            return
        if isinstance(queries, list) and a.mode != "lexical" and not a.quiet:
            _loading_note(index, a.model)
        result = index.search_batch(queries, query_texts=texts, params=params, where=where)
        has_text = index.manifest.has_text
    if "rerank" not in result.stage_scores and not a.quiet:
        why = ("--no-rerank" if a.no_rerank else "no --reranker given" if not a.reranker
               else "the index stores no texts" if not has_text else "the queries are vectors without texts")
        print(f"note: cross-encoder stage off: {why}", file=sys.stderr)
    if result.partial:
        print(f"warning: partial results: shard(s) {result.missing_shards} did not answer", file=sys.stderr)
    if a.output:
        pq.write_table(result.to_table(qids), a.output)
        print(f"wrote {int((result.rows >= 0).sum())} hits for {len(qids)} queries to {a.output}")
        return
    for qid, hits in zip(qids, result):
        if len(qids) > 1:
            print(f"query {qid}:")
        if not hits:
            print("  0 hits")
        for rank, h in enumerate(hits, 1):
            stages = "  ".join(f"{s}={v:.4f}" for s, v in h.scores.items())
            text = f"\n     {h.text[:120]}" if h.text else ""
            print(f"  {rank:>3}. {h.id}  score={h.score:.4f}  [{stages}]{text}")


def _loading_note(index, model: str | None) -> None:
    """One line on stderr before text queries are encoded: loading the model takes seconds, and says nothing."""
    name = model or (index.manifest.model or {}).get("name")
    if name is not None:
        print(f"note: loading the query model {name} to encode the queries (a few seconds)", file=sys.stderr,
              flush=True)


def _explain(index, queries, opts: dict, where) -> None:
    """The plan of each distinct predicate's queries (one plan without a per-query `where` column)."""
    groups: dict = {}
    for i, w in enumerate(where if isinstance(where, list) else [where] * len(queries)):
        groups.setdefault(json.dumps(w, sort_keys=True) if isinstance(w, dict) else w, (w, []))[1].append(i)
    for w, rows in groups.values():
        if len(groups) > 1:
            print(f"where {w!r}:" if w is not None else "no filter:")
        pick = [queries[i] for i in rows] if isinstance(queries, list) else queries[rows]
        print(index.explain(pick, where=w, **opts).explain())


def _where(a):
    """--where for every query, or the queries file's `where` column (one predicate per query, null: none)."""
    import pyarrow.parquet as pq

    from matryoshka.core.errors import InputError
    per_query = None
    if a.queries is not None and "where" in pq.read_schema(a.queries).names:
        per_query = _queries_table(a.queries, ["where"]).column(0).to_pylist()
    if per_query is not None and a.where is not None:
        raise InputError(f"{a.queries} has a `where` column and --where was given; use one of them")
    if per_query is not None:
        return [condition(w, f"{a.queries}, row {i}: where") for i, w in enumerate(per_query)]
    return condition(a.where, "--where")


def condition(text: str | None, name: str):
    """A condition from the command line: a SQL string as it is, or a JSON dict filter (text starting with '{')."""
    from matryoshka.core.errors import InputError
    if text is None or not text.lstrip().startswith("{"):
        return text
    try:
        f = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{name} {text!r} starts with '{{', so it is read as a JSON dict filter, but it is not "
                         f"JSON ({e}); write e.g. '{{\"lang\": \"en\", \"year\": {{\"$gte\": 2020}}}}', or a SQL "
                         "condition") from None
    if not isinstance(f, dict):
        raise InputError(f"{name} {text!r} is JSON but not a dict filter; write e.g. '{{\"lang\": \"en\"}}'")
    return f


def _queries_table(path: str, columns: list[str] | None = None):
    """The `columns` (default: all) of a --queries file, refused by name when unreadable or its text not UTF-8."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matryoshka.core.errors import InputError
    from matryoshka.indexing.ids import invalid_utf8
    if not os.path.exists(path):
        raise InputError(f"--queries {path} does not exist; give {QUERIES_FORMAT}")
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"--queries {path} is not a readable Parquet file ({str(e).splitlines()[0]}); "
                         f"give {QUERIES_FORMAT}") from None
    for name, col in zip(table.column_names, table.columns):
        if (row := invalid_utf8(col)) is not None:
            raise InputError(f"--queries {path}, row {row}: column {name!r} holds bytes that are not valid UTF-8 "
                             "text; write the file's text columns as UTF-8")
    return table


def read_queries(path: str) -> tuple[list, list[str] | np.ndarray, list[str] | None]:
    """The qids, the queries (texts, or a matrix of vectors) and the query texts (None without) of a --queries file."""
    from matryoshka.indexing.sources import list_column_to_matrix
    from matryoshka.core.errors import InputError
    table = _queries_table(path)
    columns = table.column_names
    if "qid" not in columns or not {"embedding", "text"} & set(columns):
        raise InputError(f"--queries {path} has the columns {columns}; give {QUERIES_FORMAT}")
    texts = table.column("text").to_pylist() if "text" in columns else None
    if "embedding" not in columns:
        return table.column("qid").to_pylist(), texts, texts
    return table.column("qid").to_pylist(), list_column_to_matrix(table.column("embedding"), 0), texts


def cmd_info(a) -> None:
    from matryoshka.indexing.sizing import human
    from matryoshka.retrieval import open_index
    from matryoshka.retrieval.tuning import describe
    with open_index(a.index, device="cpu", **_tiers(a)) as index:
        info = index.info()
    if a.json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(f"{info['path']}: {info['live']:,} vectors ({info['dead']:,} deleted, not yet compacted), generation "
          f"{info['generation']}, {info['metric']}, {info['full_dim']} -> {info['index_dim']} dims "
          f"({info['transform']['kind']}), {info['factory']}, model {info['model']}")
    print(f"bytes per vector: {info['ram_bytes_per_vector']:.1f} in RAM (first pass), "
          f"{info['mmap_bytes_per_vector']:.0f} memory-mapped, {info['disk_bytes_per_vector']:.0f} on disk")
    budget = f"a memory budget of {human(info['memory_budget'])}" if info["memory_budget"] else "no memory budget"
    gpu = f", {human(info['gpu_bytes'])} in GPU memory" if info.get("gpu_bytes") else ""
    print(f"stores ({budget}; {human(info['resident_bytes'])} resident in RAM{gpu}):")
    for name, st in info["stores"].items():
        cached = "" if st["page_cached"] is None else f", {st['page_cached']:.0%} in the page cache now"
        device = f"; read by {st['device']}" if st.get("device") else ""
        print(f"  {name:6s} {human(st['bytes']):>10s}  {st['tier']}{cached}{device}")
    if info["attributes"]:
        print("attributes (for --where): " + ", ".join(f"{n} {t}" for n, t in info["attributes"].items()))
    for s in info["shards"]:
        print(f"  shard {s['number']:05d}: {s['count']:,} vectors, {human(s['bytes'])}, "
              f"{100 * s['dead'] / max(s['count'], 1):.3g}% deleted")
    b, log = info["build"], info["build_log"]
    print(f"built on {b['device']}" + (f" at {log['vectors_per_second'] or 0:,.0f} vectors/s; seconds per step: "
                                       + ", ".join(f"{k}={v:.1f}" for k, v in log["seconds"].items()) if log else ""))
    for note in b["notes"]:
        print(f"note: {note}")
    sel = b.get("selection")
    if sel:
        print(f"partition and code measured on {sel['sample_rows']:,} sample vectors, priced by the calibrated cost "
              f"model (coverage target {sel['target_coverage']}): {sel['reason']}")
        for c in sel["candidates"]:
            print(f"  IVF{c['nlist']},{c['code']}, {c['rotation']} rotation: " + (
                f"nprobe {c['nprobe']}, depth {c['depth']}, coverage {c['coverage']:.3f}, {c['ms_per_query']:.3f} "
                "modelled ms/query at full size" if c["reached"] else f"coverage at most {c['coverage']:.3f}"))
    for key, other in info["operating_points"].items():
        print(f"operating point with {key.replace('=ssd', '').replace(',', ' and ')} on SSD: "
              f"{describe(other, info['generation'])}")
    point = info["operating_point"]
    print(f"default operating point: {describe(point, info['generation'])}" if point else
          f"default operating point: not measured (constants {info['defaults']['nprobe']=}, "
          f"{info['defaults']['k1']=}, {info['defaults']['k2']=}); run `matryoshka tune {a.index}`")


def cmd_tune(a) -> None:
    from matryoshka.retrieval import open_index
    from matryoshka.retrieval.tuning import describe
    queries = read_queries(a.queries)[1] if a.queries else None
    with open_index(a.index, device="cpu", model=a.model, threads=a.threads, **_tiers(a)) as index:
        point = index.tune(a.target_recall, queries, max_latency_ms=a.max_latency_ms, n_queries=a.sample_queries)
        on_ssd = [s for s, t in index.tiers.items() if t == "ssd"]
    which = f"with {' and '.join(on_ssd)} on SSD" if on_ssd else "default"
    print(f"{a.index}: {which} operating point now {describe(point.to_dict())}")
    for t in point.tried:
        probe = f"nprobe {t['nprobe']:>4}" + (f" margin {t['probe_margin']:.3g} ({t['lists_probed']:.0f} lists)"
                                               if t.get("probe_margin") is not None else "")
        cover = f"coverage {t['coverage']:.3f}, " if t.get("coverage") is not None else ""
        print(f"  tried {probe}, k1 {t['k1']:>5}, k2 {t['k2']:>4}: {cover}recall@10 {t['recall_at_10']:.3f}, "
              f"{t['ms_per_query']:.3f} ms/query")


def cmd_verify(a) -> None:
    from matryoshka.retrieval.verify import verify_index
    report = verify_index(a.index)
    print(f"{a.index}: OK ({report['shards']} shards, {report['count']:,} vectors, "
          f"{report['bytes']:,} bytes checked)")


def cmd_plan_size(a) -> None:
    from matryoshka.indexing import BuildOptions
    from matryoshka.indexing.ivf import plan_factory, train_size
    from matryoshka.core import layout
    from matryoshka.core.device import resolve_device
    from matryoshka.indexing.sizing import estimate, human
    from matryoshka.storage import tiers
    d = min(a.index_dim, a.full_dim)
    fast_scan = BuildOptions(fast_scan=a.fast_scan, pq_bytes=a.pq_bytes).for_device(resolve_device("auto"), d).fast_scan
    factory, notes = plan_factory(a.n, d, a.pq_bytes, fast_scan, a.nlist)  # what the build would choose
    if not factory.endswith(",Flat"):
        notes.append("the build measures half and twice the lists, the other code and an OPQ rotation on its "
                     "sample, and keeps what is faster (indexing.selection): this plan is the rule of thumb's")
    nlist, code = layout.parse_factory(factory)
    sample = min(a.n, a.train_size or train_size(a.n, nlist, code, a.nlist is None))  # the build's training sample
    e = estimate(a.n, a.full_dim, d, factory, a.shard_size, a.batch_rows, sample)
    sizes = {"codes": e["ram_first_pass"] + e["id_maps"], "int8": e["mmap_short_int8"], "full": e["mmap_full_f16"],
             "texts": 0}
    placed = a.memory_budget and tiers.choose(sizes, tiers.parse_bytes(a.memory_budget))
    if a.json:
        print(json.dumps({"factory": factory, "notes": notes, "train_size": sample, **e,
                          **({"tiers": placed} if placed else {})}, indent=2))
        return
    print(f"{a.n:,} vectors, {a.full_dim} -> {d} dims, {factory}, {e['shards']:,} shard(s) of up to "
          f"{a.shard_size:,}; training sample {sample:,} vectors")
    for note in notes:
        print(f"note: {note}")
    rows = [("RAM, first pass (codes + ids + centroids)", e["ram_first_pass"]),
            ("GPU memory, first pass", e["gpu_first_pass"]),
            ("memory-mapped int8 short vectors", e["mmap_short_int8"]),
            ("memory-mapped float16 full vectors", e["mmap_full_f16"]),
            ("id maps (in RAM unless the ids are row numbers)", e["id_maps"]),
            ("disk, total (texts not counted)", e["disk_total"]),
            ("build peak RAM (one shard's codes + batches + sample)", e["build_peak_ram"])]
    for name, v in rows:
        print(f"  {name:<55} {human(v):>12}  ({v / max(a.n, 1):,.1f} B/vector)")
    if placed:
        print(f"under a memory budget of {a.memory_budget}: " +
              ", ".join(f"{s} in {placed[s]}" for s in ("codes", "int8", "full")) +
              " (stores on SSD are read with many reads in flight; see `matryoshka info`)")


def cmd_demo(a) -> None:
    from matryoshka.retrieval.demo import run_demo
    run_demo(a.out, a.limit, None if a.no_rerank else a.reranker, quiet=a.quiet)


def _parser() -> tuple[argparse.ArgumentParser, dict]:
    """The argument parser and the plugin commands by name."""
    parser = argparse.ArgumentParser(prog="matryoshka", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        p.set_defaults(func=func)
        return p

    _build_args(command("build", cmd_build, "build an index (resumes an interrupted build)"))
    _search_args(command("search", cmd_search, "search an index"))
    p = command("info", cmd_info, "describe an index")
    p.add_argument("index", help="index folder")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    _tier_args(p)
    p = command("tune", cmd_tune, "measure the fastest nprobe / k1 / k2 reaching a recall@10 target and store it "
                                  "as the index's default")
    p.add_argument("index", help="index folder")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 against exact full-vector search")
    p.add_argument("--queries", help=f"your own queries: {QUERIES_FORMAT} (default: a sample of the index's vectors, "
                                     "each left out of its own results)")
    p.add_argument("--sample-queries", type=positive_int, default=300, help="index vectors used as queries")
    p.add_argument("--max-latency-ms", type=float, help="only settings at most this many ms per query in a batch; "
                                                        "the most accurate of them when none reaches the target")
    p.add_argument("--model", help="query model for text queries (default: the model recorded in the index)")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: every core)")
    _tier_args(p)
    p = command("add", cmd_add, "add documents to an index as a new generation (no retraining)")
    p.add_argument("index", help="index folder")
    p.add_argument("input", help="Parquet file/folder (id, embedding or text[, text]) or a .npy matrix")
    p.add_argument("--ids", help="ids for a .npy input: a .npy or a Parquet file with column `id` (default for an "
                                 "integer-id index: numbers after its largest id)")
    p.add_argument("--model", help="model to encode a text-only input (default: the index's model)")
    p.add_argument("--upsert", action="store_true", help="replace documents whose ids are already in the index")
    p.add_argument("--ray", help="write the new shards as Ray tasks: 'auto' or a cluster address")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: every core)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p = command("delete", cmd_delete, "delete documents from an index by id or by condition, as a new generation")
    p.add_argument("index", help="index folder")
    p.add_argument("--ids", nargs="+", help="ids, or one Parquet file (column `id`) or text file (an id per line)")
    p.add_argument("--where", help="delete the documents whose attributes pass this SQL condition or JSON dict "
                                   "filter (with --ids: those of the ids that pass it); a bad condition deletes "
                                   "nothing")
    p.add_argument("--missing-ok", action="store_true", help="delete the known ids when some are not in the index")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    p = command("compact", cmd_compact, "rewrite shards without their deleted rows, as a new generation")
    p.add_argument("index", help="index folder")
    p.add_argument("--min-dead", type=float, default=0.2, help="rewrite shards with at least this share deleted")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    command("verify", cmd_verify, "check every file of an index against its checksums").add_argument(
        "index", help="index folder")
    p = command("plan-size", cmd_plan_size, "RAM, GPU memory and disk an index of N vectors needs")
    p.add_argument("--n", type=positive_int, required=True, help="vectors in the corpus")
    p.add_argument("--full-dim", type=positive_int, required=True, help="dims of the input vectors")
    p.add_argument("--index-dim", type=positive_int, default=256, help="dims of the short vectors")
    p.add_argument("--pq-bytes", type=positive_int, default=32, help="PQ code bytes per vector")
    p.add_argument("--fast-scan", action=argparse.BooleanOptionalAction, help=FAST_SCAN_HELP)
    p.add_argument("--nlist", type=positive_int, help="IVF lists (default: about 4 sqrt(N), at most 8192)")
    p.add_argument("--shard-size", type=positive_int, default=1_000_000, help="max vectors per shard")
    p.add_argument("--batch-rows", type=positive_int, default=16384, help="rows read and encoded per build batch")
    p.add_argument("--train-size", type=positive_int, help="training sample size (default: what the build takes "
                                                          "for this nlist)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.add_argument("--memory-budget", metavar="SIZE", type=memory_budget,
                   help="also say which stores fit in RAM under this budget")
    p = command("demo", cmd_demo, "index the stdlib docs with all-MiniLM-L6-v2 and search them")
    p.add_argument("--out", default="matryoshka-demo-index", help="index folder (reused when it holds the index)")
    p.add_argument("--limit", type=int, help="index at most this many passages")
    p.add_argument("--reranker", default=DEFAULT_RERANKER, help="cross-encoder name or path for the last stage")
    p.add_argument("--no-rerank", action="store_true", help="skip the cross-encoder stage")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    plugins = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
    for name, ep in sorted(plugins.items()):
        sub.add_parser(name, help=plugin_summary(ep), formatter_class=HelpFormatter)
    return parser, plugins


def plugin_summary(ep) -> str:
    """A plugin command's one-line help: the first line of its module's docstring, read without importing it
    (`matryoshka --help` stays fast); else a pointer to its own --help."""
    import ast
    from importlib.util import find_spec
    try:
        spec = find_spec(ep.value.split(":")[0])
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read()))
    except (ImportError, AttributeError, TypeError, ValueError, OSError, SyntaxError):
        doc = None
    return doc.splitlines()[0].rstrip(".") if doc else f"see matryoshka {ep.name} --help"


def main(argv: list[str] | None = None) -> int:
    parser, plugins = _parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] and argv[0] in plugins:  # a plugin command parses its own arguments
            code = plugins[argv[0]].load()(argv[1:])
        else:
            a = parser.parse_args(argv)
            a.func(a)
            code = 0
        sys.stdout.flush()  # a reader that went away shows up here, inside the try
        return code
    except MatryoshkaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly. Point stdout at devnull so the interpreter's
        # last flush does not fail again (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
