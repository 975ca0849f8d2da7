#!/usr/bin/python3
"""The cluster's topology changing while it serves: real etcd members,
nats-server processes and slimvecd pods on loopback, killed with SIGKILL
and paused with SIGSTOP. No mock of any engine.

Usage (ctest runs one group per test): test_topology.py SLIMVECD STUBS GROUP
  move     T6: under ingest and search load, a new pod joins shard 1 (a
           peer's snapshot, then the stream's tail) and its old replica is
           drained; then shard 0 moves to the drained pod (MoveShard). 0
           acknowledged lost, 0 failed searches, no duplicate ids in merged
           results; a router with a stale map (it reads etcd only every
           few seconds) is refused by the pods that left and reads the map
           again
  purge    T7: snapshots and the stream's purge below them; a replica
           restarted from its snapshot plus the tail; a replica away while
           the stream was purged past its snapshot loads a peer's newer
           snapshot instead of failing to start
  etcd     three etcd members: one SIGKILLed, map reads and changes go on;
           two: reads (the map, routing, searches, writes) go on, changes
           fail cleanly (UNAVAILABLE); both restarted: changes work again
  rolling  every pod restarted in turn (SIGTERM) under ingest and search
           load: 0 failed searches, 0 acknowledged lost
  originals  originals on disk: each replica's own from the stream; a pod
           that lost its disk takes a peer's snapshot and originals file; a
           SIGKILLed one recovers its own; Get exact, searches re-ranked
           exactly on each
"""

import os
import sys
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402  (the same argv: SLIMVECD STUBS GROUP)
from test_cluster import (DIM, SLIMVECD, STUBS, T, Searcher, Writer, ingest, local_count, shard_md,  # noqa: E402
                          shard_get, spec, vectors)

import grpc  # noqa: E402
from clustertest import Cluster, Etcd, Pod  # noqa: E402
from svtest import scaled, wait_for  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from slimvec.v1 import slimvec_pb2_grpc as pbg  # noqa: E402

GROUP = sys.argv[3] if len(sys.argv) > 3 else "move"


def admin(pod):
    return pbg.SlimVecClusterStub(pod.channel())


