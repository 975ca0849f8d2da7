#!/usr/bin/python3
"""Cluster mode end to end: real nats-server processes and slimvecd pods
(2 shards x 2 replica sets) on loopback, killed with SIGKILL and paused
with SIGSTOP. No mock of either engine.

Usage (ctest runs one group per test): test_cluster.py SLIMVECD STUBS GROUP
  paths     the write and read paths through any pod: ids given and
            assigned, refusals as a single node gives them, merged search
            (recall equal to one node on the same data), get, delete,
            drop and create again
  ryw       T5: read-your-writes against a replica made to lag
  failover  T3: searches while one replica per shard is killed, 0 failed;
            T8: everything SIGKILLed (NATS and etcd too) and restarted:
            every acknowledged write is there, the map's epoch unchanged
  crash     T1: SLIMVEC_CLUSTER_ROUNDS (default 50) rounds of SIGKILL of a
            random pod mid-ingest and restart; every acknowledged id on
            every replica, 0 missing, 0 extra
  nats      T2: SIGKILL of the stream's leader mid-ingest: 0 lost, 0
            doubled, the stall printed; T4: SIGSTOP one, then two of three
            NATS servers: writes go on, then fail unacknowledged while
            searches go on; all back after SIGCONT
"""

import os
import random
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

SLIMVECD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./build/service/slimvecd")
STUBS = sys.argv[2] if len(sys.argv) > 2 else "./build/proto/python"
GROUP = sys.argv[3] if len(sys.argv) > 3 else "paths"
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import grpc  # noqa: E402
from clustertest import Cluster  # noqa: E402
from svtest import Slimvecd, scaled, wait_for  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from slimvec.v1 import slimvec_pb2_grpc as pbg  # noqa: E402

DIM = 16
ROUNDS = int(os.environ.get("SLIMVEC_CLUSTER_ROUNDS", "50"))
SEED = int(os.environ.get("SLIMVEC_CLUSTER_SEED", str(int(time.time()) % 100000)))
T = scaled(30)  # an RPC's deadline


def spec(name, dim=DIM, storage=pb.STORAGE_INT8):
    return pb.CollectionSpec(name=name, dimension=dim, metric=pb.METRIC_L2, storage=storage)


def route(ident, shards):
    """The shard of a numeric id (follow.h: a number modulo S)."""
    return int(ident) % shards


def vectors(n, seed):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def exact_knn(base, queries, k):
    d = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1)[:, :k]


def recall(stub, name, base, ids, queries, k=10, search_list=64):
    truth = exact_knn(base, queries, k)
    r = stub.Search(pb.SearchRequest(collection=name, queries=queries.ravel().tolist(), k=k,
                                     search_list=search_list), timeout=T)
    hit = 0
    for q, res in enumerate(r.results):
        want = {ids[i] for i in truth[q]}
        hit += len(want & {h.id for h in res.hits})
    return hit / (k * len(queries))


def ingest(stub, name, X, ids=None, batch=200, batch_prefix=None):
    """Stream X in batches; the acknowledgements."""
    def gen():
        for b in range(0, len(X), batch):
            yield pb.IngestRequest(collection=name, sequence=b, vectors=X[b:b + batch].ravel().tolist(),
                                   ids=ids[b:b + batch] if ids is not None else [],
                                   batch_id="%s-%d" % (batch_prefix, b) if batch_prefix else "")
    return list(stub.Ingest(gen(), timeout=T))


def shard_md(pod, shard=None):
    """The metadata a router sends with a call to a replica: the shard it
    means @ its map's epoch (0: whatever this pod's map says)."""
    return [("slimvec-shard", "%d@0" % (pod.s if shard is None else shard))]


def shard_get(pod, name, ids):
    """Which of ids the pod itself holds (its own shard, no routing)."""
    ch = pod.channel()
    try:
        stub = pbg.SlimVecShardStub(ch)
        have = set()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            try:
                stub.Get(pb.GetRequest(collection=name, ids=part), timeout=T, metadata=shard_md(pod))
                have.update(part)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                for one in part:  # which ones: one at a time
                    try:
                        stub.Get(pb.GetRequest(collection=name, ids=[one]), timeout=T, metadata=shard_md(pod))
                        have.add(one)
                    except grpc.RpcError as e2:
                        if e2.code() != grpc.StatusCode.NOT_FOUND:
                            raise
        return have
    finally:
        ch.close()


def local_count(pod, name):
    """The vectors this pod holds (its shard), -1 while it has no such
    collection (yet)."""
    ch = pod.channel()
    try:
        # SlimVecShard's Describe: the pod's own copy (the public one gives
        # the cluster's totals).
        return pbg.SlimVecShardStub(ch).Describe(pb.DescribeCollectionRequest(name=name), timeout=T).info.vectors
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
            return -1
        raise
    finally:
        ch.close()


def assert_replicas_hold(test, cluster, name, acked, seconds=60):
    """Every replica holds exactly the acknowledged ids of its shard: 0
    missing, 0 extra (after it caught up)."""
    for pod in cluster.pods:
        mine = sorted(i for i in acked if route(i, cluster.shards) == pod.s)
        wait_for(lambda: local_count(pod, name) >= len(mine), seconds,
                 "r%d-s%d to catch up to %d vectors" % (pod.r, pod.s, len(mine)), step=0.2)
        have = shard_get(pod, name, mine)
        test.assertEqual(len(mine) - len(have), 0, "r%d-s%d misses %d acknowledged ids, e.g. %s" %
                         (pod.r, pod.s, len(mine) - len(have), sorted(set(mine) - have)[:5]))
        test.assertEqual(local_count(pod, name), len(mine), "r%d-s%d holds ids never acknowledged" % (pod.r, pod.s))


