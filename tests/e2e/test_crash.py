#!/usr/bin/python3
"""End-to-end durability tests: a real slimvecd, killed and restarted.

Usage (ctest runs it): test_crash.py SLIMVECD_PATH PYTHON_STUBS_DIR

SLIMVEC_CRASH_ROUNDS (default 24) sets the rounds of the crash test; each
round streams ingest and deletes into one data directory and SIGKILLs the
server at a random moment (during ingest, during a delete, during a
snapshot, or during start-up), then restarts it and checks that every
acknowledged write, and nothing acknowledged as deleted, is there.
"""

import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

SLIMVECD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./build/service/slimvecd")
STUBS = sys.argv[2] if len(sys.argv) > 2 else "./build/proto/python"
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from svtest import scaled  # noqa: E402
from health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from slimvec.v1 import slimvec_pb2_grpc as pbg  # noqa: E402

ROUNDS = int(os.environ.get("SLIMVEC_CRASH_ROUNDS", "24"))
SEED = int(os.environ.get("SLIMVEC_CRASH_SEED", str(int(time.time()) % 100000)))
DIM = 16
NAME = "crash"
RPC_TIMEOUT = scaled(60)
# Quantization bound on Get values, per vector: core/quantizer.h stores
# r = x - mu as lo + delta * c with delta = (max(r) - min(r)) / 255, so a
# component is off by at most delta / 2 <= (max|x| + max|mu|) / 255, well
# under 5 % of the vector's largest component (mu, the mean of the first
# flushed batch of N(0,1) vectors, is ~0.1 at most).
QUANT_REL = 0.05
WAL_HEADER = 32
WAL_REC_HEADER = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(text, n=40):
    lines = text.splitlines()
    return "\n".join(lines[-n:])


class Server:
    """A slimvecd process on a free port; its stderr goes to a log file."""

    launches = 0

    def __init__(self, data_dir, log_dir, *extra, wait=True):
        Server.launches += 1
        self.data_dir = data_dir
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.metrics = "127.0.0.1:%d" % free_port()
        self.log_path = os.path.join(log_dir, "slimvecd-%04d.log" % Server.launches)
        # Exhaustive checks search with a list as long as the collection and
        # keep whole workloads buffered: lift those limits.
        self.args = [SLIMVECD, "--listen", self.addr, "--metrics-listen", self.metrics,
                     "--data-dir", data_dir, "--grace", "5", "--build-threads", "2",
                     "--max-search-list", "100000", "--max-search-work", "1000000000000",
                     "--max-flush-threshold", "1000000", *extra]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=log)
        self.started = time.monotonic()
        self.channel = None
        self.stub = None
        self.ready_seconds = None
        if wait:
            self.wait_ready()

    def stderr(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def listening(self):
        return "slimvecd: listening on" in self.stderr()

    def wait_ready(self, timeout=scaled(120)):
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.proc.poll() is not None:
                listing = {d: sorted(os.listdir(os.path.join(self.data_dir, d)))
                           for d in sorted(os.listdir(self.data_dir)) if d.startswith("c-")}
                raise AssertionError("slimvecd exited %s before serving:\n%s\n--- data dir: %s" %
                                     (self.proc.returncode, tail(self.stderr()), listing))
            if time.monotonic() > deadline:
                raise AssertionError("slimvecd not serving after %d s:\n%s" % (timeout, tail(self.stderr())))
            time.sleep(0.005)
        self.ready_seconds = time.monotonic() - self.started
        self.channel = grpc.insecure_channel(self.addr, options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        grpc.channel_ready_future(self.channel).result(timeout=scaled(30))
        self.stub = pbg.SlimVecStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        resp = health.Check(health_pb2.HealthCheckRequest(service="slimvec.v1.SlimVec"), timeout=RPC_TIMEOUT)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, resp
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=scaled(60))
        if self.channel:
            self.channel.close()

    def stop(self, timeout=scaled(120)):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        if self.channel:
            self.channel.close()
        return rc

    def ensure_dead(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=scaled(60))
        if self.channel:
            self.channel.close()


def run_expect_exit(data_dir, log_dir, timeout=scaled(120)):
    """Start slimvecd on data_dir and expect it to exit on its own: (rc, stderr)."""
    s = Server(data_dir, log_dir, wait=False)
    deadline = time.monotonic() + timeout
    while s.proc.poll() is None:
        if s.listening() or time.monotonic() > deadline:
            s.ensure_dead()
            raise AssertionError("slimvecd started (or hung) where it should have refused:\n%s" %
                                 tail(s.stderr()))
        time.sleep(0.01)
    return s.proc.returncode, s.stderr()


def create(stub, name, dim=DIM, **kw):
    spec = pb.CollectionSpec(name=name, dimension=dim, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8, **kw)
    return stub.CreateCollection(pb.CreateCollectionRequest(spec=spec), timeout=RPC_TIMEOUT).info


def describe(stub, name=NAME):
    return stub.DescribeCollection(pb.DescribeCollectionRequest(name=name), timeout=RPC_TIMEOUT).info


def ingest(stub, name, batches):
    """Stream the batches (ndarray, or (ndarray, ids)); returns the acks."""
    def gen():
        for seq, b in enumerate(batches):
            vecs, ids = b if isinstance(b, tuple) else (b, [])
            yield pb.IngestRequest(collection=name, sequence=seq, vectors=vecs.ravel().tolist(), ids=ids)
    acks = list(stub.Ingest(gen(), timeout=RPC_TIMEOUT))
    for a in acks:
        assert not a.HasField("error"), a.error
    return acks


def get_map(stub, ids, name=NAME, chunk=1000):
    """{id: values} for ids that must all exist (raises on NOT_FOUND)."""
    out = {}
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]
        resp = stub.Get(pb.GetRequest(collection=name, ids=part), timeout=RPC_TIMEOUT)
        for v in resp.vectors:
            out[v.id] = np.array(v.values, dtype=np.float32)
    return out


