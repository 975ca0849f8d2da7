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
"""

import os
import sys
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cluster as tc  # noqa: E402  (the same argv: SLIMVECD STUBS GROUP)
from test_cluster import (DIM, SLIMVECD, STUBS, T, Searcher, Writer, ingest, local_count,  # noqa: E402
                          shard_get, spec, vectors)

import grpc  # noqa: E402
from clustertest import Cluster, Etcd, Pod  # noqa: E402
from svtest import scaled, wait_for  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from slimvec.v1 import slimvec_pb2_grpc as pbg  # noqa: E402

GROUP = sys.argv[3] if len(sys.argv) > 3 else "move"


def admin(pod):
    return pbg.SlimVecClusterStub(pod.channel())


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


class UniqueSearcher(Searcher):
    """A Searcher that also fails on an id twice in one merged answer."""

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
                ids = [h.id for h in r.results[0].hits]
                if len(ids) != self.k:
                    self.failures.append("short answer: %d hits" % len(ids))
                if len(set(ids)) != len(ids):
                    self.failures.append("an id twice in one answer: %s" % ids)
                self.ok += 1
            except grpc.RpcError as e:
                self.failures.append("%s: %s" % (e.code(), e.details()))
        ch.close()


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
            searchers = [UniqueSearcher(p, "mv", Q) for p in (c.pod(0, 0), stale)]
            time.sleep(1)

            # 1. A new pod joins shard 1: a peer's snapshot, then the tail.
            e = Pod(c, 0, 1, name="e")
            c.pods.append(e)
            e.start()
            e.wait_ready()
            e.wait_serving(90)
            self.assertIn("from r0-s1's snapshot", e.log())
            # 2. Drain r0-s1 (no idle pod: e keeps shard 1): it leaves.
            r = admin(c.pod(0, 0)).DrainPod(pb.DrainPodRequest(pod="r0-s1"), timeout=T)
            self.assertEqual(r.moved_to, "")
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
            assert_all_held(self, c, "mv", first + writer.acked)
            # A shard call with the map's old owner is refused: ABORTED.
            with self.assertRaises(grpc.RpcError) as err:
                pbg.SlimVecShardStub(c.pod(0, 0).channel()).Search(
                    pb.SearchRequest(collection="mv", queries=Q[0].tolist(), k=1), timeout=T,
                    metadata=[("slimvec-shard", "0@1")])
            self.assertEqual(err.exception.code(), grpc.StatusCode.ABORTED)
        finally:
            c.close()


GROUPS = {"move": [Moves]}

if __name__ == "__main__":
    suite = unittest.TestSuite()
    for cls in GROUPS[GROUP]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