class Writer:
    """A client ingesting numbered vectors through the pods, one batch at a
    time, each retried with its batch_id until acknowledged (on any pod):
    exactly once whatever dies."""

    def __init__(self, cluster, name, batch=50, pods=None):
        self.cluster, self.name, self.batch = cluster, name, batch
        self.pods = pods or cluster.pods
        self.acked = []
        self.next_id = 0
        self.stop_event = threading.Event()
        self.errors = []
        self.max_stall = 0.0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        rng = np.random.default_rng(7)
        k = 0
        while not self.stop_event.is_set():
            ids = [str(self.next_id + i) for i in range(self.batch)]
            X = rng.standard_normal((self.batch, DIM)).astype(np.float32)
            req = pb.IngestRequest(collection=self.name, vectors=X.ravel().tolist(), ids=ids,
                                   batch_id="w-%d" % self.next_id)
            t0 = time.monotonic()
            # A batch is sent until acknowledged, even after stop(): a batch
            # in the log but never acknowledged would be an extra.
            while True:
                if time.monotonic() - t0 > scaled(180):
                    self.errors.append("batch %d never acknowledged" % self.next_id)
                    break
                pod = self.pods[k % len(self.pods)]
                k += 1
                if not pod.alive():
                    time.sleep(0.01)
                    continue
                ch = grpc.insecure_channel(pod.addr)
                try:
                    acks = list(pbg.SlimVecStub(ch).Ingest(iter([req]), timeout=scaled(10)))
                    if acks and not acks[0].HasField("error"):
                        self.acked.extend(ids)
                        break
                    if acks and acks[0].error.code != grpc.StatusCode.UNAVAILABLE.value[0]:
                        self.errors.append(acks[0].error.message)
                        break
                except grpc.RpcError:
                    pass  # the pod died or the log is away: again, same batch_id
                finally:
                    ch.close()
                time.sleep(0.05)
            self.max_stall = max(self.max_stall, time.monotonic() - t0)
            self.next_id += self.batch

    def stop(self):
        self.stop_event.set()
        self.thread.join()
        return self


class Searcher:
    """Searches without pause through one pod; counts answers and failures
    (an error, a short answer, an id twice in one merged answer)."""

    def __init__(self, pod, name, queries, k=10):
        self.pod, self.name, self.queries, self.k = pod, name, queries, k
        self.ok = 0
        self.failures = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        ch = grpc.insecure_channel(self.pod.addr)
        stub = pbg.SlimVecStub(ch)
        i = 0
        while not self.stop_event.is_set():
            q = self.queries[i % len(self.queries)]
            i += 1
            try:
                r = stub.Search(pb.SearchRequest(collection=self.name, queries=q.tolist(), k=self.k),
                                timeout=scaled(5))
                ids = [h.id for h in r.results[0].hits] if len(r.results) == 1 else []
                if len(ids) != self.k:
                    self.failures.append("short answer: %d hits" % len(ids))
                if len(set(ids)) != len(ids):
                    self.failures.append("an id twice in one merged answer: %s" % ids)
                self.ok += 1
            except grpc.RpcError as e:
                self.failures.append("%s: %s" % (e.code(), e.details()))
        ch.close()

    def stop(self):
        self.stop_event.set()
        self.thread.join()
        return self