def cli(*args):
    """The operators' CLI (slimvec, beside slimvecd): its output; fails the
    test on a non-zero exit."""
    import subprocess
    p = subprocess.run([os.path.join(os.path.dirname(SLIMVECD), "slimvec"), *args], capture_output=True, text=True,
                       timeout=scaled(60))
    if p.returncode:
        raise AssertionError("slimvec %s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p.stdout


def shard_of(ident, shards):
    return int(ident) % shards


def holders(cluster):
    """pod -> the shard it follows now, for pods that follow one."""
    out = {}
    for p in cluster.pods:
        if p.alive():
            s = p.shard()
            if s is not None and s >= 0:
                out[p] = s
    return out


def assert_all_held(test, cluster, name, acked, seconds=90):
    """Every acknowledged id is on every replica of its shard, and nothing
    else is: 0 missing, 0 extra."""
    for pod, s in holders(cluster).items():
        mine = sorted(i for i in acked if shard_of(i, cluster.shards) == s)
        wait_for(lambda: local_count(pod, name) >= len(mine), scaled(seconds),
                 "%s to catch up to %d vectors" % (pod.name, len(mine)), step=0.2)
        pod.s = s  # shard_get names the shard the pod follows now
        have = shard_get(pod, name, mine)
        test.assertEqual(len(mine) - len(have), 0, "%s misses %d acknowledged ids, e.g. %s" %
                         (pod.name, len(mine) - len(have), sorted(set(mine) - have)[:5]))
        test.assertEqual(local_count(pod, name), len(mine), "%s holds ids never acknowledged" % pod.name)


def wait_state(test, pod, shard, seconds=90):
    wait_for(lambda: pod.shard() == shard, scaled(seconds), "%s to follow shard %s" % (pod.name, shard), step=0.1)


class Moves(unittest.TestCase):
    def test_move_under_load(self):
        c = Cluster(SLIMVECD, STUBS, shards=2, sets=1)
        try:
            st = c.stub()
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("mv")), timeout=T)
            for p in c.pods:
                wait_for(lambda: local_count(p, "mv") == 0, 20, "the collection everywhere")
            X = vectors(3000, 21)
            first = [str(100000 + i) for i in range(len(X))]
            acks = ingest(st, "mv", X, first)
            self.assertTrue(all(not a.HasField("error") for a in acks))
            # A router with a stale map: it reads etcd every 4 s and ignores
            # the watch, so the pods that leave refuse its calls first.
            stale = Pod(c, 0, 0, name="router")
            stale.extra = ["--test-map-delay-ms", "4000", "--router-only", "1"]
            c.pods.append(stale)
            stale.start()
            stale.wait_ready()
            writer = Writer(c, "mv", pods=[c.pod(0, 0), c.pod(0, 1), stale])
            Q = vectors(50, 22)
            searchers = [Searcher(p, "mv", Q) for p in (c.pod(0, 0), stale)]
            time.sleep(1)

            # 1. A new pod joins shard 1: a peer's snapshot, then the tail.
            e = Pod(c, 0, 1, name="e")
            c.pods.append(e)
            e.start()
            e.wait_ready()
            e.wait_serving(90)
            self.assertIn("from r0-s1's snapshot", e.log())
            # 2. Drain r0-s1 with the operators' CLI (no idle pod: e keeps
            # shard 1): it leaves.
            out = cli("cluster", "drain", "--pod", "r0-s1", "--addr", c.pod(0, 0).addr)
            self.assertIn("r0-s1 leaves its shard", out)
            wait_state(self, c.pod(0, 1), -1)
            # 3. Shard 0 moves to the drained pod: it loads r0-s0's snapshot,
            # turns ready, and r0-s0 leaves in the same change.
            r = admin(e).MoveShard(pb.MoveShardRequest(shard=0, to_pod="r0-s1", from_pod="r0-s0"), timeout=T)
            self.assertIn("r0-s1", [x.pod for x in r.map.replicas if x.shard == 0])
            wait_state(self, c.pod(0, 0), -1)
            wait_state(self, c.pod(0, 1), 0)
            time.sleep(1)
            writer.stop()
            for s in searchers:
                s.stop()
            self.assertEqual(writer.errors, [])
            for s in searchers:
                self.assertEqual(s.failures[:5], [], "failed searches through %s" % s.pod.name)
                self.assertGreater(s.ok, 20)
            refusals = stale.metric("slimvec_cluster_stale_map_refusals_total")
            restarts = stale.metric("slimvec_cluster_stale_map_restarts_total")
            print("move under load: %d vectors acknowledged, %d + %d searches, 0 failed; the stale router was "
                  "refused %d times (and started %d reads over)" % (len(writer.acked) + len(first), searchers[0].ok,
                                                                    searchers[1].ok, refusals, restarts))
            self.assertGreaterEqual(refusals, 1, "the stale router was never refused: the test proves nothing")
            status = admin(stale).Status(pb.ClusterStatusRequest(), timeout=T)
            by_pod = {x.replica.pod: x for x in status.replicas}
            self.assertEqual(sorted(by_pod), ["e", "r0-s1"])
            self.assertEqual({x.replica.shard for x in status.replicas}, {0, 1})
            self.assertIn("r0-s0", list(status.map.idle))
            self.assertTrue(all(x.live and not x.error for x in status.replicas))
            out = cli("cluster", "status", "--addr", stale.addr)
            print(out)
            self.assertRegex(out, r"\n0 +r0-s1 +ready +live ")
            self.assertRegex(out, r"\n1 +e +ready +live ")
            self.assertIn("idle   r0-s0", out)
            assert_all_held(self, c, "mv", first + writer.acked)
            # A shard call with the map's old owner is refused: ABORTED.
            with self.assertRaises(grpc.RpcError) as err:
                pbg.SlimVecShardStub(c.pod(0, 0).channel()).Search(
                    pb.SearchRequest(collection="mv", queries=Q[0].tolist(), k=1), timeout=T,
                    metadata=[("slimvec-shard", "0@1")])
            self.assertEqual(err.exception.code(), grpc.StatusCode.ABORTED)
        finally:
            c.close()