def exists(stub, vid, name=NAME):
    try:
        stub.Get(pb.GetRequest(collection=name, ids=[vid]), timeout=RPC_TIMEOUT)
        return True
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False


def scroll_ids(stub, name=NAME):
    """Every id in the collection, through Scroll's pages."""
    out, token = [], ""
    while True:
        resp = stub.Scroll(pb.ScrollRequest(collection=name, page_size=1000, page_token=token), timeout=RPC_TIMEOUT)
        out.extend(v.id for v in resp.vectors)
        token = resp.next_page_token
        if not token:
            return out


def search(stub, queries, k, search_list, name=NAME):
    resp = stub.Search(pb.SearchRequest(collection=name, queries=queries.ravel().tolist(), k=k,
                                        search_list=search_list), timeout=RPC_TIMEOUT)
    return [[(h.id, h.distance) for h in r.hits] for r in resp.results]


def coll_dir(data_dir, name=NAME):
    return os.path.join(data_dir, "c-" + name)


def wal_segments(cdir):
    return sorted(f for f in os.listdir(cdir) if re.fullmatch(r"wal-\d{20}\.log", f))


def snapshots(cdir):
    return sorted(f for f in os.listdir(cdir) if re.fullmatch(r"snap-\d{20}\.svs", f))


def wal_records(path):
    """[(offset, length, lsn, type)] of the records of a log segment (core/wal.h)."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    off = WAL_HEADER
    while off + WAL_REC_HEADER <= len(data):
        plen, _crc, lsn, typ = struct.unpack_from("<IIQI", data, off)
        size = WAL_REC_HEADER + plen
        if off + size > len(data):
            break
        out.append((off, size, lsn, typ))
        off += size
    return out


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


class Tmp:
    """A temporary directory with a data dir and a log dir inside."""

    def __init__(self, tag):
        self.root = tempfile.mkdtemp(prefix="slimvec-crash-%s-" % tag)
        self.data = os.path.join(self.root, "data")
        self.logs = os.path.join(self.root, "logs")
        os.mkdir(self.logs)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------
# 1. The crash test.
# ---------------------------------------------------------------------------

class Model:
    """What the server acknowledged, and what was in flight at a kill."""

    def __init__(self):
        self.lock = threading.Lock()
        self.live = {}             # id -> float32 vector, acknowledged and not deleted
        self.deleted = set()       # acknowledged deletes
        self.inflight = {}         # (round, stream, seq) -> (vectors, ids or None)
        self.inflight_delete = None  # ids of the Delete call in flight
        self.errors = []           # problems seen by the worker threads


class Traffic:
    """Ingest stream(s) and a delete loop against one server until it dies."""

    def __init__(self, stub, model, round_, rng, streams=1, deletes=True):
        self.stub = stub
        self.model = model
        self.round = round_
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.threads = []
        for s in range(streams):
            self.threads.append(threading.Thread(target=self.ingest, args=(s, rng.randrange(1 << 30)),
                                                 daemon=True))
        if deletes:
            self.threads.append(threading.Thread(target=self.delete, args=(rng.randrange(1 << 30),),
                                                 daemon=True))
        self.batches_acked = 0
        self.deletes_acked = 0

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
            if t.is_alive():
                self.model.errors.append("round %d: a traffic thread did not end" % self.round)

    def ingest(self, stream, seed):
        rnd = random.Random(seed)
        nrnd = np.random.default_rng(seed)
        m = self.model

        def gen():
            seq = 0
            while not self.stop.is_set():
                n = rnd.randint(50, 200)
                vecs = nrnd.standard_normal((n, DIM)).astype(np.float32)
                ids = None
                if rnd.random() < 0.5:
                    ids = ["r%d-s%d-b%d-%d" % (self.round, stream, seq, j) for j in range(n)]
                with m.lock:
                    m.inflight[(self.round, stream, seq)] = (vecs, ids)
                yield pb.IngestRequest(collection=NAME, sequence=seq, vectors=vecs.ravel().tolist(),
                                       ids=ids or [])
                seq += 1
                time.sleep(rnd.uniform(0.06, 0.16))

        try:
            for ack in self.stub.Ingest(gen(), timeout=scaled(300)):
                key = (self.round, stream, ack.sequence)
                with m.lock:
                    vecs, ids = m.inflight.pop(key)
                    if ack.HasField("error"):
                        m.errors.append("round %d: batch %s refused: %s" % (self.round, key, ack.error))
                        continue
                    if ack.applied != len(vecs) or len(ack.ids) != len(vecs):
                        m.errors.append("round %d: batch %s: applied %d, %d ids for %d vectors" %
                                        (self.round, key, ack.applied, len(ack.ids), len(vecs)))
                        continue
                    for j, vid in enumerate(ack.ids):
                        if ids and vid != ids[j]:
                            m.errors.append("round %d: batch %s: id %r acknowledged as %r" %
                                            (self.round, key, ids[j], vid))
                        if vid in m.live:
                            m.errors.append("round %d: batch %s: id %s assigned twice" % (self.round, key, vid))
                        if vid in m.deleted:
                            m.errors.append("round %d: batch %s: deleted id %s assigned again" %
                                            (self.round, key, vid))
                        m.live[vid] = vecs[j]
                self.batches_acked += 1
        except (grpc.RpcError, ValueError) as e:
            if not self.killed.is_set():
                m.errors.append("round %d: ingest stream failed before the kill: %s %s" %
                                (self.round, getattr(e, "code", lambda: "")(), getattr(e, "details", lambda: e)()))

    def delete(self, seed):
        rnd = random.Random(seed)
        m = self.model
        while not self.stop.is_set():
            with m.lock:
                n = min(len(m.live), rnd.randint(1, 25))
                ids = rnd.sample(list(m.live), n) if n else []
                m.inflight_delete = ids if ids else None
            if ids:
                try:
                    self.stub.Delete(pb.DeleteRequest(collection=NAME, ids=ids), timeout=RPC_TIMEOUT)
                except (grpc.RpcError, ValueError) as e:
                    if not self.killed.is_set():
                        m.errors.append("round %d: delete failed before the kill: %s %s" %
                                        (self.round, getattr(e, "code", lambda: "")(), getattr(e, "details", lambda: e)()))
                    return  # the in-flight delete stays recorded
                with m.lock:
                    for vid in ids:
                        del m.live[vid]
                        m.deleted.add(vid)
                    m.inflight_delete = None
                self.deletes_acked += 1
            time.sleep(rnd.uniform(0.01, 0.04))


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Tmp("kill")
        self.server = None
        self.originals = False

    def tearDown(self):
        if self.server:
            self.server.ensure_dead()
        self.tmp.cleanup()

    def start(self, wait=True):
        self.server = Server(self.tmp.data, self.tmp.logs, "--snapshot-log-bytes", "100000",
                             wait=wait)
        return self.server

    def fail_with(self, msg):
        text = self.server.stderr() if self.server else ""
        cdir = coll_dir(self.tmp.data)
        listing = sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []
        self.fail("%s\n--- %s: %s\n--- slimvecd stderr (%s) ---\n%s" %
                  (msg, cdir, listing, self.server and self.server.log_path, tail(text)))

    def check(self, cond, msg):
        if not cond:
            self.fail_with(msg)

    # -- verification after a restart ----------------------------------------

    def resolve_inflight(self, stub, model, count):
        """Decide, batch by batch, whether the writes in flight at the kill
        made it; each must be all there or all gone."""
        notes = []
        extra = None  # ids on the server that no acknowledged write made
        for key, (vecs, ids) in sorted(model.inflight.items()):
            n = len(vecs)
            if ids:
                present = [exists(stub, vid) for vid in ids] if not self._all_present(stub, ids) else [True] * n
                got = sum(present)
                self.check(got in (0, n), "in-flight batch %s (given ids) is partly there: %d of %d" % (key, got, n))
                if got:
                    vals = get_map(stub, ids)
                    for j, vid in enumerate(ids):
                        self._check_value(vid, vals[vid], vecs[j])
                        model.live[vid] = vecs[j]
                notes.append("%s:%s" % (key, "in" if got else "out"))
                continue
            # Server-assigned ids we never heard: every id the server holds
            # beyond the acknowledged ones (Scroll lists them all) must be
            # one of these vectors, batch by batch all or none.
            if extra is None:
                extra = {}
                unknown = [vid for vid in scroll_ids(stub) if vid not in model.live]
                back = [vid for vid in unknown if vid in model.deleted]
                self.check(not back, "in-flight writes brought back deleted ids: %s" % back[:10])
                if unknown:
                    extra = get_map(stub, unknown)
            found = []
            for j in range(n):
                vid = min(extra, key=lambda e: float(np.abs(extra[e] - vecs[j]).max()), default=None)
                if vid is not None and np.abs(extra[vid] - vecs[j]).max() <= QUANT_REL * np.abs(vecs[j]).max():
                    found.append((j, vid))
            self.check(len(found) in (0, n),
                       "in-flight batch %s (assigned ids) is partly there: %d of %d vectors found" %
                       (key, len(found), n))
            for j, vid in found:
                self._check_value(vid, extra.pop(vid), vecs[j])
                model.live[vid] = vecs[j]
            notes.append("%s:%s" % (key, "in" if found else "out"))
        model.inflight.clear()
        if model.inflight_delete:
            ids = model.inflight_delete
            present = [exists(stub, vid) for vid in ids]
            got = sum(present)
            self.check(got in (0, len(ids)), "in-flight delete of %d ids partly applied: %d still there" %
                       (len(ids), got))
            if got == 0:
                for vid in ids:
                    del model.live[vid]
                    model.deleted.add(vid)
            notes.append("delete:%s" % ("out" if got else "in"))
            model.inflight_delete = None
        return notes

    def _all_present(self, stub, ids):
        try:
            stub.Get(pb.GetRequest(collection=NAME, ids=ids), timeout=RPC_TIMEOUT)
            return True
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False

    def _check_value(self, vid, got, sent):
        # With originals on disk Get returns the original itself.
        bound = 0.0 if self.originals else QUANT_REL * float(np.max(np.abs(sent)))
        diff = float(np.max(np.abs(got - sent)))
        self.max_rel_err = max(self.max_rel_err, diff / max(1e-9, float(np.max(np.abs(sent)))))
        self.check(diff <= bound, "id %s: Get returned values off by %.4f (bound %.4f):\n got %s\n sent %s" %
                   (vid, diff, bound, got, sent))

    def verify(self, stub, model, rnd_):
        info = describe(stub)
        count_before = info.vectors
        pending = sum(len(v) for v, _ in model.inflight.values())
        pending_del = len(model.inflight_delete or [])
        self.check(len(model.live) - pending_del <= count_before <= len(model.live) + pending,
                   "after restart: %d vectors, expected %d acknowledged live + up to %d in flight "
                   "- up to %d in a delete in flight" % (count_before, len(model.live), pending, pending_del))
        notes = self.resolve_inflight(stub, model, count_before)
        info = describe(stub)
        self.check(info.vectors == len(model.live),
                   "after restart: %d vectors, but %d acknowledged live ones (in flight: %s)" %
                   (info.vectors, len(model.live), notes))
        ids = list(model.live)
        try:
            vals = get_map(stub, ids)
        except grpc.RpcError as e:
            missing = [vid for vid in ids if not exists(stub, vid)]
            self.fail_with("acknowledged ids missing after restart (%d): %s ... (%s)" %
                           (len(missing), missing[:10], e.details()))
        got = np.stack([vals[vid] for vid in ids]) if ids else np.zeros((0, DIM), np.float32)
        sent = np.stack([model.live[vid] for vid in ids]) if ids else got
        scale = np.abs(sent).max(axis=1)
        err = np.abs(got - sent).max(axis=1)
        if len(ids):
            self.max_rel_err = max(self.max_rel_err, float((err / np.maximum(scale, 1e-9)).max()))
        for j in np.nonzero(err > (0.0 if self.originals else QUANT_REL) * scale)[0][:1]:
            self._check_value(ids[j], got[j], sent[j])
        # Since every live id is there and the count matches, no other id is;
        # spot-check deleted ones anyway.
        sample = rnd_.sample(sorted(model.deleted), min(40, len(model.deleted)))
        back = [vid for vid in sample if exists(stub, vid)]
        self.check(not back, "acknowledged-deleted ids came back: %s" % back)
        return info, notes

    def exhaustive(self, stub, count):
        L = min(100000, max(64, count + 16))
        return search(stub, self.queries, 10, L)

    def check_exact(self, results, model):
        ids = list(model.live)
        if len(ids) < 10:
            return
        mat = np.stack([model.live[i] for i in ids]).astype(np.float64)
        good = total = 0
        for q, hits in zip(self.queries.astype(np.float64), results):
            d = ((mat - q) ** 2).sum(axis=1)
            order = np.argsort(d)
            truth = set(ids[i] for i in order[:10])
            d10 = d[order[9]]
            # A hit counts when it is one of the exact 10, or a near-tie of
            # the 10th (the server ranks by distances to int8 codes; with
            # originals by exact float32 distances, and says them).
            dist = {ids[i]: d[i] for i in order[:200]}
            tie = (1e-5, 1e-6) if self.originals else (0.02, 1e-3)
            for hid, hd in hits:
                total += 1
                if hid in truth or (hid in dist and dist[hid] <= d10 * (1 + tie[0]) + tie[1]):
                    good += 1
                if self.originals and hid in dist:
                    self.check(abs(hd - dist[hid]) <= 1e-4 * max(1.0, dist[hid]),
                               "hit %s: distance %.6f, exact %.6f" % (hid, hd, dist[hid]))
            self.assertEqual(len(hits), 10)
        recall = good / max(1, total)
        need = 1.0 if self.originals else 0.99
        self.check(recall >= need, "exhaustive search recall %.3f vs exact neighbours (< %g)" % (recall, need))
        return recall

    # -- the test --------------------------------------------------------------

    def test_kill_and_restart(self):
        self.kill_rounds(max(ROUNDS, 4), originals=False)

    def test_kill_and_restart_originals(self):
        """The same with the originals on disk: the file is rewritten by the
        replay and fsynced before snapshots, so after every kill Get returns
        each acknowledged vector exactly and searches say exact distances."""
        self.kill_rounds(max(ROUNDS // 3, 4), originals=True)

    def kill_rounds(self, rounds, originals):
        self.originals = originals
        rng = random.Random(SEED)
        print("\ncrash test%s: %d rounds, seed %d (SLIMVEC_CRASH_SEED to repeat)" %
              (" with originals on disk" if originals else "", rounds, SEED), flush=True)
        self.queries = np.random.default_rng(SEED).standard_normal((20, DIM)).astype(np.float32)
        self.max_rel_err = 0.0
        model = Model()
        cats = ["ingest", "delete", "snapshot", "startup"]
        plan = [cats[r % 4] for r in range(rounds)]
        kills = {c: 0 for c in cats}
        kills["other"] = 0
        snapshot_calls = 0
        graceful = 0
        t_begin = time.monotonic()
        last_open = 0.05

        s = self.start()
        create(s.stub, NAME, flush_threshold=500,
               originals=pb.ORIGINALS_DISK if originals else pb.ORIGINALS_NONE)
        for r in range(rounds):
            cat = plan[r]
            t_round = time.monotonic()
            t_verify = 0.0
            t_graceful = None
            if r > 0:
                if cat == "startup":
                    # Kill while it is opening the collection (snapshot load,
                    # log replay, torn-tail cut, new log segment).
                    for _ in range(3):
                        s = self.start(wait=False)
                        time.sleep(rng.uniform(0.05, 0.8) * last_open)
                        serving = s.listening()
                        s.kill()
                        if not serving:
                            kills["startup"] += 1
                            break
                s = self.start()
                last_open = s.ready_seconds
                t0 = time.monotonic()
                info, notes = self.verify(s.stub, model, rng)
                t_verify = time.monotonic() - t0
                self.check(not model.errors, "worker errors: %s" % model.errors[:5])
                if r % 2 == 0:
                    # Searches equal across a graceful restart, and exact.
                    # The replay may have left a flush due: the maintenance
                    # thread would move rows from the buffer (exact float
                    # distances) to the graph (int8 codes) between the two
                    # searches. Flush now so both see the same state.
                    s.stub.Flush(pb.FlushRequest(collection=NAME), timeout=RPC_TIMEOUT)
                    t0 = time.monotonic()
                    before = self.exhaustive(s.stub, info.vectors)
                    t_search = time.monotonic() - t0
                    self.check_exact(before, model)
                    t0 = time.monotonic()
                    # Close our connection first: gRPC's drain waits for the
                    # client to hang up an idle connection, up to --grace.
                    s.channel.close()
                    rc = s.stop()
                    self.check(rc == 0, "SIGTERM: slimvecd exited %d" % rc)
                    t_stop = time.monotonic() - t0
                    s = self.start()
                    t_graceful = (t_search, t_stop, s.ready_seconds)
                    self.check(describe(s.stub).vectors == len(model.live), "count changed across SIGTERM")
                    after = self.exhaustive(s.stub, info.vectors)
                    for qi, (a, b) in enumerate(zip(before, after)):
                        self.check(a == b, "query %d differs across a graceful restart:\n before %s\n after  %s"
                                   % (qi, a, b))
                    graceful += 1
            # Traffic, then SIGKILL at a random moment.
            streams = 2 if rng.random() < 0.3 else 1
            traffic = Traffic(s.stub, model, r, rng, streams=streams, deletes=len(model.live) > 0)
            traffic.start()
            delay = rng.uniform(0.05, 1.5)
            if cat in ("ingest", "delete", "startup") and rng.random() < 0.3:
                time.sleep(delay / 2)
                s.stub.Snapshot(pb.SnapshotRequest(collection=NAME), timeout=RPC_TIMEOUT)
                snapshot_calls += 1
                time.sleep(delay / 2)
            else:
                time.sleep(delay)
            hit = None
            deadline = time.monotonic() + 2.0
            if cat == "ingest":
                while time.monotonic() < deadline:
                    with model.lock:
                        if model.inflight:
                            break
                    time.sleep(0.0005)
                with model.lock:
                    hit = bool(model.inflight)
                    if hit:
                        traffic.killed.set()
                        s.kill()
            elif cat == "delete":
                while time.monotonic() < deadline:
                    with model.lock:
                        if model.inflight_delete:
                            break
                    time.sleep(0.0005)
                with model.lock:
                    hit = bool(model.inflight_delete)
                    if hit:
                        traffic.killed.set()
                        s.kill()
            elif cat == "snapshot":
                tmpfile = os.path.join(coll_dir(self.tmp.data), "snapshot.tmp")
                fut = s.stub.Snapshot.future(pb.SnapshotRequest(collection=NAME), timeout=RPC_TIMEOUT)
                snapshot_calls += 1
                seen = False
                while not fut.done() and time.monotonic() < deadline:
                    if os.path.exists(tmpfile):
                        seen = True
                        break
                    time.sleep(0.0002)
                if seen and rng.random() < 0.5:
                    time.sleep(rng.uniform(0, 0.003))
                hit = seen and not fut.done()
                traffic.killed.set()
                s.kill()
            traffic.killed.set()
            if s.proc.poll() is None:
                s.kill()
            traffic.join()
            self.check(not model.errors, "worker errors: %s" % model.errors[:5])
            if cat == "startup":
                kills["other"] += 1   # the start-up kill was counted above
            else:
                kills[cat if hit else "other"] += 1
            print("round %2d %-8s kill %s after %.2fs: live %d, deleted %d, in flight %d batches%s, "
                  "acked %d batches %d deletes; %.2f s (verify %.2f s%s)" %
                  (r, cat, "hit" if hit or cat == "startup" else "(missed)", delay, len(model.live),
                   len(model.deleted), len(model.inflight), " + a delete" if model.inflight_delete else "",
                   traffic.batches_acked, traffic.deletes_acked, time.monotonic() - t_round, t_verify,
                   ", exhaustive search %.2f s, SIGTERM %.2f s, start %.2f s" % t_graceful if t_graceful else ""),
                  flush=True)

        # Last restart: everything checks out, and a clean stop.
        s = self.start()
        info, _ = self.verify(s.stub, model, rng)
        results = self.exhaustive(s.stub, info.vectors)
        recall = self.check_exact(results, model)
        self.check(s.stop() == 0, "final SIGTERM: non-zero exit")
        text = ""
        for f in sorted(os.listdir(self.tmp.logs)):
            with open(os.path.join(self.tmp.logs, f), errors="replace") as fh:
                text += fh.read()
        bg = len(re.findall(r'snapshot of "%s"' % NAME, text))
        torn = len(re.findall(r"cut a torn final record", text))
        print("crash test: %d rounds in %.1f s, %d launches; kills %s; %d graceful restarts compared; "
              "%d Snapshot calls, %d snapshots logged by the server, %d torn tails cut; "
              "%d live / %d deleted vectors at the end, final recall %.3f, max Get error %.4f x max|x|" %
              (rounds, time.monotonic() - t_begin, Server.launches, kills, graceful, snapshot_calls, bg, torn,
               len(model.live), len(model.deleted), recall or 0, self.max_rel_err), flush=True)
        if rounds >= 20 and not originals:
            for c in cats:
                self.assertGreaterEqual(kills[c], 3, "too few kills during %s: %s" % (c, kills))


# ---------------------------------------------------------------------------
# 2.-5. Graceful shutdown, bytes per vector, corruption, the Snapshot RPC.
# ---------------------------------------------------------------------------

class DataDirTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Tmp(self._testMethodName[5:])
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.ensure_dead()
        self.tmp.cleanup()

    def start(self, *extra, data=None):
        s = Server(data or self.tmp.data, self.tmp.logs, *extra)
        self.servers.append(s)
        return s

    def batch(self, rnd, tag, n=100):
        vecs = rnd.standard_normal((n, DIM)).astype(np.float32)
        return vecs, ["%s-%d" % (tag, j) for j in range(n)]

    def assert_batches(self, stub, name, batches, msg=""):
        for vecs, ids in batches:
            try:
                vals = get_map(stub, ids, name)
            except grpc.RpcError as e:
                missing = [vid for vid in ids if not exists(stub, vid, name)]
                self.fail("%s %d of a batch of %d missing (%s...): %s" % (msg, len(missing), len(ids), missing[:3],
                                                                     e.details()))
            for j, vid in enumerate(ids):
                self.assertLessEqual(float(np.max(np.abs(vals[vid] - vecs[j]))),
                                     QUANT_REL * float(np.max(np.abs(vecs[j]))), "%s %s" % (msg, vid))

    # 2 ------------------------------------------------------------------------
    def test_sigterm_with_ingest_in_flight(self):
        s = self.start()
        create(s.stub, "g", flush_threshold=500)
        acked, sent = [], {}
        codes = []
        lock = threading.Lock()
        rnd = np.random.default_rng(2)

        def stream():
            def gen():
                for seq in range(100000):
                    b = self.batch(rnd, "g%d" % seq)
                    with lock:
                        sent[seq] = b
                    yield pb.IngestRequest(collection="g", sequence=seq, vectors=b[0].ravel().tolist(), ids=b[1])
                    time.sleep(0.01)
            try:
                for ack in s.stub.Ingest(gen(), timeout=scaled(120)):
                    with lock:
                        if not ack.HasField("error"):
                            acked.append(sent.pop(ack.sequence))
            except grpc.RpcError as e:
                codes.append(e.code())
        t = threading.Thread(target=stream, daemon=True)
        t.start()
        time.sleep(1.5)
        s.proc.send_signal(signal.SIGTERM)
        rc = s.proc.wait(timeout=scaled(60))
        t.join(30)
        self.assertEqual(rc, 0, tail(s.stderr()))
        self.assertGreater(len(acked), 5)
        with lock:
            unacked = list(sent.values())
        s2 = self.start()
        n = describe(s2.stub, "g").vectors
        self.assert_batches(s2.stub, "g", acked, "acknowledged before SIGTERM:")
        maybe = 0
        for vecs, ids in unacked:
            present = sum(exists(s2.stub, vid, "g") for vid in ids)
            self.assertIn(present, (0, len(ids)), "a batch in flight at SIGTERM is partly there")
            maybe += present
        self.assertEqual(n, 100 * len(acked) + maybe)
        m = re.search(r'opened "g": (\d+) vectors, snapshot LSN (\d+) .*?, (\d+) log records replayed', s2.stderr())
        self.assertTrue(m, tail(s2.stderr()))
        print("\nSIGTERM mid-stream: %d batches acknowledged, %d in flight (%d vectors of them kept), stream "
              "ended with %s; restart: %s" % (len(acked), len(unacked), maybe, codes, m.group(0)), flush=True)
        self.assertGreater(int(m.group(2)), 0, "the restart loaded no snapshot:\n" + tail(s2.stderr()))
        self.assertLessEqual(int(m.group(3)), 2, "the shutdown did not snapshot:\n" + tail(s2.stderr()))
        self.assertIn('snapshot of "g"', s.stderr())
        self.assertEqual(s2.stop(), 0)

    # 3 ------------------------------------------------------------------------
    def test_restart_keeps_bytes_per_vector(self):
        s = self.start()
        create(s.stub, "bpv")
        rnd = np.random.default_rng(3)
        ingest(s.stub, "bpv", [rnd.standard_normal((2000, DIM)).astype(np.float32) for _ in range(10)])
        info = s.stub.Flush(pb.FlushRequest(collection="bpv"), timeout=RPC_TIMEOUT).info
        self.assertEqual(info.vectors, 20000)
        self.assertEqual(info.buffered, 0)
        before = describe(s.stub, "bpv").memory.bytes_per_vector
        self.assertEqual(s.stop(), 0, tail(s.stderr()))
        s2 = self.start()
        info2 = describe(s2.stub, "bpv")
        after = info2.memory.bytes_per_vector
        print("\nbytes per vector (20000 x %d int8): %.2f before, %.2f after a restart (%+.2f%%)" %
              (DIM, before, after, 100.0 * (after - before) / before), flush=True)
        self.assertEqual(info2.vectors, 20000)
        self.assertLessEqual(abs(after - before), 0.02 * before,
                             "bytes per vector %.2f before a restart, %.2f after" % (before, after))
        self.assertEqual(s2.stop(), 0)

    # 4 ------------------------------------------------------------------------
    def prepare(self, name, batches_before, batches_after, snapshot=True, flush_threshold=500):
        """A collection with acknowledged batches around a Snapshot call,
        then SIGKILL (so the log after the snapshot stays)."""
        s = self.start()
        create(s.stub, name, flush_threshold=flush_threshold)
        rnd = np.random.default_rng(len(name))
        before = [self.batch(rnd, "%s-a%d" % (name, i)) for i in range(batches_before)]
        after = [self.batch(rnd, "%s-b%d" % (name, i)) for i in range(batches_after)]
        if before:
            ingest(s.stub, name, before)
        snap = None
        if snapshot:
            snap = s.stub.Snapshot(pb.SnapshotRequest(collection=name), timeout=RPC_TIMEOUT)
        for b in after:  # one stream per batch: one log record each
            ingest(s.stub, name, [b])
        s.kill()
        return before, after, snap

    def test_corrupt_torn_tail_is_cut(self):
        # No flush after the snapshot: the maintenance thread could log its
        # marker after the last ADD, which this test tears.
        before, after, snap = self.prepare("t", 6, 5, flush_threshold=100000)
        cdir = coll_dir(self.tmp.data, "t")
        seg = os.path.join(cdir, wal_segments(cdir)[-1])
        recs = wal_records(seg)
        self.assertGreaterEqual(len(recs), 5, "expected the 5 batches after the snapshot in %s" % seg)
        self.assertEqual(recs[-1][3], 1, "the newest record is not the last batch's ADD: %s" % recs)
        size = os.path.getsize(seg)
        os.truncate(seg, size - 7)
        s = self.start()
        err = s.stderr()
        self.assertRegex(err, r"cut a torn (final )?record", tail(err))
        self.assertIn(os.path.basename(seg), err)
        self.assertEqual(os.path.getsize(seg), recs[-1][0], "the torn record was not cut off the file")
        self.assert_batches(s.stub, "t", before + after[:-1], "acknowledged, not in the torn record:")
        lost = [vid for vid in after[-1][1] if exists(s.stub, vid, "t")]
        self.assertEqual(lost, [], "part of the torn record's batch came back")
        self.assertEqual(describe(s.stub, "t").vectors, 100 * (len(before) + len(after) - 1))
        # The log goes on after the cut: a new write survives another crash.
        rnd = np.random.default_rng(44)
        more = self.batch(rnd, "t-c")
        ingest(s.stub, "t", [more])
        s.kill()
        s2 = self.start()
        self.assert_batches(s2.stub, "t", before + after[:-1] + [more], "after the second crash:")
        self.assertEqual(describe(s2.stub, "t").vectors, 100 * (len(before) + len(after)))
        self.assertEqual(s2.stop(), 0)

    def test_corrupt_wal_record_stops_startup(self):
        self.prepare("w", 0, 5, snapshot=False, flush_threshold=100000)
        cdir = coll_dir(self.tmp.data, "w")
        segs = [f for f in wal_segments(cdir) if wal_records(os.path.join(cdir, f))]
        self.assertEqual(len(segs), 1, wal_segments(cdir))
        seg = os.path.join(cdir, segs[0])
        recs = wal_records(seg)
        self.assertEqual(len(recs), 5)
        off, size, lsn, _ = recs[1]
        flip_byte(seg, off + size // 2)
        size_before = os.path.getsize(seg)
        rc, err = run_expect_exit(self.tmp.data, self.tmp.logs)
        self.assertEqual(rc, 1, err)
        self.assertIn("slimvecd: cannot start", err)
        self.assertIn(os.path.basename(seg), err)
        self.assertIn("offset %d" % off, err)
        self.assertEqual(os.path.getsize(seg), size_before, "start-up changed the damaged segment")
        # The damage stays reported on every attempt.
        rc, err = run_expect_exit(self.tmp.data, self.tmp.logs)
        self.assertEqual(rc, 1, err)

    def test_corrupt_snapshot_stops_startup(self):
        before, after, snap = self.prepare("p", 10, 2)
        cdir = coll_dir(self.tmp.data, "p")
        snaps = snapshots(cdir)
        self.assertEqual(snaps, ["snap-%020d.svs" % snap.lsn])
        self.assertFalse(os.path.exists(os.path.join(cdir, "wal-%020d.log" % 1)), "log before the snapshot kept")
        path = os.path.join(cdir, snaps[0])
        flip_byte(path, os.path.getsize(path) // 2)
        rc, err = run_expect_exit(self.tmp.data, self.tmp.logs)
        self.assertEqual(rc, 1, err)
        self.assertIn("slimvecd: cannot start", err)
        self.assertIn(snaps[0], err)

    def test_missing_snapshot_stops_startup(self):
        before, after, snap = self.prepare("m", 10, 2)
        cdir = coll_dir(self.tmp.data, "m")
        os.unlink(os.path.join(cdir, "snap-%020d.svs" % snap.lsn))
        rc, err = run_expect_exit(self.tmp.data, self.tmp.logs)
        self.assertEqual(rc, 1, err)
        self.assertIn("slimvecd: cannot start", err)
        self.assertRegex(err, r"no snapshot holds the LSNs before it")

    def test_log_in_several_segments(self):
        # Every start begins a new log segment: after a few crashes the log
        # is several segments, to be read in LSN order (not directory order).
        rnd = np.random.default_rng(6)
        s = self.start("--snapshot-log-bytes", "0")
        create(s.stub, "seg", flush_threshold=100000)
        batches = []
        for i in range(7):
            b = self.batch(rnd, "seg%d" % i)
            ingest(s.stub, "seg", [b])
            batches.append(b)
            s.kill()
            s = self.start("--snapshot-log-bytes", "0")
        cdir = coll_dir(self.tmp.data, "seg")
        self.assertEqual(describe(s.stub, "seg").vectors, 700)
        self.assert_batches(s.stub, "seg", batches, "after 7 crashes, log in %s:" % wal_segments(cdir))
        self.assertEqual(s.stop(), 0)

    def test_kill_while_snapshot_removes_old_log(self):
        # A snapshot is renamed into place, then the log segments and older
        # snapshots it replaces are unlinked one by one (durable.c
        # remove_replaced, in directory order). A crash in the middle leaves
        # some of them: simulate it by putting back the oldest segment after
        # the snapshot removed all three.
        rnd = np.random.default_rng(7)
        s = self.start("--snapshot-log-bytes", "0")
        create(s.stub, "rr", flush_threshold=100000)
        batches = []
        cdir = coll_dir(self.tmp.data, "rr")
        for i in range(3):
            b = self.batch(rnd, "rr%d" % i)
            ingest(s.stub, "rr", [b])
            batches.append(b)
            s.kill()
            s = self.start("--snapshot-log-bytes", "0")
        segs = wal_segments(cdir)
        oldest = os.path.join(cdir, segs[0])
        with open(oldest, "rb") as f:
            saved = f.read()
        snap = s.stub.Snapshot(pb.SnapshotRequest(collection="rr"), timeout=RPC_TIMEOUT)
        b = self.batch(rnd, "rr-after")
        ingest(s.stub, "rr", [b])
        batches.append(b)
        s.kill()
        self.assertNotIn(segs[0], wal_segments(cdir))
        with open(oldest, "wb") as f:
            f.write(saved)
        left = sorted(os.listdir(cdir))
        s = Server(self.tmp.data, self.tmp.logs, wait=False)
        self.servers.append(s)
        try:
            s.wait_ready()
        except AssertionError as e:
            self.fail("a crash while the snapshot at LSN %d removed the log it replaces (left: %s) "
                      "makes the data directory unopenable: %s" % (snap.lsn, left, e))
        self.assertEqual(describe(s.stub, "rr").vectors, 400)
        self.assert_batches(s.stub, "rr", batches, "after the interrupted removal:")
        self.assertEqual(s.stop(), 0)

    def test_empty_data_dir(self):
        os.mkdir(self.tmp.data)
        s = self.start()
        self.assertEqual(len(s.stub.ListCollections(pb.ListCollectionsRequest(), timeout=RPC_TIMEOUT).collections), 0)
        self.assertEqual(s.stop(), 0)
        # A directory that does not exist yet is created.
        s = self.start(data=os.path.join(self.tmp.root, "new"))
        self.assertEqual(len(s.stub.ListCollections(pb.ListCollectionsRequest(), timeout=RPC_TIMEOUT).collections), 0)
        self.assertTrue(os.path.exists(os.path.join(self.tmp.root, "new", "LOCK")))
        self.assertEqual(s.stop(), 0)

    def test_second_server_on_the_same_dir(self):
        s = self.start()
        create(s.stub, "x")
        rc, err = run_expect_exit(self.tmp.data, self.tmp.logs)
        self.assertEqual(rc, 1, err)
        self.assertIn("another slimvecd uses this data directory", err)
        # The first one is unharmed.
        self.assertEqual(describe(s.stub, "x").vectors, 0)
        self.assertEqual(s.stop(), 0)

    # 5 ------------------------------------------------------------------------
    def test_snapshot_rpc(self):
        s = self.start("--snapshot-log-bytes", "0")
        create(s.stub, "snap", flush_threshold=500)
        rnd = np.random.default_rng(5)
        ingest(s.stub, "snap", [rnd.standard_normal((200, DIM)).astype(np.float32) for _ in range(5)])
        info = describe(s.stub, "snap")
        self.assertTrue(info.HasField("persistence"))
        self.assertGreater(info.persistence.log_bytes, 1000 * DIM * 4)
        self.assertEqual(info.persistence.snapshot_lsn, 0)
        resp = s.stub.Snapshot(pb.SnapshotRequest(collection="snap"), timeout=RPC_TIMEOUT)
        self.assertGreater(resp.lsn, 0)
        self.assertGreater(resp.bytes, 0)
        self.assertEqual(resp.lsn, info.persistence.last_lsn)
        info2 = describe(s.stub, "snap")
        print("\nSnapshot: LSN %d, %d bytes, %.4f s (stall %.4f s); log bytes %d -> %d" %
              (resp.lsn, resp.bytes, resp.seconds, resp.stall_seconds, info.persistence.log_bytes,
               info2.persistence.log_bytes), flush=True)
        self.assertLessEqual(info2.persistence.log_bytes, 64)
        self.assertEqual(info2.persistence.snapshot_lsn, resp.lsn)
        self.assertEqual(info2.persistence.snapshot_bytes, resp.bytes)
        cdir = coll_dir(self.tmp.data, "snap")
        path = os.path.join(cdir, "snap-%020d.svs" % resp.lsn)
        self.assertEqual(os.path.getsize(path), resp.bytes)
        self.assertEqual([f for f in wal_segments(cdir) if int(f[4:24]) <= resp.lsn], [],
                         "log segments the snapshot replaces are still there")
        with self.assertRaises(grpc.RpcError) as ctx:
            s.stub.Snapshot(pb.SnapshotRequest(collection="nope"), timeout=RPC_TIMEOUT)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(s.stop(), 0)
        # Without a data directory: FAILED_PRECONDITION.
        m = self.start(data=":memory:")
        create(m.stub, "mem")
        self.assertFalse(describe(m.stub, "mem").HasField("persistence"))
        with self.assertRaises(grpc.RpcError) as ctx:
            m.stub.Snapshot(pb.SnapshotRequest(collection="mem"), timeout=RPC_TIMEOUT)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, ctx.exception.details())
        self.assertEqual(m.stop(), 0)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