class Paths(unittest.TestCase):
    """The public API through any pod behaves as a single node does."""

    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(SLIMVECD, STUBS)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def test_write_read_paths(self):
        c = self.c
        st = c.stub(c.pod(0, 0))
        other = c.stub(c.pod(1, 1))
        st.CreateCollection(pb.CreateCollectionRequest(spec=spec("paths")), timeout=T)
        with self.assertRaises(grpc.RpcError) as e:
            other.CreateCollection(pb.CreateCollectionRequest(spec=spec("paths")), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
        # Every pod has the collection (its own shard's copy).
        for pod in c.pods:
            wait_for(lambda: local_count(pod, "paths") == 0, 10, "the collection on every pod")
        X = vectors(3000, 1)
        ids = [str(i) for i in range(3000)]
        acks = ingest(st, "paths", X, ids)
        self.assertTrue(all(not a.HasField("error") and a.applied == 200 for a in acks), acks[:1])
        self.assertTrue(all(a.positions for a in acks))
        # Refusals, as a single node gives them; nothing is written.
        bad = [
            (pb.IngestRequest(collection="paths", vectors=X[:2].ravel().tolist(), ids=["5", "new-1"]),
             grpc.StatusCode.ALREADY_EXISTS),
            (pb.IngestRequest(collection="paths", vectors=[float("nan")] * DIM), grpc.StatusCode.INVALID_ARGUMENT),
            (pb.IngestRequest(collection="paths", vectors=[1.0] * (DIM + 1)), grpc.StatusCode.INVALID_ARGUMENT),
            (pb.IngestRequest(collection="paths", vectors=[1.0] * DIM, ids=["4611686018427387904"]),
             grpc.StatusCode.INVALID_ARGUMENT),
            (pb.IngestRequest(collection="paths", vectors=[1.0] * DIM, batch_id="has space"),
             grpc.StatusCode.INVALID_ARGUMENT),
            (pb.IngestRequest(collection="nope", vectors=[1.0] * DIM), grpc.StatusCode.NOT_FOUND),
        ]
        for req, code in bad:
            a = list(other.Ingest(iter([req]), timeout=T))[0]
            self.assertTrue(a.HasField("error"), req)
            self.assertEqual(a.error.code, code.value[0], a.error.message)
        # Assigned ids: unique, numeric, routed back to their shard.
        a = list(other.Ingest(iter([pb.IngestRequest(collection="paths", vectors=X[:4].ravel().tolist())]),
                              timeout=T))[0]
        self.assertFalse(a.HasField("error"), a.error.message)
        assigned = list(a.ids)
        self.assertEqual(len(set(assigned)), 4)
        self.assertTrue(all(int(i) >= 2 ** 62 for i in assigned))
        got = st.Get(pb.GetRequest(collection="paths", ids=assigned + ["7", "2999"],
                                   after=list(a.positions) + [p for ack in acks for p in ack.positions]), timeout=T)
        self.assertEqual([v.id for v in got.vectors], assigned + ["7", "2999"])
        np.testing.assert_allclose(np.array(got.vectors[0].values), X[0], atol=0.1)
        # "new-1" was in a refused batch, in a part of its own: nothing of a
        # refused part is written (the other parts say so in the message).
        for r in range(c.sets):
            wait_for(lambda: sum(local_count(c.pod(r, sh), "paths") for sh in range(c.shards)) == 3004, 20,
                     "replica set r%d to hold the 3004 vectors" % r)
        # Describe and List through any pod: the cluster's totals (vectors
        # once, memory over all four replicas) and every replica's part.
        d = other.DescribeCollection(pb.DescribeCollectionRequest(name="paths"), timeout=T)
        self.assertEqual(d.info.vectors, 3004)
        self.assertEqual(len(d.replicas), c.shards * c.sets)
        self.assertEqual(list(d.missing_shards), [])
        self.assertEqual(d.info.spec.dimension, DIM)
        self.assertEqual(d.info.memory.allocated_bytes, sum(x.info.memory.allocated_bytes for x in d.replicas))
        self.assertAlmostEqual(d.info.memory.bytes_per_vector, d.info.memory.allocated_bytes / 3004, places=3)
        for x in d.replicas:
            self.assertEqual(x.info.vectors, local_count(c.pod(int(x.pod[1]), x.shard), "paths"))
        print("Describe through a router: %d vectors, %d replicas, %.0f bytes a vector with every copy" %
              (d.info.vectors, len(d.replicas), d.info.memory.bytes_per_vector))
        listed = {x.spec.name: x.vectors for x in other.ListCollections(pb.ListCollectionsRequest(),
                                                                          timeout=T).collections}
        self.assertEqual(listed.get("paths"), 3004)
        # Search: read your writes, merged top-k, recall as one node's.
        Q = vectors(50, 2)
        pos = [p for ack in acks for p in ack.positions]
        r = other.Search(pb.SearchRequest(collection="paths", queries=X[100].tolist(), k=1, after=pos), timeout=T)
        self.assertEqual(r.results[0].hits[0].id, "100")
        base = np.vstack([X, X[:4]])
        all_ids = ids + assigned
        cluster_recall = recall(st, "paths", base, all_ids, Q)
        single = Slimvecd(SLIMVECD, STUBS, "--data-dir", ":memory:")
        try:
            single.stub.CreateCollection(pb.CreateCollectionRequest(spec=spec("paths")), timeout=T)
            ingest(single.stub, "paths", base, all_ids)
            single.stub.Flush(pb.FlushRequest(collection="paths"), timeout=T)
            single_recall = recall(single.stub, "paths", base, all_ids, Q)
        finally:
            single.stop()
        print("recall@10: cluster (2 shards) %.3f, single node %.3f" % (cluster_recall, single_recall))
        self.assertGreaterEqual(cluster_recall, single_recall - 0.02)
        # Metrics: where each replica is in its stream, appends, fan-outs.
        text = c.pod(0, 0).metrics()
        for name in ("slimvec_cluster_applied_lsn{collection=\"paths\",shard=\"0\"}",
                     "slimvec_cluster_lag_records{collection=\"paths\",shard=\"0\"} 0",
                     "slimvec_cluster_appends_total", "slimvec_cluster_append_seconds_total",
                     "slimvec_cluster_fanout_seconds_total{shard=\"1\"}", "slimvec_cluster_hedges_total",
                     "slimvec_cluster_retries_total"):
            self.assertTrue(name in text, name)

        def metric(t, name):
            return float(t.split("\n" + name + " ")[1].split()[0])
        self.assertGreaterEqual(metric(text, "slimvec_cluster_appends_total"), 15)
        # "5" (shard 1) was refused by shard 1's replicas.
        self.assertGreaterEqual(metric(c.pod(0, 1).metrics(), "slimvec_cluster_records_refused_total"), 1)
        # Delete: counts distinct ids; an unknown id refuses its shard's part.
        d = other.Delete(pb.DeleteRequest(collection="paths", ids=["10", "11", "10"]), timeout=T)
        self.assertEqual(d.deleted, 2)
        with self.assertRaises(grpc.RpcError) as e:
            st.Delete(pb.DeleteRequest(collection="paths", ids=["10"]), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as e:
            st.Get(pb.GetRequest(collection="paths", ids=["11"]), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        # Drop and create again: the new one starts empty (new streams).
        other.DropCollection(pb.DropCollectionRequest(name="paths"), timeout=T)
        with self.assertRaises(grpc.RpcError) as e:
            st.Search(pb.SearchRequest(collection="paths", queries=Q[0].tolist(), k=1), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        st.CreateCollection(pb.CreateCollectionRequest(spec=spec("paths")), timeout=T)
        for pod in c.pods:
            wait_for(lambda: local_count(pod, "paths") == 0, 10, "the new collection everywhere")
        r = other.Search(pb.SearchRequest(collection="paths", queries=Q[0].tolist(), k=5), timeout=T)
        self.assertEqual(len(r.results[0].hits), 0)


    def test_payloads_and_filters(self):
        """Payloads through a router: each shard's part of a batch carries
        its payloads in its log record; a filtered search fans out and every
        hit passes; a payload whose key holds another type on the replicas
        is refused by them and the batch's answer says so. Count sums the
        shards, Scroll pages through them, SetPayload writes one record in
        the id's shard, upserts replace on the ids' shards."""
        c = self.c
        st = c.stub(c.pod(0, 0))
        other = c.stub(c.pod(1, 1))
        st.CreateCollection(pb.CreateCollectionRequest(spec=spec("pay")), timeout=T)
        for pod in c.pods:
            wait_for(lambda: local_count(pod, "pay") == 0, 10, "the collection on every pod")
        X = vectors(2000, 3)

        def payload(i):
            pl = pb.Payload()
            pl.fields["class"].string_value = "c%d" % (i % 10)
            pl.fields["u"].int_value = i
            return pl

        def req(lo, hi, **kw):
            return pb.IngestRequest(collection="pay", vectors=X[lo:hi].ravel().tolist(),
                                    ids=[str(i) for i in range(lo, hi)],
                                    payloads=[payload(i) for i in range(lo, hi)], **kw)
        acks = list(st.Ingest(iter([req(b, b + 200) for b in range(0, 2000, 200)]), timeout=T))
        self.assertTrue(all(not a.HasField("error") for a in acks), [a.error.message for a in acks][:2])
        pos = [p for a in acks for p in a.positions]
        flt = pb.Filter(must=[pb.Condition(match=pb.FieldMatch(key="class", string_value="c3"))],
                        must_not=[pb.Condition(range=pb.FieldRange(key="u", lower=pb.RangeBound(int_value=1000)))])
        for q in range(10):
            r = other.Search(pb.SearchRequest(collection="pay", queries=X[q * 7].tolist(), k=10, search_list=64,
                                              filter=flt, with_payload=True, after=pos), timeout=T).results[0]
            self.assertEqual(len(r.hits), 10)
            for h in r.hits:
                i = int(h.id)
                self.assertTrue(i % 10 == 3 and i < 1000, h.id)
                self.assertEqual(h.payload.fields["class"].string_value, "c%d" % (i % 10))
        got = st.Get(pb.GetRequest(collection="pay", ids=["13", "1999"], with_payload=True, after=pos), timeout=T)
        self.assertEqual([v.payload.fields["u"].int_value for v in got.vectors], [13, 1999])
        # "u" holds int64s on every replica: a string there is refused by
        # them (the router cannot know), the others' parts are applied.
        bad = pb.Payload()
        bad.fields["u"].string_value = "text"
        a = list(other.Ingest(iter([pb.IngestRequest(collection="pay", vectors=X[:1].ravel().tolist(),
                                                     ids=["new-0"], payloads=[bad])]), timeout=T))[0]
        self.assertTrue(a.HasField("error"))
        self.assertIn("holds int64 values", a.error.message)
        # Within one batch the router refuses before anything is written.
        mixed = [payload(0), bad]
        a = list(other.Ingest(iter([pb.IngestRequest(collection="pay", vectors=X[:2].ravel().tolist(),
                                                     ids=["m-1", "m-2"], payloads=mixed)]), timeout=T))[0]
        self.assertEqual(a.error.code, grpc.StatusCode.INVALID_ARGUMENT.value[0], a.error.message)
        self.assertEqual(len(a.positions), 0)
        # Count: summed over the shards (after the writes: read your writes).
        self.assertEqual(other.Count(pb.CountRequest(collection="pay", after=pos), timeout=T).count, 2000)
        self.assertEqual(st.Count(pb.CountRequest(collection="pay", filter=flt, after=pos), timeout=T).count, 100)
        # Scroll: shard after shard, every id once, pages full but the last.
        seen, token, pages = [], "", 0
        while True:
            page = other.Scroll(pb.ScrollRequest(collection="pay", page_size=300, page_token=token,
                                                 with_payload=True, after=pos), timeout=T)
            pages += 1
            token = page.next_page_token
            if token:
                self.assertEqual(len(page.vectors), 300)
            for v in page.vectors:
                self.assertEqual(v.payload.fields["u"].int_value, int(v.id))
            seen += [v.id for v in page.vectors]
            if not token:
                break
        self.assertEqual(sorted(seen), sorted(str(i) for i in range(2000)))
        self.assertEqual(pages, 7)
        page = st.Scroll(pb.ScrollRequest(collection="pay", filter=flt, page_size=1000), timeout=T)
        self.assertEqual(sorted(int(v.id) for v in page.vectors), list(range(3, 1000, 10)))
        self.assertEqual(page.next_page_token, "")
        for bad_token in ("9:*:", "x", "0:", "1:abc", "0::5", "0:*:5", "0:pod:", "-1:*:", "0:" + "p" * 100 + ":5",
                          "0:pod:" + "9" * 40):
            with self.assertRaises(grpc.RpcError) as e:
                st.Scroll(pb.ScrollRequest(collection="pay", page_token=bad_token), timeout=T)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, bad_token)
        with self.assertRaises(grpc.RpcError) as e:  # a page past --max-get-ids
            st.Scroll(pb.ScrollRequest(collection="pay", page_size=10 ** 7), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, e.exception.details())
        # A token of a pod that does not serve the shard: start again.
        with self.assertRaises(grpc.RpcError) as e:
            st.Scroll(pb.ScrollRequest(collection="pay", page_token="0:no-such-pod:42"), timeout=T)
        self.assertEqual(e.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, e.exception.details())
        # SetPayload: one record in the id's shard; its positions read back.
        patch = pb.Payload()
        patch.fields["u"].int_value = -5
        sp = other.SetPayload(pb.SetPayloadRequest(collection="pay", id="13", payload=patch, patch=True), timeout=T)
        self.assertEqual(len(sp.positions), 1)
        got = st.Get(pb.GetRequest(collection="pay", ids=["13"], with_payload=True, after=list(sp.positions)),
                     timeout=T).vectors[0]
        self.assertEqual(got.payload.fields["u"].int_value, -5)
        self.assertEqual(got.payload.fields["class"].string_value, "c3")
        neg = pb.Filter(must=[pb.Condition(range=pb.FieldRange(key="u", upper=pb.RangeBound(int_value=0)))])
        self.assertEqual(other.Count(pb.CountRequest(collection="pay", filter=neg, after=list(sp.positions)),
                                     timeout=T).count, 1)
        for msg, code in ((pb.SetPayloadRequest(collection="pay", id="nobody", payload=patch),
                           grpc.StatusCode.NOT_FOUND),
                          (pb.SetPayloadRequest(collection="pay", id="14", payload=bad, patch=True),
                           grpc.StatusCode.INVALID_ARGUMENT)):
            with self.assertRaises(grpc.RpcError) as e:
                st.SetPayload(msg, timeout=T)
            self.assertEqual(e.exception.code(), code, e.exception.details())
        # Upsert: the ids' shards replace their vectors and payloads.
        moved = X[:2] + 5.0
        a = list(st.Ingest(iter([pb.IngestRequest(collection="pay", vectors=moved.ravel().tolist(),
                                                  ids=["14", "up-new"], payloads=[payload(7), payload(8)],
                                                  upsert=True)]), timeout=T))[0]
        self.assertFalse(a.HasField("error"), a.error.message)
        after = list(a.positions)
        got = other.Get(pb.GetRequest(collection="pay", ids=["14", "up-new"], with_payload=True, after=after),
                        timeout=T).vectors
        self.assertLess(float(np.abs(np.array(got[0].values) - moved[0]).max()), 0.5)
        self.assertEqual([v.payload.fields["u"].int_value for v in got], [7, 8])
        self.assertEqual(other.Count(pb.CountRequest(collection="pay", after=after), timeout=T).count, 2001)
        r = other.Search(pb.SearchRequest(collection="pay", queries=moved[0].tolist(), k=1, after=after),
                         timeout=T).results[0]
        self.assertEqual(r.hits[0].id, "14")
        # An id twice in a batch: refused by the router before any record
        # (its copies could land in two records of a shard).
        a = list(st.Ingest(iter([pb.IngestRequest(collection="pay", vectors=X[:2].ravel().tolist(),
                                                  ids=["20", "20"], upsert=True)]), timeout=T))[0]
        self.assertEqual(a.error.code, grpc.StatusCode.ALREADY_EXISTS.value[0], a.error.message)
        self.assertEqual(len(a.positions), 0)
        # CreateIndex: a record in every shard; Describe lists it; the
        # filters answer as before.
        n_c3 = other.Count(pb.CountRequest(collection="pay", filter=flt, after=after), timeout=T).count
        ci = st.CreateIndex(pb.CreateIndexRequest(collection="pay", key="class"), timeout=T)
        self.assertEqual(len(ci.positions), c.shards)
        info = other.DescribeCollection(pb.DescribeCollectionRequest(name="pay"), timeout=T).info
        self.assertEqual(list(info.indexed_keys), ["class"])
        self.assertEqual(other.Count(pb.CountRequest(collection="pay", filter=flt, after=list(ci.positions)),
                                     timeout=T).count, n_c3)
        # At creation: every shard's log starts with the INDEX records.
        idx = spec("idx")
        idx.indexed_keys.extend(["u", "class"])
        other.CreateCollection(pb.CreateCollectionRequest(spec=idx), timeout=T)
        wait_for(lambda: sorted(st.DescribeCollection(pb.DescribeCollectionRequest(name="idx"), timeout=T)
                                .info.indexed_keys) == ["class", "u"], 10, "the indexes on the replicas")
        other.DropCollection(pb.DropCollectionRequest(name="idx"), timeout=T)
        other.DropCollection(pb.DropCollectionRequest(name="pay"), timeout=T)


class ReadYourWrites(unittest.TestCase):
    """T5: replica set r1 applies in passes 3 s apart (a lagging replica)."""

    def test_never_stale(self):
        c = Cluster(SLIMVECD, STUBS)
        try:
            for p in c.pods:
                if p.r == 1:
                    p.extra = ["--test-apply-delay-ms", "3000"]
                    c.restart(p)
            st = c.stub(c.pod(0, 0))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("ryw", storage=pb.STORAGE_F32)), timeout=T)
            for pod in c.pods:
                wait_for(lambda: local_count(pod, "ryw") == 0, 20, "the collection everywhere", step=0.1)
            rng = np.random.default_rng(3)
            stale_without = 0
            held = failed = 0
            for i in range(10):
                v = rng.standard_normal(DIM).astype(np.float32)
                a = list(st.Ingest(iter([pb.IngestRequest(collection="ryw", vectors=v.tolist(), ids=[str(i)])]),
                                   timeout=T))[0]
                self.assertFalse(a.HasField("error"), a.error.message)
                # Straight to a lagging replica of the shard, with the token:
                # it waits, then answers with the write, or fails by the
                # deadline; never an answer without it.
                pod = c.pod(1, route(i, c.shards))
                ch = grpc.insecure_channel(pod.addr)
                shard = pbg.SlimVecShardStub(ch)
                try:
                    r = shard.Search(pb.SearchRequest(collection="ryw", queries=v.tolist(), k=1,
                                                      after=list(a.positions)), timeout=0.3 if i % 2 else 8,
                                      metadata=shard_md(pod))
                    self.assertEqual(r.results[0].hits[0].id, str(i), "a stale answer with a token")
                    held += 1
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.DEADLINE_EXCEEDED, e.details())
                    failed += 1
                # Without the token the lagging replica answers at once,
                # and is stale: the lag is real.
                r = shard.Search(pb.SearchRequest(collection="ryw", queries=v.tolist(), k=1), timeout=T,
                                 metadata=shard_md(pod))
                if not r.results[0].hits or r.results[0].hits[0].id != str(i):
                    stale_without += 1
                # Through a router: the token holds too (the lagging replica
                # waits, its sibling answers first after the hedge delay).
                r = c.stub(c.pod(1, 0)).Search(pb.SearchRequest(collection="ryw", queries=v.tolist(), k=1,
                                                                after=list(a.positions)), timeout=T)
                self.assertEqual(r.results[0].hits[0].id, str(i))
                ch.close()
            print("read-your-writes on a lagging replica: %d answers held the write, %d failed by the deadline, "
                  "0 stale; without the token %d of 10 answers were stale" % (held, failed, stale_without))
            # The router asked the lagging replica first about half the time
            # and answered from its sibling after the hedge delay.
            text = c.pod(1, 0).metrics()
            hedges = float(text.split("\nslimvec_cluster_hedges_total ")[1].split()[0])
            wins = float(text.split("\nslimvec_cluster_hedge_wins_total ")[1].split()[0])
            print("hedges through r1-s0: %d started, %d answered first" % (hedges, wins))
            self.assertGreaterEqual(wins, 1)
            self.assertGreater(stale_without, 0, "the replica did not lag: the test proves nothing")
            self.assertGreater(held, 0)
            self.assertGreater(failed, 0)
        finally:
            c.close()


