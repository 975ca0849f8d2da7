#!/usr/bin/python3
"""Cluster benchmark: 2 shards x 2 replicas (three nats-server, four
slimvecd) against one node, side by side in one run, on this machine, with
the same data: Fashion-MNIST (60,000 x 784, Debian's dataset-fashion-mnist),
int8, L2.

Usage: cluster_bench.py SLIMVECD STUBS [--queries N] [--search-list L]

Measured for each: ingest rate through one server (the streaming Ingest of
the Python client, batches of 1,000, until acknowledged: on a single node
durable in its fsynced log, in the cluster acknowledged by the shard
streams' quorums), the flush after it, searches one at a time (QPS,
p50/p99) and with 8 in flight (QPS), recall@10 against exact neighbours.
Every figure is printed as measured; the ratios are cluster / single node.
"""

import argparse
import gzip
import os
import struct
import sys
import tempfile
import threading
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "cluster"))
sys.path.insert(0, os.path.join(here, "..", "e2e"))

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    for path in (os.path.join(FASHION, name), os.path.join(FASHION, name + ".gz")):
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            dims = data[3]
            shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise SystemExit("Fashion-MNIST not found in %s (apt-get install dataset-fashion-mnist)" % FASHION)


def exact(base, queries, k):
    out = np.empty((len(queries), k), dtype=np.int64)
    bn = (base ** 2).sum(1)
    for i in range(0, len(queries), 250):
        q = queries[i:i + 250]
        d = bn[None, :] - 2 * q @ base.T
        out[i:i + 250] = np.argsort(d, axis=1)[:, :k]
    return out


def run(name, stubs, addrs, flush_addrs, base, queries, truth, search_list):
    import grpc
    from slimvec.v1 import slimvec_pb2 as pb
    from slimvec.v1 import slimvec_pb2_grpc as pbg
    T = 600
    stub = pbg.SlimVecStub(grpc.insecure_channel(addrs[0], options=[("grpc.max_send_message_length", 1 << 26),
                                                                    ("grpc.max_receive_message_length", 1 << 26)]))
    stub.CreateCollection(pb.CreateCollectionRequest(spec=pb.CollectionSpec(
        name="fm", dimension=784, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8)), timeout=T)
    ids = [str(i) for i in range(len(base))]

    def gen():
        for b in range(0, len(base), 1000):
            yield pb.IngestRequest(collection="fm", sequence=b, vectors=base[b:b + 1000].ravel().tolist(),
                                   ids=ids[b:b + 1000])
    t0 = time.monotonic()
    for a in stub.Ingest(gen(), timeout=T):
        if a.HasField("error"):
            raise SystemExit("%s: ingest: %s" % (name, a.error.message))
    ingest_s = time.monotonic() - t0
    t0 = time.monotonic()
    flush_threads = [threading.Thread(target=lambda a=a: pbg.SlimVecStub(grpc.insecure_channel(a)).Flush(
        pb.FlushRequest(collection="fm"), timeout=T)) for a in flush_addrs]
    for t in flush_threads:
        t.start()
    for t in flush_threads:
        t.join()
    flush_s = time.monotonic() - t0

    def search(stub, q):
        return stub.Search(pb.SearchRequest(collection="fm", queries=q.tolist(), k=10, search_list=search_list),
                           timeout=T)
    # One at a time, through the first server.
    for q in queries[:50]:
        search(stub, q)  # warm
    lat = []
    hits = 0
    t0 = time.monotonic()
    for i, q in enumerate(queries):
        t1 = time.monotonic()
        r = search(stub, q)
        lat.append(time.monotonic() - t1)
        hits += len({int(h.id) for h in r.results[0].hits} & set(truth[i].tolist()))
    one_s = time.monotonic() - t0
    recall = hits / (10.0 * len(queries))
    # 8 in flight, spread over the servers given.
    stubs8 = [pbg.SlimVecStub(grpc.insecure_channel(addrs[i % len(addrs)])) for i in range(8)]
    done = [0] * 8

    def worker(k):
        for q in queries[k::8]:
            search(stubs8[k], q)
            done[k] += 1
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    eight_s = time.monotonic() - t0
    lat.sort()
    return {
        "ingest_vps": len(base) / ingest_s, "ingest_s": ingest_s, "flush_s": flush_s,
        "qps1": len(queries) / one_s, "p50_ms": lat[len(lat) // 2] * 1e3, "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "qps8": sum(done) / eight_s, "recall": recall,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("slimvecd")
    ap.add_argument("stubs")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--search-list", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    from clustertest import Cluster, free_port  # noqa: E402
    import subprocess

    base = read_idx("train-images-idx3-ubyte").reshape(-1, 784).astype(np.float32)
    queries = read_idx("t10k-images-idx3-ubyte").reshape(-1, 784).astype(np.float32)[:args.queries]
    truth = exact(base, queries, 10)
    print("Fashion-MNIST: %d x %d base, %d queries, k=10, search list %d, %d cores" %
          (len(base), base.shape[1], len(queries), args.search_list, os.cpu_count()))

    data = tempfile.mkdtemp(prefix="sv-bench-single-")
    port = free_port()
    single = subprocess.Popen([args.slimvecd, "--listen", "127.0.0.1:%d" % port, "--metrics-listen",
                               "127.0.0.1:%d" % free_port(), "--data-dir", data],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        one = run("single node", args.stubs, ["127.0.0.1:%d" % port], ["127.0.0.1:%d" % port], base, queries,
                  truth, args.search_list)
    finally:
        single.terminate()
        single.wait()
        subprocess.run(["rm", "-rf", data])
    c = Cluster(args.slimvecd, args.stubs)
    try:
        routers = [p.addr for p in c.pods]
        two = run("cluster", args.stubs, routers, routers, base, queries, truth, args.search_list)
    finally:
        c.close()

    rows = [("ingest (vectors/s)", "ingest_vps", "%.0f"), ("flush after ingest (s)", "flush_s", "%.2f"),
            ("search, 1 in flight (QPS)", "qps1", "%.0f"), ("  p50 (ms)", "p50_ms", "%.2f"),
            ("  p99 (ms)", "p99_ms", "%.2f"), ("search, 8 in flight (QPS)", "qps8", "%.0f"),
            ("recall@10", "recall", "%.4f")]
    print("| | one node | 2 shards x 2 replicas | ratio |\n|---|---|---|---|")
    for label, key, fmt in rows:
        print("| %s | %s | %s | %.2f |" % (label, fmt % one[key], fmt % two[key],
                                           two[key] / one[key] if one[key] else 0))


if __name__ == "__main__":
    main()
