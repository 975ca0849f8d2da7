#!/usr/bin/python3
"""End-to-end tests: a real slimvecd driven through the generated Python client.

Usage (ctest runs it): test_service.py SLIMVECD_PATH PYTHON_STUBS_DIR
Each test class starts its own server on a free loopback port.
"""

import os
import random
import re
import signal
import shutil
import socket
import tempfile
import struct
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

SLIMVECD = sys.argv[1] if len(sys.argv) > 1 else "./build/service/slimvecd"
STUBS = sys.argv[2] if len(sys.argv) > 2 else "./build/proto/python"
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from svtest import scaled  # noqa: E402
from health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from slimvec.v1 import slimvec_pb2_grpc as pbg  # noqa: E402

MAX_MESSAGE = 1 << 20  # small, so the oversized-message test is cheap


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A slimvecd process on a free port."""

    def __init__(self, *extra):
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.metrics = "127.0.0.1:%d" % free_port()
        # Every test runs with persistence on (a fresh data directory, fsync
        # per acknowledged write), as the server's default does.
        self.tmp = None
        if "--data-dir" not in extra:
            self.tmp = tempfile.mkdtemp(prefix="slimvec-e2e-")
            extra = ("--data-dir", self.tmp) + extra
        self.proc = subprocess.Popen(
            [SLIMVECD, "--listen", self.addr, "--metrics-listen", self.metrics,
             "--max-message", str(MAX_MESSAGE), "--max-k", "100",
             "--max-batch", "2000", "--grace", "5", *extra],
            stderr=subprocess.PIPE, text=True)
        self.channel = grpc.insecure_channel(self.addr)
        grpc.channel_ready_future(self.channel).result(timeout=scaled(10))
        self.stub = pbg.SlimVecStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def http(self, path):
        """(status, body) of GET path on the metrics port."""
        try:
            with urllib.request.urlopen("http://%s%s" % (self.metrics, path), timeout=scaled(10)) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, sig=signal.SIGTERM, timeout=scaled(20)):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.stderr = self.proc.stderr.read()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


def create(stub, name, dim=8, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8, **kw):
    spec = pb.CollectionSpec(name=name, dimension=dim, metric=metric, storage=storage, **kw)
    return stub.CreateCollection(pb.CreateCollectionRequest(spec=spec)).info


def rows(n, dim, seed):
    rnd = random.Random(seed)
    return [rnd.gauss(0.0, 1.0) for _ in range(n * dim)]


def ingest(stub, name, batches, dim=8):
    """Stream the batches (lists of floats, or (floats, ids)); returns the acks."""
    def gen():
        for seq, b in enumerate(batches):
            vecs, ids = b if isinstance(b, tuple) else (b, [])
            yield pb.IngestRequest(collection=name, sequence=seq, vectors=vecs, ids=ids)
    return list(stub.Ingest(gen()))


def wait_calibrated(stub, name):
    """Describe's info once the maintenance thread has calibrated the
    collection (writes stopped for a period), or the last one at the
    deadline."""
    deadline = time.monotonic() + scaled(30)
    info = None
    while time.monotonic() < deadline:
        info = stub.DescribeCollection(pb.DescribeCollectionRequest(name=name)).info
        if info.HasField("calibration"):
            break
        time.sleep(0.1)
    return info


class ServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.stub = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, "slimvecd exited %d: %s" % (rc, cls.server.stderr)

    def assertCode(self, code, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as ctx:
            fn(*args, **kw)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        return ctx.exception.details()

    def test_health(self):
        for svc in ("", "slimvec.v1.SlimVec"):
            resp = self.server.health.Check(health_pb2.HealthCheckRequest(service=svc))
            self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.server.health.Check,
                        health_pb2.HealthCheckRequest(service="nope"))
        watch = self.server.health.Watch(health_pb2.HealthCheckRequest(service=""))
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        watch.cancel()
        unknown = self.server.health.Watch(health_pb2.HealthCheckRequest(service="nope"))
        self.assertEqual(next(unknown).status, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        unknown.cancel()

    def test_collection_admin(self):
        info = create(self.stub, "admin", dim=16, metric=pb.METRIC_COSINE,
                      graph=pb.GraphParams(max_degree=24))
        self.assertEqual(info.spec.dimension, 16)
        self.assertEqual(info.spec.graph.max_degree, 24)
        self.assertEqual(info.spec.graph.build_list, 64)
        self.assertCode(grpc.StatusCode.ALREADY_EXISTS, create, self.stub, "admin")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, create, self.stub, "bad name!")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, create, self.stub, "d0", dim=0)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, create, self.stub, "m0",
                        metric=pb.METRIC_UNSPECIFIED)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, create, self.stub, "r",
                        graph=pb.GraphParams(max_degree=1000))
        names = [c.spec.name for c in self.stub.ListCollections(pb.ListCollectionsRequest()).collections]
        self.assertIn("admin", names)
        d = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="admin")).info
        self.assertEqual(d.vectors, 0)
        self.stub.DropCollection(pb.DropCollectionRequest(name="admin"))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.DescribeCollection,
                        pb.DescribeCollectionRequest(name="admin"))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.DropCollection,
                        pb.DropCollectionRequest(name="admin"))

    def test_ingest_search_get_delete(self):
        dim = 8
        create(self.stub, "v", dim=dim)
        data = rows(1000, dim, 1)
        acks = ingest(self.stub, "v", [data[i * 200 * dim:(i + 1) * 200 * dim] for i in range(5)])
        self.assertEqual([a.sequence for a in acks], list(range(5)))
        self.assertTrue(all(a.applied == 200 and not a.HasField("error") for a in acks))
        self.assertEqual(acks[1].ids[0], "200")  # assigned ids, in order
        # Every vector finds itself, before and after a flush.
        for flush in (False, True):
            if flush:
                info = self.stub.Flush(pb.FlushRequest(collection="v")).info
                self.assertEqual(info.buffered, 0)
                self.assertEqual(info.memory.buffer_bytes_estimate, 0)
            q = data[37 * dim:38 * dim] + data[512 * dim:513 * dim]
            r = self.stub.Search(pb.SearchRequest(collection="v", queries=q, k=5, search_list=32,
                                                  include_vectors=True))
            self.assertEqual([res.hits[0].id for res in r.results], ["37", "512"])
            self.assertEqual(len(r.results[0].hits[0].vector), dim)
        got = self.stub.Get(pb.GetRequest(collection="v", ids=["3"])).vectors[0]
        for a, b in zip(got.values, data[3 * dim:4 * dim]):
            self.assertAlmostEqual(a, b, delta=0.05)
        self.assertEqual(self.stub.Delete(pb.DeleteRequest(collection="v", ids=["37"])).deleted, 1)
        r = self.stub.Search(pb.SearchRequest(collection="v", queries=data[37 * dim:38 * dim], k=5))
        self.assertNotIn("37", [h.id for h in r.results[0].hits])
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.Delete,
                        pb.DeleteRequest(collection="v", ids=["1", "37"]))
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.Get, pb.GetRequest(collection="v", ids=["37"]))
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="v")).info
        self.assertEqual(info.vectors, 999)
        self.assertGreater(info.memory.allocated_bytes, 0)
        self.assertAlmostEqual(info.memory.bytes_per_vector, info.memory.allocated_bytes / 999.0, places=3)

    def test_originals_on_disk(self):
        """ORIGINALS_DISK: exact re-ranked distances, Get returns the
        original, the file's bytes reported apart from memory."""
        dim, n = 16, 1500
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, create, self.stub, "of32", dim=dim,
                        storage=pb.STORAGE_F32, originals=pb.ORIGINALS_DISK)
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, create, self.stub, "obad", dim=dim, originals=7)
        info = create(self.stub, "orig", dim=dim, originals=pb.ORIGINALS_DISK)
        self.assertEqual(info.spec.originals, pb.ORIGINALS_DISK)
        self.assertEqual(create(self.stub, "noorig", dim=dim).spec.originals, pb.ORIGINALS_NONE)
        data = rows(n, dim, 21)
        ingest(self.stub, "orig", [data[i * 500 * dim:(i + 1) * 500 * dim] for i in range(3)], dim=dim)
        self.stub.Flush(pb.FlushRequest(collection="orig"))
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="orig")).info
        self.assertEqual(info.indexed, n)
        self.assertTrue(info.HasField("originals"))
        self.assertGreaterEqual(info.originals.disk_bytes, n * dim * 4)
        self.assertAlmostEqual(info.originals.disk_bytes_per_vector, info.originals.disk_bytes / n, places=3)
        # Memory holds codes, not floats: well under 4 bytes a component.
        self.assertLess(info.memory.vectors_bytes_estimate, n * dim * 4)
        got = self.stub.Get(pb.GetRequest(collection="orig", ids=["7", "1234"])).vectors
        for g, i in zip(got, (7, 1234)):
            want = [float(struct.unpack("f", struct.pack("f", x))[0]) for x in data[i * dim:(i + 1) * dim]]
            self.assertEqual(list(g.values), want)
        q = rows(5, dim, 77)

        def exact(qi):
            qv = q[qi * dim:(qi + 1) * dim]
            d = sorted((sum((a - b) ** 2 for a, b in zip(qv, data[i * dim:(i + 1) * dim])), i) for i in range(n))
            return d[:10]
        rr = self.stub.Search(pb.SearchRequest(collection="orig", queries=q, k=10, search_list=200))
        plain = self.stub.Search(pb.SearchRequest(collection="orig", queries=q, k=10, search_list=200,
                                                  skip_rerank=True))
        shallow = self.stub.Search(pb.SearchRequest(collection="orig", queries=q, k=10, search_list=200,
                                                    rerank_depth=10))
        inexact = 0
        for qi in range(5):
            truth = exact(qi)
            hits = rr.results[qi].hits
            self.assertEqual([h.id for h in hits], [str(i) for _, i in truth])
            for h, (d, _) in zip(hits, truth):
                self.assertAlmostEqual(h.distance, d, delta=1e-4 * max(1.0, d))
            inexact += sum(abs(h.distance - d) > 1e-3 for h, (d, _) in zip(plain.results[qi].hits, truth))
            self.assertEqual(len(shallow.results[qi].hits), 10)
        self.assertGreater(inexact, 0)  # code distances are not exact
        status, body = self.server.http("/metrics")
        self.assertIn('slimvec_collection_originals_disk_bytes{collection="orig"} %d' % info.originals.disk_bytes,
                      body)
        self.assertNotIn('slimvec_collection_originals_disk_bytes{collection="noorig"}', body)
        for name in ("orig", "noorig"):
            self.stub.DropCollection(pb.DropCollectionRequest(name=name))

    def test_target_recall(self):
        """The maintenance thread calibrates a collection that reached
        --calibration-min vectors; a search may then ask for a recall, and
        one that names neither a list nor a recall gets the default's."""
        dim, n = 16, 3000
        create(self.stub, "cal", dim=dim)
        data = rows(n, dim, 31)
        ingest(self.stub, "cal", [data[i * 1000 * dim:(i + 1) * 1000 * dim] for i in range(3)], dim=dim)
        self.stub.Flush(pb.FlushRequest(collection="cal"))
        info = wait_calibrated(self.stub, "cal")
        self.assertTrue(info.HasField("calibration"), "no calibration within the deadline")
        cal = info.calibration
        self.assertEqual(cal.vectors, n)
        self.assertGreater(cal.queries, 0)
        pts = [(p.search_list, p.recall_at_10) for p in cal.points]
        self.assertGreaterEqual(len(pts), 3)
        self.assertLess(pts[0][1], pts[-1][1])

        def chosen(target):
            for L, r in pts:
                if r >= target:
                    return L
            return pts[-1][0]
        q = rows(2, dim, 99)
        for target in (0.5, 0.9, 0.99):
            r = self.stub.Search(pb.SearchRequest(collection="cal", queries=q, k=10, target_recall=target))
            self.assertEqual(r.search_list, chosen(target), "target %g" % target)
            self.assertEqual(len(r.results[0].hits), 10)
        # Neither a list nor a recall: the server's default target (0.95).
        r = self.stub.Search(pb.SearchRequest(collection="cal", queries=q, k=10))
        self.assertEqual(r.search_list, chosen(0.95))
        r = self.stub.Search(pb.SearchRequest(collection="cal", queries=q, k=10, search_list=77))
        self.assertEqual(r.search_list, 77)
        for bad in (1.5, -0.1, float("nan")):
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.stub.Search,
                            pb.SearchRequest(collection="cal", queries=q, k=10, target_recall=bad))
        self.stub.DropCollection(pb.DropCollectionRequest(name="cal"))

    def test_bad_batches_change_nothing(self):
        dim = 4
        create(self.stub, "bad", dim=dim)
        good = rows(10, dim, 2)
        nan = list(good)
        nan[6] = float("nan")
        acks = ingest(self.stub, "bad", [
            (good, ["a%d" % i for i in range(10)]),     # ok
            good[:-1],                                  # not a whole number of vectors
            nan,                                        # NaN in vector 1
            (good, ["a0"] + ["b%d" % i for i in range(9)]),  # duplicate of an existing id
            (good, ["c"] * 10),                         # duplicate inside the batch
            (good, ["x" * 129] + [""] * 9),             # over-long id
            (good, ["only-one"]),                       # wrong number of ids
            rows(2001, dim, 3),                         # over the batch limit
        ], dim=dim)
        self.assertEqual(acks[0].applied, 10)
        codes = [a.error.code for a in acks[1:]]
        self.assertEqual(codes, [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2 +
                         [grpc.StatusCode.ALREADY_EXISTS.value[0]] * 2 +
                         [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2 +
                         [grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]])
        self.assertIn("vector 1: component 2 is NaN", acks[2].error.message)
        # 8 floats are two 4-d vectors, but not what a client of 8-d vectors meant.
        wrong = list(self.stub.Ingest(iter([pb.IngestRequest(collection="bad", vectors=good[:8], dimension=8)])))
        self.assertEqual(wrong[0].error.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertIn("dimension 8 does not match the collection's 4", wrong[0].error.message)
        self.assertTrue(all(a.applied == 0 for a in acks[1:]))
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="bad")).info
        self.assertEqual(info.vectors, 10)
        # Unary errors.
        q = good[:dim]
        self.assertCode(grpc.StatusCode.NOT_FOUND, self.stub.Search,
                        pb.SearchRequest(collection="nope", queries=q, k=1))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.stub.Search,
                        pb.SearchRequest(collection="bad", queries=q + [1.0], k=1))
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.stub.Search,
                        pb.SearchRequest(collection="bad", queries=q, k=0))
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, self.stub.Search,
                        pb.SearchRequest(collection="bad", queries=q, k=101))
        details = self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.stub.Search,
                                  pb.SearchRequest(collection="bad", queries=[float("inf")] * dim, k=1))
        self.assertIn("query: component 0 is infinite", details)

    def test_unknown_method_and_malformed_payload(self):
        call = self.server.channel.unary_unary("/slimvec.v1.SlimVec/NoSuchMethod")
        self.assertCode(grpc.StatusCode.UNIMPLEMENTED, call, b"", timeout=scaled(5))
        call = self.server.channel.unary_unary("/grpc.health.v1.Health/NoSuchMethod")
        self.assertCode(grpc.StatusCode.UNIMPLEMENTED, call, b"", timeout=scaled(5))
        raw = self.server.channel.unary_unary("/slimvec.v1.SlimVec/Search")
        self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, raw, b"\xff\xff\xff\xff\x0f", timeout=scaled(5))
        # The server is still fine.
        self.server.health.Check(health_pb2.HealthCheckRequest())

    def test_metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        dim = 16
        create(self.stub, "met", dim=dim)
        ingest(self.stub, "met", [rows(500, dim, 9), rows(500, dim, 10)], dim=dim)
        self.stub.Flush(pb.FlushRequest(collection="met"))
        self.stub.Search(pb.SearchRequest(collection="met", queries=rows(1, dim, 11), k=3))
        # 1,000 vectors: the maintenance thread calibrates it once writes
        # stop (its searches' scratch stays pooled): let it, then compare.
        wait_calibrated(self.stub, "met")
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="met")).info
        status, body = self.server.http("/metrics")
        self.assertEqual(status, 200)
        samples = {}
        for fam in text_string_to_metric_families(body):
            for smp in fam.samples:
                samples[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
        key = ("slimvec_collection_bytes_per_vector", (("collection", "met"),))
        self.assertAlmostEqual(samples[key], info.memory.bytes_per_vector, delta=0.01)
        self.assertEqual(samples[("slimvec_collection_vectors", (("collection", "met"),))], 1000)
        self.assertGreater(samples[("slimvec_jemalloc_allocated_bytes", ())], 0)
        calls = samples[("slimvec_rpc_calls_total",
                         (("code", "OK"), ("method", "slimvec.v1.SlimVec/Flush")))]
        self.assertGreaterEqual(calls, 1)
        self.assertGreaterEqual(samples[("slimvec_rpc_handle_seconds_count",
                                         (("method", "slimvec.v1.SlimVec/Ingest"),))], 2)
        promtool = subprocess.run(["promtool", "check", "metrics"], input=body, text=True,
                                  capture_output=True)
        self.assertEqual(promtool.returncode, 0, promtool.stdout + promtool.stderr)
        self.assertEqual(self.server.http("/healthz")[0], 200)
        self.assertEqual(self.server.http("/readyz")[0], 200)
        self.assertEqual(self.server.http("/nope")[0], 404)

    def test_oversized_message(self):
        create(self.stub, "big", dim=4)
        huge = [0.5] * (MAX_MESSAGE // 4 + 1024)
        self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, self.stub.Search,
                        pb.SearchRequest(collection="big", queries=huge, k=1))
        self.server.health.Check(health_pb2.HealthCheckRequest())

    def test_search_stream_tags(self):
        dim = 4
        create(self.stub, "ss", dim=dim)
        data = rows(300, dim, 4)
        ingest(self.stub, "ss", [data], dim=dim)

        def gen():
            for t in range(50):
                yield pb.SearchRequest(collection="ss", queries=data[t * dim:(t + 1) * dim], k=3, tag=1000 + t)
            yield pb.SearchRequest(collection="ss", queries=data[:dim], k=0, tag=7)
            yield pb.SearchRequest(collection="ss", queries=data[:dim], k=1, tag=8)
        out = list(self.stub.SearchStream(gen()))
        self.assertEqual([r.tag for r in out], [1000 + t for t in range(50)] + [7, 8])
        self.assertEqual([r.results[0].hits[0].id for r in out[:50]], [str(t) for t in range(50)])
        self.assertEqual(out[50].error.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertEqual(out[51].results[0].hits[0].id, "0")

    def test_cancel_mid_stream_applies_whole_batches_only(self):
        dim = 4
        create(self.stub, "cancel", dim=dim)
        gate = threading.Event()

        def gen():
            for seq in range(1000):
                if seq == 3:
                    gate.wait(10)
                yield pb.IngestRequest(collection="cancel", sequence=seq, vectors=rows(500, dim, seq))
        call = self.stub.Ingest(gen())
        acked = 0
        for ack in call:
            acked += ack.applied
            if ack.sequence == 2:
                call.cancel()
                gate.set()
                break
        time.sleep(0.5)
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="cancel")).info
        self.assertEqual(info.vectors % 500, 0)          # never half a batch
        self.assertGreaterEqual(info.vectors, acked)     # nothing acknowledged lost
        # A deadline mid-stream, the same.
        with self.assertRaises(grpc.RpcError) as ctx:
            for _ in self.stub.Ingest((pb.IngestRequest(collection="cancel", sequence=s,
                                                        vectors=rows(500, dim, s))
                                       for s in iter(lambda: time.sleep(0.05) or 1, 0)), timeout=scaled(0.5)):
                pass
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="cancel")).info
        self.assertEqual(info.vectors % 500, 0)
        self.server.health.Check(health_pb2.HealthCheckRequest())

    def test_concurrent_streams(self):
        dim = 8
        for name in ("cc1", "cc2"):
            create(self.stub, name, dim=dim, flush_threshold=1000)
        errors = []

        def writer(name, seed):
            try:
                batches = [(rows(100, dim, seed * 100 + i), ["%d-%d-%d" % (seed, i, j) for j in range(100)])
                           for i in range(20)]
                acks = ingest(self.stub, name, batches, dim=dim)
                if any(a.applied != 100 for a in acks):
                    errors.append("ingest %s %d: %s" % (name, seed, [a.error.message for a in acks]))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        def reader(name, seed):
            try:
                def gen():
                    for t in range(100):
                        yield pb.SearchRequest(collection=name, queries=rows(1, dim, seed + t), k=5, tag=t)
                tags = [r.tag for r in self.stub.SearchStream(gen())]
                if tags != list(range(100)):
                    errors.append("tags out of order")
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        threads = []
        for i in range(8):
            name = "cc1" if i % 2 else "cc2"
            threads.append(threading.Thread(target=writer if i < 4 else reader, args=(name, i)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        for name in ("cc1", "cc2"):
            info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name=name)).info
            self.assertEqual(info.vectors, 2 * 20 * 100)


