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
    promtool and yamllint, and agree with the Dockerfile.
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


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
