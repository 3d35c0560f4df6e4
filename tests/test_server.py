"""The HTTP server (`matryoshka serve`), tested as users run it: a real uvicorn process on a free port, a real HTTP
client. One server serves the module; the kill-and-restart test starts its own."""
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from conftest import Server  # noqa: E402
from matryoshka import indexing, retrieval  # noqa: E402

N, DIM = 2000, 32
TOKEN = "s3cret-token"
MAX_BATCH, MAX_BODY = 64, 200_000
LANGS = np.array(["en", "de", "fr"])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    attrs = {"lang": LANGS[rng.integers(0, 3, N)], "year": rng.integers(2000, 2025, N)}
    queries = (x[:20] + 0.3 * rng.standard_normal((20, DIM))).astype(np.float32)
    return x, attrs, queries


@pytest.fixture(scope="module")
def index_path(tmp_path_factory, data):
    x, attrs, _ = data
    out = tmp_path_factory.mktemp("serve") / "index"
    indexing.build(out, x, ids=[f"d{i}" for i in range(N)], texts=[f"text of document {i}" for i in range(N)],
                   attributes=attrs, index_dim=16, pq_bytes=8, quiet=True, tune=False, select=False)
    return out


@pytest.fixture(scope="module")
def server(index_path):
    s = Server(index_path, index_path.parent / "server.log", "--token", TOKEN, "--max-batch", str(MAX_BATCH),
               "--max-body-bytes", str(MAX_BODY), "--reload-interval", "0.1")
    yield s
    s.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def in_process(index_path, generation: int, queries, **options):
    """The same search in this process, on the generation the server answered from."""
    with retrieval.open_index(index_path) as index:
        assert index.generation == generation
        return index.search_batch(queries, **options)


def assert_same(served: list[list[dict]], expected) -> None:
    assert len(served) == len(expected)
    for i, hits in enumerate(served):
        want = expected.hits(i)
        assert [h["id"] for h in hits] == [h.id for h in want]
        assert [h["score"] for h in hits] == [h.score for h in want]  # exact: JSON floats round-trip
        assert [h["scores"] for h in hits] == [h.scores for h in want]
        assert [h["text"] for h in hits] == [h.text for h in want]


def top_ids(client, vector, **options) -> list:
    return [h["id"] for h in ok(client.post("/search", json={"vector": list(map(float, vector)), **options}))["hits"]]


def test_health_is_open_and_says_generation_and_count_with_the_token(server, client):
    assert ok(httpx.get(f"{server.url}/health")) == {"status": "ok"}  # up, and nothing more without the token
    body = ok(client.get("/health"))
    assert body["status"] == "ok" and body["count"] >= N and body["generation"] >= 1 and "reload_error" in body


