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


def _env(value, name):
    return value if value is not None else (os.environ.get(name) or None)


def token_interceptor(token):
    """Adds `authorization: Bearer <token>` to every call (works on plaintext
    channels too, unlike grpc's call credentials)."""
    import grpc
    md = ("authorization", "Bearer " + token)

    class Details(grpc.ClientCallDetails):
        def __init__(self, d):
            self.method, self.timeout, self.credentials = d.method, d.timeout, d.credentials
            self.wait_for_ready, self.compression = d.wait_for_ready, getattr(d, "compression", None)
            self.metadata = list(d.metadata or []) + [md]

    class Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def _go(self, continuation, details, request):
            return continuation(Details(details), request)

        intercept_unary_unary = _go
        intercept_unary_stream = _go
        intercept_stream_unary = _go
        intercept_stream_stream = _go

    return Interceptor()


def client_channel(addr, ca=None, cert=None, key=None, server_name=None, token=None, tls=None,
                   options=()):
    """A channel to a slimvecd: TLS when a CA (or SLIMVEC_CA, or tls=True)
    is given, a client certificate for mutual TLS, and a bearer token
    (SLIMVEC_TOKEN) on every call. Arguments left None fall back to the
    environment, as the CLI does."""
    import grpc
    ca, cert, key = _env(ca, "SLIMVEC_CA"), _env(cert, "SLIMVEC_CERT"), _env(key, "SLIMVEC_KEY")
    server_name, token = _env(server_name, "SLIMVEC_SERVER_NAME"), _env(token, "SLIMVEC_TOKEN")
    options = [("grpc.max_receive_message_length", 256 << 20),
               ("grpc.max_send_message_length", 256 << 20), *options]
    if tls or ca or cert:
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        creds = grpc.ssl_channel_credentials(root_certificates=read(ca) if ca else None,
                                             private_key=read(key) if key else None,
                                             certificate_chain=read(cert) if cert else None)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(addr, options=options)
    if token:
        channel = grpc.intercept_channel(channel, token_interceptor(token))
    return channel


class Slimvecd:
    """A slimvecd process on free loopback ports, with a data directory of
    its own unless one is given; stderr goes to a file (read with .log())."""

    def __init__(self, binary, stubs, *extra, data_dir=None, wait=True, client=None, host="127.0.0.1"):
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
        self.args = [binary, "--listen", "%s:%d" % (host, self.port), "--metrics-listen", self.metrics,
                     "--data-dir", self.data_dir, *extra]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log_file)
        # How clients reach it: client_channel's keywords (ca, cert, key,
        # server_name, token); the environment fills what is not given.
        self.client = dict(client or {})
        self.channel = self.new_channel()
        self.stub = pbg.SlimVecStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        if wait:
            self.wait_ready()

    def new_channel(self, **override):
        """A channel of its own, as self.client says, with overrides."""
        return client_channel(self.addr, **{**self.client, **override})

    def wait_ready(self, seconds=60):
        """Until Health answers (the process may still be opening its data)."""
        import grpc
        from health.v1 import health_pb2
        until = time.monotonic() + scaled(seconds)
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("slimvecd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                self.health.Check(health_pb2.HealthCheckRequest(), timeout=scaled(2), wait_for_ready=True)
                return
            except grpc.RpcError:
                if time.monotonic() > until:
                    raise
                time.sleep(0.05)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def rss(self):
        return rss_bytes(self.proc.pid)

    def http(self, path, seconds=10, token=None, ca=None):
        """GET on the HTTP port (https when ca is given); the body."""
        import ssl
        import urllib.request
        req = urllib.request.Request("%s://%s%s" % ("https" if ca else "http", self.metrics, path))
        if token:
            req.add_header("Authorization", "Bearer " + token)
        ctx = ssl.create_default_context(cafile=ca) if ca else None
        with urllib.request.urlopen(req, timeout=scaled(seconds), context=ctx) as r:
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

    def __init__(self, addr, limit=1.0, period=0.1, **client):
        import threading
        from health.v1 import health_pb2, health_pb2_grpc
        self.pb = health_pb2
        self.channel = client_channel(addr, **client)
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


def sh(*args, cwd=None):
    import subprocess
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Certs:
    """CAs and leaf certificates made with the openssl command."""

    def __init__(self, root):
        self.root = root

    def path(self, name):
        return os.path.join(self.root, name)

    def ca(self, name):
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", self.path(name + ".key"), "-out", self.path(name + ".crt"),
           "-days", "30", "-subj", "/CN=%s" % name)
        return self.path(name + ".crt")

    def leaf(self, name, ca, days=30, usage="serverAuth"):
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\n" % usage)
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", self.path(name + ".key"), "-out", self.path(name + ".csr"), "-subj", "/CN=%s" % name)
        # -days -1: a notAfter before notBefore, an expired certificate.
        sh("openssl", "x509", "-req", "-in", self.path(name + ".csr"), "-CA", self.path(ca + ".crt"),
           "-CAkey", self.path(ca + ".key"), "-CAcreateserial", "-out", self.path(name + ".crt"),
           "-days", str(days), "-extfile", ext)
        return self.path(name + ".crt"), self.path(name + ".key")