def write_vecs(path, rows_, kind):
    """TEXMEX .fvecs (kind 'f') or .ivecs (kind 'i')."""
    import struct
    with open(path, "wb") as f:
        for r in rows_:
            f.write(struct.pack("<i", len(r)))
            f.write(struct.pack("<%d%s" % (len(r), kind), *r))


class CliTest(unittest.TestCase):
    """The C command-line client against a real server."""

    def test_create_ingest_stats_search(self):
        import json
        import tempfile
        cli = os.path.join(os.path.dirname(SLIMVECD), "slimvec")
        server = Server()
        try:
            dim, n, nq = 16, 3000, 50
            base = [rows(1, dim, 100 + i) for i in range(n)]
            queries = [rows(1, dim, 90000 + i) for i in range(nq)]
            gt = []
            for q in queries:
                d = sorted(range(n), key=lambda i: sum((a - b) ** 2 for a, b in zip(q, base[i])))
                gt.append(d[:10])
            with tempfile.TemporaryDirectory() as tmp:
                bpath, qpath, gpath = (os.path.join(tmp, x) for x in ("b.fvecs", "q.fvecs", "g.ivecs"))
                write_vecs(bpath, base, "f")
                write_vecs(qpath, queries, "f")
                write_vecs(gpath, gt, "i")
                addr = ["--addr", server.addr, "--collection", "cli"]

                def run(*args):
                    p = subprocess.run([cli, *args], capture_output=True, text=True, timeout=scaled(120))
                    self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                    return p.stdout + p.stderr
                run("create", *addr, "--dim", str(dim), "--metric", "l2", "--storage", "int8")
                out = run("ingest", *addr, "--file", bpath, "--batch", "500", "--flush")
                self.assertIn("3000", out)
                out = run("stats", *addr)
                self.assertIn("3000", out)
                self.assertRegex(out, r"log bytes\s+[1-9]")
                self.assertEqual(run("health", "--addr", server.addr).strip(), "SERVING")
                p = subprocess.run([cli, "health", "--addr", server.addr, "--service", "nope"],
                                   capture_output=True, text=True, timeout=scaled(30))
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                out = run("snapshot", *addr)
                m = re.search(r"LSN (\d+), (\d+) bytes", out)
                self.assertTrue(m and int(m.group(1)) > 0 and int(m.group(2)) > 3000 * dim, out)
                self.assertRegex(run("stats", *addr), r"log bytes\s+0 ")
                jpath = os.path.join(tmp, "s.json")
                run("search", *addr, "--query", qpath, "--gt", gpath, "--k", "10", "--search-list", "64",
                    "--json", jpath)
                with open(jpath) as f:
                    res = json.load(f)
                self.assertGreater(res["recall_at_10"], 0.9)
                for key in ("qps", "p50_us", "p99_us"):
                    self.assertGreater(res[key], 0)
                # A file of the wrong dimension is refused, not misread.
                wrong = os.path.join(tmp, "w.fvecs")
                write_vecs(wrong, [rows(1, 8, 5)[0:8] for _ in range(4)], "f")
                p = subprocess.run([cli, "ingest", *addr, "--file", wrong], capture_output=True, text=True,
                                   timeout=scaled(60))
                self.assertNotEqual(p.returncode, 0)
        finally:
            self.assertEqual(server.stop(), 0)

    def test_payloads_filters_count_scroll(self):
        """ingest --payloads/--ids/--upsert, search --filter, count and scroll,
        and bad payload files and filters refused with nothing ingested."""
        import json
        import tempfile
        cli = os.path.join(os.path.dirname(SLIMVECD), "slimvec")
        server = Server()
        dim, n, nq, k = 8, 300, 20, 5
        classes = ["coat", "bag", "shoe"]

        def payload(i):
            if i % 10 == 9:
                return {}  # no payload
            p = {"class": classes[i % 3], "u": i, "price": i * 0.5, "active": i % 2 == 0}
            if i % 4 == 0:
                p["tags"] = ["t%d" % (i % 5), "all"]
            if i % 6 == 0:
                p["sizes"] = [i % 7, 40]
            return p
        payloads = [payload(i) for i in range(n)]
        base = [rows(1, dim, 500 + i) for i in range(n)]
        queries = [rows(1, dim, 70000 + i) for i in range(nq)]

        def cli_run(*args, code=0):
            p = subprocess.run([cli, *args], capture_output=True, text=True, timeout=scaled(120))
            self.assertEqual(p.returncode, code, "slimvec %s: %s%s" % (" ".join(args), p.stdout, p.stderr))
            return p

        def passes(p, must=(), should=(), must_not=()):
            return all(c(p) for c in must) and (not should or any(c(p) for c in should)) and \
                not any(c(p) for c in must_not)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                def path(name):
                    return os.path.join(tmp, name)

                def write_lines(name, lines):
                    with open(path(name), "w") as f:
                        f.write("".join(x + "\n" for x in lines))
                    return path(name)
                write_vecs(path("b.fvecs"), base, "f")
                write_vecs(path("q.fvecs"), queries, "f")
                pl = write_lines("p.jsonl", [json.dumps(p) for p in payloads])
                addr = ["--addr", server.addr, "--collection", "pf"]
                cli_run("create", *addr, "--dim", str(dim), "--metric", "l2", "--storage", "f32")

                def count(flt=None, code=0):
                    p = cli_run("count", *addr, *(["--filter", json.dumps(flt)] if flt is not None else []),
                                code=code)
                    return int(p.stdout) if code == 0 else p

                # Refused before anything is sent: nothing ingested.
                bad = [json.dumps(p) for p in payloads]
                bad[4] = '{"class": "coat", "u": }'
                p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--payloads",
                            write_lines("bad.jsonl", bad), code=1)
                self.assertIn("bad.jsonl: line 5: not valid JSON", p.stderr)
                bad[4] = '{"class": {"nested": 1}}'
                p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--payloads",
                            write_lines("bad.jsonl", bad), code=1)
                self.assertIn('line 5, key "class": a nested object', p.stderr)
                p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--payloads",
                            write_lines("short.jsonl", [json.dumps(p) for p in payloads[:-1]]), code=1)
                self.assertIn("short.jsonl: %d lines for %d vectors" % (n - 1, n), p.stderr)
                p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--payloads",
                            write_lines("long.jsonl", [json.dumps(p) for p in payloads] + ["{}"]), code=1)
                self.assertIn("more than %d lines for %d vectors" % (n, n), p.stderr)
                # What the server would refuse in a later batch is refused
                # before the first is sent (batches of 50: line 251 is in
                # the sixth): nothing is ingested.
                bad = [json.dumps(p) for p in payloads]
                bad[250] = json.dumps({"u": "seven"})
                p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--batch", "50", "--payloads",
                            write_lines("typed.jsonl", bad), code=1)
                self.assertIn('line 251, key "u": a string, but earlier lines gave it an integer', p.stderr)
                bad[250] = json.dumps({"class": "x" * 1500})
                p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--batch", "50", "--payloads",
                            write_lines("longtext.jsonl", bad), code=1)
                self.assertIn("line 251", p.stderr)
                self.assertIn("a string of 1500 bytes", p.stderr)
                good_ids = ["id-%d" % i for i in range(n)]
                for name, ids_bad, msg in (("twice", good_ids[:250] + ["id-3"] + good_ids[251:], 'id "id-3" is given twice'),
                                           ("longid", good_ids[:250] + ["i" * 200] + good_ids[251:], "line 251: an id over 128 bytes"),
                                           ("utf8", good_ids[:250] + ["\udcff"] + good_ids[251:], "line 251: an id that is not valid UTF-8")):
                    with open(path(name + ".txt"), "w", errors="surrogateescape") as f:
                        f.write("".join(x + "\n" for x in ids_bad))
                    p = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--batch", "50", "--ids",
                                path(name + ".txt"), code=1)
                    self.assertIn(msg, p.stderr)
                self.assertEqual(count(), 0)

                out = cli_run("ingest", *addr, "--file", path("b.fvecs"), "--payloads", pl).stdout
                self.assertIn("ingested %d vectors" % n, out)

                # count, with and without filters, against what was written.
                self.assertEqual(count(), n)
                self.assertEqual(count({}), n)
                coat = {"must": [{"key": "class", "match": "coat"}]}
                self.assertEqual(count(coat), sum(p.get("class") == "coat" for p in payloads))
                rng = {"must": [{"key": "u", "range": {"gte": 100, "lt": 200}}],
                       "must_not": [{"key": "active", "match": True}]}
                self.assertEqual(count(rng), sum(100 <= p.get("u", -1) < 200 and p.get("active") is False
                                                 for p in payloads))
                drange = {"must": [{"key": "price", "range": {"gt": 10.25, "lte": 20}}]}
                self.assertEqual(count(drange), sum(10.25 < p.get("price", -1) <= 20 for p in payloads))
                anyf = {"should": [{"key": "class", "match_any": ["bag", "shoe"]},
                                   {"key": "sizes", "match_any": [3]}]}
                self.assertEqual(count(anyf), sum(p.get("class") in ("bag", "shoe") or 3 in p.get("sizes", [])
                                                  for p in payloads))
                self.assertEqual(count({"must": [{"is_empty": "tags"}]}), sum("tags" not in p for p in payloads))
                self.assertEqual(count({"must": [{"has_id": ["3", "7", 11, "100000"]}]}), 3)
                nested = {"must": [{"key": "tags", "match": "all"},
                                   {"filter": {"should": [{"key": "u", "range": {"lt": 50}},
                                                          {"key": "class", "match": "bag"}]}}]}
                self.assertEqual(count(nested), sum("all" in p.get("tags", []) and
                                                    (p["u"] < 50 or p["class"] == "bag") for p in payloads))
                with open(path("f.json"), "w") as f:
                    json.dump(coat, f, indent=2)
                self.assertEqual(int(cli_run("count", *addr, "--filter", "@" + path("f.json")).stdout),
                                 count(coat))

                # Refused filters: by the client (exit 2, nothing sent) or the server.
                p = count({"must": [{"key": "nokey", "match": "x"}]}, code=1)
                self.assertIn("INVALID_ARGUMENT", p.stderr)
                self.assertIn("nokey", p.stderr)
                p = cli_run("count", *addr, "--filter", '{"must": [{"key": "class", "match": "coat"}', code=2)
                self.assertIn("--filter: filter: not valid JSON", p.stderr)
                p = count({"must": [{"key": "class", "mach": "coat"}]}, code=2)
                self.assertIn('must[0]: unknown field "mach"', p.stderr)
                p = count({"must": [{"filter": {"must": [{"filter": {"must": []}}]}}]}, code=2)
                self.assertIn("must[0].filter.must[0]: a filter inside a nested filter", p.stderr)

                # search --filter without --gt: one JSON line per query, every hit passing.
                bag_u = {"must": [{"key": "class", "match": "bag"}, {"key": "u", "range": {"gte": 50}}]}
                p = cli_run("search", *addr, "--query", path("q.fvecs"), "--k", str(k), "--filter",
                            json.dumps(bag_u), "--with-payload")
                lines = [json.loads(x) for x in p.stdout.splitlines()]
                self.assertEqual([x["query"] for x in lines], list(range(nq)))
                for x in lines:
                    self.assertEqual(len(x["hits"]), k)
                    dists = [h["distance"] for h in x["hits"]]
                    self.assertEqual(dists, sorted(dists))
                    for h in x["hits"]:
                        want = payloads[int(h["id"])]
                        self.assertEqual(h["payload"], want)
                        self.assertTrue(want["class"] == "bag" and want["u"] >= 50, h)
                # The nearest passing vector, exactly (f32, a filter this narrow is scanned).
                q0 = queries[0]
                near = min((i for i in range(n) if payloads[i].get("class") == "bag" and payloads[i]["u"] >= 50),
                           key=lambda i: sum((a - b) ** 2 for a, b in zip(q0, base[i])))
                self.assertEqual(lines[0]["hits"][0]["id"], str(near))
                p = cli_run("search", *addr, "--query", path("q.fvecs"), "--k", str(k), "--filter", json.dumps(nested))
                for x in map(json.loads, p.stdout.splitlines()):
                    for h in x["hits"]:
                        self.assertNotIn("payload", h)
                        q = payloads[int(h["id"])]
                        self.assertTrue("all" in q.get("tags", []) and (q["u"] < 50 or q["class"] == "bag"), h)
                p = cli_run("search", *addr, "--query", path("q.fvecs"), "--filter",
                            json.dumps({"must": [{"key": "nokey", "match": 1}]}), code=1)
                self.assertIn("INVALID_ARGUMENT", p.stderr)

                # scroll: every id, with its payload, across pages; a limit; vectors.
                p = cli_run("scroll", *addr, "--with-payload", "--page-size", "7")
                got = [json.loads(x) for x in p.stdout.splitlines()]
                self.assertEqual(sorted(int(x["id"]) for x in got), list(range(n)))
                for x in got:
                    self.assertEqual(x["payload"], payloads[int(x["id"])])
                    self.assertNotIn("values", x)
                p = cli_run("scroll", *addr, "--filter", json.dumps(coat), "--limit", "5", "--with-vectors")
                got = [json.loads(x) for x in p.stdout.splitlines()]
                self.assertEqual(len(got), 5)
                for x in got:
                    self.assertEqual(payloads[int(x["id"])].get("class"), "coat")
                    self.assertNotIn("payload", x)
                    for a, b in zip(x["values"], base[int(x["id"])]):
                        self.assertAlmostEqual(a, b, places=5)
                p = cli_run("scroll", *addr, "--filter", json.dumps(coat))
                self.assertEqual(len(p.stdout.splitlines()), count(coat))

                # --upsert with --ids: the given ids' vectors and payloads are replaced.
                new_rows = [rows(1, dim, 99000 + i) for i in range(3)]
                write_vecs(path("u.fvecs"), new_rows, "f")
                ids = write_lines("ids.txt", ["0", "1", "2"])
                up = write_lines("u.jsonl", [json.dumps({"class": "new", "u": 1000 + i}) for i in range(3)])
                p = cli_run("ingest", *addr, "--file", path("u.fvecs"), "--ids", ids, "--payloads", up, code=1)
                self.assertIn("ALREADY_EXISTS", p.stderr)
                p = cli_run("ingest", *addr, "--file", path("u.fvecs"), "--payloads", up, "--upsert", code=2)
                self.assertIn("--upsert needs --ids", p.stderr)
                cli_run("ingest", *addr, "--file", path("u.fvecs"), "--ids", ids, "--payloads", up, "--upsert")
                self.assertEqual(count(), n)
                self.assertEqual(count({"must": [{"key": "class", "match": "new"}]}), 3)
                p = cli_run("scroll", *addr, "--filter", json.dumps({"must": [{"has_id": ["0", "1", "2"]}]}),
                            "--with-payload", "--with-vectors")
                got = {x["id"]: x for x in map(json.loads, p.stdout.splitlines())}
                self.assertEqual(sorted(got), ["0", "1", "2"])
                for i in range(3):
                    self.assertEqual(got[str(i)]["payload"], {"class": "new", "u": 1000 + i})
                    for a, b in zip(got[str(i)]["values"], new_rows[i]):
                        self.assertAlmostEqual(a, b, places=5)
                # New ids from a file: added, not replaced.
                ids = write_lines("ids2.txt", ["a-1", "a-2", "a-3"])
                cli_run("ingest", *addr, "--file", path("u.fvecs"), "--ids", ids)
                self.assertEqual(count(), n + 3)
                self.assertEqual(count({"must": [{"has_id": ["a-1", "a-2", "a-3"]}]}), 3)
                p = cli_run("ingest", *addr, "--file", path("u.fvecs"), "--ids",
                            write_lines("ids3.txt", ["x", "", "y"]), code=1)
                self.assertIn("ids3.txt: line 2: an empty id", p.stderr)
                self.assertEqual(count(), n + 3)
        finally:
            self.assertEqual(server.stop(), 0)