def stream_bounds(nats, prefix="SV_c", suffix="_s0"):
    """(first_seq, last_seq) of the shard's stream, from a NATS server's /jsz."""
    for i in range(nats.n):
        try:
            info = nats.jsz(i, "?accounts=true&streams=true")
        except Exception:  # noqa: BLE001 - that server is down: the next
            continue
        for acc in info.get("account_details", []):
            for st in acc.get("stream_detail", []):
                if st["name"].startswith(prefix) and st["name"].endswith(suffix):
                    return st["state"]["first_seq"], st["state"]["last_seq"]
    return None


def snapshot_lsn(pod, name):
    ch = pod.channel()
    try:
        return pbg.SlimVecStub(ch).Snapshot(pb.SnapshotRequest(collection=name), timeout=T).lsn
    finally:
        ch.close()


class Purge(unittest.TestCase):
    """T7: the stream is purged below the replicas' snapshots; restarts."""

    def test_purge_and_restarts(self):
        import shutil
        c = Cluster(SLIMVECD, STUBS, shards=1, sets=2)
        try:
            st = c.stub()
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("pg")), timeout=T)
            r0, r1 = c.pod(0, 0), c.pod(1, 0)
            for p in (r0, r1):
                wait_for(lambda: local_count(p, "pg") == 0, 20, "the collection everywhere")
            acked = []

            def write(n_records, start):
                # One record per message: 2 vectors each.
                X = vectors(2 * n_records, start)
                ids = [str(start + i) for i in range(len(X))]
                acks = ingest(st, "pg", X, ids, batch=2)
                self.assertTrue(all(not a.HasField("error") for a in acks))
                acked.extend(ids)
            write(3000, 0)
            # r1 stops (its shutdown snapshot), and a copy of its data is kept:
            # later it comes back with that copy, older than the purge point.
            wait_for(lambda: local_count(r1, "pg") == len(acked), scaled(60), "r1 to catch up")
            self.assertEqual(r1.stop(), 0)
            old = r1.data_dir + ".old"
            shutil.copytree(r1.data_dir, old)
            old_lsn = max(int(f[5:-4]) for d in os.listdir(old) if d.startswith("c-")
                          for f in os.listdir(os.path.join(old, d)) if f.startswith("snap-"))
            r1.start()
            r1.wait_ready()
            write(6000, 100000)
            # Both replicas snapshot: marks in etcd, the stream purged below
            # the lower one less the 4,096 records kept for the window.
            for p in (r0, r1):
                wait_for(lambda: local_count(p, "pg") == len(acked), scaled(60), "%s to catch up" % p.name)
            marks = [snapshot_lsn(p, "pg") for p in (r0, r1)]
            write(10, 200000)  # the purge runs at a snapshot, on the marks it finds
            marks = [snapshot_lsn(p, "pg") for p in (r0, r1)]
            first, last = stream_bounds(c.nats)
            print("stream: LSN %d..%d; snapshot marks %s; the old copy's snapshot is at LSN %d" %
                  (first, last, marks, old_lsn))
            self.assertGreater(first, old_lsn + 1, "the stream was not purged past the old copy")
            self.assertLessEqual(first, min(marks) - 4096 + 1, "purged past what a replica needs")

            # A replica restarts from its snapshot plus the stream's tail.
            write(50, 300000)
            c.restart(r0)
            self.assertRegex(r0.log(), r"opened \"pg\": \d+ vectors, snapshot LSN [1-9]\d*")
            # A replica whose snapshot is older than the purge point: it
            # loads a peer's newer snapshot instead of failing to start.
            r1.kill()
            shutil.rmtree(r1.data_dir)
            shutil.move(old, r1.data_dir)
            r1.start()
            r1.wait_ready()
            wait_for(lambda: "from r0-s0's snapshot" in r1.log(), scaled(60), "r1 to load r0's snapshot")
            self.assertIn("set aside", r1.log())
            write(50, 400000)
            # A pod that lost its disk (an empty volume) comes back the same way.
            r0.kill()
            shutil.rmtree(r0.data_dir)
            r0.start()
            r0.wait_ready()
            wait_for(lambda: "from r1-s0's snapshot" in r0.log(), scaled(60), "r0 to load r1's snapshot")
            write(50, 500000)
            assert_all_held(self, c, "pg", acked)
            self.assertTrue(r0.alive() and r1.alive())
        finally:
            c.close()


