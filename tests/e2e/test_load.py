#!/usr/bin/python3
"""Load: 8 ingest and 8 search streams at once on a real slimvecd (128-d
int8, the log fsynced per batch, snapshots taken while batches stream in),
repeated. Every batch must be acknowledged (a stream once waited until its
deadline for the acknowledgement of a batch the server had applied), every
acknowledged vector must be there, and SIGTERM under load must exit 0 after
its shutdown snapshot, whose restart replays nothing.

Usage (ctest runs it): test_load.py SLIMVECD_PATH PYTHON_STUBS_DIR
SV_LOAD_ROUNDS (default 4) sets the rounds.
"""

import os
import random
import sys
import threading
import time
import unittest

SLIMVECD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./build/service/slimvecd")
STUBS = sys.argv[2] if len(sys.argv) > 2 else "./build/proto/python"
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from svtest import HealthMonitor, Slimvecd, scaled, wait_for  # noqa: E402

ROUNDS = int(os.environ.get("SV_LOAD_ROUNDS", "4"))
DIM = 128
INGESTERS = 8
SEARCHERS = 8
BATCHES = 30          # per ingest stream per round
BATCH = 100           # vectors per batch


def server(data_dir=None):
    # Snapshots every ~2 MB of log: several per round, while ingest runs.
    return Slimvecd(SLIMVECD, STUBS, "--snapshot-log-bytes", str(2 << 20), "--grace", "10",
                    "--threads", "4", data_dir=data_dir)


class Load:
    """One round's streams against a server; results per stream."""

    def __init__(self, s, name, seed):
        self.s = s
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.acked = [0] * INGESTERS          # vectors acknowledged per stream
        self.sent = [0] * INGESTERS           # batches sent
        self.errors = []
        self.searches = 0
        self.stop_search = threading.Event()

    def ingest(self, k, batches, stop=None):
        data = self.rng.standard_normal((batches * BATCH, DIM), dtype=np.float32)

        def gen():
            for b in range(batches):
                if stop is not None and stop.is_set():
                    return
                self.sent[k] += 1
                yield pb.IngestRequest(collection=self.name, sequence=b,
                                       vectors=data[b * BATCH:(b + 1) * BATCH].ravel().tolist())
        try:
            # The deadline is the hang detector: a stream whose last
            # acknowledgement never comes fails here.
            for ack in self.s.stub.Ingest(gen(), timeout=scaled(120)):
                if ack.HasField("error"):
                    self.errors.append("stream %d batch %d: %s" % (k, ack.sequence, ack.error.message))
                else:
                    self.acked[k] += ack.applied
        except grpc.RpcError as e:
            if stop is None:
                self.errors.append("stream %d: %s %s" % (k, e.code(), e.details()))
        except ValueError:
            if stop is None:  # the channel closed under a stream that had to finish
                self.errors.append("stream %d: the channel closed" % k)

    def search(self, k):
        q = self.rng.standard_normal((4, DIM), dtype=np.float32)
        i = 0

        def gen():
            nonlocal i
            while not self.stop_search.is_set():
                i += 1
                yield pb.SearchRequest(collection=self.name, queries=q.ravel().tolist(), k=10,
                                       search_list=48, tag=i)
                time.sleep(0.002)
        try:
            for r in self.s.stub.SearchStream(gen(), timeout=scaled(300)):
                if r.HasField("error"):
                    self.errors.append("search %d: %s" % (k, r.error.message))
                self.searches += 1
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE):
                self.errors.append("search %d: %s %s" % (k, e.code(), e.details()))
        except ValueError:
            pass  # the channel closed at the end: searches have no end of their own


class LoadTest(unittest.TestCase):
    def test_rounds_then_sigterm_under_load(self):
        s = server()
        data_dir = s.data_dir
        name = "load"
        s.stub.CreateCollection(pb.CreateCollectionRequest(spec=pb.CollectionSpec(
            name=name, dimension=DIM, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8,
            flush_threshold=2000)), timeout=scaled(30))
        total = 0
        mon = HealthMonitor(s.addr, limit=1.0)
        try:
            for rnd in range(ROUNDS):
                t0 = time.monotonic()
                load = Load(s, name, rnd)
                searchers = [threading.Thread(target=load.search, args=(k,)) for k in range(SEARCHERS)]
                ingesters = [threading.Thread(target=load.ingest, args=(k, BATCHES)) for k in range(INGESTERS)]
                for t in searchers + ingesters:
                    t.start()
                for t in ingesters:
                    t.join()
                load.stop_search.set()
                for t in searchers:
                    t.join()
                self.assertEqual(load.errors, [])
                # Every batch acknowledged, whole.
                self.assertEqual(load.acked, [BATCHES * BATCH] * INGESTERS)
                total += sum(load.acked)
                info = s.stub.DescribeCollection(pb.DescribeCollectionRequest(name=name),
                                                 timeout=scaled(30)).info
                self.assertEqual(info.vectors, total)
                print("round %d: %d batches acknowledged on %d streams, %d searches, %.1f s; "
                      "snapshot LSN %d; buffered %d" % (rnd, INGESTERS * BATCHES, INGESTERS, load.searches,
                                                        time.monotonic() - t0, info.persistence.snapshot_lsn,
                                                        info.buffered), flush=True)
            snaps = s.log().count("snapshot of \"load\"")
            self.assertGreater(snaps, ROUNDS, "snapshots were not taken during ingest")

            # SIGTERM with all the streams running: exit 0 after the
            # shutdown snapshot; nothing acknowledged is lost.
            load = Load(s, name, 99)
            stop = threading.Event()
            searchers = [threading.Thread(target=load.search, args=(k,)) for k in range(SEARCHERS)]
            ingesters = [threading.Thread(target=load.ingest, args=(k, 10000, stop)) for k in range(INGESTERS)]
            for t in searchers + ingesters:
                t.start()
            wait_for(lambda: sum(load.acked) >= 20 * BATCH, 60, "ingest under way")
            mon.stop()  # health goes NOT_SERVING from here on, as it should
            rc = s.stop(seconds=120, keep_dir=True)
            stop.set()
            load.stop_search.set()
            for t in searchers + ingesters:
                t.join()
        finally:
            if not mon.stop_event.is_set():
                mon.stop()
        self.assertEqual(rc, 0, s.log()[-3000:])
        log = s.log()
        self.assertIn("slimvecd: stopped", log)
        self.assertGreater(log.rfind("snapshot of \"load\""), log.find("SIGTERM"),
                           "no shutdown snapshot after SIGTERM")
        acked = total + sum(load.acked)
        print("SIGTERM under load: %d vectors acknowledged in all; health worst %.3f s over %d checks"
              % (acked, mon.worst, mon.checks), flush=True)
        self.assertEqual(mon.failures, [])

        s = server(data_dir=data_dir)
        try:
            info = s.stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=scaled(30)).info
            # Acknowledged ones all there; at most the in-flight batches more.
            self.assertGreaterEqual(info.vectors, acked)
            self.assertLessEqual(info.vectors, acked + INGESTERS * BATCH)
            self.assertEqual(info.vectors % BATCH, 0)
            self.assertIn("0 log records replayed", s.log())
        finally:
            self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
