#!/usr/bin/python3
"""Payloads and filtered search end to end: a real slimvecd through the
generated Python client. Ingest with payloads, filtered searches against a
brute-force answer (every hit passes; recall), Count, Get with payloads,
SetPayload (patch, replace), upserts (vector and payload replaced, the
search and filters seeing the new ones; refusals change nothing; back after
SIGKILL), every refusal a clear INVALID_ARGUMENT or NOT_FOUND that changes
nothing, and payloads back after SIGKILL.

Usage (ctest runs it): test_payloads.py SLIMVECD_PATH PYTHON_STUBS_DIR
"""

import os
import signal
import sys
import unittest

import numpy as np

SLIMVECD = sys.argv[1] if len(sys.argv) > 1 else "./build/service/slimvecd"
STUBS = sys.argv[2] if len(sys.argv) > 2 else "./build/proto/python"
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from svtest import HealthMonitor, Slimvecd, scaled  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402

DIM, N, T = 16, 3000, scaled(30)
ARGS = ("--max-message", str(8 << 20))  # small, so an oversized answer is cheap to ask for
CLASSES = ["shirt", "coat", "bag", "dress", "sandal", "sneaker", "boot", "trouser", "pullover", "t-shirt"]


def payload(cls, u, tags, price, active):
    p = pb.Payload()
    p.fields["class"].string_value = cls
    p.fields["u"].int_value = u
    p.fields["tags"].strings.values.extend(tags)
    p.fields["price"].double_value = price
    p.fields["active"].bool_value = active
    return p


def match(key, **value):
    return pb.Condition(match=pb.FieldMatch(key=key, **value))


def rng(key, lower=None, upper=None):
    return pb.Condition(range=pb.FieldRange(key=key, lower=lower, upper=upper))


def as_dict(p):
    out = {}
    for k, v in p.fields.items():
        kind = v.WhichOneof("kind")
        out[k] = list(v.strings.values) if kind == "strings" else list(v.ints.values) if kind == "ints" \
            else getattr(v, kind)
    return out