class Failover(unittest.TestCase):
    def test_t3_searches_while_replicas_die(self):
        c = Cluster(SLIMVECD, STUBS)
        try:
            st = c.stub(c.pod(0, 0))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("t3")), timeout=T)
            X = vectors(4000, 4)
            ids = [str(i) for i in range(4000)]
            ingest(st, "t3", X, ids)
            for pod in c.pods:
                wait_for(lambda: local_count(pod, "t3") == 2000, 30, "catch-up", step=0.1)
            Q = vectors(50, 5)
            before = recall(st, "t3", X, ids, Q)
            # Searches through r0-s0 while r1-s0 and r1-s1 die (one replica
            # per shard), come back, then r0-s1 dies.
            s = Searcher(c.pod(0, 0), "t3", Q)
            time.sleep(0.5)
            c.pod(1, 0).kill()
            c.pod(1, 1).kill()
            time.sleep(1.0)
            after_kill = recall(st, "t3", X, ids, Q)
            for r, sh in ((1, 0), (1, 1)):
                c.pod(r, sh).start()
            for r, sh in ((1, 0), (1, 1)):
                c.pod(r, sh).wait_ready()
            time.sleep(0.5)
            c.pod(0, 1).kill()
            time.sleep(1.0)
            s.stop()
            print("T3: %d searches while one replica per shard was SIGKILLed: %d failed; recall@10 %.3f before, "
                  "%.3f with one replica per shard" % (s.ok, len(s.failures), before, after_kill))
            self.assertEqual(s.failures, [])
            self.assertGreater(s.ok, 20)
            self.assertGreaterEqual(after_kill, before - 0.02)
            # A shard with no live replica: UNAVAILABLE, or partial on request.
            c.pod(1, 1).kill()
            with self.assertRaises(grpc.RpcError) as e:
                st.Search(pb.SearchRequest(collection="t3", queries=Q[0].tolist(), k=10), timeout=T)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            r = st.Search(pb.SearchRequest(collection="t3", queries=Q[0].tolist(), k=10, allow_partial=True),
                          timeout=T)
            self.assertEqual(list(r.missing_shards), [1])
            self.assertEqual(len(r.results[0].hits), 10)
            self.assertTrue(all(route(h.id, 2) == 0 for h in r.results[0].hits))
        finally:
            c.close()

    def test_t8_everything_killed(self):
        c = Cluster(SLIMVECD, STUBS, extra=["--snapshot-log-bytes", "200000"])
        try:
            st = c.stub(c.pod(0, 1))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("t8")), timeout=T)
            w = Writer(c, "t8")
            wait_for(lambda: len(w.acked) >= 3000, 60, "3000 acknowledged", step=0.1)
            epoch = c.pod(0, 0).metric("slimvec_cluster_map_epoch")
            # Everything at once: the pods, then the NATS servers and etcd,
            # SIGKILL.
            for p in c.pods:
                p.kill()
            for i in range(c.nats.n):
                c.nats.kill(i)
            for i in range(c.etcd.n):
                c.etcd.kill(i)
            acked_before = len(w.acked)
            for i in range(c.etcd.n):
                c.etcd.start(i)
            for i in range(c.nats.n):
                c.nats.start(i)
            for i in range(c.etcd.n):
                c.etcd.wait_ready(i)
            for i in range(c.nats.n):
                c.nats.wait_ready(i)
            t0 = time.monotonic()
            for p in c.pods:
                p.start()
            for p in c.pods:
                p.wait_ready(120)
            up = time.monotonic() - t0
            # The batch in flight at the kill is sent again (its batch_id)
            # until acknowledged: then the replicas hold exactly what was.
            acked = w.stop().acked
            resent = time.monotonic() - t0
            self.assertEqual(w.errors, [])
            assert_replicas_hold(self, c, "t8", acked, seconds=120)
            # The map came back as it was: same replicas, same epoch.
            self.assertEqual([p.metric("slimvec_cluster_map_epoch") for p in c.pods], [epoch] * len(c.pods))
            print("T8: %d acknowledged before everything was SIGKILLed, %d in all; after the restart the pods "
                  "served in %.1f s, the batch in flight was acknowledged at %.1f s, every replica held exactly "
                  "the acknowledged ids at %.1f s" % (acked_before, len(acked), up, resent, time.monotonic() - t0))
            self.assertEqual(w.errors, [])
        finally:
            c.close()


