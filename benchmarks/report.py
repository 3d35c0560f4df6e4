"""Writing a run's results: report.json (machine-readable), report.md and PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np

from .resources import PEAK_RSS_NOTE, process_peak_rss

REQUIRED = ("system", "n", "dim", "recall_at_10", "qps", "p50_ms", "p99_ms", "ram_bytes_per_vector",
            "disk_bytes_per_vector")


def _clean(x):
    """JSON-safe: numpy scalars to Python, NaN/inf to null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write(out: str | Path, runs: list[dict], command: str = "") -> dict:
    """Write report.json, report.md and plots into `out`; returns the JSON document."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                           "cpus": __import__("os").cpu_count()},
           "peak_rss_note": PEAK_RSS_NOTE, "process_peak_rss_bytes": process_peak_rss(),
           "rows": [r for run in runs for r in run["rows"]],
           "frontier": [p for run in runs for p in run["frontier"]],
           "runs": [{k: v for k, v in run.items() if k not in ("rows", "frontier")} for run in runs]}
    doc = _clean(doc)
    (out / "report.json").write_text(json.dumps(doc, indent=1))
    plots = []
    for run in runs:
        plots += _plots(out, run)
    (out / "report.md").write_text(_markdown(doc, runs, plots))
    return doc


def _f(v, fmt="{:.3f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v) if isinstance(v, (int, float)) else str(v)


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]


def _markdown(doc: dict, runs: list[dict], plots: list[str]) -> str:
    md = ["# matryoshka-retrieval benchmark", "", f"Command: `{doc['command']}`", "",
          f"Machine: {doc['machine']['platform']}, {doc['machine']['cpus']} CPUs, Python {doc['machine']['python']}.",
          "Timings on a small shared machine drift: a ratio measured in one run is a fact, an absolute time a hint. "
          "QPS is the best of 3 batches of every query, timed after an untimed one.",
          "", f"Peak RSS: {doc['peak_rss_note']} Whole process peak: {doc['process_peak_rss_bytes'] / 2**20:.0f} MiB.",
          ""]
    for run in runs:
        md += [f"## {run['dataset']}: {run['n']:,} vectors x {run['dim']} dims, {run['queries']} queries, "
               f"{run['threads']} threads", "", f"Data: `{json.dumps(_clean(run['meta']))}`. "
               f"Ground truth: exact inner-product top-100 on the full vectors ({run['ground_truth_seconds']:.1f} s). "
               f"Engine operating point used for ratios: {run['reference']}.", ""]
        if run["targets"]:
            md += ["### Targets", ""]
            md += _table(["target", "goal", "measured", "met", "short by / note"],
                         [[t["target"], _f(t.get("goal")), _f(t.get("measured")),
                           {True: "yes", False: "**no**", None: "n/a"}[t["met"]],
                           " ".join(s for s in (_f(t["shortfall"]) if t.get("shortfall") else "",
                                                t.get("note", "")) if s)]
                          for t in run["targets"]]) + [""]
        md += ["### Systems", "", "recall@10 is against the exact full-dim top-10; stage columns give recall@10 "
               "after the first pass / int8 re-scoring, and in brackets the recall of the true top-10 within the "
               "stage's own depth (k1 / k2). RAM is resident bytes per vector (codes, ids, shared centroids); "
               "mmap is the memory-mapped stores; disk is every file.", ""]
        labelled = run["labelled"]
        head = ["system", "setting", "recall@10", "first pass (@k1)", "int8 (@k2)"] + \
               (["NDCG@10", "recall@100 (labels)"] if labelled else []) + \
               ["QPS", "QPS / engine", "p50 ms", "p99 ms", "RAM B/vec", "mmap B/vec", "disk B/vec",
                "build vec/s", "peak RSS MiB"]
        body = []
        for r in run["rows"]:
            if "skipped" in r:
                body.append([r["system"], "skipped: " + r["skipped"]] + [""] * (len(head) - 2))
                continue
            st = r.get("stages", {})

            def stage(s):
                return f"{_f(st[s]['recall_at_10'])} ({_f(st[s]['recall_at_depth'])})" if s in st else ""
            body.append([r["system"], r["setting"], _f(r["recall_at_10"]), stage("first_pass"), stage("int8")] +
                        ([_f(r.get("ndcg_at_10")), _f(r.get("recall_at_100"))] if labelled else []) +
                        [_f(r["qps"], "{:,.0f}"), _f(r.get("qps_ratio_to_engine"), "{:.2f}"), _f(r["p50_ms"], "{:.2f}"),
                         _f(r["p99_ms"], "{:.2f}"), _f(r["ram_bytes_per_vector"], "{:,.1f}"),
                         _f(r.get("mmap_bytes_per_vector"), "{:,.0f}"), _f(r["disk_bytes_per_vector"], "{:,.0f}"),
                         _f(r.get("build_vectors_per_second"), "{:,.0f}"),
                         _f((r.get("peak_rss_bytes") or math.nan) / 2**20, "{:,.0f}")])
        md += _table(head, body) + [""]
        md += _choices(run["rows"])
        staged = [r for r in run["rows"] if r.get("stages") and "skipped" not in r]
        if staged:
            md += ["### Cost of each stage", "", "Per query in a batch: what each stage reads (the codes of "
                   "nprobe lists, then k1 int8 rows, then k2 full rows), its time, and its time per candidate.", ""]
            names = ("first_pass", "int8", "full")
            md += _table(["system", "setting"] + [f"{n} {c}" for n in names for c in ("candidates", "ms", "ns/cand")],
                         [[r["system"], r["setting"]] +
                          [v for n in names for v in (_f(r["stages"][n].get("candidates_per_query"), "{:,.0f}"),
                                                      _f(r["stages"][n].get("ms_per_query_in_batch"), "{:.3f}"),
                                                      _f(r["stages"][n].get("ns_per_candidate"), "{:.1f}"))]
                          for r in staged]) + [""]
        if run["seed_question"]:
            md += ["### Prefix or projection?", "", "recall@10 of exhaustive float32 search in the shortened "
                   "space, projection (PCA) minus prefix. On data not trained Matryoshka-style a projection should "
                   "win clearly; on Matryoshka-like data the two should be close.", ""]
            md += _table(["index dim", "prefix", "projection", "projection - prefix"],
                         [[str(s["index_dim"]), _f(s["prefix_recall_at_10"]), _f(s["projection_recall_at_10"]),
                           _f(s["projection_minus_prefix"], "{:+.3f}")] for s in run["seed_question"]]) + [""]
        if run["frontier"]:
            s = run["smallest_surviving"]
            md += ["### Compression frontier", "",
                   "Smallest setting whose recall@10 after re-scoring its top-100 with the full vectors is >= 0.98: "
                   + (f"**{s['shortening']} {s['index_dim']} dims {s['code']}, {s['bytes_per_vector']} B/vector** "
                      f"(alone {s['recall_at_10']:.3f})" if s else "none in the sweep") + ".", ""]
            md += _table(["shortening", "dims", "code", "B/vec", "recall@10", "recall@10 in top-100",
                          "recall@10 rescored"] + (["NDCG@10", "NDCG@10 rescored"] if labelled else []),
                         [[p["shortening"], str(p["index_dim"]), p["code"], str(p["bytes_per_vector"]),
                           _f(p["recall_at_10"]), _f(p["recall_at_10_in_top_100"]), _f(p["recall_at_10_rescored"])] +
                          ([_f(p.get("ndcg_at_10")), _f(p.get("ndcg_at_10_rescored"))] if labelled else [])
                          for p in sorted(run["frontier"], key=lambda p: (p["bytes_per_vector"], p["shortening"]))])
            md += [""]
        md += [f"![{p}]({p})" for p in plots if p.startswith(_slug(run["dataset"]))] + [""]
    return "\n".join(md)


def _choices(rows: list[dict]) -> list[str]:
    """What each engine build measured on its sample and chose (indexing.selection), one table per build."""
    seen, md = set(), []
    for r in rows:
        sel = r.get("plan_selection")
        if not sel or r["system"] in seen:
            continue
        seen.add(r["system"])
        md += [f"### What {r['system']} chose: {r['factory']}", "",
               f"Measured on {sel['sample_rows']:,} sample vectors, {sel['queries']} held-out sample queries, "
               f"{sel['reason']}. Cost is modelled per query at the full size (counted work priced by the machine's "
               f"calibration), to reach coverage "
               f"{sel['target_coverage']} of the true top-10 (int8 re-scoring at {sel['int8_ns_per_candidate']:.0f} "
               "ns per candidate included).", ""]
        md += _table(["partition and code", "rotation", "nprobe", "depth", "coverage", "modelled ms/query"],
                     [[f"IVF{c['nlist']},{c['code']}", c["rotation"], _f(c.get("nprobe"), "{}"),
                       _f(c.get("depth"), "{}"), _f(c["coverage"]),
                       _f(c["ms_per_query"] if c["reached"] else None)]
                      for c in sel["candidates"]]) + [""]
    return md


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _plots(out: Path, run: dict) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    slug = _slug(run["dataset"])
    rows = [r for r in run["rows"] if "skipped" not in r]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system in dict.fromkeys(r["system"] for r in rows):
            rs = [r for r in rows if r["system"] == system]
            ax.plot([r["qps"] for r in rs], [r["recall_at_10"] for r in rs], "o-", label=system)
        ax.set_xscale("log")
        ax.set_xlabel("queries per second (batch, log)")
        ax.set_ylabel("recall@10 vs exact full-dim")
        names.append(_save(fig, ax, f"{run['dataset']}: {run['n']:,} x {run['dim']}, {run['threads']} threads",
                           out, f"{slug}-systems.png"))
    metrics = ["recall_at_10", "recall_at_10_rescored"] + (["ndcg_at_10"] if run["labelled"] else [])
    for metric in metrics if run["frontier"] else []:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        pts = run["frontier"]
        for s in ("prefix", "pca"):
            for fam in ("float32", "int8", "PQ"):
                ps = sorted((p for p in pts if p["shortening"] == s and p["code"].startswith(fam)
                             and metric in p), key=lambda p: p["bytes_per_vector"])
                if ps:
                    ax.plot([p["bytes_per_vector"] for p in ps], [p[metric] for p in ps],
                            "o-" if s == "pca" else "s--", label=f"{'projection' if s == 'pca' else s} {fam}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per vector (log2)")
        ax.set_ylabel(metric.replace("_", " "))
        names.append(_save(fig, ax, f"{run['dataset']}: compression frontier ({metric})", out,
                           f"{slug}-frontier-{metric}.png"))
    return names


def _save(fig, ax, title: str, out, name: str) -> str:
    """Title, grid and legend, then write the PNG and close the figure."""
    import matplotlib.pyplot as plt
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name
