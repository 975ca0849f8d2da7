#!/usr/bin/env node
// Offline validation of deploy/k8s and deploy/k8s/cluster (no cluster
// needed; ctest deploy_k8s):
//
//   node tests/deploy/k8s/validate.js [REPO_ROOT]
//
// For each of the two sets of manifests (the single node in deploy/k8s,
// cluster mode in deploy/k8s/cluster):
// 1. kustomization.yaml: every listed resource exists, every YAML file of
//    the directory is listed, `images:` names images the containers use.
// 2. Every document is instantiated as its kubernetes-models class (by
//    apiVersion/kind) and validate()d against the Kubernetes 1.27 JSON
//    schema. Those schemas do not forbid unknown fields (a misspelled
//    `imagePullPolicyy` passes them), while `kubectl apply` (strict field
//    validation, the default since 1.25) rejects them; so each document is
//    also walked against the same package's type declarations, read with
//    the TypeScript compiler, and any field the type does not have fails.
// 3. Semantic checks no schema can make (probes, ports, selectors, volume,
//    environment, memory limit/cap, grace period, security context,
//    Prometheus annotations). For the cluster also: every slimvecd has the
//    cluster's environment, naming every NATS server and etcd member,
//    advertising its stable name (which the certificate covers), a replica
//    set of its own, its own token from a Secret; the slimvecd pods keep
//    deploy/k8s's pod spec; no two
//    replicas of a shard can share a node or be evicted together; every
//    PDB and NetworkPolicy selects pods of the bundle, and the
//    NetworkPolicies admit exactly the ports and sources the design says;
//    NATS runs deploy/cluster/nats-server.conf's settings (sync_interval:
//    always) with routes to every server; etcd bootstraps from its
//    members' stable names.
// 4. A negative self-test: the same checks on deliberately broken copies
//    must fail, each at the check it targets, so the validator cannot
//    silently pass everything.
//
// One line per check; exit status 1 on any failure.
'use strict';

const fs = require('fs');
const path = require('path');
let YAML, ts;
try {
    YAML = require('yaml');
    ts = require('typescript');
    require.resolve('kubernetes-models');
    require.resolve('@kubernetes-models/cert-manager');
} catch (e) {
    console.log(`FAIL ${e.message.split('\n')[0]} (run \`npm ci\` in ${__dirname}; deploy/setup.sh does)`);
    process.exit(1);
}

const ROOT = path.resolve(process.argv[2] || path.join(__dirname, '..', '..', '..'));
const K8S_DIR = path.join(ROOT, 'deploy', 'k8s');
const CLUSTER_DIR = path.join(K8S_DIR, 'cluster');
// The production NATS configuration the cluster's ConfigMap must carry.
const NATS_CONF = path.join(ROOT, 'deploy', 'cluster', 'nats-server.conf');
// Model packages: Kubernetes itself, and cert-manager's CRDs (certificate.yaml).
const MODEL_PACKAGES = ['kubernetes-models', '@kubernetes-models/cert-manager'];
const modelsDir = (pkg) => path.dirname(require.resolve(pkg));

// ---------------------------------------------------------------- loading

function readBundle(dir) {
    const kfile = path.join(dir, 'kustomization.yaml');
    const b = {
        rel: path.relative(ROOT, dir).split(path.sep).join('/'),
        kustomization: null, files: {}, listing: [], loadErrors: [], options: null,
    };
    b.listing = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
    b.kustomization = parseDocs('kustomization.yaml', fs.readFileSync(kfile, 'utf8'), b)[0] || null;
    for (const f of b.listing) {
        if (f === 'kustomization.yaml') continue;
        b.files[f] = parseDocs(f, fs.readFileSync(path.join(dir, f), 'utf8'), b);
    }
    // The server's options (flag table in service/main.c): an SLIMVEC_*
    // variable it does not know is a typo that would be silently ignored.
    const mainC = path.join(ROOT, 'service', 'main.c');
    if (fs.existsSync(mainC)) {
        const src = fs.readFileSync(mainC, 'utf8');
        b.options = [...src.matchAll(/\{\s*"--[a-z-]+",\s*"(SLIMVEC_[A-Z0-9_]+)"/g)].map((m) => m[1]);
    }
    return b;
}

function parseDocs(file, text, b) {
    const docs = [];
    for (const d of YAML.parseAllDocuments(text)) {
        for (const e of d.errors) b.loadErrors.push(`${file}: ${e.message}`);
        for (const w of d.warnings) b.loadErrors.push(`${file}: ${w.message}`);
        const v = d.toJS();
        if (v !== null && v !== undefined) docs.push(v);
    }
    return docs;
}

// ------------------------------------------------------ schema (models)

function modelClass(apiVersion, kind) {
    if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Za-z0-9]+$/.test(kind)) return null;
    for (const pkg of MODEL_PACKAGES) {
        try {
            const C = require(`${pkg}/${apiVersion}/${kind}`)[kind];
            if (typeof C === 'function' && C.kind === kind && C.apiVersion === apiVersion) return C;
        } catch (e) {
            /* not in this package */
        }
    }
    return null;
}

// Strict fields: the TypeScript declaration of the kind, walked along the
// document. A program over all declarations is built once.
let tsChecker = null;
const tsTypes = {};
function declaredType(apiVersion, kind) {
    const key = `${apiVersion}/${kind}`;
    if (key in tsTypes) return tsTypes[key];
    const file = MODEL_PACKAGES.map((p) => path.join(modelsDir(p), apiVersion, `${kind}.d.ts`))
        .find((f) => fs.existsSync(f));
    if (!file) return (tsTypes[key] = null);
    const program = ts.createProgram([file], {
        noEmit: true, strict: true, types: [], skipLibCheck: true,
        moduleResolution: ts.ModuleResolutionKind.Node10,
    });
    tsChecker = program.getTypeChecker();
    const sf = program.getSourceFile(file);
    const mod = sf && tsChecker.getSymbolAtLocation(sf);
    const sym = mod && tsChecker.getExportsOfModule(mod).find((s) => s.name === `I${kind}`);
    tsTypes[key] = sym ? { checker: tsChecker, type: tsChecker.getDeclaredTypeOfSymbol(sym) } : null;
    return tsTypes[key];
}

function unknownFields(v, t, checker, at, errs) {
    if (v === null || typeof v !== 'object') return; // scalars: the JSON schema checks them
    t = checker.getNonNullableType(t);
    if (t.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) {
        errs.push(`${at}: type not resolved from the kubernetes-models declarations`);
        return;
    }
    if (t.isUnion()) {
        const objs = t.types.filter((x) => x.flags & ts.TypeFlags.Object);
        if (objs.length !== 1) return; // primitives only (or ambiguous): left to the schema
        t = objs[0];
    }
    if (Array.isArray(v)) {
        if (checker.isArrayType(t)) {
            const el = checker.getTypeArguments(t)[0];
            v.forEach((x, i) => unknownFields(x, el, checker, `${at}[${i}]`, errs));
        }
        return;
    }
    const index = checker.getIndexInfosOfType(t).find((i) => i.keyType.flags & ts.TypeFlags.String);
    for (const [k, x] of Object.entries(v)) {
        const p = checker.getPropertyOfType(t, k);
        if (p) unknownFields(x, checker.getTypeOfSymbol(p), checker, `${at}.${k}`, errs);
        else if (index) unknownFields(x, index.type, checker, `${at}.${k}`, errs);
        else errs.push(`${at}: unknown field "${k}"`);
    }
}

// ------------------------------------------------------------- helpers

const BIN = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DEC = { m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };
function quantity(q) {
    const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$/.exec(String(q));
    if (!m) return NaN;
    const unit = m[2] || '';
    return Number(m[1]) * (BIN[unit] || DEC[unit]);
}

function portOf(addr) {
    const m = /:([0-9]+)$/.exec(String(addr || ''));
    return m ? Number(m[1]) : NaN;
}

function hostOf(addr) {
    return String(addr || '').replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '');
}

function subset(sel, labels) {
    return !!sel && Object.keys(sel).length > 0 &&
        Object.entries(sel).every(([k, v]) => labels && labels[k] === v);
}

const fmt = (x) => JSON.stringify(x);


// A LabelSelector (matchLabels and matchExpressions) against a pod's
// labels. An empty selector ({}) selects every pod, as in PDBs and
// NetworkPolicies; a missing one selects none.
function selects(sel, labels) {
    if (!sel || typeof sel !== 'object') return false;
    const ml = sel.matchLabels || {};
    const me = sel.matchExpressions || [];
    labels = labels || {};
    return Object.entries(ml).every(([k, v]) => labels[k] === v) && me.every((e) => {
        const has = Object.prototype.hasOwnProperty.call(labels, e.key);
        const vals = e.values || [];
        switch (e.operator) {
        case 'In': return has && vals.includes(labels[e.key]);
        case 'NotIn': return !has || !vals.includes(labels[e.key]);
        case 'Exists': return has;
        case 'DoesNotExist': return !has;
        default: return false;
        }
    });
}

// Evictions a PodDisruptionBudget allows among n healthy pods (percentages
// round up, as the disruption controller does).
function disruptionsAllowed(spec, n) {
    const pct = (v) => (/^[0-9]+%$/.test(String(v)) ? Number(String(v).slice(0, -1)) : null);
    if (spec.maxUnavailable !== undefined) {
        const p = pct(spec.maxUnavailable);
        return p !== null ? Math.ceil(p * n / 100) : Number(spec.maxUnavailable);
    }
    if (spec.minAvailable !== undefined) {
        const p = pct(spec.minAvailable);
        return n - (p !== null ? Math.ceil(p * n / 100) : Number(spec.minAvailable));
    }
    return NaN;
}

// $(VAR) in an env value expands only a variable defined above it;
// Kubernetes leaves any other reference as written.
const VAR_REF = /\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g;
function forwardRefs(c) {
    const seen = new Set();
    const bad = [];
    for (const e of c.env || []) {
        for (const m of String(e.value === undefined ? '' : e.value).matchAll(VAR_REF)) {
            if (!seen.has(m[1])) bad.push(`${e.name} uses $(${m[1]})`);
        }
        seen.add(e.name);
    }
    return bad;
}

// The container's environment as the kubelet gives it to pod podName in
// namespace ns: fieldRefs to the pod's name and namespace, $(VAR) expanded.
// Other sources (resourceFieldRef, Secrets) stay undefined.
function podEnv(c, podName, ns) {
    const vals = {};
    for (const e of c.env || []) {
        let v;
        if (e.valueFrom && e.valueFrom.fieldRef) {
            const f = e.valueFrom.fieldRef.fieldPath;
            v = f === 'metadata.name' ? podName : f === 'metadata.namespace' ? ns : undefined;
        } else if (e.value !== undefined) {
            v = String(e.value).replace(VAR_REF, (m, k) => (vals[k] !== undefined ? vals[k] : m));
        }
        vals[e.name] = v;
    }
    return vals;
}

// The names a pod of a StatefulSet has through its governing (headless)
// Service: <pod>.<service>, then the namespace, .svc and the cluster
// domain, each optional (the pod's DNS search path completes them).
function stableName(host, pod, svc, ns) {
    const b = `${pod}.${svc}`;
    return [b, `${b}.${ns}`, `${b}.${ns}.svc`, `${b}.${ns}.svc.cluster.local`].includes(host);
}

// [scheme://]host:port
function hostPort(s) {
    const m = /^(?:([a-z][a-z0-9+.-]*):\/\/)?([A-Za-z0-9.-]+):([0-9]+)\/?$/.exec(String(s).trim());
    return m ? { scheme: m[1], host: m[2], port: Number(m[3]) } : null;
}

// '' when the comma-separated list names every pod of the StatefulSet g
// once, by its stable name, on port, each with one of schemes (undefined:
// plain host:port); else what is wrong.
function namesEveryPod(list, g, ns, port, schemes) {
    const errs = [];
    const seen = [];
    const forms = schemes.map((s) => (s ? `${s}://host:port` : 'host:port')).join(' or ');
    for (const item of String(list === undefined ? '' : list).split(',').filter((x) => x.trim())) {
        const a = hostPort(item);
        if (!a || !schemes.includes(a.scheme)) { errs.push(`"${item}" is not ${forms}`); continue; }
        if (a.port !== port) errs.push(`"${item}" is not on port ${port}`);
        const pod = g.pods.find((p) => stableName(a.host, p, g.sts.spec.serviceName, ns));
        if (!pod) errs.push(`"${a.host}" is no pod of ${g.name} through its Service ${g.sts.spec.serviceName}`);
        else if (seen.includes(pod)) errs.push(`${pod} named twice`);
        else seen.push(pod);
    }
    const missing = g.pods.filter((p) => !seen.includes(p));
    if (missing.length) errs.push(`missing ${missing.join(', ')}`);
    return errs.join('; ');
}

// A certificate's dnsNames cover host (a wildcard stands for one label).
function dnsCovers(names, host) {
    const dot = host.indexOf('.');
    return (names || []).some((n) => n === host ||
        (n.startsWith('*.') && dot > 0 && host.slice(dot + 1) === n.slice(2)));
}