class Crash(unittest.TestCase):
    def test_t1_pods_killed_mid_ingest(self):
        c = Cluster(SLIMVECD, STUBS, extra=["--snapshot-log-bytes", "100000"])
        rng = random.Random(SEED)
        try:
            c.stub(c.pod(0, 0)).CreateCollection(pb.CreateCollectionRequest(spec=spec("t1")), timeout=T)
            w = Writer(c, "t1", batch=20)
            for rnd in range(ROUNDS):
                pod = rng.choice(c.pods)
                time.sleep(rng.uniform(0.05, 0.3))
                pod.kill()
                time.sleep(rng.uniform(0, 0.2))
                pod.start()
                pod.wait_ready(120)
            w.stop()
            print("T1: %d rounds (seed %d): %d ids acknowledged, longest wait for an acknowledgement %.2f s" %
                  (ROUNDS, SEED, len(w.acked), w.max_stall))
            self.assertEqual(w.errors, [])
            self.assertGreater(len(w.acked), ROUNDS * 20)
            assert_replicas_hold(self, c, "t1", w.acked, seconds=120)
        except Exception:
            print(c.logs())
            raise
        finally:
            c.close()


class NatsFaults(unittest.TestCase):
    def test_t2_stream_leader_killed(self):
        c = Cluster(SLIMVECD, STUBS, extra=["--nats-timeout-ms", "2000"])
        try:
            st = c.stub(c.pod(0, 0))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("t2")), timeout=T)
            w = Writer(c, "t2", batch=20)
            wait_for(lambda: len(w.acked) >= 400, 30, "400 acknowledged", step=0.05)
            # The shard streams are SV_c<incarnation>_s<shard>: find shard 0's
            # and its leader (asking every server until one says).
            def shard0_leader():
                for i in range(c.nats.n):
                    try:
                        info = c.nats.jsz(i, "?accounts=true&streams=true")
                    except Exception:  # noqa: BLE001 - busy: ask the next
                        continue
                    for acc in info.get("account_details", []):
                        for s in acc.get("stream_detail", []):
                            if s["name"].startswith("SV_c") and s["name"].endswith("_s0"):
                                leader = c.nats.stream_leader(s["name"])
                                if leader is not None:
                                    return s["name"], leader
                return None
            inc, leader = wait_for(shard0_leader, 30, "shard 0's stream and its leader", step=0.2)
            n_before = len(w.acked)
            c.nats.kill(leader)
            wait_for(lambda: len(w.acked) >= n_before + 400, 60, "writes after the leader died", step=0.05)
            w.stop()
            c.nats.start(leader)
            c.nats.wait_ready(leader)
            print("T2: stream %s leader n%d SIGKILLed mid-ingest: longest write stall %.2f s; %d acknowledged" %
                  (inc, leader, w.max_stall, len(w.acked)))
            assert_replicas_hold(self, c, "t2", w.acked)
            self.assertEqual(w.errors, [])
        finally:
            c.close()

    def test_t4_nats_paused(self):
        c = Cluster(SLIMVECD, STUBS, extra=["--nats-timeout-ms", "1500"])
        try:
            st = c.stub(c.pod(0, 0))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("t4")), timeout=T)
            X = vectors(600, 6)
            ingest(st, "t4", X, [str(i) for i in range(600)])
            Q = vectors(20, 7)
            searcher = Searcher(c.pod(1, 0), "t4", Q)
            # One of three stopped: writes go on (after an election when it
            # led the stream: a client sends again with the batch_id).
            c.nats.pause(2)
            t0 = time.monotonic()

            positions = []

            def sent(ident, batch_id):
                r = list(st.Ingest(iter([pb.IngestRequest(collection="t4", vectors=X[:1].ravel().tolist(),
                                                          ids=[ident], batch_id=batch_id)]), timeout=T))[0]
                if r.HasField("error"):
                    self.assertEqual(r.error.code, grpc.StatusCode.UNAVAILABLE.value[0], r.error.message)
                    return False
                positions.extend(r.positions)
                return True
            wait_for(lambda: sent("one-paused", "t4-a"), 30, "a write with one NATS server stopped", step=0.2)
            one_stall = time.monotonic() - t0
            for i in range(5):
                wait_for(lambda: sent("one-paused-%d" % i, "t4-a%d" % i), 30, "writes with one stopped", step=0.2)
            # Two of three: no quorum, nothing acknowledged, searches go on.
            c.nats.pause(1)
            t0 = time.monotonic()
            a = list(st.Ingest(iter([pb.IngestRequest(collection="t4", vectors=X[:1].ravel().tolist(),
                                                      ids=["two-paused"], batch_id="t4-b")]), timeout=T))[0]
            refused_after = time.monotonic() - t0
            self.assertTrue(a.HasField("error"))
            self.assertEqual(a.error.code, grpc.StatusCode.UNAVAILABLE.value[0], a.error.message)
            with self.assertRaises(grpc.RpcError) as e:
                st.CreateCollection(pb.CreateCollectionRequest(spec=spec("t4b")), timeout=T)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            time.sleep(1)
            c.nats.resume(1)
            c.nats.resume(2)
            searcher.stop()
            # The refused batch, sent again with its batch_id: in once.
            wait_for(lambda: sent("two-paused", "t4-b"), 60, "writes after SIGCONT", step=0.5)
            got = st.Get(pb.GetRequest(collection="t4", ids=["one-paused", "two-paused"], after=positions), timeout=T)
            self.assertEqual(len(got.vectors), 2)
            print("T4: one NATS server stopped: writes went on (the first after %.1f s); two: refused UNAVAILABLE "
                  "after %.1f s, %d searches answered meanwhile, %d failed" %
                  (one_stall, refused_after, searcher.ok, len(searcher.failures)))
            self.assertEqual(searcher.failures, [])
            self.assertGreater(searcher.ok, 5)
        finally:
            c.close()


