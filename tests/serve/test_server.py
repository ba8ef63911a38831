"""`llm4rec serve` as a real subprocess on a free 127.0.0.1 port, called over HTTP with httpx."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from llm4rec.serve.catalog import Catalog
from llm4rec.serve.recommend import main as recommend_main
from tests.serve.conftest import Server


def test_scores_match_recommend(server, serve_adapter, catalog_dir, capsys):
    cat = Catalog.load(catalog_dir)
    user = str(cat.timeline.users[5])
    cands = [str(i) for i in range(1, 21)]
    r = httpx.post(server.url + "/recommend", json={"user": user, "candidates": cands, "k": 5}, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    argv = ["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir), "--user", user]
    code = recommend_main([*argv, "--candidates", ",".join(cands), "--k", "5", "--json"])
    assert code == 0
    want = json.loads(capsys.readouterr().out)
    assert [x["item_id"] for x in got["recommendations"]] == [x["item_id"] for x in want["recommendations"]]
    for a, b in zip(got["recommendations"], want["recommendations"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5) and a["title"] == b["title"]
    assert got["history"] == want["history"]
    # /score gives the same numbers for the same pairs, in the order asked
    items = [x["item_id"] for x in got["recommendations"]][::-1]
    s = httpx.post(server.url + "/score", json={"user": user, "items": items}, timeout=60).json()
    assert [x["item_id"] for x in s["scores"]] == items
    by_id = {x["item_id"]: x["score"] for x in got["recommendations"]}
    assert all(x["score"] == pytest.approx(by_id[x["item_id"]], abs=1e-5) for x in s["scores"])


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    good = {"history": ["1", {"item": "2", "liked": False}], "candidates": ["3", "4", "5"], "k": 2}
    cases = [
        ("/recommend", b"{not json", 400, "body"),
        ("/recommend", b"[1, 2]", 400, "body"),
        ("/recommend", json.dumps({**good, "k": "2"}).encode(), 422, "k"),
        ("/recommend", json.dumps({**good, "k": 0}).encode(), 422, "k"),
        ("/recommend", json.dumps({**good, "keep_seen": "yes"}).encode(), 422, "keep_seen"),
        ("/recommend", json.dumps({**good, "candidats": []}).encode(), 422, "candidats"),
        ("/recommend", json.dumps({**good, "history": ["1", "nope"]}).encode(), 422, "history[1]"),
        (
            "/recommend",
            json.dumps({**good, "history": [{"item": "1", "liked": 1}]}).encode(),
            422,
            "history[0].liked",
        ),
        ("/recommend", json.dumps({**good, "history": []}).encode(), 422, "history"),
        ("/recommend", json.dumps({**good, "candidates": ["3", "zz"]}).encode(), 422, "candidates[1]"),
        ("/recommend", json.dumps({**good, "candidates": ["3", "4", "3"]}).encode(), 422, "candidates[2]"),
        ("/recommend", json.dumps({"user": "nobody"}).encode(), 422, "user"),
        ("/recommend", json.dumps({**good, "user": "1"}).encode(), 422, "user/history"),
        ("/recommend", json.dumps({**good, "method": "listwise"}).encode(), 422, "method"),
        ("/recommend", json.dumps({**good, "candidates": None}).encode(), 422, "candidates"),  # 40 > limit 30
        (
            "/recommend",
            json.dumps({**good, "candidates": [str(i) for i in range(31)]}).encode(),
            422,
            "candidates",
        ),
        ("/recommend", json.dumps({**good, "pad": "x" * 5000}).encode(), 413, "body"),
        ("/score", json.dumps({"history": ["1"]}).encode(), 422, "items"),
        ("/score", json.dumps({"history": ["1"], "items": "3"}).encode(), 422, "items"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for path, body, status, field in cases:
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (body[:80], r.text)
            err = r.json()
            assert err["field"] == field and "\n" not in err["error"], err
            ok = client.post("/recommend", json=good)
            assert ok.status_code == 200 and len(ok.json()["recommendations"]) == 2
        assert client.get("/nowhere").status_code == 404
        assert client.get("/healthz").json() == {"status": "ok"}


def test_concurrent_clients_are_batched_and_correct(server, catalog_dir):
    cat = Catalog.load(catalog_dir)
    users = [str(u) for u in cat.timeline.users.to_list()[:16]]
    items = [str(i) for i in range(1, 13)]
    with httpx.Client(base_url=server.url, timeout=120) as client:
        alone = {u: client.post("/score", json={"user": u, "items": items}).json()["scores"] for u in users}
        before = client.get("/metadata").json()["batching"]
    results: dict[str, list] = {}
    gate = threading.Barrier(len(users))

    def call(u: str) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            gate.wait()
            results[u] = c.post("/score", json={"user": u, "items": items}).json()["scores"]

    threads = [threading.Thread(target=call, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for u in users:
        assert [x["item_id"] for x in results[u]] == items
        assert [x["score"] for x in results[u]] == pytest.approx([x["score"] for x in alone[u]], abs=1e-5)
    after = httpx.get(server.url + "/metadata").json()["batching"]
    assert after["jobs"] - before["jobs"] == len(users)
    assert after["batches"] - before["batches"] < len(users)  # some requests shared a forward pass
    assert after["largest_batch_jobs"] > 1


def test_metadata(server, serve_adapter, catalog_dir):
    meta = httpx.get(server.url + "/metadata").json()
    assert meta["family"] == "llama" and meta["template"] and meta["adapter"] == str(serve_adapter)
    assert meta["catalogue"]["hash"] == Catalog.load(catalog_dir).digest
    assert meta["catalogue"]["items"] == 40 and meta["limits"]["max_candidates"] == 30
    assert meta["batching"]["enabled"] is True


def test_no_batching_and_sigterm(serve_adapter, catalog_dir):
    srv = Server(serve_adapter, catalog_dir, "--no-batching")
    try:
        r = httpx.post(srv.url + "/recommend", json={"history": ["1"], "candidates": ["2", "3"]}, timeout=60)
        assert r.status_code == 200 and r.json()["candidates_scored"] == 2
        assert httpx.get(srv.url + "/metadata").json()["batching"]["enabled"] is False
    finally:
        code, err = srv.stop()
    assert code == 0 and "stopped" in err


def test_port_in_use_is_one_line(server, serve_adapter, catalog_dir, capsys):
    from llm4rec.serve.server import main

    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(serve_adapter), "--catalog", str(catalog_dir), "--port", str(server.port)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: --port: cannot bind 127.0.0.1:{server.port}") and len(err.splitlines()) == 1
    )