// Paths where two JSON values differ (the first few).
function diffPaths(a, b, at, out) {
    if (out.length >= 6) return out;
    if (a && b && typeof a === 'object' && typeof b === 'object' && Array.isArray(a) === Array.isArray(b)) {
        for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) diffPaths(a[k], b[k], `${at}.${k}`, out);
    } else if (JSON.stringify(a) !== JSON.stringify(b)) {
        out.push(`${at}: ${fmt(a)} vs ${fmt(b)}`);
    }
    return out;
}

// A nats-server configuration: `key: value`, `key = value`, `key value`,
// blocks `{ }`, arrays `[ ]` (items on lines or comma-separated), # and //
// comments, quoted strings. Values are kept as strings. Throws on an
// unclosed block or array.
function parseNatsConf(s) {
    let i = 0;
    const skip = () => {
        for (;;) {
            while (i < s.length && /[\s,;]/.test(s[i])) i++;
            if (s[i] === '#' || (s[i] === '/' && s[i + 1] === '/')) {
                while (i < s.length && s[i] !== '\n') i++;
            } else {
                return;
            }
        }
    };
    const value = () => {
        while (s[i] === ' ' || s[i] === '\t') i++;
        if (s[i] === '{') { i++; return block('}'); }
        if (s[i] === '[') {
            i++;
            const a = [];
            for (;;) {
                skip();
                if (i >= s.length) throw new Error('unclosed [');
                if (s[i] === ']') { i++; return a; }
                a.push(value());
            }
        }
        if (s[i] === '"' || s[i] === "'") {
            const q = s[i++];
            const j = s.indexOf(q, i);
            if (j < 0) throw new Error('unclosed string');
            const v = s.slice(i, j);
            i = j + 1;
            return v;
        }
        let j = i;
        while (j < s.length && !/[\n,;\]}#]/.test(s[j])) j++;
        const v = s.slice(i, j).trim();
        i = j;
        return v;
    };
    const block = (end) => {
        const o = {};
        for (;;) {
            skip();
            if (i >= s.length) {
                if (end) throw new Error(`unclosed {`);
                return o;
            }
            if (end && s[i] === end) { i++; return o; }
            let j = i;
            while (j < s.length && !/[\s:={]/.test(s[j])) j++;
            const k = s.slice(i, j);
            if (!k) throw new Error(`no key at offset ${i}`);
            i = j;
            while (s[i] === ' ' || s[i] === '\t') i++;
            if (s[i] === ':' || s[i] === '=') i++;
            o[k] = value();
        }
    };
    return block(null);
}

// The lines of a configuration that say something (no comments, no blank
// lines), trimmed.
const settingLines = (text) => String(text).split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter(Boolean);

// Major.minor.patch of an image tag, or null.
function imageVersion(image, re) {
    const m = re.exec(String(image || ''));
    return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}
const versionAtLeast = (v, min) => !!v && (v[0] - min[0] || v[1] - min[1] || v[2] - min[2]) >= 0;

// ------------------------------------------------------------- checks

// What every bundle gets: its kustomization and files, and each document
// against its schema and declared fields. Returns the documents.
function bundleChecks(b, check) {
    check('YAML parses without errors or warnings', b.loadErrors.length === 0, b.loadErrors.join('; '));

    const kz = b.kustomization || {};
    check('kustomization.yaml is a kustomize.config.k8s.io/v1beta1 Kustomization',
        kz.apiVersion === 'kustomize.config.k8s.io/v1beta1' && kz.kind === 'Kustomization',
        `apiVersion ${fmt(kz.apiVersion)} kind ${fmt(kz.kind)}`);
    const KZ_FIELDS = ['apiVersion', 'kind', 'resources', 'labels', 'commonLabels', 'commonAnnotations',
        'images', 'namespace', 'namePrefix', 'nameSuffix', 'patches', 'configMapGenerator',
        'secretGenerator', 'generatorOptions', 'replicas', 'components', 'replacements'];
    const kzUnknown = Object.keys(kz).filter((k) => !KZ_FIELDS.includes(k));
    check('kustomization.yaml has only known fields', kzUnknown.length === 0, `unknown: ${kzUnknown.join(', ')}`);
    const resources = Array.isArray(kz.resources) ? kz.resources : [];
    const missing = resources.filter((r) => !(r in b.files));
    check('every resource listed in kustomization.yaml exists', resources.length > 0 && missing.length === 0,
        resources.length ? `missing: ${missing.join(', ')}` : 'no resources listed');
    const unlisted = Object.keys(b.files).filter((f) => !resources.includes(f));
    check(`every YAML file in ${b.rel} is listed in kustomization.yaml`, unlisted.length === 0,
        `not listed: ${unlisted.join(', ')}`);

    // Every document: model class, JSON schema, strict fields.
    const objects = [];
    for (const f of Object.keys(b.files)) {
        for (const o of b.files[f]) {
            const id = `${f}: ${o && o.kind}/${o && o.metadata && o.metadata.name}`;
            objects.push(o);
            const C = modelClass(o && o.apiVersion, o && o.kind);
            if (!check(`${id}: kubernetes-models has ${o && o.apiVersion} ${o && o.kind}`, C,
                `no model class for apiVersion ${fmt(o && o.apiVersion)} kind ${fmt(o && o.kind)}`)) continue;
            let err = '';
            try {
                new C(o).validate();
            } catch (e) {
                err = e.message || String(e);
            }
            check(`${id}: valid against the ${o.apiVersion} ${o.kind} schema`, !err, err);
            const dt = declaredType(o.apiVersion, o.kind);
            const errs = [];
            if (!dt) errs.push(`no type declaration for ${o.apiVersion} ${o.kind}`);
            else unknownFields(o, dt.type, dt.checker, o.kind, errs);
            check(`${id}: no unknown fields (strict, as kubectl apply)`, errs.length === 0, errs.join('; '));
            check(`${id}: has labels app.kubernetes.io/name and instance`,
                o.metadata && o.metadata.labels && o.metadata.labels['app.kubernetes.io/name'] &&
                o.metadata.labels['app.kubernetes.io/instance'], fmt(o.metadata && o.metadata.labels));
        }
    }
    return objects.filter((o) => o && typeof o === 'object');
}

// A container's security context, with the pod's as fallback.
function securityChecks(check, pod, c) {
    const psc = pod.securityContext || {};
    const csc = c.securityContext || {};
    const eff = (k) => (csc[k] !== undefined ? csc[k] : psc[k]);
    check('runs as non-root (runAsNonRoot, non-zero runAsUser)', eff('runAsNonRoot') === true &&
        eff('runAsUser') !== undefined && eff('runAsUser') !== 0, `pod ${fmt(psc)} container ${fmt(csc)}`);
    check('fsGroup is set (the volume is writable for the non-root user)', Number.isInteger(psc.fsGroup), fmt(psc));
    check('seccompProfile is RuntimeDefault', (eff('seccompProfile') || {}).type === 'RuntimeDefault',
        fmt(eff('seccompProfile')));
    check('allowPrivilegeEscalation is false', csc.allowPrivilegeEscalation === false, fmt(csc));
    check('readOnlyRootFilesystem is true', csc.readOnlyRootFilesystem === true, fmt(csc));
    check('not privileged', csc.privileged !== true, fmt(csc));
    check('capabilities: drop ALL, add none', csc.capabilities && (csc.capabilities.drop || []).includes('ALL') &&
        !(csc.capabilities.add || []).length, fmt(csc.capabilities));
}

// The slimvecd pod of a StatefulSet: what holds for the single node and
// for every replica set of the cluster alike. Returns what the callers'
// own checks need.
function slimvecdChecks(check, sts, c, ctx) {
    const spec = sts.spec || {};
    const tmpl = spec.template || {};
    const pod = tmpl.spec || {};
    const cports = c.ports || [];
    const portNamed = (n) => cports.find((p) => p.name === n);
    const grpcPort = portNamed('grpc');
    const metricsPort = portNamed('metrics');
    check('container has a port named grpc', grpcPort, fmt(cports));
    check('container has a port named metrics', metricsPort, fmt(cports));
    const env = {};
    const envDup = [];
    for (const e of c.env || []) {
        if (e.name in env) envDup.push(e.name);
        env[e.name] = e;
    }
    check('container env names are unique', envDup.length === 0, `duplicates: ${envDup.join(', ')}`);
    const val = (n) => (env[n] ? env[n].value : undefined);

    // Probes: HTTP on the metrics port (the kubelet's gRPC probes cannot
    // speak TLS, which the gRPC port requires): /readyz for readiness (503
    // once shutdown begins), /healthz for start-up and liveness. Plain HTTP
    // unless the metrics port is on TLS too.
    const metricsTls = val('SLIMVEC_METRICS_TLS') === 'on';
    const probePaths = { readinessProbe: '/readyz', livenessProbe: '/healthz', startupProbe: '/healthz' };
    for (const [kind, want] of Object.entries(probePaths)) {
        const p = c[kind];
        const others = p ? ['grpc', 'tcpSocket', 'exec'].filter((h) => h in p) : [];
        const h = (p && p.httpGet) || {};
        const onMetrics = h.port === 'metrics' || (metricsPort && h.port === metricsPort.containerPort);
        check(`${kind} is an HTTP ${want} probe on the metrics port (${metricsTls ? 'HTTPS' : 'HTTP'})`,
            p && p.httpGet && onMetrics && h.path === want && others.length === 0 &&
            (h.scheme || 'HTTP') === (metricsTls ? 'HTTPS' : 'HTTP'),
            p ? `probe ${fmt(p)}` : 'missing');
    }
    // Start-up budget: everything the memory cap admits could be in logs
    // after a crash; replay runs at >= 10k vectors/s, a vector costs about
    // 300 B of memory (128-d int8 + edges + id).
    const limitBytes = quantity(c.resources && c.resources.limits && c.resources.limits.memory);
    const capPct = Number((/^([0-9]+(?:\.[0-9]+)?)%$/.exec(val('SLIMVEC_MEMORY_CAP') || '') || [])[1]);
    const sp = c.startupProbe || {};
    const budget = (sp.periodSeconds || 10) * (sp.failureThreshold || 3);
    const needed = Math.ceil((limitBytes * (capPct || 100) / 100) / 300 / 10000);
    check(`startupProbe allows recovery: ${budget} s >= ${needed} s (cap bytes / 300 B / 10k vectors/s)`,
        budget >= needed && Number.isFinite(needed), `periodSeconds ${sp.periodSeconds} x failureThreshold ${sp.failureThreshold}`);

    // Volume
    const vcts = spec.volumeClaimTemplates || [];
    const mounts = c.volumeMounts || [];
    const podVolumes = (pod.volumes || []).map((v) => v.name);
    const dataMount = mounts.find((m) => vcts.some((v) => v.metadata && v.metadata.name === m.name));
    check('a volumeClaimTemplate is mounted (its name matches a volumeMount)', vcts.length === 1 && dataMount,
        `templates ${fmt(vcts.map((v) => v.metadata && v.metadata.name))} mounts ${fmt(mounts.map((m) => m.name))}`);
    const orphan = mounts.filter((m) => !podVolumes.includes(m.name) &&
        !vcts.some((v) => v.metadata && v.metadata.name === m.name));
    check('every volumeMount names a volume or volumeClaimTemplate', orphan.length === 0,
        `unmatched: ${orphan.map((m) => m.name).join(', ')}`);
    if (vcts.length) {
        const vs = vcts[0].spec || {};
        check('the volumeClaimTemplate is ReadWriteOnce with a storage request',
            (vs.accessModes || []).includes('ReadWriteOnce') && vs.resources && vs.resources.requests &&
            quantity(vs.resources.requests.storage) > 0, fmt(vs));
    }
    check('SLIMVEC_DATA_DIR equals the data volume mount path',
        dataMount && val('SLIMVEC_DATA_DIR') === dataMount.mountPath && !dataMount.readOnly,
        `SLIMVEC_DATA_DIR ${fmt(val('SLIMVEC_DATA_DIR'))} mountPath ${fmt(dataMount && dataMount.mountPath)}`);

    // TLS and tokens from Secrets, read-only; the TLS Secret is the one a
    // cert-manager Certificate of the bundle writes (it renews it).
    const secretMountOf = (file) => {
        const m = mounts.find((x) => file && String(file).startsWith(x.mountPath.replace(/\/?$/, '/')));
        const v = m && (pod.volumes || []).find((x) => x.name === m.name);
        return m && v && v.secret ? { mount: m, secret: v.secret.secretName } : null;
    };
    const certAt = secretMountOf(val('SLIMVEC_TLS_CERT'));
    const keyAt = secretMountOf(val('SLIMVEC_TLS_KEY'));
    check('SLIMVEC_TLS_CERT and SLIMVEC_TLS_KEY are files of one read-only Secret volume',
        certAt && keyAt && certAt.secret === keyAt.secret && certAt.mount.readOnly === true,
        `SLIMVEC_TLS_CERT ${fmt(val('SLIMVEC_TLS_CERT'))} SLIMVEC_TLS_KEY ${fmt(val('SLIMVEC_TLS_KEY'))}`);
    const certs = ctx.certificates.filter((x) => !(x.spec && x.spec.isCA));
    check('the TLS Secret is written by a cert-manager Certificate (server, not CA) of the bundle',
        certAt && certs.some((x) => x.spec.secretName === certAt.secret),
        `Secret ${fmt(certAt && certAt.secret)} Certificates ${fmt(certs.map((x) => x.spec && x.spec.secretName))}`);
    check('/metrics tokens travel over TLS (SLIMVEC_METRICS_AUTH token needs SLIMVEC_METRICS_TLS on)',
        val('SLIMVEC_METRICS_AUTH') !== 'token' || metricsTls,
        `SLIMVEC_METRICS_AUTH ${fmt(val('SLIMVEC_METRICS_AUTH'))} SLIMVEC_METRICS_TLS ${fmt(val('SLIMVEC_METRICS_TLS'))}`);
    const tokAt = secretMountOf(val('SLIMVEC_TOKENS_FILE'));
    check('SLIMVEC_TOKENS_FILE is a file of a read-only Secret volume',
        tokAt && tokAt.mount.readOnly === true, `SLIMVEC_TOKENS_FILE ${fmt(val('SLIMVEC_TOKENS_FILE'))}`);

    // Environment: known options, listen addresses.
    if (ctx.options) {
        const unknown = Object.keys(env).filter((n) => n.startsWith('SLIMVEC_') && !ctx.options.includes(n));
        check('every SLIMVEC_* variable is an option of slimvecd (service/main.c)', unknown.length === 0,
            `unknown: ${unknown.join(', ')}`);
    }
    const serviceLinkPrefix = ctx.serviceNames.some((s) => s.toUpperCase().replace(/-/g, '_').startsWith('SLIMVEC'));
    check('enableServiceLinks is false (Service env vars would share the SLIMVEC_ prefix)',
        !serviceLinkPrefix || pod.enableServiceLinks === false, `enableServiceLinks ${fmt(pod.enableServiceLinks)}`);
    check("SLIMVEC_LISTEN's port equals the grpc containerPort and is not loopback",
        grpcPort && portOf(val('SLIMVEC_LISTEN')) === grpcPort.containerPort &&
        !/^(127\.|localhost$|::1$)/.test(hostOf(val('SLIMVEC_LISTEN'))),
        `SLIMVEC_LISTEN ${fmt(val('SLIMVEC_LISTEN'))} grpc port ${grpcPort && grpcPort.containerPort}`);
    check("SLIMVEC_METRICS_LISTEN's port equals the metrics containerPort and is not loopback",
        metricsPort && portOf(val('SLIMVEC_METRICS_LISTEN')) === metricsPort.containerPort &&
        !/^(127\.|localhost$|::1$)/.test(hostOf(val('SLIMVEC_METRICS_LISTEN'))),
        `SLIMVEC_METRICS_LISTEN ${fmt(val('SLIMVEC_METRICS_LISTEN'))} metrics port ${metricsPort && metricsPort.containerPort}`);

    // Memory: limit from the downward API, request == limit, cap < 100%.
    const ml = env.SLIMVEC_MEMORY_LIMIT;
    const rf = ml && ml.valueFrom && ml.valueFrom.resourceFieldRef;
    check('SLIMVEC_MEMORY_LIMIT comes from resourceFieldRef limits.memory of this container',
        rf && rf.resource === 'limits.memory' && (rf.containerName === undefined || rf.containerName === c.name) &&
        (rf.divisor === undefined || quantity(rf.divisor) === 1) && ml.value === undefined, fmt(ml));
    const req = c.resources && c.resources.requests && c.resources.requests.memory;
    check('memory request == memory limit', limitBytes > 0 && quantity(req) === limitBytes,
        `requests.memory ${fmt(req)} limits.memory ${fmt(c.resources && c.resources.limits && c.resources.limits.memory)}`);
    check('SLIMVEC_MEMORY_CAP is a percentage above 0 and below 100', capPct > 0 && capPct < 100,
        `SLIMVEC_MEMORY_CAP ${fmt(val('SLIMVEC_MEMORY_CAP'))}`);
    const bt = env.SLIMVEC_BUILD_THREADS;
    if (bt && bt.valueFrom) {
        const r = bt.valueFrom.resourceFieldRef || {};
        check('SLIMVEC_BUILD_THREADS comes from limits.cpu of this container in whole cores',
            r.resource === 'limits.cpu' && (r.containerName === undefined || r.containerName === c.name) &&
            quantity(r.divisor) === 1, fmt(bt));
    }

    // Shutdown: the grace period covers the drain plus the snapshots.
    const grace = Number(val('SLIMVEC_GRACE'));
    const tgps = pod.terminationGracePeriodSeconds === undefined ? 30 : pod.terminationGracePeriodSeconds;
    // The same margin as the compose check: the drain plus at least 10 s for
    // the shutdown snapshots, plus any preStop sleep before SIGTERM.
    const pre = ((c.lifecycle || {}).preStop || {}).exec;
    const sleep = pre && pre.command && pre.command[0] === '/bin/sleep' ? Number(pre.command[1]) : 0;
    check(`terminationGracePeriodSeconds (${tgps}) > preStop (${sleep}) + SLIMVEC_GRACE (${val('SLIMVEC_GRACE')}) + 10`,
        Number.isInteger(grace) && tgps > sleep + grace + 10, `SLIMVEC_GRACE ${fmt(val('SLIMVEC_GRACE'))}`);

    securityChecks(check, pod, c);

    // Prometheus scrape annotations.
    const ann = (tmpl.metadata && tmpl.metadata.annotations) || {};
    check('prometheus.io/scrape is "true" and prometheus.io/path is /metrics',
        ann['prometheus.io/scrape'] === 'true' && ann['prometheus.io/path'] === '/metrics', fmt(ann));
    check("prometheus.io/port equals the metrics containerPort and SLIMVEC_METRICS_LISTEN's port",
        metricsPort && Number(ann['prometheus.io/port']) === metricsPort.containerPort &&
        Number(ann['prometheus.io/port']) === portOf(val('SLIMVEC_METRICS_LISTEN')),
        `annotation ${fmt(ann['prometheus.io/port'])} metrics port ${metricsPort && metricsPort.containerPort}`);

    return { env, val, grpcPort, metricsPort, certAt, secretMountOf };
}

const collector = (results, prefix) => (name, ok, detail) => {
    results.push({ name: prefix + name, ok: !!ok, detail: ok ? '' : detail || '' });
    return !!ok;
};

// deploy/k8s: the single node.
function validateBundle(b) {
    const results = [];
    const check = collector(results, '');
    const objects = bundleChecks(b, check);
    const of = (kind) => objects.filter((o) => o.kind === kind);
    const kz = b.kustomization || {};

    // --- the StatefulSet and its container
    const stses = of('StatefulSet');
    if (!check('exactly one StatefulSet', stses.length === 1, `found ${stses.length}`)) return results;
    const sts = stses[0];
    const spec = sts.spec || {};
    const tmpl = spec.template || {};
    const pod = tmpl.spec || {};
    const podLabels = (tmpl.metadata && tmpl.metadata.labels) || {};
    const c = (pod.containers || []).find((x) => x.name === 'slimvecd');
    if (!check('StatefulSet has a container named slimvecd', c, 'containers: ' +
        fmt((pod.containers || []).map((x) => x.name)))) return results;
    const svcs = of('Service');
    const { grpcPort } = slimvecdChecks(check, sts, c, {
        certificates: of('Certificate'), options: b.options, serviceNames: svcs.map((s) => s.metadata.name),
    });
    const cports = c.ports || [];
    const portNamed = (n) => cports.find((p) => p.name === n);

    check('replicas is 1 (each pod is an independent server)', spec.replicas === 1, `replicas ${fmt(spec.replicas)}`);
    check('StatefulSet selector matches the pod template labels',
        subset(spec.selector && spec.selector.matchLabels, podLabels),
        `selector ${fmt(spec.selector)} labels ${fmt(podLabels)}`);

    // Services
    const headless = svcs.find((s) => s.metadata && s.metadata.name === spec.serviceName);
    check(`headless Service named serviceName (${spec.serviceName}) exists`, headless,
        `services: ${svcs.map((s) => s.metadata && s.metadata.name).join(', ')}`);
    if (headless) {
        check('headless Service has clusterIP None and publishNotReadyAddresses',
            headless.spec && headless.spec.clusterIP === 'None' && headless.spec.publishNotReadyAddresses === true,
            fmt(headless.spec));
    }
    const client = svcs.find((s) => s !== headless);
    check('a client Service (ClusterIP) exists', client && (client.spec.type || 'ClusterIP') === 'ClusterIP' &&
        client.spec.clusterIP !== 'None', 'missing');
    for (const s of svcs) {
        const n = s.metadata && s.metadata.name;
        check(`Service ${n} selector matches the pod labels`, subset(s.spec && s.spec.selector, podLabels),
            `selector ${fmt(s.spec && s.spec.selector)} pod labels ${fmt(podLabels)}`);
        for (const p of (s.spec && s.spec.ports) || []) {
            const tp = p.targetPort === undefined ? p.port : p.targetPort;
            const target = typeof tp === 'string' ? portNamed(tp) : cports.find((x) => x.containerPort === tp);
            check(`Service ${n} port ${p.name} targetPort ${fmt(tp)} names a container port`, target,
                `container ports: ${fmt(cports.map((x) => x.name))}`);
            if (target && target === grpcPort) {
                check(`Service ${n} port ${p.name} has appProtocol grpc`, p.appProtocol === 'grpc', fmt(p));
            }
        }
        check(`Service ${n} exposes the grpc port`, ((s.spec && s.spec.ports) || []).some((p) =>
            p.targetPort === 'grpc' || (grpcPort && p.targetPort === grpcPort.containerPort)), fmt(s.spec && s.spec.ports));
    }

    // PodDisruptionBudget: selects the pods and still allows a drain.
    const pdbs = of('PodDisruptionBudget');
    check('a PodDisruptionBudget exists', pdbs.length === 1, `found ${pdbs.length}`);
    for (const pdb of pdbs) {
        const ps = pdb.spec || {};
        check(`PodDisruptionBudget ${pdb.metadata.name} selector matches the pod labels`,
            subset(ps.selector && ps.selector.matchLabels, podLabels), fmt(ps.selector));
        const replicas = spec.replicas === undefined ? 1 : spec.replicas;
        const allowsDrain = ps.maxUnavailable !== undefined
            ? (typeof ps.maxUnavailable === 'number' ? ps.maxUnavailable >= 1 : parseFloat(ps.maxUnavailable) > 0)
            : (typeof ps.minAvailable === 'number' ? ps.minAvailable < replicas
                : parseFloat(ps.minAvailable) * replicas / 100 <= replicas - 1);
        check(`PodDisruptionBudget ${pdb.metadata.name} lets a node drain evict a pod (replicas ${replicas})`,
            allowsDrain, `maxUnavailable ${fmt(ps.maxUnavailable)} minAvailable ${fmt(ps.minAvailable)}`);
    }

    // Certificates: issued within the bundle, for the names clients use.
    for (const cert of of('Certificate').filter((x) => !(x.spec && x.spec.isCA))) {
        const issuer = cert.spec.issuerRef || {};
        check(`Certificate ${cert.metadata.name} is issued by an Issuer of the bundle`,
            (issuer.kind || 'Issuer') === 'Issuer' && of('Issuer').some((i) => i.metadata.name === issuer.name),
            fmt(issuer));
        check(`Certificate ${cert.metadata.name} names the Services (${svcs.map((x) => x.metadata.name)})`,
            svcs.every((x) => (cert.spec.dnsNames || []).includes(x.metadata.name)), fmt(cert.spec.dnsNames));
    }

    // kustomize images: must name the containers' image or it retags nothing.
    const imageName = String(c.image || '').replace(/@.*$/, '').replace(/:[^/:]*$/, '');
    const kimages = Array.isArray(kz.images) ? kz.images : [];
    check(`kustomization images: names the container image (${imageName})`,
        kimages.length > 0 && kimages.every((i) => i.name === imageName), fmt(kimages));

    return results;
}

// ------------------------------------------------------ cluster checks

// The ingress the cluster's pods admit, by container port name: the pods
// let in ('slimvec' = every slimvecd replica set, 'nats', 'etcd') or '*'
// (anyone). A port not listed admits no pod. (The kubelet's probes come
// from the node, which NetworkPolicies do not govern.)
const CLUSTER_INGRESS = {
    nats: { client: ['slimvec'], cluster: ['nats'], monitor: [] },
    etcd: { client: ['slimvec'], peer: ['etcd'] },
    slimvec: { grpc: ['*'], metrics: ['*'] },
};
// sync_interval needs nats-server 2.10.23 or later (README, Cluster mode).
const NATS_MIN = [2, 10, 23];
const NATS_IMAGE = /^(?:docker\.io\/)?(?:library\/)?nats:v?(\d+)\.(\d+)\.(\d+)(?:-[a-z0-9.]+)?$/;
// slimvecd speaks etcd's v3 API; the probes' serializable health needs 3.5.
const ETCD_MIN = [3, 5, 0];
const ETCD_IMAGE = /^(?:quay\.io\/coreos\/etcd:v|gcr\.io\/etcd-development\/etcd:v|registry\.k8s\.io\/etcd:)(\d+)\.(\d+)\.(\d+)(?:-\d+)?$/;

// Go durations as nats-server takes them ("10s", "2m", "1m30s"), in seconds.
function goSeconds(d, dflt) {
    if (d === undefined) return dflt;
    let total = 0;
    const s = String(d);
    const re = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/g;
    let pos = 0;
    for (const m of s.matchAll(re)) {
        if (m.index !== pos) return NaN;
        total += Number(m[1]) * { ms: 1e-3, s: 1, m: 60, h: 3600 }[m[2]];
        pos = m.index + m[0].length;
    }
    return pos === s.length && pos > 0 ? total : NaN;
}

// GOMEMLIMIT ("1843MiB", "2GiB", bytes) in bytes.
function goBytes(v) {
    const m = /^([0-9]+)(B|KiB|MiB|GiB|TiB)?$/.exec(String(v));
    return m ? Number(m[1]) * { B: 1, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 }[m[2] || 'B'] : NaN;
}

const envValue = (c, n) => {
    const e = (c.env || []).find((x) => x.name === n);
    return e ? e.value : undefined;
};
const underDir = (file, dir) => typeof file === 'string' && typeof dir === 'string' &&
    file.startsWith(dir.replace(/\/?$/, '/'));

// deploy/k8s/cluster; base is deploy/k8s (the slimvecd pod spec to keep).
function validateCluster(b, base) {
    const results = [];
    const check = collector(results, 'cluster: ');
    const objects = bundleChecks(b, check);
    const of = (kind) => objects.filter((o) => o.kind === kind);
    const kz = b.kustomization || {};

    const ns = kz.namespace;
    check('kustomization.yaml sets the namespace (the certificate names the pods in it)',
        typeof ns === 'string' && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(ns), `namespace ${fmt(ns)}`);

    // --- the workloads, told apart by their container
    const KINDS = { slimvecd: 'slimvec', nats: 'nats', etcd: 'etcd' };
    const groups = of('StatefulSet').map((sts) => {
        const spec = sts.spec || {};
        const tmpl = spec.template || {};
        const pod = tmpl.spec || {};
        const cs = pod.containers || [];
        const c = cs.find((x) => x.name in KINDS) || cs[0] || {};
        const replicas = spec.replicas === undefined ? 1 : spec.replicas;
        const name = sts.metadata.name;
        const n = Number.isInteger(replicas) && replicas >= 0 ? replicas : 0;
        return {
            sts, spec, name, pod, c, replicas, kind: KINDS[c.name] || 'other',
            labels: (tmpl.metadata && tmpl.metadata.labels) || {},
            pods: Array.from({ length: n }, (_, i) => `${name}-${i}`),
        };
    });
    const sv = groups.filter((g) => g.kind === 'slimvec');
    const natsG = groups.filter((g) => g.kind === 'nats');
    const etcdG = groups.filter((g) => g.kind === 'etcd');
    check('every StatefulSet runs slimvecd, nats or etcd (a container of that name)',
        groups.every((g) => g.kind !== 'other'), fmt(groups.filter((g) => g.kind === 'other').map((g) => g.name)));
    check('one NATS StatefulSet with 3 servers', natsG.length === 1 && natsG[0].replicas === 3,
        fmt(natsG.map((g) => [g.name, g.replicas])));
    check('one etcd StatefulSet with 3 members', etcdG.length === 1 && etcdG[0].replicas === 3,
        fmt(etcdG.map((g) => [g.name, g.replicas])));
    check('at least two slimvecd StatefulSets (replica sets)', sv.length >= 2, fmt(sv.map((g) => g.name)));
    if (natsG.length !== 1 || etcdG.length !== 1 || sv.length < 1) return results;
    const nats = natsG[0];
    const etcd = etcdG[0];
    const portOfC = (g, n) => ((g.c.ports || []).find((p) => p.name === n) || {}).containerPort;

    // --- every StatefulSet: selector, governing Service, volume, security
    const svcs = of('Service');
    for (const g of groups) {
        const gcheck = (n, ok, d) => check(`${g.name}: ${n}`, ok, d);
        gcheck('selector matches its pod template labels', selects(g.spec.selector, g.labels) &&
            Object.keys((g.spec.selector || {}).matchLabels || {}).length > 0,
        `selector ${fmt(g.spec.selector)} labels ${fmt(g.labels)}`);
        const others = groups.filter((h) => h !== g && selects(g.spec.selector, h.labels));
        gcheck("selector matches no other StatefulSet's pods", others.length === 0,
            `also selects ${others.map((h) => h.name).join(', ')}`);
        const gov = svcs.find((s) => s.metadata.name === g.spec.serviceName);
        gcheck(`serviceName ${fmt(g.spec.serviceName)} is a headless Service of its pods that publishes them before they are ready`,
            gov && gov.spec.clusterIP === 'None' && gov.spec.publishNotReadyAddresses === true &&
            subset(gov.spec.selector, g.labels), gov ? fmt(gov.spec) : 'no such Service');
        gcheck('automountServiceAccountToken is false (no Kubernetes API needed)',
            g.pod.automountServiceAccountToken === false, fmt(g.pod.automountServiceAccountToken));
        const bad = forwardRefs(g.c);
        gcheck('every $(VAR) in the env refers to a variable defined above it', bad.length === 0, bad.join('; '));
        if (g.kind === 'slimvec') continue; // slimvecdChecks below covers the rest
        const vcts = g.spec.volumeClaimTemplates || [];
        const mounted = vcts.filter((v) => (g.c.volumeMounts || []).some((m) => m.name === v.metadata.name && !m.readOnly));
        gcheck('its volumeClaimTemplate is mounted read-write', vcts.length === 1 && mounted.length === 1,
            `templates ${fmt(vcts.map((v) => v.metadata.name))} mounts ${fmt((g.c.volumeMounts || []).map((m) => m.name))}`);
        securityChecks(gcheck, g.pod, g.c);
        gcheck('podManagementPolicy Parallel (the members need a quorum of each other to start)',
            g.spec.podManagementPolicy === 'Parallel', fmt(g.spec.podManagementPolicy));
        const gml = envValue(g.c, 'GOMEMLIMIT');
        if (gml !== undefined) {
            const lim = quantity(g.c.resources && g.c.resources.limits && g.c.resources.limits.memory);
            gcheck('GOMEMLIMIT is below limits.memory', goBytes(gml) > 0 && goBytes(gml) < lim,
                `GOMEMLIMIT ${fmt(gml)} limits.memory ${fmt(g.c.resources && g.c.resources.limits)}`);
        }
    }

    // --- Services: select pods of the bundle, on ports those pods have
    for (const s of svcs) {
        const sel = (s.spec || {}).selector;
        const hit = groups.filter((g) => subset(sel, g.labels));
        check(`Service ${s.metadata.name} selects pods of the bundle`, hit.length > 0, `selector ${fmt(sel)}`);
        for (const p of (s.spec && s.spec.ports) || []) {
            const tp = p.targetPort === undefined ? p.port : p.targetPort;
            const miss = hit.filter((g) => !(g.c.ports || []).some((x) =>
                (typeof tp === 'string' ? x.name === tp : x.containerPort === tp)));
            check(`Service ${s.metadata.name} port ${p.name} targetPort ${fmt(tp)} is a container port of every pod it selects`,
                hit.length > 0 && miss.length === 0, `not in ${miss.map((g) => g.name).join(', ')}`);
        }
    }

    // --- slimvecd replica sets
    const baseSts = Object.values(base.files).flat().find((o) => o && o.kind === 'StatefulSet');
    const baseC = baseSts && (baseSts.spec.template.spec.containers || []).find((x) => x.name === 'slimvecd');
    const certificates = of('Certificate');
    const serverCerts = certificates.filter((x) => !(x.spec && x.spec.isCA));
    const natsPort = portOfC(nats, 'client');
    const etcdPort = portOfC(etcd, 'client');
    const sets = {};
    for (const g of sv) {
        const pcheck = (n, ok, d) => check(`${g.name}: ${n}`, ok, d);
        const { env, val, grpcPort, certAt, secretMountOf } = slimvecdChecks(pcheck, g.sts, g.c, {
            certificates, options: b.options, serviceNames: svcs.map((s) => s.metadata.name),
        });

        // The single node's pod spec, kept: what deploy/k8s/statefulset.yaml
        // explains (memory cap, probe budgets, grace, TLS, tokens) holds here.
        if (baseC) {
            const bp = baseSts.spec.template.spec;
            const same = [
                ['pod securityContext', (p) => p.securityContext], ['terminationGracePeriodSeconds', (p) => p.terminationGracePeriodSeconds],
                ['enableServiceLinks', (p) => p.enableServiceLinks], ['automountServiceAccountToken', (p) => p.automountServiceAccountToken],
                ['volumes', (p) => p.volumes],
            ];
            const sameC = ['image', 'imagePullPolicy', 'ports', 'resources', 'startupProbe', 'readinessProbe',
                'livenessProbe', 'lifecycle', 'securityContext', 'volumeMounts'];
            const diffs = [];
            for (const [n, get] of same) diffPaths(get(bp), get(g.pod), n, diffs);
            for (const n of sameC) diffPaths(baseC[n], g.c[n], `container.${n}`, diffs);
            diffPaths(baseSts.spec.template.metadata.annotations, (g.spec.template.metadata || {}).annotations, 'annotations', diffs);
            diffPaths((baseSts.spec.volumeClaimTemplates || []).map((v) => v.spec),
                (g.spec.volumeClaimTemplates || []).map((v) => v.spec), 'volumeClaimTemplates', diffs);
            for (const e of baseC.env || []) {
                const mine = (g.c.env || []).find((x) => x.name === e.name);
                if (!mine) diffs.push(`env ${e.name} missing`);
                else diffPaths(e, mine, `env ${e.name}`, diffs);
            }
            pcheck('keeps deploy/k8s/statefulset.yaml\'s pod spec (security context, resources, probes, lifecycle, ' +
                'grace period, volumes, annotations, its environment)', diffs.length === 0, diffs.join('; '));
        }

        // Cluster mode's environment.
        const rs = val('SLIMVEC_REPLICA_SET');
        pcheck('SLIMVEC_REPLICA_SET is set', typeof rs === 'string' && /^[A-Za-z0-9_-]+$/.test(rs), fmt(rs));
        (sets[rs] = sets[rs] || []).push(g.name);
        const pn = env.SLIMVEC_POD_NAME;
        pcheck('SLIMVEC_POD_NAME comes from the downward API (metadata.name)',
            pn && pn.value === undefined && pn.valueFrom && pn.valueFrom.fieldRef &&
            pn.valueFrom.fieldRef.fieldPath === 'metadata.name', fmt(pn));
        pcheck('SLIMVEC_SHARD is unset (a pod holds shard <ordinal> mod SLIMVEC_SHARDS)', !env.SLIMVEC_SHARD,
            fmt(env.SLIMVEC_SHARD));
        const shards = Number(val('SLIMVEC_SHARDS'));
        pcheck(`replicas (${fmt(g.replicas)}) == SLIMVEC_SHARDS (pod k holds shard k)`,
            Number.isInteger(shards) && shards >= 1 && shards === g.replicas, `SLIMVEC_SHARDS ${fmt(val('SLIMVEC_SHARDS'))}`);
        const errN = [];
        const errE = [];
        const errA = [];
        const uncovered = [];
        for (const p of g.pods) {
            const e = podEnv(g.c, p, ns);
            const n = namesEveryPod(e.SLIMVEC_CLUSTER_NATS, nats, ns, natsPort, ['nats', 'tls']);
            if (n) errN.push(`${p}: ${n}`);
            const m = namesEveryPod(e.SLIMVEC_CLUSTER_ETCD, etcd, ns, etcdPort, [undefined]);
            if (m) errE.push(`${p}: ${m}`);
            const a = hostPort(e.SLIMVEC_ADVERTISE || '');
            if (!a || a.scheme || !grpcPort || a.port !== grpcPort.containerPort ||
                !stableName(a.host, p, g.spec.serviceName, ns)) {
                errA.push(`${p}: ${fmt(e.SLIMVEC_ADVERTISE)}`);
            } else if (!serverCerts.some((x) => certAt && x.spec.secretName === certAt.secret &&
                dnsCovers(x.spec.dnsNames, a.host))) {
                uncovered.push(a.host);
            }
        }
        pcheck(`SLIMVEC_CLUSTER_NATS names every NATS server (${nats.pods.join(', ')}) by its stable name on the client port`,
            g.pods.length > 0 && errN.length === 0, errN.join(' | '));
        pcheck(`SLIMVEC_CLUSTER_ETCD names every etcd member (${etcd.pods.join(', ')}) by its stable name on the client port`,
            g.pods.length > 0 && errE.length === 0, errE.join(' | '));
        pcheck(`SLIMVEC_ADVERTISE is the pod's stable name through ${g.spec.serviceName} on the grpc port`,
            g.pods.length > 0 && errA.length === 0, errA.join(' | '));
        pcheck('the server certificate covers every advertised name (the routers verify it)', uncovered.length === 0,
            `not in the dnsNames: ${uncovered.join(', ')}`);
        // With tokens on, the calls a pod makes on its own (a joining
        // replica fetching a peer's snapshot) carry its own token.
        const pt = env.SLIMVEC_PEER_TOKEN;
        pcheck('SLIMVEC_PEER_TOKEN comes from a Secret (the pods check tokens; a joining replica needs one)',
            !val('SLIMVEC_TOKENS_FILE') || (pt && pt.value === undefined && pt.valueFrom &&
                pt.valueFrom.secretKeyRef && pt.valueFrom.secretKeyRef.name && pt.valueFrom.secretKeyRef.key &&
                pt.valueFrom.secretKeyRef.optional !== true), fmt(pt));
        const ca = secretMountOf(val('SLIMVEC_PEER_CA'));
        pcheck('SLIMVEC_PEER_CA is a file of the TLS Secret (the pods call each other over TLS)',
            !val('SLIMVEC_TLS_CERT') || (ca && certAt && ca.secret === certAt.secret && ca.mount.readOnly === true),
            `SLIMVEC_PEER_CA ${fmt(val('SLIMVEC_PEER_CA'))}`);
        const sr = val('SLIMVEC_STREAM_REPLICAS') === undefined ? 3 : Number(val('SLIMVEC_STREAM_REPLICAS'));
        pcheck(`SLIMVEC_STREAM_REPLICAS (${sr}) is at most the NATS servers (${nats.replicas})`,
            Number.isInteger(sr) && sr >= 1 && sr <= nats.replicas, fmt(val('SLIMVEC_STREAM_REPLICAS')));

        // Placement.
        const aa = (g.pod.affinity || {}).podAntiAffinity || {};
        const req = aa.requiredDuringSchedulingIgnoredDuringExecution || [];
        const near = sv.filter((h) => !req.some((t) => t.topologyKey === 'kubernetes.io/hostname' &&
            !t.namespaces && !t.namespaceSelector && selects(t.labelSelector, h.labels)));
        pcheck('required pod anti-affinity on kubernetes.io/hostname against every slimvecd pod ' +
            '(no two replicas of a shard on one node)', near.length === 0,
        `not kept off the nodes of ${near.map((h) => h.name).join(', ')}: ${fmt(req)}`);
        const zone = (aa.preferredDuringSchedulingIgnoredDuringExecution || []).map((w) => w.podAffinityTerm || {})
            .filter((t) => t.topologyKey === 'topology.kubernetes.io/zone');
        pcheck('preferred zone anti-affinity against the other replica sets only (a zone per replica set)',
            zone.some((t) => sv.every((h) => (h === g) !== selects(t.labelSelector, h.labels))), fmt(zone));
    }
    const setNames = Object.keys(sets);
    check('every slimvecd StatefulSet has a SLIMVEC_REPLICA_SET of its own',
        setNames.length === sv.length && Object.values(sets).every((a) => a.length === 1), fmt(sets));
    // The sets are copies of each other but for their name and replica set.
    const norm = (g) => {
        let s = JSON.stringify(g.sts).split(`"${g.name}"`).join('"@NAME"');
        const rs = envValue(g.c, 'SLIMVEC_REPLICA_SET');
        if (rs) s = s.split(`"${rs}"`).join('"@SET"');
        return JSON.parse(s);
    };
    const drift = sv.slice(1).map((g) => [g.name, diffPaths(norm(sv[0]), norm(g), 'StatefulSet', [])])
        .filter(([, d]) => d.length);
    check(`slimvecd StatefulSets differ only in their name and replica set (${sv.map((g) => g.name).join(', ')})`,
        drift.length === 0, drift.map(([n, d]) => `${n}: ${d.join('; ')}`).join(' | '));

    for (const g of [nats, etcd]) {
        const req = ((g.pod.affinity || {}).podAntiAffinity || {}).requiredDuringSchedulingIgnoredDuringExecution || [];
        check(`${g.name}: required pod anti-affinity on kubernetes.io/hostname against its own pods (a node lost costs one vote)`,
            req.some((t) => t.topologyKey === 'kubernetes.io/hostname' && selects(t.labelSelector, g.labels)), fmt(req));
    }

    // --- Certificates: issued within the bundle, for the client Services
    const clientSvcs = svcs.filter((s) => s.spec.clusterIP !== 'None' && sv.some((g) => subset(s.spec.selector, g.labels)));
    for (const cert of serverCerts) {
        const issuer = cert.spec.issuerRef || {};
        check(`Certificate ${cert.metadata.name} is issued by an Issuer of the bundle`,
            (issuer.kind || 'Issuer') === 'Issuer' && of('Issuer').some((i) => i.metadata.name === issuer.name), fmt(issuer));
        check(`Certificate ${cert.metadata.name} names the client Services (${clientSvcs.map((x) => x.metadata.name)})`,
            clientSvcs.length > 0 && clientSvcs.every((x) => (cert.spec.dnsNames || []).includes(x.metadata.name)),
            fmt(cert.spec.dnsNames));
    }

    // --- PodDisruptionBudgets
    const pdbs = of('PodDisruptionBudget');
    const covering = (g) => pdbs.filter((p) => selects((p.spec || {}).selector, g.labels));
    const podsUnder = (p) => groups.filter((h) => selects(p.spec.selector, h.labels)).reduce((a, h) => a + h.replicas, 0);
    for (const p of pdbs) {
        check(`PodDisruptionBudget ${p.metadata.name} selects pods of the bundle`,
            groups.some((g) => selects((p.spec || {}).selector, g.labels)), fmt(p.spec && p.spec.selector));
    }
    for (const g of groups) {
        const cov = covering(g);
        check(`${g.name}: under exactly one PodDisruptionBudget (the eviction API refuses a pod under several)`,
            cov.length === 1, fmt(cov.map((p) => p.metadata.name)));
    }
    for (const g of [nats, etcd]) {
        const cov = covering(g);
        const allowed = cov.length === 1 ? disruptionsAllowed(cov[0].spec, podsUnder(cov[0])) : NaN;
        const quorum = Math.floor(g.replicas / 2) + 1;
        check(`${g.name}: its budget allows 1 to ${g.replicas - quorum} evictions (a drain proceeds, a quorum of ${quorum} stays)`,
            allowed >= 1 && allowed <= g.replicas - quorum, `allowed ${allowed}`);
    }
    const S = Number(envValue(sv[0].c, 'SLIMVEC_SHARDS'));
    for (let k = 0; k < (Number.isInteger(S) && S > 0 && S < 1000 ? S : 0); k++) {
        const reps = sv.filter((g) => g.pods.includes(`${g.name}-${k}`));
        const under = reps.map((g) => covering(g).map((p) => p.metadata.name).sort().join(','));
        const one = reps.length > 0 && under.every((u) => u && u === under[0] && !u.includes(','));
        const pdb = one ? covering(reps[0])[0] : null;
        const allowed = pdb ? disruptionsAllowed(pdb.spec, podsUnder(pdb)) : NaN;
        check(`shard ${k} keeps a live replica through voluntary disruptions (its ${reps.length} replicas under ` +
            `one budget allowing 1 to ${reps.length - 1} evictions)`, one && allowed >= 1 && allowed <= reps.length - 1,
        `budgets of its replicas: ${fmt(under)}, evictions allowed ${allowed}`);
    }

    // --- NetworkPolicies: who reaches which port
    const nps = of('NetworkPolicy');
    for (const p of nps) {
        const spec = p.spec || {};
        check(`NetworkPolicy ${p.metadata.name} selects pods of the bundle`,
            groups.some((g) => selects(spec.podSelector, g.labels)), fmt(spec.podSelector));
        check(`NetworkPolicy ${p.metadata.name} has policyTypes [Ingress] (an Egress type without rules would cut the pods off DNS)`,
            fmt(spec.policyTypes) === '["Ingress"]', fmt(spec.policyTypes));
        const blind = (spec.ingress || []).flatMap((r) => r.from || [])
            .filter((f) => f.podSelector && !f.namespaceSelector && !groups.some((g) => selects(f.podSelector, g.labels)));
        check(`NetworkPolicy ${p.metadata.name}: every podSelector it admits selects pods of the bundle`,
            blind.length === 0, fmt(blind));
    }
    const expand = (kinds) => new Set(kinds.flatMap((k) => (k === '*' ? ['*'] : groups.filter((g) => g.kind === k).map((g) => g.name))));
    for (const g of groups) {
        const want = CLUSTER_INGRESS[g.kind] || {};
        const on = nps.filter((p) => selects((p.spec || {}).podSelector, g.labels) &&
            (p.spec.policyTypes || ['Ingress']).includes('Ingress'));
        check(`${g.name}: selected by a NetworkPolicy (else every port is open to every pod)`, on.length > 0,
            'no NetworkPolicy selects its pods');
        for (const port of g.c.ports || []) {
            const got = new Set(on.length ? [] : ['*']);
            for (const p of on) {
                for (const rule of p.spec.ingress || []) {
                    const hits = !rule.ports || !rule.ports.length || rule.ports.some((rp) => rp.port === undefined ||
                        (typeof rp.port === 'string' ? rp.port === port.name
                            : rp.endPort ? rp.port <= port.containerPort && port.containerPort <= rp.endPort
                                : rp.port === port.containerPort));
                    if (!hits) continue;
                    if (!rule.from || !rule.from.length) got.add('*');
                    for (const f of rule.from || []) {
                        if (f.ipBlock) got.add(`addresses ${f.ipBlock.cidr}`);
                        else if (f.namespaceSelector) got.add('pods of other namespaces');
                        else if (f.podSelector) {
                            const sel = f.podSelector;
                            if (!Object.keys(sel.matchLabels || {}).length && !(sel.matchExpressions || []).length) {
                                got.add('every pod of the namespace');
                            }
                            for (const h of groups) if (selects(sel, h.labels)) got.add(h.name);
                        }
                    }
                }
            }
            const exp = expand(want[port.name] || []);
            const ok = exp.has('*') ? got.has('*') : got.size === exp.size && [...exp].every((x) => got.has(x));
            check(`${g.name}: port ${port.name} (${port.containerPort}) admits ` +
                `${exp.has('*') ? 'anyone' : exp.size ? `exactly ${[...exp].join(', ')}` : 'no pod'}`,
            ok, `admits ${[...got].join(', ') || 'no pod'}`);
        }
    }

    // --- NATS: the production configuration, JetStream synced, routes
    const nc = nats.c;
    const argv = [...(nc.command || []), ...(nc.args || [])].map(String);
    let confPath;
    argv.forEach((a, i) => {
        if (a === '--config' || a === '-c') confPath = argv[i + 1];
        else if (/^--?c(onfig)?=/.test(a)) confPath = a.slice(a.indexOf('=') + 1);
    });
    const confMount = (nc.volumeMounts || []).find((m) => underDir(confPath, m.mountPath));
    const confVol = confMount && (nats.pod.volumes || []).find((v) => v.name === confMount.name);
    const cm = confVol && confVol.configMap && of('ConfigMap').find((x) => x.metadata.name === confVol.configMap.name);
    const key = cm ? confPath.slice(confMount.mountPath.replace(/\/?$/, '/').length) : undefined;
    const confText = cm && cm.data && Object.prototype.hasOwnProperty.call(cm.data, key) ? cm.data[key] : undefined;
    check(`nats: its --config (${confPath}) is a key of a ConfigMap of the bundle, mounted read-only`,
        confText !== undefined && confMount.readOnly === true, `mount ${fmt(confMount)} volume ${fmt(confVol)}`);
    const prod = b.natsConf === undefined ? null : settingLines(b.natsConf);
    let j = 0;
    for (const l of settingLines(confText || '')) if (prod && j < prod.length && l === prod[j]) j++;
    check('nats: the configuration has every setting of deploy/cluster/nats-server.conf, in order',
        prod && prod.length > 0 && j === prod.length, prod ? `first missing: ${fmt(prod[j])}` : `${NATS_CONF} not found`);
    let conf = null;
    let perr = '';
    try {
        conf = parseNatsConf(confText || '');
    } catch (e) {
        perr = e.message;
    }
    check('nats: the configuration parses', conf && !perr, perr);
    conf = conf || {};
    const js = conf.jetstream;
    check('nats: JetStream on, fsyncing each write before acknowledging it (jetstream { sync_interval: always })',
        js && typeof js === 'object' && js.sync_interval === 'always', `jetstream ${fmt(js)}`);
    const natsData = (nc.volumeMounts || []).find((m) => (nats.spec.volumeClaimTemplates || []).some((v) => v.metadata.name === m.name));
    check('nats: jetstream store_dir is on its volume', js && natsData && underDir(`${js.store_dir}/`, natsData.mountPath),
        `store_dir ${fmt(js && js.store_dir)} volume at ${fmt(natsData && natsData.mountPath)}`);
    const sn = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(String(conf.server_name || ''));
    const snEnv = sn && (nc.env || []).find((e) => e.name === sn[1]);
    check('nats: server_name is the pod name (a variable from metadata.name: stable, as JetStream requires)',
        snEnv && snEnv.valueFrom && snEnv.valueFrom.fieldRef && snEnv.valueFrom.fieldRef.fieldPath === 'metadata.name',
        `server_name ${fmt(conf.server_name)} ${fmt(snEnv)}`);
    check('nats: listen, http and cluster.listen are on the client, monitor and cluster container ports',
        portOf(conf.listen) === portOfC(nats, 'client') && portOf(conf.http) === portOfC(nats, 'monitor') &&
        !!conf.cluster && portOf(conf.cluster.listen) === portOfC(nats, 'cluster'),
        `listen ${fmt(conf.listen)} http ${fmt(conf.http)} cluster ${fmt(conf.cluster && conf.cluster.listen)}`);
    const routes = conf.cluster && Array.isArray(conf.cluster.routes) ? conf.cluster.routes.join(',') : '';
    const rerr = namesEveryPod(routes, nats, ns, portOfC(nats, 'cluster'), ['nats-route', 'nats', 'tls']);
    check(`nats: cluster routes name every server (${nats.pods.join(', ')}) by its stable name on the cluster port`, !rerr, rerr);
    const pre = ((((nc.lifecycle || {}).preStop || {}).exec || {}).command || []).map(String);
    const pid = conf.pid_file;
    check('nats: preStop puts the server in lame duck mode through its pid_file, on a writable volume',
        typeof pid === 'string' && pre.some((a) => a.endsWith(`ldm=${pid}`)) &&
        (nc.volumeMounts || []).some((m) => !m.readOnly && underDir(pid, m.mountPath)),
        `pid_file ${fmt(pid)} preStop ${fmt(pre)}`);
    const ldGrace = goSeconds(conf.lame_duck_grace_period, 10);
    const ldDur = goSeconds(conf.lame_duck_duration, 120);
    const natsTgps = nats.pod.terminationGracePeriodSeconds === undefined ? 30 : nats.pod.terminationGracePeriodSeconds;
    check(`nats: lame duck grace (${ldGrace} s) + duration (${ldDur} s) < terminationGracePeriodSeconds (${natsTgps})`,
        ldGrace + ldDur < natsTgps, fmt({ lame_duck_grace_period: conf.lame_duck_grace_period, lame_duck_duration: conf.lame_duck_duration }));
    check(`nats: image is nats ${NATS_MIN.join('.')} or later (sync_interval)`,
        versionAtLeast(imageVersion(nc.image, NATS_IMAGE), NATS_MIN), fmt(nc.image));
    const httpProbe = (g, k, port, re) => {
        const h = (g.c[k] || {}).httpGet;
        return !!h && (h.port === port || h.port === portOfC(g, port)) && re.test(String(h.path));
    };
    const PROBES = ['startupProbe', 'readinessProbe', 'livenessProbe'];
    check('nats: startup, readiness and liveness probes are HTTP /healthz on the monitor port',
        PROBES.every((k) => httpProbe(nats, k, 'monitor', /^\/healthz(\?|$)/)), fmt(PROBES.map((k) => nc[k])));
    check('nats: the liveness probe asks /healthz?js-enabled-only=true (a server catching up must not be restarted)',
        httpProbe(nats, 'livenessProbe', 'monitor', /^\/healthz\?(.*&)?js-enabled-only=true(&|$)/), fmt(nc.livenessProbe));

    // --- etcd: static bootstrap from the members' stable names
    const ec = etcd.c;
    check(`etcd: image is an official etcd ${ETCD_MIN.join('.')} or later`,
        versionAtLeast(imageVersion(ec.image, ETCD_IMAGE), ETCD_MIN), fmt(ec.image));
    // Flags from ETCD_* variables and from the arguments (which win).
    const flagsFor = (pod) => {
        const env = podEnv(ec, pod, ns);
        const f = {};
        for (const [k, v] of Object.entries(env)) {
            if (k.startsWith('ETCD_') && v !== undefined) f[k.slice(5).toLowerCase().replace(/_/g, '-')] = v;
        }
        const args = [...(ec.command || []).slice(1), ...(ec.args || [])]
            .map((a) => String(a).replace(VAR_REF, (m, k) => (env[k] !== undefined ? env[k] : m)));
        for (let i = 0; i < args.length; i++) {
            const m = /^--?([a-z0-9-]+)(?:=(.*))?$/.exec(args[i]);
            if (!m) continue;
            if (m[2] !== undefined) f[m[1]] = m[2];
            else if (i + 1 < args.length && !args[i + 1].startsWith('-')) f[m[1]] = args[++i];
            else f[m[1]] = 'true';
        }
        return f;
    };
    const errIC = [];
    const errAdv = [];
    const eSvc = etcd.spec.serviceName;
    for (const p of etcd.pods) {
        const f = flagsFor(p);
        if (f.name !== p) errIC.push(`${p}: --name ${fmt(f.name)}`);
        const entries = String(f['initial-cluster'] || '').split(',').filter(Boolean)
            .map((x) => [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)]);
        const names = entries.map((e) => e[0]);
        if (names.length !== etcd.pods.length || !etcd.pods.every((q) => names.includes(q))) {
            errIC.push(`${p}: members ${fmt(names)}`);
        }
        for (const [n, url] of entries) {
            const a = hostPort(url);
            if (!a || !/^https?$/.test(a.scheme || '') || a.port !== portOfC(etcd, 'peer') || !stableName(a.host, n, eSvc, ns)) {
                errIC.push(`${p}: ${n}=${url}`);
            }
        }
        const mine = entries.find((e) => e[0] === p);
        if (!mine || f['initial-advertise-peer-urls'] !== mine[1]) {
            errAdv.push(`${p} advertises ${fmt(f['initial-advertise-peer-urls'])}, --initial-cluster says ${fmt(mine && mine[1])}`);
        }
        const ac = hostPort(f['advertise-client-urls'] || '');
        if (!ac || ac.port !== portOfC(etcd, 'client') || !stableName(ac.host, p, eSvc, ns)) {
            errAdv.push(`${p}: --advertise-client-urls ${fmt(f['advertise-client-urls'])}`);
        }
        if (portOf(f['listen-peer-urls']) !== portOfC(etcd, 'peer') || portOf(f['listen-client-urls']) !== portOfC(etcd, 'client')) {
            errAdv.push(`${p}: listens on ${fmt(f['listen-client-urls'])} and ${fmt(f['listen-peer-urls'])}`);
        }
    }
    check(`etcd: --name is the pod name and --initial-cluster names the ${etcd.pods.length} members by their stable names on the peer port`,
        etcd.pods.length > 0 && errIC.length === 0, errIC.join(' | '));
    check('etcd: each member advertises its --initial-cluster URL and its stable name, listening on the client and peer ports',
        errAdv.length === 0, errAdv.join(' | '));
    const f0 = flagsFor(etcd.pods[0] || `${etcd.name}-0`);
    check('etcd: --initial-cluster-state new (static bootstrap)', f0['initial-cluster-state'] === 'new',
        fmt(f0['initial-cluster-state']));
    const eData = (ec.volumeMounts || []).find((m) => (etcd.spec.volumeClaimTemplates || []).some((v) => v.metadata.name === m.name));
    check('etcd: --data-dir is on its volume', eData && underDir(f0['data-dir'], eData.mountPath),
        `data-dir ${fmt(f0['data-dir'])} volume at ${fmt(eData && eData.mountPath)}`);
    const quota = f0['quota-backend-bytes'] === undefined ? 2 * 2 ** 30 : Number(f0['quota-backend-bytes']);
    const eLimit = quantity(ec.resources && ec.resources.limits && ec.resources.limits.memory);
    const eVct = (etcd.spec.volumeClaimTemplates || [])[0];
    const eStore = quantity(eVct && eVct.spec.resources && eVct.spec.resources.requests && eVct.spec.resources.requests.storage);
    check(`etcd: the backend quota (${quota} B, memory-mapped) is below limits.memory and the volume`,
        quota > 0 && quota < eLimit && quota < eStore, `limits.memory ${eLimit} volume ${eStore}`);
    check('etcd: startup, readiness and liveness probes are HTTP /health on the client port',
        PROBES.every((k) => httpProbe(etcd, k, 'client', /^\/health(\?|$)/)), fmt(PROBES.map((k) => ec[k])));
    check('etcd: startup and liveness probes ask this member alone (serializable=true: a lost quorum must not restart them all)',
        ['startupProbe', 'livenessProbe'].every((k) => httpProbe(etcd, k, 'client', /^\/health\?(.*&)?serializable=true(&|$)/)),
        fmt([ec.startupProbe, ec.livenessProbe]));

    // kustomize images: each entry must name an image in use, or it retags nothing.
    const used = groups.map((g) => String(g.c.image || '').replace(/@.*$/, '').replace(/:[^/:]*$/, ''));
    const kimages = Array.isArray(kz.images) ? kz.images : [];
    check(`kustomization images: each names a container image (${[...new Set(used)].join(', ')})`,
        kimages.length > 0 && kimages.every((i) => used.includes(i.name)), fmt(kimages));

    return results;
}