class Security(unittest.TestCase):
    """Tokens on every pod: a router passes the caller's token on, so each
    pod authorizes the caller; a read token cannot write through a router."""

    def test_tokens_through_routers(self):
        import hashlib
        admin, reader = "admin-" + "a" * 32, "reader-" + "b" * 32
        tokens = os.path.join(tempfile.mkdtemp(prefix="sv-tokens-"), "tokens")
        with open(tokens, "w") as f:
            f.write("sha256:%s admin\n" % hashlib.sha256(admin.encode()).hexdigest())
            f.write("sha256:%s read\n" % hashlib.sha256(reader.encode()).hexdigest())
        c = Cluster(SLIMVECD, STUBS, extra=["--tokens-file", tokens], metrics_token=admin)
        try:
            def stub(pod, token):
                ch = grpc.insecure_channel(pod.addr)
                if token:
                    from svtest import token_interceptor
                    ch = grpc.intercept_channel(ch, token_interceptor(token))
                return pbg.SlimVecStub(ch), pbg.SlimVecShardStub(ch)
            adm, _ = stub(c.pod(0, 0), admin)
            rd, rd_shard = stub(c.pod(1, 1), reader)
            anon, anon_shard = stub(c.pod(0, 1), None)
            adm.CreateCollection(pb.CreateCollectionRequest(spec=spec("sec")), timeout=T)
            X = vectors(200, 8)
            acks = ingest(adm, "sec", X, [str(i) for i in range(200)])
            self.assertEqual([a.error.message for a in acks if a.HasField("error")], [])
            pos = [p for a in acks for p in a.positions]
            # Read: through another pod, both shards answer the reader.
            r = rd.Search(pb.SearchRequest(collection="sec", queries=X[3].tolist(), k=1, after=pos), timeout=T)
            self.assertEqual(r.results[0].hits[0].id, "3")
            self.assertEqual(len(rd.Get(pb.GetRequest(collection="sec", ids=["4", "5"], after=pos),
                                        timeout=T).vectors), 2)
            # Writes with a read token: refused by the router, nothing logged.
            for call in (lambda: list(rd.Ingest(iter([pb.IngestRequest(collection="sec", vectors=X[0].tolist(),
                                                                       ids=["w"])]), timeout=T)),
                         lambda: rd.Delete(pb.DeleteRequest(collection="sec", ids=["1"]), timeout=T),
                         lambda: rd.CreateCollection(pb.CreateCollectionRequest(spec=spec("sec2")), timeout=T),
                         lambda: rd_shard.Applied(pb.ShardApplyRequest(collection="sec",
                                                                       position=pos[0]), timeout=T)):
                with self.assertRaises(grpc.RpcError) as e:
                    call()
                self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
            with self.assertRaises(grpc.RpcError) as e:
                adm.Get(pb.GetRequest(collection="sec", ids=["w"]), timeout=T)
            self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
            # No token: refused everywhere, pod-to-pod methods included.
            for call in (lambda: anon.Search(pb.SearchRequest(collection="sec", queries=X[0].tolist(), k=1),
                                             timeout=T),
                         lambda: anon_shard.Search(pb.SearchRequest(collection="sec", queries=X[0].tolist(), k=1),
                                                   timeout=T)):
                with self.assertRaises(grpc.RpcError) as e:
                    call()
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            with self.assertRaises(grpc.RpcError) as e:
                local_count(c.pod(0, 0), "sec")
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        finally:
            c.close()