class EtcdLoss(unittest.TestCase):
    """Three etcd members; one, then two SIGKILLed, then back."""

    def test_member_loss(self):
        etcd = Etcd(3)
        c = None
        try:
            c = Cluster(SLIMVECD, STUBS, shards=2, sets=1, etcd=etcd)
            st = c.stub(c.pod(0, 1))
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("ed")), timeout=T)
            X = vectors(600, 31)
            ids = [str(i) for i in range(len(X))]
            self.assertTrue(all(not a.HasField("error") for a in ingest(st, "ed", X[:300], ids[:300])))

            def serves(name, n):
                r = st.Search(pb.SearchRequest(collection=name, queries=X[7].tolist(), k=1), timeout=T)
                self.assertEqual(r.results[0].hits[0].id, "7")
                got = st.Get(pb.GetRequest(collection=name, ids=ids[:n]), timeout=T)
                self.assertEqual(len(got.vectors), n)

            serves("ed", 300)
            # One member gone: reads and changes go on.
            etcd.kill(0)
            t0 = time.monotonic()
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("ed1")), timeout=T)
            one = time.monotonic() - t0
            self.assertTrue(all(not a.HasField("error") for a in ingest(st, "ed", X[300:400], ids[300:400])))
            serves("ed", 400)
            # Two gone (no quorum): the map and the catalog are still read
            # (each pod's copy, the survivor's serializable answers), so
            # routing, searches and writes (on NATS) go on; changes fail
            # cleanly, UNAVAILABLE, nothing half done.
            etcd.kill(1)
            time.sleep(1)
            self.assertTrue(all(not a.HasField("error") for a in ingest(st, "ed", X[400:500], ids[400:500])))
            serves("ed", 500)
            status = admin(c.pod(0, 0)).Status(pb.ClusterStatusRequest(), timeout=T)
            self.assertEqual(len(status.map.replicas), 2)
            t0 = time.monotonic()
            for call in (lambda: st.CreateCollection(pb.CreateCollectionRequest(spec=spec("ed2")), timeout=T),
                         lambda: admin(c.pod(0, 0)).DrainPod(pb.DrainPodRequest(pod="r0-s1"), timeout=T),
                         lambda: st.DropCollection(pb.DropCollectionRequest(name="ed1"), timeout=T)):
                with self.assertRaises(grpc.RpcError) as e:
                    call()
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE, e.exception.details())
            refused = (time.monotonic() - t0) / 3
            # Nothing was half done: the map and the catalog are as they were.
            status2 = admin(c.pod(0, 0)).Status(pb.ClusterStatusRequest(), timeout=T)
            self.assertEqual(status2.map.epoch, status.map.epoch)
            names = {x.spec.name for x in st.ListCollections(pb.ListCollectionsRequest(), timeout=T).collections}
            self.assertEqual(names & {"ed", "ed1", "ed2"}, {"ed", "ed1"})
            # Both back: changes work again; every pod is live again.
            etcd.start(0)
            etcd.start(1)
            for i in range(3):
                etcd.wait_ready(i)
            wait_for(lambda: self._create(st, "ed2"), scaled(60), "a change once etcd has its quorum", step=0.5)
            st.DropCollection(pb.DropCollectionRequest(name="ed1"), timeout=T)
            wait_for(lambda: all(x.live for x in admin(c.pod(0, 0)).Status(pb.ClusterStatusRequest(),
                                                                            timeout=T).replicas),
                     scaled(30), "every pod live again")
            self.assertTrue(all(not a.HasField("error") for a in ingest(st, "ed", X[500:], ids[500:])))
            serves("ed", 600)
            print("etcd member loss: a change with one of three members gone took %.2f s; with two gone "
                  "changes were refused (UNAVAILABLE) in %.2f s each while reads and writes went on" % (one, refused))
        finally:
            if c:
                c.close()
            etcd.close()

    @staticmethod
    def _create(st, name):
        try:
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec(name)), timeout=T)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                return True
            return False