def test_openapi_schema_lists_the_endpoints_and_the_token(server):
    schema = ok(httpx.get(f"{server.url}/openapi.json"))
    assert {"/search", "/explain", "/add", "/upsert", "/delete", "/info", "/health"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert "vectors" in schema["components"]["schemas"]["SearchRequest"]["properties"]


def test_every_endpoint_but_health_wants_the_token(server):
    for method, path, body in [("POST", "/search", {"vector": [0.0] * DIM}), ("GET", "/info", None),
                               ("POST", "/add", {"documents": []}), ("POST", "/delete", {"ids": ["d1"]})]:
        r = httpx.request(method, f"{server.url}{path}", json=body)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in r.json()["detail"]
    r = httpx.post(f"{server.url}/search", json={"vector": [0.0] * DIM}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "wrong" in r.json()["detail"]


def test_vector_search_single_and_batch_equal_the_in_process_search(client, index_path, data):
    _, _, queries = data
    batch = ok(client.post("/search", json={"vectors": queries.tolist(), "k": 10}))
    assert_same(batch["results"], in_process(index_path, batch["generation"], queries, k=10))
    assert batch["hits"] is None and set(batch["timings_ms"]) >= {"first_pass", "total"}
    single = ok(client.post("/search", json={"vector": queries[3].tolist(), "k": 10}))
    assert single["results"] is None
    assert_same([single["hits"]], in_process(index_path, single["generation"], queries[3:4], k=10))
    # one query alone and in a batch: the same hits; scores to float32 rounding (BLAS may sum in another order)
    alone, batched = single["hits"], batch["results"][3]
    assert [h["id"] for h in alone] == [h["id"] for h in batched]
    np.testing.assert_allclose([list(h["scores"].values()) for h in alone],
                               [list(h["scores"].values()) for h in batched], rtol=1e-5)


@pytest.mark.parametrize("options", [{"k": 3}, {"k": 1, "nprobe": 2}, {"int8": False}, {"full": False},
                                     {"int8": False, "full": False, "k": 5}, {"nprobe": 4, "k1": 40, "k2": 20}])
def test_depths_and_stage_switches_equal_the_in_process_search(client, index_path, data, options):
    _, _, queries = data
    body = ok(client.post("/search", json={"vectors": queries[:8].tolist(), **options}))
    expected = in_process(index_path, body["generation"], queries[:8], **options)
    assert_same(body["results"], expected)
    assert all(len(hits) == options.get("k", 10) for hits in body["results"])
    stages = set(body["results"][0][0]["scores"])
    assert ("int8" in stages) == options.get("int8", True) and ("full" in stages) == options.get("full", True)


def test_where_filters_and_equals_the_in_process_search(client, index_path, data):
    _, attrs, queries = data
    where = "lang = 'de' AND year >= 2015"
    body = ok(client.post("/search", json={"vectors": queries[:5].tolist(), "k": 10, "where": where}))
    assert_same(body["results"], in_process(index_path, body["generation"], queries[:5], k=10, where=where))
    for hits in body["results"]:
        rows = [int(h["id"][1:]) for h in hits]
        assert len(rows) == 10 and all(attrs["lang"][r] == "de" and attrs["year"][r] >= 2015 for r in rows)


def test_explain_and_info(client, index_path):
    body = ok(client.post("/explain", json={"vector": [1.0] * DIM, "k": 5, "nprobe": 3}))
    assert body["plan"]["params"]["nprobe"] == 3 and body["plan"]["steps"][0]["name"] == "first_pass"
    assert "nprobe 3: as asked" in body["text"]
    info = ok(client.get("/info"))
    assert info["full_dim"] == DIM and info["attributes"] == {"lang": "string", "year": "int64"}


def test_add_upsert_delete_are_seen_by_the_next_search(client, data):
    rng = np.random.default_rng(11)
    v, w = rng.standard_normal((2, DIM)).astype(np.float32)
    doc = {"id": "new-0", "vector": v.tolist(), "text": "a new one", "attributes": {"lang": "en", "year": 2024}}
    before = ok(client.get("/health"))
    added = ok(client.post("/add", json={"documents": [doc]}))
    assert added["op"] == "add" and added["added"] == 1 and added["generation"] == before["generation"] + 1
    assert "fingerprint" not in added
    assert top_ids(client, v, k=3)[0] == "new-0"
    refused = client.post("/add", json={"documents": [{**doc, "vector": w.tolist()}]})
    assert refused.status_code == 400 and "already in the index" in refused.json()["detail"]
    assert ok(client.post("/upsert", json={"documents": [{**doc, "vector": w.tolist()}]}))["replaced"] == 1
    assert top_ids(client, w, k=3)[0] == "new-0" and "new-0" not in top_ids(client, v, k=3)
    assert ok(client.post("/delete", json={"ids": ["new-0", "never-there"]}))["deleted"] == 1
    assert "new-0" not in top_ids(client, w, k=10)
    assert ok(client.get("/health"))["count"] == before["count"]
    missing = client.post("/delete", json={"ids": ["never-there"], "missing_ok": False})
    assert missing.status_code == 400 and "not in the index" in missing.json()["detail"]


def test_documents_may_leave_attributes_out_or_bring_new_ones(client):
    v, w = np.random.default_rng(15).standard_normal((2, DIM)).astype(np.float32)
    ok(client.post("/add", json={"documents": [{"id": "bare-0", "vector": v.tolist(), "text": "no attributes"}]}))
    assert top_ids(client, v, k=1, where="year IS NULL AND lang IS NULL") == ["bare-0"]
    ok(client.post("/add", json={"documents": [{"id": "shelf-0", "vector": w.tolist(), "text": "t",
                                                "attributes": {"shelf": "B2", "year": 1999}}]}))
    assert top_ids(client, w, k=5, where="shelf = 'B2'") == ["shelf-0"]
    assert ok(client.post("/delete", json={"ids": ["bare-0", "shelf-0"]}))["deleted"] == 2


def test_a_change_while_another_process_holds_the_index_lock_is_a_409(client, index_path):
    from matryoshka.indexing.folder import BuildLock
    lock = BuildLock(index_path)  # as `matryoshka add` or `compact` in another process holds it
    try:
        r = client.post("/delete", json={"ids": ["d1"]})
    finally:
        lock.release()
    assert r.status_code == 409 and r.json()["error"] == "BuildRefused" and "wait for it" in r.json()["detail"]


def test_a_change_by_another_process_is_served_without_a_restart(client, index_path):
    v = np.random.default_rng(12).standard_normal(DIM).astype(np.float32)
    record = indexing.add(index_path, v[None], ids=["ext-0"], texts=["external"],
                          attributes={"lang": ["en"], "year": [2001]}, quiet=True)
    deadline = time.monotonic() + 10
    while top_ids(client, v, k=1) != ["ext-0"]:
        assert time.monotonic() < deadline, "the server never served the other process's add"
        time.sleep(0.05)
    assert ok(client.get("/health"))["generation"] == record["generation"]


@pytest.mark.parametrize("body, status, says", [
    ({"vector": [1.0] * (DIM - 1)}, 400, f"{DIM - 1} dims but the index expects {DIM}"),
    ({"vectors": [[1.0] * DIM, [1.0] * 3]}, 400, "vector 1 has 3 numbers"),
    ({"vector": [0.0] * DIM}, 400, "zero vector"),
    ({"vector": [1.0] * DIM, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"vector": [1.0] * DIM, "k": 5000}, 422, "at most 1000 (--max-k)"),
    ({"vector": [1.0] * DIM, "kk": 5}, 422, "unknown field 'kk'"),
    ({"vector": [1.0] * DIM, "int8": "no"}, 422, "int8: Input should be a valid boolean"),
    ({"vector": [1.0] * DIM, "query": "both"}, 422, "give exactly one of query, vector, queries, vectors"),
    ({"k": 3}, 422, "give exactly one of"),
    ({"query": "what is a vector"}, 400, "without a model, so it cannot encode text queries"),
    ({"vector": [1.0] * DIM, "where": "colour = 'red'"}, 400, "no such attribute"),
    ({"vector": [1.0] * DIM, "rerank": True}, 400, "no cross-encoder is configured"),
    ({"vectors": [[1.0] * DIM] * (MAX_BATCH + 1)}, 413, f"at most {MAX_BATCH} (--max-batch)"),
    ({"vectors": [[1.0] * DIM] * 2000}, 413, f"at most {MAX_BODY:,} (--max-body-bytes)"),
])
def test_bad_requests_are_refused_with_a_message_naming_the_problem(client, body, status, says):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]


def test_bad_bodies_and_changes_are_refused_clearly(client):
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    chunks = (b'{"vectors": [' + b",".join([b"[0.5]"] * 10_000) + b"]}" for _ in range(30))  # no Content-Length
    r = client.post("/search", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["detail"]
    r = client.post("/add", json={"documents": [{"id": "x", "vector": [1.0] * DIM}, {"vector": [1.0] * DIM}]})
    assert r.status_code == 422 and "documents[1] has no id" in r.json()["detail"]
    r = client.post("/add", json={"documents": [{"id": "x", "vector": [1.0] * 5, "text": "t",
                                                 "attributes": {"lang": "en"}}]})
    assert r.status_code == 400 and f"5-dim vectors but the index holds {DIM}-dim" in r.json()["detail"]
    r = client.post("/add", json={"documents": [{"id": "x", "text": "t"}]})
    assert r.status_code == 400 and "without a model" in r.json()["detail"]
    r = client.post("/add", json={"documents": [{"id": f"m{i}", "vector": [1.0] * DIM, "text": "t",
                                                 "attributes": {"lang": ["en", 3][i]}} for i in range(2)]})
    assert r.status_code == 400 and "attribute 'lang'" in r.json()["detail"] and "type string" in r.json()["detail"]
    r = client.post("/add", json={"documents": [{"id": "m0", "vector": [1.0] * DIM, "text": "t",
                                                 "attributes": {"year": 2020.5}}]})
    assert r.status_code == 400 and "attribute 'year'" in r.json()["detail"] and "int64" in r.json()["detail"]
    assert client.get("/nothing-here").status_code == 404


def test_concurrent_searches_while_documents_are_added_all_succeed(client, server, index_path, data):
    _, _, queries = data
    stop, statuses = threading.Event(), []

    def searcher(i: int) -> int:
        done = 0
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
            while not stop.is_set() or done < 5:
                r = c.post("/search", json={"vectors": queries[i:i + 2].tolist(), "k": 10})
                statuses.append(r.status_code)
                assert r.status_code == 200 and all(len(h) == 10 for h in r.json()["results"]), r.text
                done += 1
        return done

    rng = np.random.default_rng(13)
    with ThreadPoolExecutor(8) as pool:
        running = [pool.submit(searcher, i) for i in range(8)]
        time.sleep(0.2)
        for n in range(3):
            v = rng.standard_normal((5, DIM)).astype(np.float32)
            ids, texts, attrs = [f"c{n}-{j}" for j in range(5)], ["t"] * 5, {"lang": ["en"] * 5, "year": [2020] * 5}
            if n == 1:  # another process, meanwhile
                indexing.add(index_path, v, ids=ids, texts=texts, attributes=attrs, quiet=True)
            else:
                docs = [{"id": i, "vector": r.tolist(), "text": "t", "attributes": {"lang": "en", "year": 2020}}
                        for i, r in zip(ids, v)]
                ok(client.post("/add", json={"documents": docs}))
            time.sleep(0.15)
        stop.set()
        done = [f.result() for f in running]
    assert sum(done) == len(statuses) and set(statuses) == {200}
    assert ok(client.get("/health"))["count"] >= N + 15


def test_a_killed_server_restarted_on_the_index_serves_identical_results(index_path, data, tmp_path):
    _, _, queries = data
    body = {"vectors": queries.tolist(), "k": 10, "where": "year < 2020"}
    first = Server(index_path, tmp_path / "first.log")
    try:
        before = ok(httpx.post(f"{first.url}/search", json=body, timeout=30))
    finally:
        first.stop(signal.SIGKILL)
    assert first.proc.returncode == -signal.SIGKILL
    second = Server(index_path, tmp_path / "second.log")
    try:
        after = ok(httpx.post(f"{second.url}/search", json=body, timeout=30))
    finally:
        second.stop()
    assert second.proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Traceback" not in (tmp_path / "second.log").read_text()
    assert before["generation"] == after["generation"] and before["results"] == after["results"]


def test_workers_share_the_index_and_see_each_others_changes(index_path, tmp_path):
    served = Server(index_path, tmp_path / "workers.log", "--workers", "2", "--reload-interval", "0.1")
    try:
        url = served.url
        v = np.random.default_rng(14).standard_normal(DIM).astype(np.float32)
        doc = {"id": "w-0", "vector": v.tolist(), "text": "t", "attributes": {"lang": "en", "year": 2000}}
        generation = ok(httpx.post(f"{url}/add", json={"documents": [doc]}))["generation"]
        time.sleep(0.3)
        for _ in range(10):  # a new connection each: either worker answers
            body = ok(httpx.post(f"{url}/search", json={"vector": v.tolist(), "k": 1}))
            assert body["generation"] == generation and body["hits"][0]["id"] == "w-0"
    finally:
        served.stop()
    assert "Traceback" not in (tmp_path / "workers.log").read_text()


def test_the_command_line(tmp_path, capsys):
    from matryoshka.integrations.server.cli import main
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "--workers" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([str(tmp_path), "--workers", "0"])
    assert done.value.code == 2 and "at least 1" in capsys.readouterr().err
    # through the `matryoshka` command's plugin group, as a user runs it
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "serve", str(tmp_path / "nothing")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "error:" in p.stderr and "nothing" in p.stderr


@pytest.mark.slow
def test_text_queries_text_adds_and_the_cross_encoder_over_http(tmp_path, tiny_cross_encoder):
    from matryoshka.core.encoder import DEFAULT_MODEL
    from matryoshka.indexing.stdlib_docs import stdlib_passages
    ids, texts = stdlib_passages(limit=120)
    path = indexing.build(tmp_path / "text", texts, ids=ids, model=DEFAULT_MODEL, quiet=True, tune=False,
                          select=False)
    served = Server(path, tmp_path / "text.log", "--reranker", tiny_cross_encoder)
    try:
        queries = ["compress a file with gzip", "parse command line arguments"]
        body = ok(httpx.post(f"{served.url}/search", json={"queries": queries, "k": 5}, timeout=60))
        with retrieval.open_index(path, reranker=tiny_cross_encoder) as index:
            assert_same(body["results"], index.search_batch(queries, k=5))
            assert "rerank" in body["results"][0][0]["scores"]
            plain = ok(httpx.post(f"{served.url}/search", json={"query": queries[0], "k": 5, "rerank": False}))
            assert_same([plain["hits"]], index.search_batch(queries[:1], k=5, rerank=False))
        added = ok(httpx.post(f"{served.url}/add", json={"documents": [
            {"id": "mine", "text": "how to brew a cup of green tea at the right temperature"}]}, timeout=60))
        assert added["added"] == 1
        hits = ok(httpx.post(f"{served.url}/search", json={"query": "brewing green tea", "k": 1, "rerank": False}))
        assert hits["hits"][0]["id"] == "mine" and hits["hits"][0]["text"].startswith("how to brew")
    finally:
        served.stop()


def test_a_manifest_spelling_an_empty_field_is_the_same_generation(small_index):
    """An older engine wrote empty optional fields out; the server must not reload on every look for that."""
    import json as _json

    from matryoshka.integrations.server.service import _another
    from matryoshka.storage.manifest import Manifest
    raw = _json.loads((small_index / "manifest.json").read_text())
    held = Manifest.from_dict(raw)
    assert not _another({**raw, "retained": [], "operating_points": {}}, held)
    assert _another({**raw, "generation": raw.get("generation", 1) + 1}, held)
    assert _another({"not": "a manifest"}, held)