// ------------------------------------------------- negative self-test

const clone = (x) => JSON.parse(JSON.stringify(x));
const stsOf = (b) => Object.values(b.files).flat().find((o) => o.kind === 'StatefulSet');
const ctrOf = (b) => stsOf(b).spec.template.spec.containers.find((c) => c.name === 'slimvecd');
const envOf = (b, n) => ctrOf(b).env.find((e) => e.name === n);
const objOf = (b, kind, name) => Object.values(b.files).flat().find((o) => o.kind === kind && o.metadata.name === name);

// [what is broken, mutation, regex of the check that must fail]
const BREAKAGES = [
    ['misspelled container field (imagePullPolicyy)',
        (b) => { ctrOf(b).imagePullPolicyy = 'Always'; }, /StatefulSet\/slimvec: no unknown fields/],
    ['misspelled field deep in a probe (httpGet.paht)',
        (b) => { ctrOf(b).livenessProbe.httpGet.paht = '/healthz'; }, /StatefulSet\/slimvec: no unknown fields/],
    ['misspelled Service spec field (selectr)',
        (b) => { const s = objOf(b, 'Service', 'slimvec').spec; s.selectr = s.selector; },
        /Service\/slimvec: no unknown fields/],
    ['string where an integer is required (containerPort "50051")',
        (b) => { ctrOf(b).ports[0].containerPort = '50051'; }, /StatefulSet\/slimvec: valid against the/],
    ['string where an integer is required (terminationGracePeriodSeconds "60")',
        (b) => { stsOf(b).spec.template.spec.terminationGracePeriodSeconds = '60'; },
        /StatefulSet\/slimvec: valid against the/],
    ['HTTP probe without a port',
        (b) => { delete ctrOf(b).readinessProbe.httpGet.port; }, /StatefulSet\/slimvec: valid against the/],
    ['wrong enum value (imagePullPolicy Sometimes)',
        (b) => { ctrOf(b).imagePullPolicy = 'Sometimes'; }, /StatefulSet\/slimvec: valid against the/],
    ['unknown apiVersion (apps/v2)',
        (b) => { stsOf(b).apiVersion = 'apps/v2'; }, /kubernetes-models has apps\/v2 StatefulSet/],
    ['readiness probe on gRPC (no TLS in kubelet gRPC probes)',
        (b) => { ctrOf(b).readinessProbe = { grpc: { port: 50051 } }; }, /readinessProbe is an HTTP \/readyz probe/],
    ['readiness probe on /healthz (stays 200 while draining)',
        (b) => { ctrOf(b).readinessProbe.httpGet.path = '/healthz'; }, /readinessProbe is an HTTP \/readyz probe/],
    ['startup probe on the gRPC port',
        (b) => { ctrOf(b).startupProbe.httpGet.port = 'grpc'; }, /startupProbe is an HTTP \/healthz probe/],
    ['an HTTP probe on the TLS metrics port',
        (b) => { ctrOf(b).livenessProbe.httpGet.scheme = 'HTTP'; }, /livenessProbe is an HTTP \/healthz probe/],
    ['the metrics token in clear text (metrics TLS off)',
        (b) => { envOf(b, 'SLIMVEC_METRICS_TLS').value = 'off'; }, /\/metrics tokens travel over TLS/],
    ['TLS key outside the Secret volume',
        (b) => { envOf(b, 'SLIMVEC_TLS_KEY').value = '/tmp/tls.key'; }, /SLIMVEC_TLS_CERT and SLIMVEC_TLS_KEY are files/],
    ['TLS Secret mounted read-write',
        (b) => { ctrOf(b).volumeMounts.find((m) => m.name === 'tls').readOnly = false; },
        /SLIMVEC_TLS_CERT and SLIMVEC_TLS_KEY are files/],
    ['TLS Secret no Certificate writes',
        (b) => { stsOf(b).spec.template.spec.volumes.find((v) => v.name === 'tls').secret.secretName = 'tls'; },
        /the TLS Secret is written by a cert-manager Certificate/],
    ['server Certificate without the Service name',
        (b) => { objOf(b, 'Certificate', 'slimvec-tls').spec.dnsNames = ['slimvec-headless']; },
        /Certificate slimvec-tls names the Services/],
    ['server Certificate issued by an Issuer not in the bundle',
        (b) => { objOf(b, 'Certificate', 'slimvec-tls').spec.issuerRef.name = 'letsencrypt'; },
        /Certificate slimvec-tls is issued by an Issuer of the bundle/],
    ['misspelled Certificate field (dnsName)',
        (b) => { objOf(b, 'Certificate', 'slimvec-tls').spec.dnsName = ['x']; },
        /Certificate\/slimvec-tls: no unknown fields/],
    ['tokens file not from a Secret',
        (b) => { envOf(b, 'SLIMVEC_TOKENS_FILE').value = '/var/lib/slimvec/tokens'; },
        /SLIMVEC_TOKENS_FILE is a file of a read-only Secret volume/],
    ['startup budget too short for recovery',
        (b) => { ctrOf(b).startupProbe.failureThreshold = 3; }, /startupProbe allows recovery/],
    ['client Service selector does not match the pods',
        (b) => { objOf(b, 'Service', 'slimvec').spec.selector['app.kubernetes.io/name'] = 'slimvecd'; },
        /Service slimvec selector matches/],
    ['headless Service name differs from serviceName',
        (b) => { stsOf(b).spec.serviceName = 'slimvec-hl'; }, /headless Service named serviceName/],
    ['targetPort names no container port',
        (b) => { objOf(b, 'Service', 'slimvec').spec.ports[0].targetPort = 'gprc'; },
        /Service slimvec port grpc targetPort "gprc" names a container port/],
    ['volumeMount name differs from the volumeClaimTemplate',
        (b) => { ctrOf(b).volumeMounts[0].name = 'slimvec-data'; }, /a volumeClaimTemplate is mounted/],
    ['SLIMVEC_DATA_DIR differs from the mount path',
        (b) => { envOf(b, 'SLIMVEC_DATA_DIR').value = '/data'; }, /SLIMVEC_DATA_DIR equals/],
    ['SLIMVEC_MEMORY_LIMIT from requests.memory',
        (b) => { envOf(b, 'SLIMVEC_MEMORY_LIMIT').valueFrom.resourceFieldRef.resource = 'requests.memory'; },
        /SLIMVEC_MEMORY_LIMIT comes from/],
    ['SLIMVEC_MEMORY_LIMIT as a fixed value',
        (b) => { envOf(b, 'SLIMVEC_MEMORY_LIMIT').value = '2147483648'; delete envOf(b, 'SLIMVEC_MEMORY_LIMIT').valueFrom; },
        /SLIMVEC_MEMORY_LIMIT comes from/],
    ['memory request below the limit',
        (b) => { ctrOf(b).resources.requests.memory = '1Gi'; }, /memory request == memory limit/],
    ['SLIMVEC_MEMORY_CAP 100%',
        (b) => { envOf(b, 'SLIMVEC_MEMORY_CAP').value = '100%'; }, /SLIMVEC_MEMORY_CAP is a percentage/],
    ['SLIMVEC_MEMORY_CAP in bytes',
        (b) => { envOf(b, 'SLIMVEC_MEMORY_CAP').value = '1717986918'; }, /SLIMVEC_MEMORY_CAP is a percentage/],
    ['terminationGracePeriodSeconds without room for the shutdown snapshots',
        (b) => { stsOf(b).spec.template.spec.terminationGracePeriodSeconds = 30; },
        /terminationGracePeriodSeconds \(30\) > preStop/],
    ['terminationGracePeriodSeconds not above SLIMVEC_GRACE',
        (b) => { stsOf(b).spec.template.spec.terminationGracePeriodSeconds = 20; },
        /terminationGracePeriodSeconds \(20\) > preStop/],
    ['runAsNonRoot removed',
        (b) => { delete stsOf(b).spec.template.spec.securityContext.runAsNonRoot; delete ctrOf(b).securityContext.runAsNonRoot; },
        /runs as non-root/],
    ['readOnlyRootFilesystem false',
        (b) => { ctrOf(b).securityContext.readOnlyRootFilesystem = false; }, /readOnlyRootFilesystem is true/],
    ['allowPrivilegeEscalation true',
        (b) => { ctrOf(b).securityContext.allowPrivilegeEscalation = true; }, /allowPrivilegeEscalation is false/],
    ['capabilities not dropped',
        (b) => { ctrOf(b).securityContext.capabilities.drop = ['NET_RAW']; }, /capabilities: drop ALL/],
    ['prometheus.io/port not the metrics port',
        (b) => { stsOf(b).spec.template.metadata.annotations['prometheus.io/port'] = '9090'; },
        /prometheus.io\/port equals/],
    ['SLIMVEC_METRICS_LISTEN on another port',
        (b) => { envOf(b, 'SLIMVEC_METRICS_LISTEN').value = '0.0.0.0:9465'; },
        /SLIMVEC_METRICS_LISTEN's port equals/],
    ['SLIMVEC_LISTEN on another port',
        (b) => { envOf(b, 'SLIMVEC_LISTEN').value = '0.0.0.0:50052'; }, /SLIMVEC_LISTEN's port equals/],
    ['SLIMVEC_LISTEN on loopback',
        (b) => { envOf(b, 'SLIMVEC_LISTEN').value = '127.0.0.1:50051'; }, /SLIMVEC_LISTEN's port equals/],
    ['misspelled SLIMVEC_* variable',
        (b) => { envOf(b, 'SLIMVEC_GRACE').name = 'SLIMVEC_GRACE_SECONDS'; },
        /every SLIMVEC_\* variable is an option/],
    ['service links enabled',
        (b) => { delete stsOf(b).spec.template.spec.enableServiceLinks; }, /enableServiceLinks is false/],
    ['PDB minAvailable 1 with one replica (blocks drains)',
        (b) => { const s = objOf(b, 'PodDisruptionBudget', 'slimvec').spec; delete s.maxUnavailable; s.minAvailable = 1; },
        /lets a node drain evict a pod/],
    ['resource file not listed in kustomization.yaml',
        (b) => { b.kustomization.resources = b.kustomization.resources.filter((r) => r !== 'pdb.yaml'); },
        /every YAML file in deploy\/k8s is listed/],
    ['kustomization lists a file that does not exist',
        (b) => { b.kustomization.resources.push('configmap.yaml'); }, /every resource listed in kustomization.yaml exists/],
    ['kustomization images: names another image',
        (b) => { b.kustomization.images[0].name = 'slimvecd'; }, /kustomization images: names the container image/],
];


// The cluster's: the same kind of list, on deploy/k8s/cluster.
const objIn = (b, kind, name) => Object.values(b.files).flat().find((o) => o && o.kind === kind && o.metadata.name === name);
const podIn = (b, sts) => objIn(b, 'StatefulSet', sts).spec.template.spec;
const ctrIn = (b, sts, name) => podIn(b, sts).containers.find((c) => c.name === name);
const envIn = (b, sts, ctr, n) => ctrIn(b, sts, ctr).env.find((e) => e.name === n);
const r0Env = (b, n) => envIn(b, 'slimvec-r0', 'slimvecd', n);
const bothEnv = (b, n, f) => ['slimvec-r0', 'slimvec-r1'].forEach((s) => f(envIn(b, s, 'slimvecd', n)));
const natsConfIn = (b) => objIn(b, 'ConfigMap', 'nats-config').data;
const setNatsConf = (b, f) => { const d = natsConfIn(b); d['nats-server.conf'] = f(d['nats-server.conf']); };
const npIn = (b, name) => objIn(b, 'NetworkPolicy', name).spec;
const antiIn = (b, sts) => podIn(b, sts).affinity.podAntiAffinity;

const CLUSTER_BREAKAGES = [
    ['misspelled NetworkPolicy field (podSelectr)',
        (b) => { const s = npIn(b, 'nats'); s.podSelectr = s.podSelector; }, /NetworkPolicy\/nats: no unknown fields/],
    ['SLIMVEC_CLUSTER_NATS without nats-2',
        (b) => bothEnv(b, 'SLIMVEC_CLUSTER_NATS', (e) => { e.value = e.value.split(',').slice(0, 2).join(','); }),
        /slimvec-r0: SLIMVEC_CLUSTER_NATS names every NATS server/],
    ['SLIMVEC_CLUSTER_NATS through the wrong Service (nats-0.etcd)',
        (b) => bothEnv(b, 'SLIMVEC_CLUSTER_NATS', (e) => { e.value = e.value.replace('nats-0.nats.', 'nats-0.etcd.'); }),
        /slimvec-r0: SLIMVEC_CLUSTER_NATS names every NATS server/],
    ['SLIMVEC_CLUSTER_ETCD on the peer port',
        (b) => bothEnv(b, 'SLIMVEC_CLUSTER_ETCD', (e) => { e.value = e.value.replace(/:2379/g, ':2380'); }),
        /slimvec-r0: SLIMVEC_CLUSTER_ETCD names every etcd member/],
    ['SLIMVEC_CLUSTER_ETCD as http:// URLs (slimvecd takes host:port)',
        (b) => bothEnv(b, 'SLIMVEC_CLUSTER_ETCD', (e) => { e.value = e.value.split(',').map((x) => `http://${x}`).join(','); }),
        /slimvec-r0: SLIMVEC_CLUSTER_ETCD names every etcd member/],
    ['two StatefulSets claiming replica set r0',
        (b) => { envIn(b, 'slimvec-r1', 'slimvecd', 'SLIMVEC_REPLICA_SET').value = 'r0'; },
        /every slimvecd StatefulSet has a SLIMVEC_REPLICA_SET of its own/],
    ['SLIMVEC_SHARDS 3 with 2 pods per set',
        (b) => bothEnv(b, 'SLIMVEC_SHARDS', (e) => { e.value = '3'; }), /slimvec-r0: replicas \(2\) == SLIMVEC_SHARDS/],
    ['SLIMVEC_SHARD fixed in the template',
        (b) => { ctrIn(b, 'slimvec-r0', 'slimvecd').env.push({ name: 'SLIMVEC_SHARD', value: '0' }); },
        /slimvec-r0: SLIMVEC_SHARD is unset/],
    ['SLIMVEC_POD_NAME from metadata.uid',
        (b) => { r0Env(b, 'SLIMVEC_POD_NAME').valueFrom.fieldRef.fieldPath = 'metadata.uid'; },
        /slimvec-r0: SLIMVEC_POD_NAME comes from the downward API/],
    ['SLIMVEC_ADVERTISE through the client Service',
        (b) => { r0Env(b, 'SLIMVEC_ADVERTISE').value = '$(SLIMVEC_POD_NAME).slimvec.$(POD_NAMESPACE).svc.cluster.local:50051'; },
        /slimvec-r0: SLIMVEC_ADVERTISE is the pod's stable name/],
    ['SLIMVEC_ADVERTISE before the variables it uses',
        (b) => {
            const env = ctrIn(b, 'slimvec-r0', 'slimvecd').env;
            const i = env.findIndex((e) => e.name === 'POD_NAMESPACE');
            env.push(env.splice(i, 1)[0]);
        }, /slimvec-r0: every \$\(VAR\) in the env refers to a variable defined above it/],
    ['certificate without the namespace wildcard',
        (b) => { const c = objIn(b, 'Certificate', 'slimvec-tls').spec; c.dnsNames = c.dnsNames.filter((n) => !n.endsWith('.svc.cluster.local')); },
        /slimvec-r0: the server certificate covers every advertised name/],
    ['namespace changed without the certificate',
        (b) => { b.kustomization.namespace = 'vectors'; }, /slimvec-r0: the server certificate covers every advertised name/],
    ['SLIMVEC_PEER_CA removed (routers could not verify the replicas)',
        (b) => ['slimvec-r0', 'slimvec-r1'].forEach((s) => {
            const c = ctrIn(b, s, 'slimvecd');
            c.env = c.env.filter((e) => e.name !== 'SLIMVEC_PEER_CA');
        }), /slimvec-r0: SLIMVEC_PEER_CA is a file of the TLS Secret/],
    ['SLIMVEC_PEER_TOKEN written into the manifest',
        (b) => { const e = r0Env(b, 'SLIMVEC_PEER_TOKEN'); delete e.valueFrom; e.value = 'secret'; },
        /slimvec-r0: SLIMVEC_PEER_TOKEN comes from a Secret/],
    ['SLIMVEC_PEER_TOKEN from an optional Secret (pods start without it)',
        (b) => { r0Env(b, 'SLIMVEC_PEER_TOKEN').valueFrom.secretKeyRef.optional = true; },
        /slimvec-r0: SLIMVEC_PEER_TOKEN comes from a Secret/],
    ['SLIMVEC_STREAM_REPLICAS above the NATS servers',
        (b) => bothEnv(b, 'SLIMVEC_STREAM_REPLICAS', (e) => { e.value = '5'; }), /slimvec-r0: SLIMVEC_STREAM_REPLICAS \(5\)/],
    ['startup probe budget shorter than deploy/k8s',
        (b) => { ctrIn(b, 'slimvec-r0', 'slimvecd').startupProbe.failureThreshold = 30; },
        /slimvec-r0: keeps deploy\/k8s\/statefulset.yaml's pod spec/],
    ['memory limit of one replica set changed alone',
        (b) => { const r = ctrIn(b, 'slimvec-r1', 'slimvecd').resources; r.limits.memory = '4Gi'; r.requests.memory = '4Gi'; },
        /slimvecd StatefulSets differ only in their name and replica set/],
    ['anti-affinity only preferred',
        (b) => { const a = antiIn(b, 'slimvec-r0'); a.preferredDuringSchedulingIgnoredDuringExecution.push({ weight: 50, podAffinityTerm: a.requiredDuringSchedulingIgnoredDuringExecution[0] }); delete a.requiredDuringSchedulingIgnoredDuringExecution; },
        /slimvec-r0: required pod anti-affinity on kubernetes.io\/hostname against every slimvecd pod/],
    ['anti-affinity per zone instead of per node',
        (b) => { antiIn(b, 'slimvec-r0').requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey = 'topology.kubernetes.io/zone'; },
        /slimvec-r0: required pod anti-affinity on kubernetes.io\/hostname against every slimvecd pod/],
    ['anti-affinity against its own replica set only',
        (b) => { antiIn(b, 'slimvec-r0').requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchLabels['slimvec/replica-set'] = 'r0'; },
        /slimvec-r0: required pod anti-affinity on kubernetes.io\/hostname against every slimvecd pod/],
    ['zone preference that includes its own replica set',
        (b) => { antiIn(b, 'slimvec-r0').preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.labelSelector.matchExpressions = []; },
        /slimvec-r0: preferred zone anti-affinity against the other replica sets only/],
    ['overlapping StatefulSet selectors (no replica set in r1\'s)',
        (b) => { delete objIn(b, 'StatefulSet', 'slimvec-r1').spec.selector.matchLabels['slimvec/replica-set']; },
        /slimvec-r1: selector matches no other StatefulSet's pods/],
    ['a budget per replica set (both replicas of a shard evictable at once)',
        (b) => {
            const docs = b.files['slimvec.yaml'];
            const i = docs.findIndex((o) => o.kind === 'PodDisruptionBudget');
            docs.splice(i, 1, ...['r0', 'r1'].map((rs) => {
                const p = clone(docs[i]);
                p.metadata.name = `slimvec-${rs}`;
                p.spec.selector.matchLabels['slimvec/replica-set'] = rs;
                return p;
            }));
        }, /shard 0 keeps a live replica through voluntary disruptions/],
    ['etcd budget that lets the quorum go (minAvailable 1)',
        (b) => { objIn(b, 'PodDisruptionBudget', 'etcd').spec.minAvailable = 1; }, /etcd: its budget allows 1 to 1 evictions/],
    ['NATS budget selecting no pod',
        (b) => { objIn(b, 'PodDisruptionBudget', 'nats').spec.selector.matchLabels['app.kubernetes.io/name'] = 'nats-server'; },
        /PodDisruptionBudget nats selects pods of the bundle/],
    ['NATS client port open to every pod',
        (b) => { delete npIn(b, 'nats').ingress[0].from; }, /nats: port client \(4222\) admits exactly slimvec-r0, slimvec-r1/],
    ['NATS client port open to one replica set only',
        (b) => { npIn(b, 'nats').ingress[0].from[0].podSelector.matchLabels['slimvec/replica-set'] = 'r0'; },
        /nats: port client \(4222\) admits exactly slimvec-r0, slimvec-r1/],
    ['NATS monitoring port open to slimvecd',
        (b) => { npIn(b, 'nats').ingress[0].ports.push({ port: 'monitor', protocol: 'TCP' }); },
        /nats: port monitor \(8222\) admits no pod/],
    ['etcd peer port open to slimvecd',
        (b) => { npIn(b, 'etcd').ingress[0].ports.push({ port: 2380, protocol: 'TCP' }); },
        /etcd: port peer \(2380\) admits exactly etcd/],
    ['etcd client port open to other namespaces',
        (b) => { npIn(b, 'etcd').ingress[0].from.push({ namespaceSelector: {} }); },
        /etcd: port client \(2379\) admits exactly slimvec-r0, slimvec-r1/],
    ['NetworkPolicy selecting no pod (typo in the label)',
        (b) => { npIn(b, 'etcd').podSelector.matchLabels['app.kubernetes.io/name'] = 'etcd-server'; },
        /NetworkPolicy etcd selects pods of the bundle/],
    ['NetworkPolicy with an Egress type and no egress rules',
        (b) => { npIn(b, 'slimvec').policyTypes.push('Egress'); }, /NetworkPolicy slimvec has policyTypes \[Ingress\]/],
    ['sync_interval removed from the NATS configuration',
        (b) => setNatsConf(b, (t) => t.replace(/^\s*sync_interval: always\n/m, '')),
        /nats: JetStream on, fsyncing each write before acknowledging it/],
    ['sync_interval 2m (acknowledged writes not on disk)',
        (b) => setNatsConf(b, (t) => t.replace('sync_interval: always', 'sync_interval: 2m')),
        /nats: JetStream on, fsyncing each write before acknowledging it/],
    ['a setting of deploy/cluster/nats-server.conf dropped (http)',
        (b) => setNatsConf(b, (t) => t.replace(/^http: .*\n/m, '')),
        /nats: the configuration has every setting of deploy\/cluster\/nats-server.conf/],
    ['NATS routes without nats-2',
        (b) => setNatsConf(b, (t) => t.replace(/^.*nats-2\.nats:6222\n/m, '')), /nats: cluster routes name every server/],
    ['NATS store_dir off the volume',
        (b) => setNatsConf(b, (t) => t.replace('store_dir: /data/jetstream', 'store_dir: /tmp/jetstream')),
        /nats: jetstream store_dir is on its volume/],
    ['NATS lame duck longer than the grace period',
        (b) => setNatsConf(b, (t) => t.replace('lame_duck_duration: 30s', 'lame_duck_duration: 2m')),
        /nats: lame duck grace \(10 s\) \+ duration \(120 s\)/],
    ['NATS 2.9 (refuses sync_interval)',
        (b) => { ctrIn(b, 'nats', 'nats').image = 'nats:2.9.25-alpine'; }, /nats: image is nats 2.10.23 or later/],
    ['NATS liveness on the full /healthz',
        (b) => { ctrIn(b, 'nats', 'nats').livenessProbe.httpGet.path = '/healthz'; },
        /nats: the liveness probe asks \/healthz\?js-enabled-only=true/],
    ['NATS headless Service hides pods that are not ready',
        (b) => { objIn(b, 'Service', 'nats').spec.publishNotReadyAddresses = false; },
        /nats: serviceName "nats" is a headless Service/],
    ['etcd started one at a time (bootstrap waits for a quorum)',
        (b) => { objIn(b, 'StatefulSet', 'etcd').spec.podManagementPolicy = 'OrderedReady'; },
        /etcd: podManagementPolicy Parallel/],
    ['etcd --initial-cluster with two members',
        (b) => { const e = envIn(b, 'etcd', 'etcd', 'ETCD_INITIAL_CLUSTER'); e.value = e.value.split(',').slice(0, 2).join(','); },
        /etcd: --name is the pod name and --initial-cluster names the 3 members/],
    ['etcd --initial-cluster through the wrong Service',
        (b) => { const e = envIn(b, 'etcd', 'etcd', 'ETCD_INITIAL_CLUSTER'); e.value = e.value.replace(/\.etcd\./g, '.nats.'); },
        /etcd: --name is the pod name and --initial-cluster names the 3 members/],
    ['etcd advertising another peer URL than --initial-cluster',
        (b) => { envIn(b, 'etcd', 'etcd', 'ETCD_INITIAL_ADVERTISE_PEER_URLS').value = 'http://$(ETCD_NAME).etcd:2380'; },
        /etcd: each member advertises its --initial-cluster URL/],
    ['etcd flag on the command line overriding the environment (--name=etcd)',
        (b) => { ctrIn(b, 'etcd', 'etcd').command.push('--name=etcd'); },
        /etcd: --name is the pod name/],
    ['etcd liveness needing a quorum (/health)',
        (b) => { ctrIn(b, 'etcd', 'etcd').livenessProbe.httpGet.path = '/health'; },
        /etcd: startup and liveness probes ask this member alone/],
    ['etcd data dir off the volume',
        (b) => { envIn(b, 'etcd', 'etcd', 'ETCD_DATA_DIR').value = '/tmp/etcd'; }, /etcd: --data-dir is on its volume/],
    ['etcd quota above its memory limit',
        (b) => { envIn(b, 'etcd', 'etcd', 'ETCD_QUOTA_BACKEND_BYTES').value = '8589934592'; },
        /etcd: the backend quota \(8589934592 B/],
    ['etcd image not an official one',
        (b) => { ctrIn(b, 'etcd', 'etcd').image = 'bitnami/etcd:3.5.17'; }, /etcd: image is an official etcd/],
    ['NATS container running as root',
        (b) => { podIn(b, 'nats').securityContext.runAsUser = 0; }, /nats: runs as non-root/],
    ['GOMEMLIMIT above the NATS memory limit',
        (b) => { envIn(b, 'nats', 'nats', 'GOMEMLIMIT').value = '4GiB'; }, /nats: GOMEMLIMIT is below limits.memory/],
];

function selfTest(bundle, breakages, validate) {
    const out = [];
    for (const [what, mutate, expect] of breakages) {
        const b = clone(bundle);
        let failed = [];
        try {
            mutate(b);
            failed = validate(b).filter((r) => !r.ok);
        } catch (e) {
            out.push({ what, ok: false, detail: `the validator threw: ${e.stack}` });
            continue;
        }
        const hit = failed.find((r) => expect.test(r.name));
        out.push({
            what, ok: !!hit,
            detail: hit ? `${hit.name}: ${hit.detail}`
                : `not caught by ${expect}; failed: ${failed.map((r) => r.name).join(' | ') || 'nothing'}`,
        });
    }
    return out;
}

// ------------------------------------------------------------------ main

function main() {
    console.log(`deploy/k8s validation (${ROOT}), kubernetes-models ` +
        `${require('kubernetes-models/package.json').version} (Kubernetes 1.27 schemas), cert-manager models ` +
        `${require('@kubernetes-models/cert-manager/package.json').version}, ` +
        `yaml ${require('yaml/package.json').version}, typescript ${ts.version}`);
    let bad = 0;
    let checks = 0;
    const report = (rs) => {
        for (const r of rs) {
            console.log(r.ok ? `ok   ${r.name}` : `FAIL ${r.name}: ${r.detail}`);
            checks++;
            if (!r.ok) bad++;
        }
    };
    const caught = (rs) => {
        for (const r of rs) {
            console.log(r.ok ? `ok   caught: ${r.what} -> ${r.detail}` : `FAIL not caught: ${r.what}: ${r.detail}`);
            if (!r.ok) bad++;
        }
    };
    let single;
    let cluster;
    try {
        single = readBundle(K8S_DIR);
        cluster = readBundle(CLUSTER_DIR);
        cluster.natsConf = fs.existsSync(NATS_CONF) ? fs.readFileSync(NATS_CONF, 'utf8') : undefined;
    } catch (e) {
        console.log(`FAIL reading the manifests: ${e.message}`);
        process.exit(1);
    }
    report(validateBundle(single));
    const validateC = (b) => validateCluster(b, single);
    report(validateC(cluster));
    console.log(`negative self-test: ${BREAKAGES.length} broken copies of deploy/k8s and ` +
        `${CLUSTER_BREAKAGES.length} of deploy/k8s/cluster, each must fail its check`);
    caught(selfTest(single, BREAKAGES, validateBundle));
    caught(selfTest(cluster, CLUSTER_BREAKAGES, validateC));
    console.log(bad ? `${bad} check(s) FAILED` : `all checks passed (${checks} checks, ` +
        `${BREAKAGES.length + CLUSTER_BREAKAGES.length} broken copies caught)`);
    process.exit(bad ? 1 : 0);
}

main();
