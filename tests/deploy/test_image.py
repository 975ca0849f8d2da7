#!/usr/bin/python3
"""The container image and docker-compose.yml, checked without a container engine.

Usage (ctest deploy_image): test_image.py SLIMVECD_PATH PYTHON_STUBS_DIR

No image is built or run here (CI has no container engine). Instead:
  - the Dockerfile's build stage must be exactly `deploy/setup.sh package`,
    which must build what `deploy/setup.sh test` builds (dry-run output);
  - every library the binaries load must come from a Debian package the
    runtime stage installs (or its dependencies, or the base image);
  - the binaries are installed as the build stage installs them and the
    server is started the way the Dockerfile says (its ENV, USER,
    ENTRYPOINT/CMD, HEALTHCHECK), as uid 10001 in a read-only working
    directory, with only the data directory and the ports changed; it must
    serve, ingest, search, export metrics, write only to its volume, stop
    cleanly on SIGTERM and find its data again after a restart;
  - docker-compose.yml and deploy/prometheus/*.yml pass docker-compose,
    promtool and yamllint, and agree with the Dockerfile;
  - docker-compose.yml's cluster profile (3 NATS, 3 etcd, 2 shards x 2
    replica sets of slimvecd) parses, leaves the default services alone,
    runs deploy/cluster/nats-server.conf as it is, and its pieces name each
    other consistently (broken copies must fail those checks).
"""

import glob
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

SLIMVECD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "./build/service/slimvecd")
STUBS = sys.argv[2] if len(sys.argv) > 2 else "./build/proto/python"
sys.path.insert(0, STUBS)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))

import grpc  # noqa: E402
from health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from slimvec.v1 import slimvec_pb2 as pb  # noqa: E402
from slimvec.v1 import slimvec_pb2_grpc as pbg  # noqa: E402
from svtest import token_interceptor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
SETUP = os.path.join(ROOT, "deploy", "setup.sh")
BUILD_DIR = os.path.dirname(os.path.dirname(SLIMVECD))  # <build>/service/slimvecd
# PATH of the debian:12 images (the only variable the image has besides its ENV).
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Packages debian:12-slim already has that the binaries use directly: the C
# library, and libgcc-s1 and libstdc++6 (apt itself needs them, so every
# Debian image has them). Anything else must be installed by the runtime stage.
SLIM_BASE = {"libc6", "libgcc-s1", "libstdc++6"}
COMPILE_WORDS = re.compile(r"(^|[\s;&|(])(cmake|make|ninja|gcc|cc|c\+\+|g\+\+|clang|ctest|ld)(\s|$)")


# --- Dockerfile ------------------------------------------------------------

def dockerfile_instructions(path):
    """[(KEYWORD, arguments)] of a Dockerfile: comments dropped, continuation
    lines joined, as docker does."""
    out, cur = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.strip().startswith("#"):
                continue  # comments (and parser directives), also inside continuations
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            if cur.strip():
                kw, _, rest = cur.strip().partition(" ")
                out.append((kw.upper(), rest.strip()))
            cur = ""
    if cur.strip():
        raise AssertionError("Dockerfile ends inside a continuation line")
    return out


def exec_form(text, what):
    """A JSON exec-form array (shell form would put /bin/sh in front, which
    the slim image has but which would not forward SIGTERM)."""
    try:
        v = json.loads(text)
    except ValueError:
        raise AssertionError("%s is not in exec form (a JSON array): %s" % (what, text))
    if not (isinstance(v, list) and v and all(isinstance(s, str) for s in v)):
        raise AssertionError("%s is not a JSON array of strings: %s" % (what, text))
    return v


class Stage:
    def __init__(self, base, name):
        self.base, self.name, self.instrs = base, name, []

    def all(self, kw):
        return [a for k, a in self.instrs if k == kw]

    def one(self, kw):
        got = self.all(kw)
        if len(got) != 1:
            raise AssertionError("stage %s: expected one %s, found %d" % (self.name or self.base, kw, len(got)))
        return got[0]


class Image:
    """What the final stage of the Dockerfile sets, parsed (no guessing: any
    form this parser does not know is an error)."""

    def __init__(self, path):
        self.stages = []
        for kw, args in dockerfile_instructions(path):
            if kw == "FROM":
                parts = args.split()
                name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
                if len(parts) not in (1, 3) or (len(parts) == 3 and not name):
                    raise AssertionError("FROM form not understood: " + args)
                self.stages.append(Stage(parts[0], name))
            elif not self.stages:
                if kw != "ARG":
                    raise AssertionError("%s before the first FROM" % kw)
            else:
                self.stages[-1].instrs.append((kw, args))
        self.runtime = self.stages[-1]
        rt = self.runtime
        self.env = {}
        for args in rt.all("ENV"):
            words = shlex.split(args)
            if words and "=" in words[0]:
                pairs = [w.split("=", 1) for w in words]
                if any(len(p) != 2 for p in pairs):
                    raise AssertionError("ENV form not understood: " + args)
            else:
                pairs = [args.split(None, 1)]  # legacy "ENV KEY value"
            for k, v in pairs:
                if "$" in v:
                    raise AssertionError("ENV %s uses a variable; this parser does not expand them" % k)
                self.env[k] = v
        user = rt.one("USER")
        m = re.fullmatch(r"(\d+):(\d+)", user)
        if not m:
            raise AssertionError("USER must be numeric uid:gid (runs with runAsNonRoot), got " + user)
        self.uid, self.gid = int(m.group(1)), int(m.group(2))
        self.entrypoint = exec_form(rt.one("ENTRYPOINT"), "ENTRYPOINT")
        cmds = rt.all("CMD")
        self.cmd = exec_form(cmds[-1], "CMD") if cmds else []
        self.argv = self.entrypoint + self.cmd
        self.expose = sorted(int(p.split("/")[0]) for a in rt.all("EXPOSE") for p in a.split())
        vols = []
        for a in rt.all("VOLUME"):
            vols += json.loads(a) if a.startswith("[") else a.split()
        self.volumes = vols
        self.workdir = rt.all("WORKDIR")[-1] if rt.all("WORKDIR") else "/"
        self.stopsignal = rt.all("STOPSIGNAL")[-1] if rt.all("STOPSIGNAL") else "SIGTERM"
        hc = rt.one("HEALTHCHECK")
        opts = {}
        while hc.startswith("--"):
            opt, _, hc = hc.partition(" ")
            k, _, v = opt[2:].partition("=")
            opts[k] = v
            hc = hc.strip()
        if not hc.startswith("CMD "):
            raise AssertionError("HEALTHCHECK must be CMD [...]: " + hc)
        self.healthcheck = exec_form(hc[4:].strip(), "HEALTHCHECK CMD")
        self.healthcheck_opts = opts
        # COPY --from=<stage> SRC DST: where the installed tree comes from.
        self.copies = []
        for a in rt.all("COPY"):
            words = a.split()
            frm = [w[len("--from="):] for w in words if w.startswith("--from=")]
            rest = [w for w in words if not w.startswith("--")]
            self.copies.append((frm[0] if frm else None, rest[:-1], rest[-1]))

    def stage(self, name):
        for s in self.stages:
            if s.name == name:
                return s
        raise AssertionError("no stage named " + name)