class PayloadTest(unittest.TestCase):
    def setUp(self):
        self.server = Slimvecd(SLIMVECD, STUBS, *ARGS)
        self.stub = self.server.stub
        spec = pb.CollectionSpec(name="p", dimension=DIM, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8,
                                 flush_threshold=1000)
        self.stub.CreateCollection(pb.CreateCollectionRequest(spec=spec), timeout=T)
        r = np.random.default_rng(5)
        self.X = r.standard_normal((N, DIM)).astype(np.float32)
        self.meta = [dict(cls=CLASSES[i % 10], u=int(r.integers(0, 1000)),
                          tags=["t%d" % (i % 3), "all"] if i % 2 else [], price=float(i) / 10, active=i % 4 == 0)
                     for i in range(N)]

        def gen():
            for b in range(0, N, 500):
                yield pb.IngestRequest(
                    collection="p", sequence=b, vectors=self.X[b:b + 500].ravel().tolist(),
                    ids=[str(i) for i in range(b, b + 500)],
                    payloads=[payload(m["cls"], m["u"], m["tags"], m["price"], m["active"])
                              for m in self.meta[b:b + 500]])
        acks = list(self.stub.Ingest(gen(), timeout=T))
        self.assertTrue(all(not a.HasField("error") for a in acks), [a.error for a in acks])

    def tearDown(self):
        self.server.stop()

    def count(self, flt=None):
        return self.stub.Count(pb.CountRequest(collection="p", filter=flt), timeout=T).count

    def exact(self, q, passing, k=10):
        idx = np.array(passing)
        d = ((self.X[idx] - q) ** 2).sum(1)
        return set(idx[np.argsort(d)[:k]].tolist())

    def check_filter(self, flt, passes, min_recall=0.95):
        passing = [i for i in range(N) if passes(self.meta[i])]
        self.assertEqual(self.count(flt), len(passing))
        found = wanted = 0
        for qi in range(30):
            q = self.X[(qi * 97) % N] + 0.1
            res = self.stub.Search(pb.SearchRequest(collection="p", queries=q.tolist(), k=10, search_list=64,
                                                    filter=flt, with_payload=True), timeout=T).results[0]
            self.assertEqual(len(res.hits), min(10, len(passing)))
            for h in res.hits:
                m = self.meta[int(h.id)]
                self.assertTrue(passes(m), "hit %s does not pass" % h.id)
                self.assertEqual(as_dict(h.payload)["class"], m["cls"])
            truth = self.exact(q, passing)
            found += len(truth & {int(h.id) for h in res.hits})
            wanted += len(truth)
        self.assertGreaterEqual(found / wanted, min_recall)
        return len(passing)

    def test_filters_counts_and_restart(self):
        self.assertEqual(self.count(), N)
        # 10%: one class; ~50%: a range; ~1%: a narrow range and a list item;
        # nested: (coat or bag) and not u >= 900; has id; is empty.
        self.check_filter(pb.Filter(must=[match("class", string_value="coat")]), lambda m: m["cls"] == "coat")
        self.check_filter(pb.Filter(must=[rng("u", upper=pb.RangeBound(int_value=500))]), lambda m: m["u"] < 500)
        self.check_filter(pb.Filter(must=[rng("u", lower=pb.RangeBound(double_value=9.5),
                                              upper=pb.RangeBound(int_value=19, inclusive=True)),
                                          match("tags", string_value="all")]),
                          lambda m: 10 <= m["u"] <= 19 and "all" in m["tags"])
        nested = pb.Condition(filter=pb.NestedFilter(
            should=[pb.LeafCondition(match=pb.FieldMatch(key="class", string_value="coat")),
                    pb.LeafCondition(match=pb.FieldMatch(key="class", string_value="bag"))]))
        self.check_filter(pb.Filter(must=[nested], must_not=[rng("u", lower=pb.RangeBound(int_value=900,
                                                                                          inclusive=True))]),
                          lambda m: m["cls"] in ("coat", "bag") and not m["u"] >= 900)
        self.check_filter(pb.Filter(must=[match("active", bool_value=True),
                                          pb.Condition(match_any=pb.FieldMatchAny(key="class",
                                                                                  strings=["boot", "bag"]))]),
                          lambda m: m["active"] and m["cls"] in ("boot", "bag"))
        self.assertEqual(self.count(pb.Filter(must=[pb.Condition(is_empty=pb.IsEmpty(key="tags"))])), N // 2)
        self.assertEqual(self.count(pb.Filter(must=[pb.Condition(has_id=pb.HasId(ids=["3", "7", "nobody"]))])), 2)

        # Get with payloads, SetPayload patch and replace.
        got = self.stub.Get(pb.GetRequest(collection="p", ids=["4", "5"], with_payload=True), timeout=T).vectors
        self.assertEqual(as_dict(got[1].payload), {"class": self.meta[5]["cls"], "u": self.meta[5]["u"],
                                                   "tags": ["t2", "all"], "price": 0.5, "active": False})
        patch = pb.Payload()
        patch.fields["u"].int_value = -1
        patch.fields["note"].string_value = "patched"
        self.stub.SetPayload(pb.SetPayloadRequest(collection="p", id="5", payload=patch, patch=True), timeout=T)
        repl = pb.Payload()
        repl.fields["class"].string_value = "bag"
        self.stub.SetPayload(pb.SetPayloadRequest(collection="p", id="6", payload=repl), timeout=T)
        before = {i: as_dict(v.payload) for i, v in zip(
            ["5", "6"], self.stub.Get(pb.GetRequest(collection="p", ids=["5", "6"], with_payload=True),
                                      timeout=T).vectors)}
        self.assertEqual(before["5"]["u"], -1)
        self.assertEqual(before["5"]["note"], "patched")
        self.assertEqual(before["5"]["class"], self.meta[5]["cls"])
        self.assertEqual(before["6"], {"class": "bag"})
        counts = [self.count(pb.Filter(must=[match("class", string_value=c)])) for c in CLASSES]

        # SIGKILL: everything acknowledged comes back from the log.
        self.server.stop(signal.SIGKILL, keep_dir=True)
        self.server = Slimvecd(SLIMVECD, STUBS, *ARGS, data_dir=self.server.data_dir)
        self.stub = self.server.stub
        self.server.own_dir = True
        after = {i: as_dict(v.payload) for i, v in zip(
            ["5", "6"], self.stub.Get(pb.GetRequest(collection="p", ids=["5", "6"], with_payload=True),
                                      timeout=T).vectors)}
        self.assertEqual(after, before)
        self.assertEqual([self.count(pb.Filter(must=[match("class", string_value=c)])) for c in CLASSES], counts)
        # And from a snapshot.
        self.stub.Snapshot(pb.SnapshotRequest(collection="p"), timeout=T)
        self.server.stop(signal.SIGKILL, keep_dir=True)
        self.server = Slimvecd(SLIMVECD, STUBS, *ARGS, data_dir=self.server.data_dir)
        self.stub = self.server.stub
        self.server.own_dir = True
        self.assertEqual([self.count(pb.Filter(must=[match("class", string_value=c)])) for c in CLASSES], counts)
        self.meta[6]["cls"] = "bag"
        self.check_filter(pb.Filter(must=[match("class", string_value="bag")]), lambda m: m["cls"] == "bag")

    def test_scroll(self):
        def scroll(flt=None, size=0, **kw):
            ids, token, pages = [], "", 0
            while True:
                resp = self.stub.Scroll(pb.ScrollRequest(collection="p", filter=flt, page_size=size, page_token=token,
                                                         **kw), timeout=T)
                ids += [v.id for v in resp.vectors]
                pages += 1
                for v in resp.vectors:
                    if kw.get("with_payload"):
                        self.assertEqual(as_dict(v.payload)["u"], self.meta[int(v.id)]["u"])
                    if kw.get("with_vectors"):
                        self.assertTrue(np.allclose(v.values, self.X[int(v.id)], atol=0.05))
                token = resp.next_page_token
                if not token:
                    return ids, pages
        ids, pages = scroll()
        self.assertEqual(sorted(map(int, ids)), list(range(N)))
        self.assertEqual(pages, 1 + (N - 1) // 100)  # the default page of 100
        flt = pb.Filter(must=[match("class", string_value="bag")])
        ids, pages = scroll(flt, size=77, with_payload=True, with_vectors=True)
        self.assertEqual(sorted(map(int, ids)), [i for i in range(N) if self.meta[i]["cls"] == "bag"])
        self.assertGreater(pages, 3)
        # Refusals: a token this server never gave, a page over --max-get-ids.
        for bad in ("x", "-1", "0", "99999999999999999999999"):
            with self.assertRaises(grpc.RpcError) as ctx:
                self.stub.Scroll(pb.ScrollRequest(collection="p", page_token=bad), timeout=T)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, bad)
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.Scroll(pb.ScrollRequest(collection="p", page_size=100000), timeout=T)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_indexes(self):
        def describe(name="p"):
            return self.stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=T).info

        filters = [
            (pb.Filter(must=[match("class", string_value="coat")]), lambda m: m["cls"] == "coat"),
            (pb.Filter(must=[match("u", int_value=77)]), lambda m: m["u"] == 77),
            (pb.Filter(must=[rng("u", lower=pb.RangeBound(int_value=10), upper=pb.RangeBound(double_value=19.5))]),
             lambda m: 10 < m["u"] <= 19),
            (pb.Filter(must=[rng("price", lower=pb.RangeBound(double_value=3.05, inclusive=True),
                                 upper=pb.RangeBound(int_value=5))]), lambda m: 3.05 <= m["price"] < 5),
            (pb.Filter(must=[match("tags", string_value="t1")],
                       must_not=[match("class", string_value="bag")]),
             lambda m: "t1" in m["tags"] and m["cls"] != "bag"),
        ]
        before = [self.check_filter(f, fn) for f, fn in filters]
        for key in ("class", "u", "price", "tags", "not-yet"):
            self.stub.CreateIndex(pb.CreateIndexRequest(collection="p", key=key), timeout=T)
        self.stub.CreateIndex(pb.CreateIndexRequest(collection="p", key="u"), timeout=T)  # again: a no-op
        # In the collection's key order (the order keys first came).
        self.assertEqual(sorted(describe().indexed_keys), ["class", "not-yet", "price", "tags", "u"])
        self.assertEqual([self.check_filter(f, fn) for f, fn in filters], before)
        # The new key holds nothing: it matches nothing, and takes values later.
        self.assertEqual(self.count(pb.Filter(must=[match("not-yet", int_value=1)])), 0)
        for req, code in ((pb.CreateIndexRequest(collection="p", key=""), grpc.StatusCode.INVALID_ARGUMENT),
                          (pb.CreateIndexRequest(collection="p", key="k" * 65), grpc.StatusCode.INVALID_ARGUMENT),
                          (pb.CreateIndexRequest(collection="nope", key="u"), grpc.StatusCode.NOT_FOUND)):
            with self.assertRaises(grpc.RpcError) as e:
                self.stub.CreateIndex(req, timeout=T)
            self.assertEqual(e.exception.code(), code, e.exception.details())
        # Writes after: patched and deleted vectors leave the indexes right.
        patch = pb.Payload()
        patch.fields["u"].int_value = 77
        for vid in ("5", "6", "7"):
            self.stub.SetPayload(pb.SetPayloadRequest(collection="p", id=vid, payload=patch, patch=True), timeout=T)
            self.meta[int(vid)]["u"] = 77
        self.stub.Delete(pb.DeleteRequest(collection="p", ids=[str(i) for i in range(0, 3000, 7)]), timeout=T)
        for i in range(0, 3000, 7):
            self.meta[i]["cls"] = "deleted"
            self.meta[i]["u"] = -1
            self.meta[i]["tags"] = []
            self.meta[i]["price"] = -1.0
        live = [i for i in range(N) if i % 7]
        for f, fn in filters:
            self.assertEqual(self.count(f), sum(1 for i in live if fn(self.meta[i])))
        # At creation, and after SIGKILL (the log) and a snapshot.
        spec = pb.CollectionSpec(name="q", dimension=DIM, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8,
                                 indexed_keys=["class", "u"])
        self.assertEqual(list(self.stub.CreateCollection(pb.CreateCollectionRequest(spec=spec), timeout=T)
                              .info.indexed_keys), ["class", "u"])
        bad = pb.CollectionSpec(name="r", dimension=DIM, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8,
                                indexed_keys=["ok", ""])
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.CreateCollection(pb.CreateCollectionRequest(spec=bad), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        counts = [self.count(f) for f, _ in filters]
        for restart in ("log", "snapshot"):
            if restart == "snapshot":
                self.stub.Snapshot(pb.SnapshotRequest(collection="p"), timeout=T)
            self.server.stop(signal.SIGKILL, keep_dir=True)
            self.server = Slimvecd(SLIMVECD, STUBS, *ARGS, data_dir=self.server.data_dir)
            self.stub = self.server.stub
            self.server.own_dir = True
            self.assertEqual(sorted(describe().indexed_keys), ["class", "not-yet", "price", "tags", "u"], restart)
            self.assertEqual(list(describe("q").indexed_keys), ["class", "u"], restart)
            self.assertEqual([self.count(f) for f, _ in filters], counts, restart)
        self.assertNotIn("r", [c.spec.name for c in self.stub.ListCollections(
            pb.ListCollectionsRequest(), timeout=T).collections])

        # Past the limits, as a hostile client would: 65 keys at creation;
        # then index after index on new keys until the collection's 1,024
        # keys are reached, health answered throughout.
        many = pb.CollectionSpec(name="m", dimension=DIM, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8,
                                 indexed_keys=["k%d" % i for i in range(65)])
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.CreateCollection(pb.CreateCollectionRequest(spec=many), timeout=T)
        self.assertEqual((e.exception.code(), "65 keys to index" in e.exception.details()),
                         (grpc.StatusCode.INVALID_ARGUMENT, True), e.exception.details())
        spec = pb.CollectionSpec(name="flood", dimension=DIM, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8)
        self.stub.CreateCollection(pb.CreateCollectionRequest(spec=spec), timeout=T)
        mon = HealthMonitor(self.server.addr)
        refused = None
        try:
            for i in range(1100):
                try:
                    self.stub.CreateIndex(pb.CreateIndexRequest(collection="flood", key="f%d" % i), timeout=T)
                except grpc.RpcError as err:
                    refused = (i, err.code(), err.details())
                    break
        finally:
            mon.stop()
        self.assertIsNotNone(refused, "1,100 keys indexed: past the collection's 1,024")
        self.assertEqual(refused[:2], (1024, grpc.StatusCode.INVALID_ARGUMENT), refused)
        self.assertIn("1024 keys", refused[2])
        self.assertEqual(mon.failures, [])
        self.assertEqual(len(describe("flood").indexed_keys), 1024)

    def test_upsert(self):
        def ingest(ids, vecs, payloads=(), upsert=True):
            return list(self.stub.Ingest(iter([pb.IngestRequest(
                collection="p", sequence=1, vectors=vecs.ravel().tolist(), ids=ids, payloads=payloads,
                upsert=upsert)]), timeout=T))[0]

        def get(ids):
            got = self.stub.Get(pb.GetRequest(collection="p", ids=ids, with_payload=True), timeout=T).vectors
            return {v.id: (np.array(v.values, np.float32), as_dict(v.payload)) for v in got}

        def nearest(q, flt=None):
            return self.stub.Search(pb.SearchRequest(collection="p", queries=q.tolist(), k=3, search_list=64,
                                                     filter=flt), timeout=T).results[0].hits

        self.stub.Flush(pb.FlushRequest(collection="p"), timeout=T)
        far = (np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM) % 7) * 10.0 + 50.0
        # Two existing ids (indexed), one new; the payloads replace whole.
        ack = ingest(["10", "11", "fresh"], far, [payload("coat", 7777, [], 1.0, True)] * 3)
        self.assertFalse(ack.HasField("error"), ack.error)
        self.assertEqual(list(ack.ids), ["10", "11", "fresh"])
        self.assertEqual(self.count(), N + 1)
        got = get(["10", "11", "fresh", "12"])
        for i, vid in enumerate(["10", "11", "fresh"]):
            self.assertLess(float(np.abs(got[vid][0] - far[i]).max()), 0.05 * 120)
            self.assertEqual(got[vid][1]["u"], 7777)
        self.assertEqual(got["12"][1]["u"], self.meta[12]["u"])
        # Searches find the new vectors where the old ones were gone.
        self.assertEqual(nearest(far[0])[0].id, "10")
        self.assertNotIn("10", [h.id for h in nearest(self.X[10])])
        flt = pb.Filter(must=[match("u", int_value=7777)])
        self.assertEqual(self.count(flt), 3)
        self.assertEqual(sorted(h.id for h in nearest(far[1], flt)), ["10", "11", "fresh"])
        # No payloads given: the replaced vector has none.
        ack = ingest(["11"], self.X[11:12])
        self.assertFalse(ack.HasField("error"), ack.error)
        self.assertEqual(get(["11"])["11"][1], {})
        self.assertEqual(self.count(flt), 2)
        # Refusals change nothing: an id twice, a payload of the wrong type,
        # a plain ingest of an existing id.
        bad = pb.Payload()
        bad.fields["u"].string_value = "text"
        before = get(["10", "12"])
        for ids, pls, upsert, code in ((["10", "10"], [], True, grpc.StatusCode.ALREADY_EXISTS),
                                       (["10", "12"], [bad, bad], True, grpc.StatusCode.INVALID_ARGUMENT),
                                       (["10", "new2"], [], False, grpc.StatusCode.ALREADY_EXISTS)):
            ack = ingest(ids, self.X[:2] + 3.0, pls, upsert)
            self.assertEqual(ack.error.code, code.value[0], ack.error.message)
        after = get(["10", "12"])
        for vid in before:
            self.assertTrue(np.array_equal(before[vid][0], after[vid][0]))
            self.assertEqual(before[vid][1], after[vid][1])
        self.assertEqual(self.count(), N + 1)
        # SIGKILL: the log brings the upserts back.
        state = get(["10", "11", "fresh", "12"])
        self.server.stop(signal.SIGKILL, keep_dir=True)
        self.server = Slimvecd(SLIMVECD, STUBS, *ARGS, data_dir=self.server.data_dir)
        self.stub = self.server.stub
        self.server.own_dir = True
        back = get(["10", "11", "fresh", "12"])
        for vid in state:
            self.assertTrue(np.array_equal(state[vid][0], back[vid][0]), vid)
            self.assertEqual(state[vid][1], back[vid][1], vid)
        self.assertEqual(self.count(), N + 1)
        self.assertEqual(self.count(flt), 2)

    def test_refusals_change_nothing(self):
        def code(fn, *a, **kw):
            with self.assertRaises(grpc.RpcError) as ctx:
                fn(*a, timeout=T, **kw)
            return ctx.exception.code(), ctx.exception.details()

        def one_batch(payloads, n=2, ids=("x1", "x2")):
            ack = list(self.stub.Ingest(iter([pb.IngestRequest(
                collection="p", sequence=1, vectors=[0.5] * (DIM * n), ids=list(ids)[:n], payloads=payloads)]),
                timeout=T))[0]
            return ack.error

        bad_type = pb.Payload()
        bad_type.fields["u"].string_value = "not a number"
        err = one_batch([payload("coat", 1, [], 1.0, True), bad_type])
        self.assertEqual(err.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertIn('payload 1, key "u"', err.message)
        long_text = pb.Payload()
        long_text.fields["class"].string_value = "x" * 2000
        self.assertIn("longer than", one_batch([long_text, long_text]).message)
        untyped = pb.Payload()
        untyped.fields["class"].CopyFrom(pb.PayloadValue())
        self.assertIn("without a type", one_batch([untyped, untyped]).message)
        self.assertIn("1 payloads for 2 vectors", one_batch([bad_type]).message)
        nan = pb.Payload()
        nan.fields["price"].double_value = float("nan")
        self.assertIn("finite", one_batch([nan, nan]).message)
        self.assertEqual(self.count(), N)  # nothing was added

        c, d = code(self.stub.Search, pb.SearchRequest(collection="p", queries=[0.0] * DIM, k=5,
                                                        filter=pb.Filter(must=[match("nope", int_value=1)])))
        self.assertEqual((c, 'unknown key "nope"' in d), (grpc.StatusCode.INVALID_ARGUMENT, True), d)
        c, d = code(self.stub.Count, pb.CountRequest(collection="p", filter=pb.Filter(
            must=[match("u", string_value="1")])))
        self.assertEqual((c, "holds int64 values" in d), (grpc.StatusCode.INVALID_ARGUMENT, True), d)
        c, d = code(self.stub.Count, pb.CountRequest(collection="p", filter=pb.Filter(must=[rng("class")])))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT, d)
        c, d = code(self.stub.SetPayload, pb.SetPayloadRequest(collection="p", id="nobody", payload=pb.Payload()))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND, d)
        c, d = code(self.stub.SetPayload, pb.SetPayloadRequest(collection="p", id="1", payload=bad_type, patch=True))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT, d)
        c, d = code(self.stub.Count, pb.CountRequest(collection="nope"))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND, d)
        # A filter past the limits is refused before it is built.
        many = pb.Filter(must=[match("u", int_value=i) for i in range(300)])
        c, d = code(self.stub.Count, pb.CountRequest(collection="p", filter=many))
        self.assertEqual((c, "more than 256 conditions" in d), (grpc.StatusCode.INVALID_ARGUMENT, True), d)
        lots = pb.Filter(must=[pb.Condition(match_any=pb.FieldMatchAny(key="u", ints=list(range(1000))))
                               for _ in range(20)])
        c, d = code(self.stub.Count, pb.CountRequest(collection="p", filter=lots))
        self.assertEqual((c, "values and ids in all" in d), (grpc.StatusCode.INVALID_ARGUMENT, True), d)
        # A payload of ~60 KB asked for a thousand times in one Get: the
        # answer would pass the message limit; refused before it is built.
        big = pb.Payload()
        big.fields["blob"].strings.values.extend(["z" * 1000] * 60)
        self.stub.SetPayload(pb.SetPayloadRequest(collection="p", id="2", payload=big, patch=True), timeout=T)
        c, d = code(self.stub.Get, pb.GetRequest(collection="p", ids=["2"] * 1000, with_payload=True))
        self.assertEqual((c, "message limit" in d), (grpc.StatusCode.RESOURCE_EXHAUSTED, True), d)
        self.assertEqual(self.count(), N)
        got = self.stub.Get(pb.GetRequest(collection="p", ids=["1"], with_payload=True), timeout=T).vectors[0]
        self.assertEqual(as_dict(got.payload)["u"], self.meta[1]["u"])


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