class Rolling(unittest.TestCase):
    """Every pod restarted in turn, as a Kubernetes rollout does."""

    def test_rolling_restart(self):
        c = Cluster(SLIMVECD, STUBS, shards=2, sets=2)
        try:
            st = c.stub()
            st.CreateCollection(pb.CreateCollectionRequest(spec=spec("roll")), timeout=T)
            for p in c.pods:
                wait_for(lambda: local_count(p, "roll") == 0, 20, "the collection everywhere")
            X = vectors(2000, 41)
            first = [str(100000 + i) for i in range(len(X))]
            self.assertTrue(all(not a.HasField("error") for a in ingest(st, "roll", X, first)))
            # Clients go through a pod that is not restarted meanwhile (a
            # Service would send them elsewhere while a pod is down).
            router = Pod(c, 0, 0, name="router")
            router.extra = ["--router-only", "1"]
            c.pods.append(router)
            router.start()
            router.wait_ready()
            writer = Writer(c, "roll", pods=[router])
            searcher = Searcher(router, "roll", vectors(40, 42))
            for p in [p for p in c.pods if p is not router]:
                # A rollout waits for the pod's readiness; then the next.
                self.assertEqual(p.stop(), 0)
                p.start()
                p.wait_ready()
                p.wait_serving()
                time.sleep(0.5)
            time.sleep(1)
            writer.stop()
            searcher.stop()
            self.assertEqual(writer.errors, [])
            self.assertEqual(searcher.failures[:5], [], "failed searches during the rollout")
            self.assertGreater(searcher.ok, 50)
            print("rolling restart of 4 pods: %d searches, 0 failed; %d vectors acknowledged, 0 lost" %
                  (searcher.ok, len(writer.acked) + len(first)))
            assert_all_held(self, c, "roll", first + writer.acked)
        finally:
            c.close()


def shard_info(pod, name):
    ch = pod.channel()
    try:
        return pbg.SlimVecShardStub(ch).Describe(pb.DescribeCollectionRequest(name=name), timeout=T).info
    finally:
        ch.close()