def port_of(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def seconds(text):
    """'60s', '1m', '1m30s', '90' -> seconds (compose durations)."""
    if re.fullmatch(r"\d+(\.\d+)?", str(text)):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", text):
        if m.start() != pos:
            raise AssertionError("duration not understood: %s" % text)
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise AssertionError("duration not understood: %s" % text)
    return total


def byte_size(text):
    """compose mem_limit: '2g', '512m', '1073741824', '2gb' -> bytes (powers of 1024)."""
    m = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", str(text).strip().lower())
    if not m:
        raise AssertionError("size not understood: %s" % text)
    return int(m.group(1)) * 1024 ** "bkmg".index(m.group(2) or "b")


def dry_run(*args):
    r = subprocess.run(["sh", SETUP, *args], env=dict(os.environ, SV_DRY_RUN="1"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("SV_DRY_RUN=1 setup.sh %s: exit %d\n%s" % (" ".join(args), r.returncode, r.stderr))
    return [ln[2:] for ln in r.stdout.splitlines() if ln.startswith("+ ")]


def dpkg_owners(paths):
    """{library path: Debian package owning it}; one dpkg -S for all. dpkg
    records one of the merged-/usr and resolved names, so all are asked."""
    cands = {}
    for path in paths:
        c = [path]
        real = os.path.realpath(path)
        for q in (path, real):
            c.append(q)
            if q.startswith(("/lib/", "/lib64/")):
                c.append("/usr" + q)
        cands[path] = list(dict.fromkeys(c))
    allc = sorted({c for cs in cands.values() for c in cs})
    r = subprocess.run(["dpkg", "-S", *allc], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    owner = {}
    for line in r.stdout.splitlines():
        pkgs, sep, path = line.rpartition(": ")
        if sep and not line.startswith("diversion "):
            owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return {p: next((owner[c] for c in cs if c in owner), None) for p, cs in cands.items()}


def depends_closure(pkgs):
    """Installed packages pkgs pull in through Depends/Pre-Depends (what apt
    installs with them in the image: the same Debian release as here)."""
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", p],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if r.returncode != 0:
            continue  # not installed here: its dependencies cannot be read (reported by the caller)
        for alt in r.stdout.split(","):
            for dep in alt.split("|"):
                name = dep.strip().split(" ")[0].split(":")[0]
                if name:
                    todo.append(name)
    return seen


def build_option(name):
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.strip().split("=", 1)[1]
    except OSError:
        pass
    return None


def sanitized_build():
    return build_option("SV_ASAN") == "ON" or build_option("SV_TSAN") == "ON"


def free_port():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def parse_metrics(text):
    """{(name, ((label, value), ...)): float}"""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(3) or "")))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def cgroup_memory_limit():
    """The memory limit slimvecd documents reading when SLIMVEC_MEMORY_LIMIT
    is unset: cgroup v2 memory.max, else v1 memory.limit_in_bytes; "max" or
    v1's near-2^63 "unlimited" mean none (0)."""
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(f) as fh:
                v = fh.read().strip()
        except OSError:
            continue
        if v.startswith("max"):
            return 0
        n = int(v)
        return 0 if n >= 1 << 60 else n
    return 0


def owned_by(uid, dirs):
    out = set()
    for d in dirs:
        try:
            for e in os.scandir(d):
                try:
                    if e.stat(follow_symlinks=False).st_uid == uid:
                        out.add(e.path)
                except OSError:
                    pass
        except OSError:
            pass
    return out


class DockerfileTest(unittest.TestCase):
    """(a) one build for CI and the image; (b) the runtime libraries."""

    @classmethod
    def setUpClass(cls):
        cls.image = Image(DOCKERFILE)

    def test_stages(self):
        img = self.image
        self.assertEqual(len(img.stages), 2, "a build stage and a runtime stage")
        self.assertEqual(img.stages[0].base, "debian:12")
        self.assertEqual(img.stages[1].base, "debian:12-slim")

    def test_build_stage_is_setup_package(self):
        build = self.image.stages[0]
        self.assertEqual(build.all("RUN"), ["./deploy/setup.sh package /opt/slimvec"],
                         "the build stage must run exactly deploy/setup.sh package (CI's build)")
        # ./deploy/setup.sh is found in the WORKDIR the sources are copied to.
        self.assertEqual(build.all("COPY"), [". " + build.one("WORKDIR")])
        for st in self.image.stages:
            for kw, args in st.instrs:
                if kw == "RUN":
                    self.assertIsNone(COMPILE_WORDS.search(args),
                                      "a RUN that compiles on its own: " + args)
        # The runtime stage takes the installed tree, and the entry point is in it.
        self.assertIn((build.name, ["/opt/slimvec"], "/opt/slimvec"), self.image.copies)

    def test_package_builds_what_ci_tests(self):
        pkg = [c for c in dry_run("package", "/x") if c.startswith("cmake ")]
        test = [c for c in dry_run("test") if c.startswith("cmake ")]
        self.assertEqual(len(pkg), 3, pkg)
        self.assertTrue(pkg[0].startswith("cmake -S ") and " -B " in pkg[0], pkg)
        self.assertTrue(pkg[1].startswith("cmake --build "), pkg)
        self.assertEqual(pkg[:2], test[:2], "package must configure and build exactly as test's first build")
        build_dir = pkg[0].split(" -B ")[1].split()[0]
        self.assertEqual(pkg[2], "cmake --install %s --prefix /x" % build_dir)

    def test_runtime_packages_match_setup(self):
        listed = subprocess.run(["sh", SETUP, "runtime-packages"], stdout=subprocess.PIPE,
                                text=True, check=True).stdout.split()
        runs = self.image.runtime.all("RUN")
        apt = [r for r in runs if "apt-get install" in r]
        self.assertEqual(len(apt), 1, "one apt-get install in the runtime stage")
        self.assertIn("--no-install-recommends", apt[0])
        self.assertIn("rm -rf /var/lib/apt/lists/*", apt[0])
        words = apt[0].split("apt-get install", 1)[1].split("&&")[0].split()
        installed = [w for w in words if not w.startswith("-")]
        self.assertEqual(sorted(installed), sorted(listed),
                         "the runtime stage must install exactly deploy/setup.sh runtime-packages")

    def test_runtime_libraries(self):
        listed = subprocess.run(["sh", SETUP, "runtime-packages"], stdout=subprocess.PIPE,
                                text=True, check=True).stdout.split()
        have = depends_closure(set(listed) | SLIM_BASE)
        for p in listed:
            r = subprocess.run(["dpkg-query", "-W", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.assertEqual(r.returncode, 0, "runtime package %s is not installed here to check" % p)
        # What gcc links into a sanitizer build (not into the image's).
        sanitizer = re.compile(r"/lib(asan|ubsan|tsan|lsan|atomic)\.so")
        for binary in (SLIMVECD, os.path.join(os.path.dirname(SLIMVECD), "slimvec")):
            out = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True, check=True).stdout
            self.assertNotIn("not found", out)
            paths = re.findall(r"=>\s+(/\S+)", out) + re.findall(r"^\s*(/\S+)\s+\(", out, re.M)
            self.assertTrue(paths, out)
            owners = dpkg_owners(paths)
            exempt = set()
            if sanitized_build():
                # A sanitizer test build (ctest under ASan): the sanitizer
                # runtimes (libasan8, libubsan1, libtsan2, and libatomic1,
                # which the ASan link adds) and their dependencies are not
                # in the image, which is built without.
                exempt = depends_closure({owners[p] for p in paths if sanitizer.search(p)})
                paths = [p for p in paths if owners[p] not in exempt or owners[p] in have]
            for lib in paths:
                self.assertIsNotNone(owners[lib], "%s: %s belongs to no Debian package" % (binary, lib))
                self.assertIn(owners[lib], have, "%s needs %s (%s), which the runtime stage does not install"
                              % (os.path.basename(binary), lib, owners[lib]))

    def test_build_context(self):
        # .dockerignore, applied as docker applies it (docker-py, which
        # docker-compose builds with): every source file goes in, no build
        # tree, data or npm install does.
        try:
            from docker.utils.build import exclude_paths
        except ImportError:
            self.fail("python3-docker (a docker-compose dependency) not installed: run deploy/setup.sh install")
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            patterns = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        context = set(exclude_paths(ROOT, patterns, dockerfile="deploy/Dockerfile"))
        for f in context:
            self.assertIsNone(re.match(r"(\.git/|build[^/]*/|bench-data/|slimvec-data/)|(.*/)?node_modules/", f),
                              "%s is in the image's build context" % f)
        r = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            self.skipTest("not a git checkout: tracked sources not compared")
        tracked = {f for f in r.stdout.decode().split("\0") if f and os.path.isfile(os.path.join(ROOT, f))}
        self.assertEqual(sorted(tracked - context), [], "tracked sources left out of the build context")

    def test_image_settings(self):
        img = self.image
        env = img.env
        self.assertEqual((img.uid, img.gid), (10001, 10001))
        self.assertEqual(img.argv, ["/opt/slimvec/bin/slimvecd"])
        self.assertEqual(img.healthcheck[:2], ["/opt/slimvec/bin/slimvec", "health"])
        self.assertEqual(img.stopsignal, "SIGTERM")
        self.assertEqual(img.workdir, "/")
        self.assertEqual(img.volumes, [env["SLIMVEC_DATA_DIR"]])
        self.assertEqual(img.expose, sorted([port_of(env["SLIMVEC_LISTEN"])[1],
                                             port_of(env["SLIMVEC_METRICS_LISTEN"])[1]]))
        self.assertEqual(port_of(env["SLIMVEC_LISTEN"])[0], "0.0.0.0")
        self.assertEqual(port_of(env["SLIMVEC_METRICS_LISTEN"])[0], "0.0.0.0")
        self.assertGreater(float(env["SLIMVEC_GRACE"]), 0)
        # The data directory exists in the image, owned by the user.
        runs = " ".join(img.runtime.all("RUN"))
        self.assertIn("mkdir -p %s" % env["SLIMVEC_DATA_DIR"], runs)
        self.assertIn("chown %d:%d %s" % (img.uid, img.gid, env["SLIMVEC_DATA_DIR"]), runs)
        self.assertRegex(runs, r"useradd .*--uid %d" % img.uid)


class ContainerRunTest(unittest.TestCase):
    """(c) the installed server, started as the image starts it."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("needs root to run the server as uid 10001 (the README's test command runs as root)")
        if not os.path.isfile(os.path.join(BUILD_DIR, "CMakeCache.txt")):
            raise AssertionError("%s is not in a CMake build directory" % SLIMVECD)
        cls.image = Image(DOCKERFILE)
        img = cls.image
        # Where the runtime stage puts the build stage's installed tree (/opt/slimvec).
        from_build = [dst for frm, _, dst in img.copies if frm]
        if len(from_build) != 1:
            raise AssertionError("expected one COPY --from=build in the runtime stage")
        prefix = from_build[0]
        cls.base = tempfile.mkdtemp(prefix="slimvec-image-")
        os.chmod(cls.base, 0o755)
        # The build stage's cmake --install, into a stand-in for /opt/slimvec.
        cls.prefix = os.path.join(cls.base, "opt-slimvec")
        subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", cls.prefix],
                       stdout=subprocess.DEVNULL, check=True)
        subprocess.run(["chmod", "-R", "go+rX,go-w", cls.prefix], check=True)
        cls.installed = sorted(os.path.relpath(os.path.join(d, f), cls.prefix)
                               for d, _, fs in os.walk(cls.prefix) for f in fs)

        def host_path(p):
            assert p == prefix or p.startswith(prefix + "/"), "%s is outside %s" % (p, prefix)
            return cls.prefix + p[len(prefix):]
        cls.host_path = staticmethod(host_path)
        # The volume: created and chowned as the Dockerfile does.
        cls.volume = os.path.join(cls.base, "volume")
        os.mkdir(cls.volume, 0o750)
        os.chown(cls.volume, img.uid, img.gid)
        # The working directory: read-only (the root filesystem is in k8s).
        cls.cwd = os.path.join(cls.base, "workdir")
        os.mkdir(cls.cwd)
        os.chmod(cls.cwd, 0o555)
        cls.tmp_before = owned_by(img.uid, ["/tmp", "/var/tmp", "/dev/shm"])
        cls.port, cls.metrics_port = free_port(), free_port()
        cls.proc = None

    @classmethod
    def tearDownClass(cls):
        if cls.proc and cls.proc.poll() is None:
            cls.proc.kill()
            cls.proc.wait()
        shutil.rmtree(cls.base, ignore_errors=True)

    @classmethod
    def environment(cls, extra=None):
        """The image's ENV (plus a compose file's environment), with only the
        ports and the data directory changed, and the image's PATH."""
        env = dict(cls.image.env)
        env.update(extra or {})
        host, _ = port_of(env["SLIMVEC_LISTEN"])
        env["SLIMVEC_LISTEN"] = "%s:%d" % (host, cls.port)
        host, _ = port_of(env["SLIMVEC_METRICS_LISTEN"])
        env["SLIMVEC_METRICS_LISTEN"] = "%s:%d" % (host, cls.metrics_port)
        env["SLIMVEC_DATA_DIR"] = cls.volume
        env["PATH"] = IMAGE_PATH
        return env

    @classmethod
    def run_as_image(cls, argv, extra_env=None, **kw):
        argv = [cls.host_path(argv[0])] + argv[1:]
        return subprocess.Popen(argv, env=cls.environment(extra_env), cwd=cls.cwd, user=cls.image.uid,
                                group=cls.image.gid, extra_groups=[], **kw)

    def start(self, extra_env=None, token=None):
        self.env = self.environment(extra_env)
        self.__class__.proc = self.run_as_image(self.image.argv, extra_env, stderr=subprocess.PIPE,
                                                text=True)
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
        try:
            grpc.channel_ready_future(self.channel).result(timeout=20)
            if token:
                self.channel = grpc.intercept_channel(self.channel, token_interceptor(token))
        except grpc.FutureTimeoutError:
            self.proc.kill()
            err = self.proc.communicate()[1]
            self.proc.stderr.close()
            self.fail("slimvecd did not start: %s" % err)
        self.stub = pbg.SlimVecStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        for svc in ("", "slimvec.v1.SlimVec"):
            st = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10).status
            self.assertEqual(st, health_pb2.HealthCheckResponse.SERVING)

    def stop(self):
        self.channel.close()
        grace = float(self.env["SLIMVEC_GRACE"])
        self.proc.send_signal(getattr(signal, self.image.stopsignal))
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(timeout=grace + 10)  # drain + shutdown snapshots
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.fail("slimvecd did not exit within the grace after SIGTERM")
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        self.assertEqual(rc, 0, "slimvecd exited %d after SIGTERM: %s" % (rc, err))
        self.assertLess(time.monotonic() - t0, grace, err)
        return err

    def healthcheck(self):
        """The image's HEALTHCHECK command, pointed at the test's port."""
        p = self.run_as_image(self.image.healthcheck + ["--addr", "127.0.0.1:%d" % self.port],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=20)
        return p.returncode, err

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10) as r:
            return parse_metrics(r.read().decode())

    def check_memory_cap(self, samples):
        """slimvec_memory_cap_bytes is SLIMVEC_MEMORY_CAP of the limit (the
        metric may not exist; if it does, its value must be right)."""
        if ("slimvec_memory_cap_bytes", ()) not in samples:
            print("note: slimvecd exports no slimvec_memory_cap_bytes; its value is not checked")
            return
        cap_text = self.env.get("SLIMVEC_MEMORY_CAP", "0")
        limit = int(self.env.get("SLIMVEC_MEMORY_LIMIT", "0")) or cgroup_memory_limit()
        if ("slimvec_memory_limit_bytes", ()) in samples:
            self.assertEqual(samples[("slimvec_memory_limit_bytes", ())], limit)
        want = int(limit * float(cap_text[:-1]) / 100.0) if cap_text.endswith("%") else int(cap_text)
        self.assertAlmostEqual(samples[("slimvec_memory_cap_bytes", ())], want, delta=1,
                               msg="SLIMVEC_MEMORY_CAP=%s with a limit of %d" % (cap_text, limit))
        return want

    def test_container_lifecycle(self):
        img, dim, n = self.image, 16, 400
        self.assertEqual(self.installed, ["bin/slimvec", "bin/slimvec.protoset", "bin/slimvecd"],
                         "cmake --install must give the image exactly these files")
        # The HEALTHCHECK has no --addr: slimvec's default must be the image's port.
        self.assertNotIn("--addr", img.healthcheck)
        usage = subprocess.run([self.host_path(img.healthcheck[0]), "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True).stdout
        m = re.search(r"--addr HOST:PORT \(default ([^)]+)\)", usage)
        self.assertIsNotNone(m, usage)
        self.assertEqual(port_of(m.group(1))[1], port_of(img.env["SLIMVEC_LISTEN"])[1])

        self.start()
        rc, err = self.healthcheck()
        self.assertEqual(rc, 0, "HEALTHCHECK failed on a serving server: " + err)
        spec = pb.CollectionSpec(name="deploy", dimension=dim, metric=pb.METRIC_L2, storage=pb.STORAGE_INT8)
        self.stub.CreateCollection(pb.CreateCollectionRequest(spec=spec), timeout=10)
        rnd = random.Random(6)
        data = [rnd.gauss(0.0, 1.0) for _ in range(n * dim)]

        def batches():
            for seq in range(2):
                half = n // 2 * dim
                yield pb.IngestRequest(collection="deploy", sequence=seq,
                                       vectors=data[seq * half:(seq + 1) * half])
        acks = list(self.stub.Ingest(batches(), timeout=30))
        self.assertEqual([a.applied for a in acks], [n // 2, n // 2])
        self.assertFalse(any(a.HasField("error") for a in acks))

        def search_finds_itself():
            r = self.stub.Search(pb.SearchRequest(collection="deploy", queries=data[7 * dim:8 * dim], k=3),
                                 timeout=10)
            self.assertEqual(r.results[0].hits[0].id, "7")
        search_finds_itself()

        samples = self.metrics()
        self.assertEqual(samples.get(("slimvec_collection_vectors", (("collection", "deploy"),))), n)
        self.check_memory_cap(samples)
        # Open files: only the volume (and /dev) besides sockets, pipes and
        # epoll; 0-2 are the container runtime's (here, inherited from ctest).
        fd_dir = "/proc/%d/fd" % self.proc.pid
        for fd in os.listdir(fd_dir):
            if int(fd) <= 2:
                continue
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("/"):
                self.assertTrue(target.startswith(self.volume + "/") or target == self.volume
                                or target.startswith("/dev/"),
                                "slimvecd holds %s open outside its volume" % target)
        self.stop()

        rc, _ = self.healthcheck()
        self.assertNotEqual(rc, 0, "HEALTHCHECK passed with no server")
        # Nothing written outside the volume.
        self.assertEqual(os.listdir(self.cwd), [], "slimvecd wrote into its working directory")
        self.assertEqual(owned_by(img.uid, ["/tmp", "/var/tmp", "/dev/shm"]), self.tmp_before,
                         "slimvecd created files outside its volume")
        self.assertEqual(sorted(os.path.relpath(os.path.join(d, f), self.prefix)
                                for d, _, fs in os.walk(self.prefix) for f in fs), self.installed)
        written = [os.path.join(d, f) for d, _, fs in os.walk(self.volume) for f in fs]
        self.assertTrue(written, "nothing persisted in the volume")
        for p in written:
            self.assertEqual(os.stat(p).st_uid, img.uid, p)

        # A new container on the same volume finds the collection: started
        # the way docker-compose.yml starts it (its environment on top of
        # the image's) when the compose file can be read.
        compose_env = compose_environment()
        token = None
        if compose_env and "SLIMVEC_TOKENS_FILE" in compose_env:
            # The tokens file, as the container sees it, with a line added
            # for this test's token: the shipped file has none, so without
            # one every call would be refused.
            src = compose_host_path(compose_env["SLIMVEC_TOKENS_FILE"])
            token = "deploy-test-" + "".join(random.choice("abcdefghij0123456789") for _ in range(32))
            import hashlib
            tokens = os.path.join(self.base, "tokens")
            with open(src) as f, open(tokens, "w") as out:
                out.write(f.read() + "sha256:%s admin\n" % hashlib.sha256(token.encode()).hexdigest())
            os.chmod(tokens, 0o644)
            compose_env["SLIMVEC_TOKENS_FILE"] = tokens
        self.start(compose_env, token=token)
        if token:
            # Without the token: refused.
            bare = grpc.insecure_channel("127.0.0.1:%d" % self.port)
            with self.assertRaises(grpc.RpcError) as cm:
                pbg.SlimVecStub(bare).ListCollections(pb.ListCollectionsRequest(), timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            bare.close()
        if compose_env:
            cap = self.check_memory_cap(self.metrics())
            self.assertTrue(cap is None or cap > 0, "compose sets a memory limit: the cap must follow it")
        info = self.stub.DescribeCollection(pb.DescribeCollectionRequest(name="deploy"), timeout=10).info
        self.assertEqual(info.vectors, n)
        search_finds_itself()
        self.stop()


def load_yaml(path):
    """The parsed YAML file, or None without python3-yaml."""
    try:
        import yaml
    except ImportError:
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def compose_environment():
    """docker-compose.yml's environment for slimvecd (None without python3-yaml)."""
    c = load_yaml(COMPOSE)
    if c is None:
        print("note: python3-yaml not installed: the restart uses the image's environment only")
        return None
    env = c["services"]["slimvecd"].get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def compose_host_path(path):
    """The host file behind a path in slimvecd's container, through the
    compose file's bind mounts of repository directories."""
    c = load_yaml(COMPOSE) or {}
    for v in c.get("services", {}).get("slimvecd", {}).get("volumes", []):
        parts = str(v).split(":")
        if parts[0].startswith("./") and (path + "/").startswith(parts[1].rstrip("/") + "/"):
            return os.path.join(ROOT, parts[0], os.path.relpath(path, parts[1]))
    raise AssertionError("%s is not under a bind mount of docker-compose.yml" % path)


class ComposeTest(unittest.TestCase):
    """(d) docker-compose.yml and the Prometheus config: valid, linted, and
    consistent with the Dockerfile."""

    @classmethod
    def setUpClass(cls):
        cls.image = Image(DOCKERFILE)

    def tool(self, name):
        path = shutil.which(name)
        if not path:
            self.fail("%s not installed: run deploy/setup.sh install" % name)
        return path

    def run_tool(self, argv):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                           timeout=60)
        self.assertEqual(r.returncode, 0, "%s:\n%s" % (" ".join(argv), r.stdout))

    def test_compose_config(self):
        self.run_tool([self.tool("docker-compose"), "-f", COMPOSE, "config", "-q"])

    def test_promtool(self):
        self.run_tool([self.tool("promtool"), "check", "config",
                       os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")])

    def test_yamllint(self):
        # Every YAML file of the project: compose, Prometheus, Kubernetes,
        # and the lint config itself.
        files = [COMPOSE, os.path.join(ROOT, ".yamllint")]
        for pattern in ("*.yml", "*.yaml"):
            files += glob.glob(os.path.join(ROOT, "deploy", "**", pattern), recursive=True)
        files = sorted(set(files))
        self.assertTrue(any("k8s" in f for f in files), files)
        self.run_tool([self.tool("yamllint"), "-s", "-c", os.path.join(ROOT, ".yamllint"), *files])

    def load(self, path):
        got = load_yaml(path)
        if got is None:
            self.fail("python3-yaml not installed: run deploy/setup.sh install")
        return got

    def test_compose_matches_image(self):
        img, env = self.image, self.image.env
        c = self.load(COMPOSE)
        svc = c["services"]["slimvecd"]
        self.assertEqual(svc["build"]["context"], ".")
        self.assertEqual(svc["build"]["dockerfile"], "deploy/Dockerfile")
        self.assertEqual(svc["image"], "slimvec:latest")
        self.assertEqual(str(svc["user"]), "%d:%d" % (img.uid, img.gid))
        self.assertIs(svc.get("read_only"), True)
        # Published ports: the container side is what the image exposes.
        self.assertEqual(sorted(int(str(p).split(":")[-1].split("/")[0]) for p in svc["ports"]), img.expose)
        cenv = compose_environment()
        for k in ("SLIMVEC_LISTEN", "SLIMVEC_METRICS_LISTEN", "SLIMVEC_DATA_DIR"):
            self.assertEqual(str(cenv.get(k, env[k])), env[k], "compose overrides %s" % k)
        # The named volume at the image's data directory.
        mounts = [str(v).split(":") for v in svc["volumes"]]
        self.assertIn(["slimvec-data", env["SLIMVEC_DATA_DIR"]], [m[:2] for m in mounts])
        self.assertIn("slimvec-data", c["volumes"])
        # Stopping: the same signal, and more time than the drain grace.
        self.assertEqual(svc.get("stop_signal", img.stopsignal), img.stopsignal)
        grace = float(cenv.get("SLIMVEC_GRACE", env["SLIMVEC_GRACE"]))
        self.assertGreater(seconds(str(svc["stop_grace_period"])), grace + 10,
                           "stop_grace_period must cover SLIMVEC_GRACE plus the shutdown snapshots")
        # Memory: the cap is a percentage of the same limit docker enforces.
        self.assertEqual(int(cenv["SLIMVEC_MEMORY_LIMIT"]), byte_size(svc["mem_limit"]))
        self.assertRegex(str(cenv.get("SLIMVEC_MEMORY_CAP", env["SLIMVEC_MEMORY_CAP"])), r"^\d+(\.\d+)?%$")
        # The same health check as the image.
        self.assertEqual(svc["healthcheck"]["test"], ["CMD"] + img.healthcheck)

        prom = c["services"]["prometheus"]
        self.assertRegex(prom["image"], r"^prom/prometheus:v\d+\.\d+\.\d+$", "pin a Prometheus version")
        self.assertIn("./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro", prom["volumes"])
        named = [v.split(":")[0] for v in prom["volumes"] if not v.startswith(".")]
        self.assertTrue(named and all(n in c["volumes"] for n in named), prom["volumes"])
        self.assertIn("9090", [str(p).split(":")[-1] for p in prom["ports"]])

    def test_prometheus_scrapes_slimvecd(self):
        p = self.load(os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml"))
        want = "slimvecd:%d" % port_of(self.image.env["SLIMVEC_METRICS_LISTEN"])[1]
        jobs = [j for j in p["scrape_configs"]
                if any(want in sc.get("targets", []) for sc in j.get("static_configs", []))]
        self.assertEqual(len(jobs), 1, "one job scraping %s" % want)
        interval = jobs[0].get("scrape_interval", p.get("global", {}).get("scrape_interval", "1m"))
        self.assertEqual(seconds(interval), 15)
        self.assertEqual(jobs[0].get("metrics_path", "/metrics"), "/metrics")


# --- the compose file's cluster profile --------------------------------------

NATS_CONF = os.path.join(ROOT, "deploy", "cluster", "nats-server.conf")
MAIN_C = os.path.join(ROOT, "service", "main.c")
# sync_interval needs nats-server 2.10.23 or later (README, Cluster mode).
NATS_MIN = (2, 10, 23)


def slimvecd_options():
    """The SLIMVEC_* variables slimvecd reads (its flag table in service/main.c)."""
    with open(MAIN_C) as f:
        return set(re.findall(r'\{\s*"--[a-z-]+",\s*"(SLIMVEC_[A-Z0-9_]+)"', f.read()))


def nats_settings(text):
    """What the cluster profile relies on in a nats-server configuration."""
    text = "\n".join(line.split("#")[0] for line in text.splitlines())
    js = re.search(r"^jetstream\s*\{(.*?)^\}", text, re.M | re.S)
    cl = re.search(r"^cluster\s*\{(.*?)^\}", text, re.M | re.S)
    name = re.search(r"^server_name:\s*\$(\w+)\s*$", text, re.M)
    listen = re.search(r"^listen:\s*\S*:(\d+)\s*$", text, re.M)
    store = js and re.search(r"^\s*store_dir:\s*(\S+)\s*$", js.group(1), re.M)
    cl_listen = cl and re.search(r"^\s*listen:\s*\S*:(\d+)\s*$", cl.group(1), re.M)
    return {
        "sync_always": bool(js and re.search(r"^\s*sync_interval:\s*always\s*$", js.group(1), re.M)),
        "store_dir": store.group(1) if store else None,
        "server_name_var": name.group(1) if name else None,
        "client_port": int(listen.group(1)) if listen else None,
        "cluster_port": int(cl_listen.group(1)) if cl_listen else None,
        "routes": [(h, int(p)) for h, p in re.findall(r"nats-route://([^:\s,\]]+):(\d+)", cl.group(1))] if cl else [],
    }


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def networks_of(svc):
    """{network: [aliases]}; a service with none is on "default"."""
    nets = svc.get("networks")
    if not nets:
        return {"default": []}
    if isinstance(nets, list):
        return {n: [] for n in nets}
    return {n: list((v or {}).get("aliases") or []) for n, v in nets.items()}


def names_from(c, target, caller):
    """The names by which service caller reaches service target: its name
    and hostname on any network they share, its aliases on those networks."""
    t, f = networks_of(c["services"][target]), networks_of(c["services"][caller])
    shared = set(t) & set(f)
    if not shared:
        return set()
    names = {target}
    if c["services"][target].get("hostname"):
        names.add(c["services"][target]["hostname"])
    for n in shared:
        names.update(t[n])
    return names


def published(svc):
    """[(host ip, host port, container port)] of a service's ports."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), str(p.get("published", "")), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            if len(parts) == 3:
                out.append((parts[0], parts[1], int(parts[2])))
            elif len(parts) == 2:
                out.append(("", parts[0], int(parts[1])))
            else:
                out.append(("", "", int(parts[0])))
    return out


def mounts(svc):
    """[(source, target, read-only)] of a service's volumes (short syntax)."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), v["target"], bool(v.get("read_only"))))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def named_volume(src):
    return bool(src) and not src.startswith((".", "/", "~"))


def depends(svc):
    d = svc.get("depends_on") or {}
    return {n: "service_started" for n in d} if isinstance(d, list) else \
        {n: (v or {}).get("condition", "service_started") for n, v in d.items()}


def cluster_problems(c, nats_conf, img, options):
    """What is wrong with the compose file's cluster profile (c: the file as
    docker-compose renders it), as messages; [] when nothing is. Each message
    starts with the check's name, so the self-test can tell them apart."""
    out = []
    svcs = c.get("services", {})
    prof = {n: s for n, s in svcs.items() if "cluster" in (s.get("profiles") or [])}
    others = [n for n, s in svcs.items() if n not in prof and s.get("profiles")]
    if others:
        out.append("profiles: only 'cluster' is used, not by %s" % others)
    default = svcs.get("slimvecd", {})
    nats = sorted(n for n, s in prof.items() if re.match(r"(docker\.io/)?(library/)?nats:", str(s.get("image"))))
    etcd = sorted(n for n, s in prof.items() if re.search(r"(^|/)etcd:", str(s.get("image"))))
    pods = sorted(n for n, s in prof.items() if s.get("image") == default.get("image"))
    stray = sorted(set(prof) - set(nats) - set(etcd) - set(pods))
    if len(nats) != 3 or len(etcd) != 3 or len(pods) < 2 or stray:
        return ["services: 3 NATS, 3 etcd and the slimvecd pods, got nats %s etcd %s slimvecd %s other %s"
                % (nats, etcd, pods, stray)]
    conf = nats_settings(nats_conf)
    if not conf["sync_always"]:
        out.append("nats conf: jetstream { sync_interval: always } (acknowledged = on the quorum's disks)")

    # --- NATS: the production configuration as it is, a server each
    routes = list(conf["routes"])
    for n in nats:
        s = svcs[n]
        m = re.match(r"(?:docker\.io/)?(?:library/)?nats:v?(\d+)\.(\d+)\.(\d+)", str(s["image"]))
        if not m or tuple(int(x) for x in m.groups()) < NATS_MIN:
            out.append("nats image: %s is not nats %s or later (sync_interval)" % (n, ".".join(map(str, NATS_MIN))))
        cmd = s.get("command") or []
        cmd = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        path = cmd[cmd.index("--config") + 1] if "--config" in cmd[:-1] else None
        conf_mounts = [src for src, dst, ro in mounts(s) if dst == path and ro]
        if not conf_mounts or os.path.realpath(os.path.join(ROOT, conf_mounts[0])) != os.path.realpath(NATS_CONF):
            out.append("nats config: %s reads deploy/cluster/nats-server.conf, read-only, at its --config %s"
                       % (n, path))
        store = conf["store_dir"] or ""
        if not any(named_volume(src) and (store + "/").startswith(dst.rstrip("/") + "/") for src, dst, _ in mounts(s)):
            out.append("nats store: %s keeps store_dir %s on a named volume" % (n, store))
        if not env_of(s).get(conf["server_name_var"] or "-"):
            out.append("nats server_name: %s sets %s" % (n, conf["server_name_var"]))
        hit = [r for r in routes if r[0] in names_from(c, n, nats[0])]
        if len(hit) != 1 or hit[0][1] != conf["cluster_port"]:
            out.append("nats routes: one route names %s on the cluster port, got %s" % (n, hit))
        for r in hit:
            routes.remove(r)
    if routes:
        out.append("nats routes: %s name no NATS service" % routes)
    names = [env_of(svcs[n]).get(conf["server_name_var"] or "-") for n in nats]
    if len(set(names)) != len(names):
        out.append("nats server_name: distinct, got %s" % names)

    # --- etcd: static bootstrap from the members' names
    members = {env_of(svcs[n]).get("ETCD_NAME"): n for n in etcd}
    if len(members) != 3 or None in members:
        out.append("etcd names: each member has its own ETCD_NAME, got %s" % members)
    for n in etcd:
        e = env_of(svcs[n])
        initial = dict(x.split("=", 1) for x in e.get("ETCD_INITIAL_CLUSTER", "").split(",") if "=" in x)
        if set(initial) != set(members):
            out.append("etcd initial cluster: %s names %s, the members are %s" % (n, sorted(initial), sorted(members)))
        peer = re.match(r"http://[^:/]+:(\d+)$", e.get("ETCD_LISTEN_PEER_URLS", ""))
        for name, url in initial.items():
            m = re.match(r"https?://([^:/]+):(\d+)$", url)
            if name not in members or not m or m.group(1) not in names_from(c, members[name], n) or \
                    not peer or m.group(2) != peer.group(1):
                out.append("etcd initial cluster: %s reaches %s at %s" % (n, name, url))
        if e.get("ETCD_INITIAL_ADVERTISE_PEER_URLS") != initial.get(e.get("ETCD_NAME")):
            out.append("etcd advertise: %s advertises %s, the initial cluster says %s"
                       % (n, e.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"), initial.get(e.get("ETCD_NAME"))))
        if e.get("ETCD_INITIAL_CLUSTER_STATE") != "new":
            out.append("etcd initial cluster: %s bootstraps (ETCD_INITIAL_CLUSTER_STATE new)" % n)
        data = e.get("ETCD_DATA_DIR", "")
        if not any(named_volume(src) and (data + "/").startswith(dst.rstrip("/") + "/")
                   for src, dst, _ in mounts(svcs[n])):
            out.append("etcd data: %s keeps %s on a named volume" % (n, data))
    etcd_client = {n: re.match(r"http://[^:/]+:(\d+)$", env_of(svcs[n]).get("ETCD_LISTEN_CLIENT_URLS", "")) for n in etcd}

    # --- NATS and etcd stay off the host; slimvecd waits for them
    for n in nats + etcd:
        if svcs[n].get("ports"):
            out.append("published: %s publishes nothing (NATS and etcd take no credentials here)" % n)
        if not svcs[n].get("healthcheck"):
            out.append("healthcheck: %s has one (slimvecd waits for it)" % n)

    # --- slimvecd: the single node's settings, the cluster's environment
    denv = env_of(default)
    listen = port_of(denv.get("SLIMVEC_LISTEN", img.env["SLIMVEC_LISTEN"]))[1]
    shards, pairs, pod_names, host_ports, data_volumes = set(), {}, [], {}, {}
    for n, s in svcs.items():
        for ip, hp, _ in published(s):
            host_ports.setdefault((ip, hp), []).append(n)
    for n in pods:
        s, e = svcs[n], env_of(svcs[n])
        unknown = sorted(k for k in e if k.startswith("SLIMVEC_") and k not in options)
        if unknown:
            out.append("options: %s sets %s, which slimvecd does not read" % (n, unknown))
        for k in ("user", "read_only", "mem_limit", "stop_signal", "stop_grace_period", "healthcheck"):
            if s.get(k) != default.get(k):
                out.append("as slimvecd: %s %s %r, the single node has %r" % (n, k, s.get(k), default.get(k)))
        for k in ("SLIMVEC_MEMORY_LIMIT", "SLIMVEC_MEMORY_CAP", "SLIMVEC_TOKENS_FILE", "SLIMVEC_METRICS_AUTH"):
            if e.get(k) != denv.get(k):
                out.append("as slimvecd: %s %s %r, the single node has %r" % (n, k, e.get(k), denv.get(k)))
        if "SLIMVEC_PEER_TOKEN" not in e and "SLIMVEC_TOKENS_FILE" in e:
            out.append("peer token: %s passes SLIMVEC_PEER_TOKEN on (a joining replica fetches a peer's snapshot)" % n)
        for ip, hp, cp in published(s):
            if ip != "127.0.0.1" or cp not in img.expose:
                out.append("published: %s on 127.0.0.1 only, to an exposed port, not %s:%s:%s" % (n, ip, hp, cp))
        data = [src for src, dst, ro in mounts(s)
                if dst == denv.get("SLIMVEC_DATA_DIR", img.env["SLIMVEC_DATA_DIR"]) and not ro]
        if len(data) != 1 or not named_volume(data[0]) or data[0] not in (c.get("volumes") or {}):
            out.append("data volume: %s keeps its data on a named volume, got %s" % (n, data))
        for d in data:
            data_volumes.setdefault(d, []).append(n)
        wait = depends(s)
        missing = [x for x in nats + etcd if wait.get(x) != "service_healthy"]
        if missing:
            out.append("depends_on: %s waits for %s to be healthy" % (n, missing))
        # Where the others reach NATS, etcd and this pod.
        got = [re.match(r"(?:nats|tls)://([^:/]+):(\d+)$", x.strip())
               for x in e.get("SLIMVEC_CLUSTER_NATS", "").split(",") if x.strip()]
        hit = sorted(t for t in nats for m in got if m and m.group(1) in names_from(c, t, n)
                     and int(m.group(2)) == conf["client_port"])
        if len(got) != len(nats) or hit != nats:
            out.append("cluster nats: %s names every NATS server on its client port, got %s"
                       % (n, e.get("SLIMVEC_CLUSTER_NATS")))
        got = [re.match(r"([^:/]+):(\d+)$", x.strip()) for x in e.get("SLIMVEC_CLUSTER_ETCD", "").split(",") if x.strip()]
        hit = sorted(t for t in etcd for m in got if m and etcd_client[t] and m.group(1) in names_from(c, t, n)
                     and m.group(2) == etcd_client[t].group(1))
        if len(got) != len(etcd) or hit != etcd:
            out.append("cluster etcd: %s names every etcd member on its client port, got %s"
                       % (n, e.get("SLIMVEC_CLUSTER_ETCD")))
        adv = re.match(r"([^:/]+):(\d+)$", e.get("SLIMVEC_ADVERTISE", ""))
        callers = [p for p in pods if p != n]
        if not adv or int(adv.group(2)) != listen or \
                not all(adv.group(1) in names_from(c, n, p) for p in callers):
            out.append("advertise: %s advertises %r, a name the other pods reach on port %d"
                       % (n, e.get("SLIMVEC_ADVERTISE"), listen))
        sr = int(e.get("SLIMVEC_STREAM_REPLICAS", "3"))
        if sr > len(nats):
            out.append("stream replicas: %s keeps %d copies on %d NATS servers" % (n, sr, len(nats)))
        # Shard and replica set.
        pod = e.get("SLIMVEC_POD_NAME", s.get("hostname", ""))
        pod_names.append(pod)
        ordinal = re.search(r"(\d+)$", pod)
        try:
            S = int(e.get("SLIMVEC_SHARDS", "1"))
        except ValueError:
            S = 0
        shards.add(S)
        shard = int(e["SLIMVEC_SHARD"]) if "SLIMVEC_SHARD" in e else (int(ordinal.group(1)) % S if ordinal and S else None)
        pairs.setdefault((e.get("SLIMVEC_REPLICA_SET"), shard), []).append(n)
    if len(shards) != 1:
        out.append("shards: every pod has the same SLIMVEC_SHARDS, got %s" % sorted(shards))
    S = min(shards) if shards else 0
    sets = sorted({rs for rs, _ in pairs if rs})
    want = {(rs, k) for rs in sets for k in range(S)}
    if len(sets) < 2 or set(pairs) != want or any(len(v) != 1 for v in pairs.values()):
        out.append("shards: each replica set %s holds each of the %d shards once, got %s"
                   % (sets, S, {"%s/%s" % k: v for k, v in sorted(pairs.items(), key=str)}))
    if len(set(pod_names)) != len(pod_names):
        out.append("pod names: distinct, got %s" % pod_names)
    for (ip, hp), who in host_ports.items():
        if len(who) > 1:
            out.append("published: host port %s:%s taken by %s" % (ip, hp, who))
    for v, who in data_volumes.items():
        if len(who) > 1:
            out.append("data volume: %s shared by %s" % (v, who))
    return out


def _svc(c, n):
    return c["services"][n]


def _set_env(c, n, k, v):
    _svc(c, n)["environment"][k] = v


# [what is broken, mutation of the rendered config (or of the NATS conf:
# returns the text), regex of the message that must appear]
COMPOSE_BREAKAGES = [
    ("SLIMVEC_CLUSTER_NATS without nats-2",
     lambda c: _set_env(c, "slimvec-r0-0", "SLIMVEC_CLUSTER_NATS", "nats://nats-0.nats:4222,nats://nats-1.nats:4222"),
     r"^cluster nats: slimvec-r0-0"),
    ("SLIMVEC_CLUSTER_NATS on the cluster port",
     lambda c: _set_env(c, "slimvec-r1-1", "SLIMVEC_CLUSTER_NATS",
                        "nats://nats-0.nats:6222,nats://nats-1.nats:6222,nats://nats-2.nats:6222"),
     r"^cluster nats: slimvec-r1-1"),
    ("SLIMVEC_CLUSTER_ETCD naming etcd-0 twice",
     lambda c: _set_env(c, "slimvec-r0-1", "SLIMVEC_CLUSTER_ETCD", "etcd-0.etcd:2379,etcd-0:2379,etcd-1.etcd:2379"),
     r"^cluster etcd: slimvec-r0-1"),
    ("two pods holding r0's shard 0, none its shard 1",
     lambda c: _set_env(c, "slimvec-r0-1", "SLIMVEC_POD_NAME", "slimvec-r0-2"), r"^shards: each replica set"),
    ("a pod in the wrong replica set",
     lambda c: _set_env(c, "slimvec-r1-1", "SLIMVEC_REPLICA_SET", "r0"), r"^shards: each replica set"),
    ("SLIMVEC_SHARDS 3 on one pod",
     lambda c: _set_env(c, "slimvec-r0-0", "SLIMVEC_SHARDS", "3"), r"^shards: every pod has the same"),
    ("SLIMVEC_ADVERTISE on loopback",
     lambda c: _set_env(c, "slimvec-r0-0", "SLIMVEC_ADVERTISE", "127.0.0.1:50051"), r"^advertise: slimvec-r0-0"),
    ("a slimvecd off the cluster network",
     lambda c: _svc(c, "slimvec-r1-0").pop("networks"), r"^cluster nats: slimvec-r1-0"),
    ("an option slimvecd no longer reads (SLIMVEC_REPLICA_SETS)",
     lambda c: _set_env(c, "slimvec-r0-0", "SLIMVEC_REPLICA_SETS", "r0,r1"), r"^options: slimvec-r0-0"),
    ("memory limit of one pod alone",
     lambda c: _svc(c, "slimvec-r0-1").update(mem_limit="4g"), r"^as slimvecd: slimvec-r0-1 mem_limit"),
    ("the peer token not passed on",
     lambda c: _svc(c, "slimvec-r1-1")["environment"].pop("SLIMVEC_PEER_TOKEN"), r"^peer token: slimvec-r1-1"),
    ("gRPC published on every interface",
     lambda c: _svc(c, "slimvec-r0-0").update(ports=["0.0.0.0:50061:50051/tcp", "127.0.0.1:9471:9464/tcp"]),
     r"^published: slimvec-r0-0 on 127.0.0.1 only"),
    ("the single node's host port taken again",
     lambda c: _svc(c, "slimvec-r0-0").update(ports=["127.0.0.1:50051:50051/tcp", "127.0.0.1:9471:9464/tcp"]),
     r"^published: host port 127.0.0.1:50051"),
    ("NATS monitoring published",
     lambda c: _svc(c, "nats-0").update(ports=["127.0.0.1:8222:8222/tcp"]), r"^published: nats-0 publishes nothing"),
    ("two pods on one data volume",
     lambda c: _svc(c, "slimvec-r1-1").update(volumes=[
         v.replace("slimvec-r1-1-data", "slimvec-r1-0-data") for v in _svc(c, "slimvec-r1-1")["volumes"]]),
     r"^data volume: slimvec-r1-0-data shared"),
    ("slimvecd not waiting for etcd-2",
     lambda c: _svc(c, "slimvec-r0-0")["depends_on"].pop("etcd-2"), r"^depends_on: slimvec-r0-0"),
    ("NATS route alias renamed",
     lambda c: _svc(c, "nats-2")["networks"]["cluster"].update(aliases=["nats2.nats"]), r"^nats routes: one route names nats-2"),
    ("NATS older than 2.10.23",
     lambda c: _svc(c, "nats-1").update(image="nats:2.9.25-alpine"), r"^nats image: nats-1"),
    ("NATS with a configuration of its own",
     lambda c: _svc(c, "nats-0").update(volumes=["/tmp/nats.conf:/etc/nats/nats-server.conf:ro", "nats-0-data:/data:rw"]),
     r"^nats config: nats-0"),
    ("two NATS servers with one name",
     lambda c: _set_env(c, "nats-2", "NATS_SERVER_NAME", "nats-1"), r"^nats server_name: distinct"),
    ("sync_interval removed from the NATS configuration",
     lambda conf: conf.replace("sync_interval: always", ""), r"^nats conf: jetstream \{ sync_interval: always \}"),
    ("etcd initial cluster without etcd-2",
     lambda c: [_set_env(c, n, "ETCD_INITIAL_CLUSTER", "etcd-0=http://etcd-0.etcd:2380,etcd-1=http://etcd-1.etcd:2380")
                for n in ("etcd-0", "etcd-1", "etcd-2")], r"^etcd initial cluster: etcd-0 names"),
    ("etcd advertising another peer URL",
     lambda c: _set_env(c, "etcd-1", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://etcd-1:2380"),
     r"^etcd advertise: etcd-1"),
    ("etcd data off the volume",
     lambda c: _set_env(c, "etcd-2", "ETCD_DATA_DIR", "/tmp/etcd"), r"^etcd data: etcd-2"),
]


class ComposeClusterTest(unittest.TestCase):
    """(e) docker-compose.yml's cluster profile: it parses, the default
    services stay as they were, and the pieces agree with each other (as
    tests/deploy/k8s/validate.js checks deploy/k8s/cluster)."""

    @classmethod
    def setUpClass(cls):
        cls.image = Image(DOCKERFILE)
        with open(NATS_CONF) as f:
            cls.nats_conf = f.read()
        cls.options = slimvecd_options()

    def rendered(self, *profile):
        """docker-compose's own reading of the file (merge keys, variables)."""
        exe = shutil.which("docker-compose")
        if not exe:
            self.fail("docker-compose not installed: run deploy/setup.sh install")
        try:
            import yaml
        except ImportError:
            self.fail("python3-yaml not installed: run deploy/setup.sh install")
        env = {k: v for k, v in os.environ.items() if k != "SLIMVEC_PEER_TOKEN"}
        r = subprocess.run([exe, "-f", COMPOSE, *profile, "config"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=ROOT, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, "docker-compose %s config:\n%s" % (" ".join(profile), r.stdout))
        return yaml.safe_load(r.stdout)

    def test_default_services_unchanged(self):
        # `docker-compose up` (no profile) starts the single node and
        # Prometheus only: every other service belongs to the profile.
        c = self.rendered()
        plain = sorted(n for n, s in c["services"].items() if not s.get("profiles"))
        self.assertEqual(plain, ["prometheus", "slimvecd"])
        for n, s in c["services"].items():
            if s.get("profiles"):
                self.assertEqual(s["profiles"], ["cluster"], n)

    def test_cluster_profile(self):
        problems = cluster_problems(self.rendered("--profile", "cluster"), self.nats_conf, self.image, self.options)
        self.assertEqual(problems, [])

    def test_cluster_checks_catch_breakage(self):
        # Each broken copy must fail the check it targets, or the check
        # above could pass anything.
        import copy
        good = self.rendered("--profile", "cluster")
        self.assertEqual(cluster_problems(good, self.nats_conf, self.image, self.options), [])
        for what, mutate, expect in COMPOSE_BREAKAGES:
            with self.subTest(what):
                c, conf = copy.deepcopy(good), self.nats_conf
                if "conf" in mutate.__code__.co_varnames:
                    conf = mutate(conf)
                else:
                    mutate(c)
                problems = cluster_problems(c, conf, self.image, self.options)
                self.assertTrue(any(re.search(expect, p) for p in problems),
                                "%s: not caught by %s; problems: %s" % (what, expect, problems))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