class DefaultTargetTest(unittest.TestCase):
    def test_default_target_stays_within_the_work_limit(self):
        """A search that names no list gets the calibrated one for the
        server's default target, lowered to fit --max-search-work (never
        an error the fixed default would not have given); an explicit
        target_recall that does not fit is refused."""
        server = Server("--max-search-work", "20000")
        try:
            dim, n = 64, 2000  # 64-d normal: the 0.95 list is past 40
            create(server.stub, "dt", dim=dim)
            ingest(server.stub, "dt", [rows(n, dim, 41)], dim=dim)
            server.stub.Flush(pb.FlushRequest(collection="dt"))
            info = wait_calibrated(server.stub, "dt")
            self.assertTrue(info.HasField("calibration"))
            target_list = next((p.search_list for p in info.calibration.points if p.recall_at_10 >= 0.95),
                               info.calibration.points[-1].search_list)
            print("  calibrated list for 0.95: %d; 500 queries may use %d" % (target_list, 20000 // 500), flush=True)
            q = rows(500, dim, 42)
            r = server.stub.Search(pb.SearchRequest(collection="dt", queries=q, k=10))
            self.assertLessEqual(r.search_list, 20000 // 500)
            self.assertEqual(r.search_list, min(target_list, 20000 // 500))
            self.assertEqual(len(r.results), 500)
            req = pb.SearchRequest(collection="dt", queries=q, k=10, target_recall=0.95)
            if target_list * 500 > 20000:
                with self.assertRaises(grpc.RpcError) as ctx:
                    server.stub.Search(req)
                self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            else:
                self.assertEqual(server.stub.Search(req).search_list, target_list)
        finally:
            self.assertEqual(server.stop(), 0)


class MemoryCapTest(unittest.TestCase):
    def test_cap_as_a_share_of_the_memory_limit(self):
        # As in Kubernetes: the limit from the downward API, the cap a share of it.
        server = Server("--memory-limit", str(40 << 20), "--memory-cap", "40%")
        try:
            _, body = server.http("/metrics")
            self.assertIn("slimvec_memory_limit_bytes %d" % (40 << 20), body)
            self.assertIn("slimvec_memory_cap_bytes %d" % (16 << 20), body)
            create(server.stub, "share", dim=128)
            acks = ingest(server.stub, "share", [rows(1000, 128, 2)] * 100, dim=128)
            refused = [a for a in acks if a.HasField("error")]
            self.assertTrue(refused, "no batch was refused under 40% of 40 MiB")
            self.assertIn("memory cap", refused[0].error.message)
        finally:
            self.assertEqual(server.stop(), 0)
        for bad in ("150%", "80x", "-1"):
            p = subprocess.run([SLIMVECD, "--memory-cap", bad, "--data-dir", ":memory:"],
                               capture_output=True, text=True, timeout=scaled(20))
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn("--memory-cap", p.stderr)

    def test_ingest_refused_past_the_cap(self):
        server = Server("--memory-cap", str(16 << 20))
        try:
            dim = 128
            create(server.stub, "cap", dim=dim)
            batch = rows(1000, dim, 1)
            acks = ingest(server.stub, "cap", [batch] * 100, dim=dim)
            applied = sum(a.applied for a in acks)
            refused = [a for a in acks if a.HasField("error")]
            self.assertTrue(refused, "no batch was refused under a 16 MiB cap")
            self.assertEqual(refused[0].error.code, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
            self.assertIn("memory cap", refused[0].error.message)
            info = server.stub.DescribeCollection(pb.DescribeCollectionRequest(name="cap")).info
            self.assertEqual(info.vectors, applied)   # whole batches only
            self.assertEqual(applied % 1000, 0)
            # Reads go on: at once, or (when the refusals came while a
            # flush held the buffer and its scratch at the same time) as
            # soon as the maintenance thread's flush gives that back.
            deadline = time.monotonic() + scaled(30)
            while True:
                try:
                    r = server.stub.Search(pb.SearchRequest(collection="cap", queries=batch[:dim], k=1))
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            self.assertEqual(len(r.results[0].hits), 1)
        finally:
            self.assertEqual(server.stop(), 0)


class ShutdownTest(unittest.TestCase):
    def test_sigterm_with_stream_in_flight(self):
        server = Server()
        dim = 4
        create(server.stub, "s", dim=dim)
        acked = []
        codes = []
        done = threading.Event()

        def stream():
            try:
                def gen():
                    for seq in range(100000):
                        yield pb.IngestRequest(collection="s", sequence=seq, vectors=rows(50, dim, seq))
                        time.sleep(0.01)
                for ack in server.stub.Ingest(gen()):
                    acked.append(ack.applied)
            except grpc.RpcError as e:
                codes.append(e.code())
            done.set()
        t = threading.Thread(target=stream)
        t.start()
        watch = server.health.Watch(health_pb2.HealthCheckRequest(service="slimvec.v1.SlimVec"))
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.SERVING)
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        # Watchers hear NOT_SERVING before the server goes.
        self.assertEqual(next(watch).status, health_pb2.HealthCheckResponse.NOT_SERVING)
        rc = server.proc.wait(timeout=scaled(30))
        done.wait(10)
        self.assertEqual(rc, 0, server.proc.stderr.read())
        self.assertGreater(sum(acked), 0)
        # The stream in flight was told the server is going away.
        self.assertEqual(codes, [grpc.StatusCode.UNAVAILABLE])


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