class TlsLinks(unittest.TestCase):
    """TLS everywhere: clients to pods, pods to pods (--peer-ca), pods to
    NATS (tls:// URLs, --nats-ca; the NATS servers require TLS)."""

    def test_tls_links(self):
        from clustertest import Nats
        from svtest import Certs
        certs = Certs(tempfile.mkdtemp(prefix="sv-certs-"))
        ca = certs.ca("ca")
        pod_cert, pod_key = certs.leaf("pod", "ca")
        nats_cert, nats_key = certs.leaf("nats", "ca")
        nats = Nats(3, tls=(nats_cert, nats_key))
        c = None
        try:
            c = Cluster(SLIMVECD, STUBS, nats=nats, client={"ca": ca},
                        extra=["--tls-cert", pod_cert, "--tls-key", pod_key, "--peer-ca", ca, "--nats-ca", ca])
            st = pbg.SlimVecStub(c.channel(c.pod(0, 0)))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("tls")), timeout=T)
            X = vectors(300, 9)
            acks = ingest(st, "tls", X, [str(i) for i in range(300)])
            self.assertTrue(all(not a.HasField("error") for a in acks))
            pos = [p for a in acks for p in a.positions]
            other = pbg.SlimVecStub(c.channel(c.pod(1, 1)))
            r = other.Search(pb.SearchRequest(collection="tls", queries=X[7].tolist(), k=1, after=pos), timeout=T)
            self.assertEqual(r.results[0].hits[0].id, "7")
            # A plaintext client is not served.
            with self.assertRaises(grpc.RpcError):
                pbg.SlimVecStub(grpc.insecure_channel(c.pod(0, 0).addr)).ListCollections(
                    pb.ListCollectionsRequest(), timeout=scaled(3))
        finally:
            if c:
                c.close()
            nats.close()


GROUPS = {"paths": [Paths, Security, TlsLinks], "ryw": [ReadYourWrites], "failover": [Failover], "crash": [Crash],
          "nats": [NatsFaults]}

if __name__ == "__main__":
    suite = unittest.TestSuite()
    for cls in GROUPS[GROUP]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
