"""Real clusters for the cluster tests: nats-server processes with
JetStream, etcd members, and slimvecd pods (S shards x R replica sets) on
loopback, each on free ports, started, SIGKILLed, SIGSTOPped and restarted
by the tests. No mock of any engine."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

from svtest import client_channel, scaled, wait_for  # noqa: E402

_taken = set()


def free_port():
    """A free port below the kernel's ephemeral range (32768 up), at random,
    checked by binding: an ephemeral port can be taken by an outgoing
    connection or another test's pick in the time a server needs to start,
    when tests run in parallel."""
    import random
    import socket
    while True:
        port = random.randrange(20000, 32000)
        if port in _taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port


def stop(proc):
    """SIGSTOP proc and wait until every thread of it is stopped: the
    signal is only queued when kill() returns, and on a loaded machine the
    other threads run on until one of them has taken it (a paused server
    once acknowledged a replicated append after the signal was sent)."""
    proc.send_signal(signal.SIGSTOP)
    task = '/proc/%d/task' % proc.pid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            states = []
            for tid in os.listdir(task):
                try:
                    with open('%s/%s/stat' % (task, tid)) as f:
                        states.append(f.read().rsplit(')', 1)[1].split()[0])
                except (FileNotFoundError, ProcessLookupError):
                    pass
        except FileNotFoundError:
            return
        if all(s in ('T', 't') for s in states):
            return
        time.sleep(0.001)


class Servers:
    """n server processes of one engine (start(i) and wait_ready(i) are the
    engine's): SIGKILL, SIGSTOP/SIGCONT, restart, and cleanup of their
    directory."""

    def kill(self, i):
        p = self.procs[i]
        if p and p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait()
        self.procs[i] = None
        self.paused.discard(i)

    def restart(self, i):
        self.kill(i)
        self.start(i)
        self.wait_ready(i)

    def pause(self, i):
        stop(self.procs[i])
        self.paused.add(i)

    def resume(self, i):
        self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def close(self):
        for i in range(self.n):
            self.kill(i)
        shutil.rmtree(self.root, ignore_errors=True)


class Nats(Servers):
    """n nats-server processes forming one JetStream cluster."""

    def __init__(self, n=3, tls=None):
        """tls: (cert, key) to require TLS of clients (tls:// URLs)."""
        self.n = n
        self.tls = tls
        self.root = tempfile.mkdtemp(prefix="sv-nats-")
        self.client = [free_port() for _ in range(n)]
        self.route = [free_port() for _ in range(n)]
        self.http = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.paused = set()
        for i in range(n):
            with open(self.conf(i), "w") as f:
                f.write("server_name: n%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n" %
                        (i, self.client[i], self.http[i]))
                f.write('jetstream { store_dir: "%s/n%d" }\n' % (self.root, i))
                if tls:
                    f.write('tls { cert_file: "%s", key_file: "%s" }\n' % tls)
                if n > 1:
                    routes = "".join("    nats-route://127.0.0.1:%d\n" % self.route[j]
                                     for j in range(n) if j != i)
                    f.write("cluster {\n  name: svtest\n  listen: 127.0.0.1:%d\n  routes: [\n%s  ]\n}\n" %
                            (self.route[i], routes))
        for i in range(n):
            self.start(i)
        for i in range(n):
            self.wait_ready(i)

    def conf(self, i):
        return os.path.join(self.root, "n%d.conf" % i)

    @property
    def urls(self):
        return ",".join("%s://127.0.0.1:%d" % ("tls" if self.tls else "nats", p) for p in self.client)

    def start(self, i):
        log = open(os.path.join(self.root, "n%d.log" % i), "a")
        self.procs[i] = subprocess.Popen(["nats-server", "-c", self.conf(i)], stdout=log, stderr=log)
        log.close()

    def jsz(self, i, query=""):
        with urllib.request.urlopen("http://127.0.0.1:%d/jsz%s" % (self.http[i], query),
                                    timeout=scaled(2)) as r:
            return json.loads(r.read().decode())

    def wait_ready(self, i, seconds=30):
        """Until server i's JetStream has a meta leader."""
        def ready():
            try:
                return self.jsz(i).get("meta_cluster", {}).get("leader") if self.n > 1 else True
            except Exception:  # noqa: BLE001 - not up yet
                return False
        wait_for(ready, seconds, "nats-server n%d" % i, step=0.1)

    def stream_leader(self, stream):
        """The index of the server leading `stream`, or None."""
        for i in range(self.n):
            if i in self.paused or self.procs[i] is None:
                continue
            try:
                info = self.jsz(i, "?accounts=true&streams=true")
            except Exception:  # noqa: BLE001
                continue
            for acc in info.get("account_details", []):
                for s in acc.get("stream_detail", []):
                    if s.get("name") == stream and s.get("cluster", {}).get("leader"):
                        return int(s["cluster"]["leader"][1:])
        return None



class Etcd(Servers):
    """n etcd members forming one cluster (etcd-server's binary)."""

    def __init__(self, n=1):
        self.n = n
        self.root = tempfile.mkdtemp(prefix="sv-etcd-")
        self.client = [free_port() for _ in range(n)]
        self.peer = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.paused = set()
        for i in range(n):
            self.start(i)
        for i in range(n):
            self.wait_ready(i)

    @property
    def endpoints(self):
        return ",".join("127.0.0.1:%d" % p for p in self.client)

    def args(self, i):
        cluster = ",".join("e%d=http://127.0.0.1:%d" % (j, self.peer[j]) for j in range(self.n))
        return ["etcd", "--name", "e%d" % i, "--data-dir", os.path.join(self.root, "e%d" % i),
                "--listen-client-urls", "http://127.0.0.1:%d" % self.client[i],
                "--advertise-client-urls", "http://127.0.0.1:%d" % self.client[i],
                "--listen-peer-urls", "http://127.0.0.1:%d" % self.peer[i],
                "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % self.peer[i],
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "svtest", "--heartbeat-interval", "50",
                "--election-timeout", "500", "--log-level", "warn"]

    def start(self, i):
        log = open(os.path.join(self.root, "e%d.log" % i), "a")
        self.procs[i] = subprocess.Popen(self.args(i), stdout=log, stderr=log)
        log.close()

    def health(self, i):
        """The member's own word on whether the cluster has a leader."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.client[i], timeout=scaled(2)) as r:
                return json.loads(r.read().decode()).get("health") == "true"
        except Exception:  # noqa: BLE001 - not up, or no quorum
            return False

    def wait_ready(self, i, seconds=30):
        if self.n == 1 or len([j for j in range(self.n) if self.procs[j] is not None]) > self.n // 2:
            wait_for(lambda: self.health(i), seconds, "etcd member e%d" % i, step=0.1)



class Pod:
    """One slimvecd of the cluster (replica set r, shard s)."""

    def __init__(self, cluster, r, s, name=None):
        """Replica set r; s: the shard it joins when the map does not name it."""
        self.cluster, self.r, self.s = cluster, r, s
        self.name = name or "r%d-s%d" % (r, s)
        self.port = free_port()
        self.metrics_port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.data_dir = os.path.join(cluster.root, self.name)
        self.log_path = os.path.join(cluster.root, self.name + ".log")
        self.proc = None
        self.extra = []  # flags of this pod only

    def args(self):
        c = self.cluster
        return [c.binary, "--listen", self.addr, "--metrics-listen", "127.0.0.1:%d" % self.metrics_port,
                "--data-dir", self.data_dir, "--cluster-nats", c.nats.urls, "--shards", str(c.shards),
                "--cluster-etcd", c.etcd.endpoints, "--pod-name", self.name,
                "--shard", str(self.s), "--replica-set", "r%d" % self.r,
                "--stream-replicas", str(min(3, c.nats.n)),
                "--grace", "2", *c.extra, *self.extra]

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def pause(self):
        stop(self.proc)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=scaled(60))
        return None

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def channel(self):
        return client_channel(self.addr, **self.cluster.client)

    def wait_ready(self, seconds=60):
        import grpc
        from health.v1 import health_pb2, health_pb2_grpc
        ch = self.channel()
        stub = health_pb2_grpc.HealthStub(ch)
        until = time.monotonic() + scaled(seconds)
        try:
            while True:
                if not self.alive():
                    raise AssertionError("pod %s exited:\n%s" % (self.name, self.log()[-3000:]))
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=scaled(2), wait_for_ready=True)
                    return
                except grpc.RpcError:
                    if time.monotonic() > until:
                        raise
                    time.sleep(0.05)
        finally:
            ch.close()

    def metrics(self):
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" % self.metrics_port)
        if self.cluster.metrics_token:
            req.add_header("Authorization", "Bearer " + self.cluster.metrics_token)
        with urllib.request.urlopen(req, timeout=scaled(5)) as r:
            return r.read().decode()

    def metric(self, name):
        """The value of an unlabelled metric (None when absent)."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def shard(self):
        """The shard this pod follows now (-1: none), from its metrics."""
        for line in self.metrics().splitlines():
            if line.startswith("slimvec_cluster_shard{"):
                return int(float(line.split()[-1]))
        return None

    def wait_serving(self, seconds=60):
        """Until this pod is a ready replica of its shard in the map."""
        wait_for(lambda: self.metric("slimvec_cluster_replica_ready") == 1, scaled(seconds),
                 "pod %s ready in the shard map" % self.name, step=0.05)


class Cluster:
    """S shards x R replica sets of slimvecd over a NATS cluster."""

    def __init__(self, binary, stubs, shards=2, sets=2, nats=None, nats_servers=3, extra=(), client=None,
                 etcd=None, etcd_members=1, metrics_token=None):
        """client: how clients reach the pods (svtest.client_channel's keywords: ca, token...)."""
        sys.path.insert(0, stubs)
        self.binary = binary
        self.client = dict(client or {})
        self.metrics_token = metrics_token
        self.shards, self.sets = shards, sets
        self.extra = list(extra)
        self.root = tempfile.mkdtemp(prefix="sv-cluster-")
        self.own_nats = nats is None
        self.own_etcd = etcd is None
        self.nats = nats or Nats(nats_servers)
        self.etcd = etcd or Etcd(etcd_members)
        self.pods = [Pod(self, r, s) for r in range(sets) for s in range(shards)]
        for p in self.pods:
            p.start()
        for p in self.pods:
            p.wait_ready()
        for p in self.pods:
            p.wait_serving()

    def pod(self, r, s):
        return next(p for p in self.pods if p.r == r and p.s == s)

    def channel(self, pod=None):
        return (pod or self.pods[0]).channel()

    def stub(self, pod=None):
        from slimvec.v1 import slimvec_pb2_grpc as pbg
        return pbg.SlimVecStub(self.channel(pod))

    def restart(self, pod):
        pod.kill()
        pod.start()
        pod.wait_ready()

    def logs(self):
        return "\n".join("---- %s\n%s" % (p.name, p.log()[-4000:]) for p in self.pods)

    def close(self, keep=False):
        """Stop everything (SIGTERM first: a sanitizer build reports leaks at
        exit) and fail if any pod's log holds a sanitizer's report."""
        for p in self.pods:
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - a pod that does not stop is killed
                pass
            p.kill()
        if self.own_nats:
            self.nats.close()
        if self.own_etcd:
            self.etcd.close()
        reports = [p.name for p in self.pods
                   if any(w in p.log() for w in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                                                 "ThreadSanitizer"))]
        if reports:
            keep = True
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
        if reports:
            raise AssertionError("sanitizer reports in the logs of %s (kept in %s)" % (reports, self.root))
