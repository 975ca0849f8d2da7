"""Shared pieces of the end-to-end tests.

Timing: every deadline and wait in these tests is a base figure times one
scale factor, SV_TEST_SCALE (default 1; ctest sets it larger for sanitizer
builds, and a slow or busy machine can raise it). Tests wait on conditions
(poll until true or the scaled deadline), never on fixed sleeps that a slow
machine could outrun.
"""

import os
import socket
import time

SCALE = float(os.environ.get("SV_TEST_SCALE", "1") or "1")


def scaled(seconds):
    """A deadline of `seconds` on a quick, idle machine, scaled."""
    return seconds * SCALE


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, seconds, what, step=0.02):
    """Poll cond() until it returns a true value (returned) or the scaled
    deadline passes (AssertionError naming `what`)."""
    until = time.monotonic() + scaled(seconds)
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > until:
            raise AssertionError("timed out after %.1f s waiting for %s" % (scaled(seconds), what))
        time.sleep(step)


def rss_bytes(pid):
    """Resident set size of a process (from /proc)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Slimvecd:
    """A slimvecd process on free loopback ports, with a data directory of
    its own unless one is given; stderr goes to a file (read with .log())."""

    def __init__(self, binary, stubs, *extra, data_dir=None, wait=True):
        import subprocess
        import tempfile
        import grpc
        from health.v1 import health_pb2_grpc
        from slimvec.v1 import slimvec_pb2_grpc as pbg
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.metrics = "127.0.0.1:%d" % free_port()
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="slimvec-e2e-")
        self.log_path = os.path.join(tempfile.gettempdir(), "slimvecd-%d-%d.log" % (os.getpid(), self.port))
        self.log_file = open(self.log_path, "w")
        self.args = [binary, "--listen", self.addr, "--metrics-listen", self.metrics,
                     "--data-dir", self.data_dir, *extra]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log_file)
        self.channel = grpc.insecure_channel(self.addr, options=[
            ("grpc.max_receive_message_length", 256 << 20),
            ("grpc.max_send_message_length", 256 << 20)])
        self.stub = pbg.SlimVecStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        if wait:
            self.wait_ready()

    def wait_ready(self, seconds=60):
        import grpc
        grpc.channel_ready_future(self.channel).result(timeout=scaled(seconds))

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def rss(self):
        return rss_bytes(self.proc.pid)

    def http(self, path, seconds=10):
        import urllib.request
        with urllib.request.urlopen("http://%s%s" % (self.metrics, path), timeout=scaled(seconds)) as r:
            return r.read().decode()

    def stop(self, sig=None, seconds=60, keep_dir=False):
        """Signal (SIGTERM by default), wait, return the exit code."""
        import shutil
        import signal
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        rc = self.proc.wait(timeout=scaled(seconds))
        self.log_file.close()
        if self.own_dir and not keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return rc


class HealthMonitor:
    """Asks Health/Check every `period` seconds on a channel of its own and
    records the slowest answer and any failure (a deadline of `limit`)."""

    def __init__(self, addr, limit=1.0, period=0.1):
        import threading
        import grpc
        from health.v1 import health_pb2, health_pb2_grpc
        self.pb = health_pb2
        self.channel = grpc.insecure_channel(addr)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.limit = scaled(limit)
        self.period = period
        self.worst = 0.0
        self.checks = 0
        self.failures = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                r = self.stub.Check(self.pb.HealthCheckRequest(), timeout=self.limit)
                if r.status != self.pb.HealthCheckResponse.SERVING:
                    self.failures.append("status %s" % r.status)
            except Exception as e:  # noqa: BLE001 - any failure counts
                self.failures.append("%s after %.2f s" % (getattr(e, "code", lambda: e)(), time.monotonic() - t0))
            self.worst = max(self.worst, time.monotonic() - t0)
            self.checks += 1
            self.stop_event.wait(self.period)

    def stop(self):
        self.stop_event.set()
        self.thread.join()
        self.channel.close()
        return self