class Originals(unittest.TestCase):
    """Originals on disk in a cluster: every replica writes its own from
    the stream; a replica that lost its disk loads a peer's snapshot and
    its originals file with it; a SIGKILLed one recovers its own. On each,
    Get returns the vectors bit for bit and searches re-rank exactly."""

    def assert_exact(self, pod, name, X, ids, sample):
        ch = pod.channel()
        try:
            stub = pbg.SlimVecShardStub(ch)
            got = stub.Get(pb.GetRequest(collection=name, ids=[ids[i] for i in sample]), timeout=T,
                           metadata=shard_md(pod))
            for i, v in zip(sample, got.vectors):
                self.assertEqual(v.id, ids[i])
                self.assertTrue(np.array_equal(np.array(v.values, dtype=np.float32), X[i]),
                                "%s: %s is not its original" % (pod.name, ids[i]))
            inexact = 0
            for i in sample:
                req = pb.SearchRequest(collection=name, queries=X[i].tolist(), k=3, search_list=64)
                hit = stub.Search(req, timeout=T, metadata=shard_md(pod)).results[0].hits[0]
                self.assertEqual((hit.id, hit.distance), (ids[i], 0.0), "%s: re-ranked search" % pod.name)
                req.skip_rerank = True
                hit = stub.Search(req, timeout=T, metadata=shard_md(pod)).results[0].hits[0]
                inexact += hit.distance != 0.0
            # The codes alone are not exact: the exact answers above came
            # from the originals.
            self.assertGreater(inexact, 0, "%s: no vector searched was indexed" % pod.name)
        finally:
            ch.close()

    def test_originals_in_cluster(self):
        import shutil
        c = Cluster(SLIMVECD, STUBS, shards=1, sets=2)
        try:
            st = c.stub()
            sp = spec("og")
            sp.originals = pb.ORIGINALS_DISK
            sp.flush_threshold = 500
            st.CreateCollection(pb.CreateCollectionRequest(spec=sp), timeout=T)
            r0, r1 = c.pod(0, 0), c.pod(1, 0)
            for p in (r0, r1):
                wait_for(lambda: local_count(p, "og") == 0, 20, "the collection everywhere")
            X = vectors(8000, 31)
            ids = [str(i) for i in range(len(X))]
            acks = ingest(st, "og", X[:3000], ids[:3000], batch=100)
            self.assertTrue(all(not a.HasField("error") for a in acks))
            sample = list(range(0, 2500, 97))
            for p in (r0, r1):
                wait_for(lambda: shard_info(p, "og").indexed >= 2500, scaled(60), "%s to index" % p.name)
                self.assertGreater(shard_info(p, "og").originals.disk_bytes, 2500 * DIM * 4)
                self.assert_exact(p, "og", X, ids, sample)
            # One vector a record, past the 4,096 records the stream keeps
            # below the lowest snapshot; both replicas snapshot twice (the
            # purge runs at a snapshot, on the marks it finds): the stream no
            # longer starts at LSN 1, so a replica without a copy can only
            # come back from a peer's snapshot.
            acks = ingest(st, "og", X[3000:7500], ids[3000:7500], batch=1)
            self.assertTrue(all(not a.HasField("error") for a in acks))
            for have in (7500, 7505):
                for p in (r0, r1):
                    wait_for(lambda: local_count(p, "og") == have, scaled(60), "%s to catch up" % p.name)
                    snapshot_lsn(p, "og")
                acks = ingest(st, "og", X[have:have + 5], ids[have:have + 5], batch=1)
                self.assertTrue(all(not a.HasField("error") for a in acks))
            first, _ = stream_bounds(c.nats)
            self.assertGreater(first, 1, "the stream was not purged")
            # r0 loses its disk: it comes back from r1's snapshot and
            # originals file, then the stream's tail.
            r0.kill()
            shutil.rmtree(r0.data_dir)
            r0.start()
            r0.wait_ready()
            wait_for(lambda: "from r1-s0's snapshot" in r0.log(), scaled(60), "r0 to load r1's snapshot")
            self.assertRegex(r0.log(), r"from r1-s0's snapshot: \d+ bytes \(originals [1-9]\d* bytes\)")
            acks = ingest(st, "og", X[7510:], ids[7510:], batch=100)
            self.assertTrue(all(not a.HasField("error") for a in acks))
            sample += list(range(3000, 7500, 301))
            for p in (r0, r1):
                wait_for(lambda: shard_info(p, "og").indexed >= 7500, scaled(60), "%s to index" % p.name)
                self.assert_exact(p, "og", X, ids, sample)
            # r1 SIGKILLed: its own snapshot, originals and the stream.
            r1.kill()
            r1.start()
            r1.wait_ready()
            wait_for(lambda: local_count(r1, "og") == len(X), scaled(60), "r1 to catch up")
            self.assert_exact(r1, "og", X, ids, sample)
            print("originals in a cluster: %d vectors exact on both replicas after a lost disk and a SIGKILL" %
                  len(X))
        finally:
            c.close()


GROUPS = {"move": [Moves], "purge": [Purge], "etcd": [EtcdLoss], "rolling": [Rolling], "originals": [Originals]}

if __name__ == "__main__":
    suite = unittest.TestSuite()
    for cls in GROUPS[GROUP]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
