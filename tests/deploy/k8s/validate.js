#!/usr/bin/env node
// Offline validation of deploy/k8s (no cluster needed; ctest deploy_k8s):
//
//   node tests/deploy/k8s/validate.js [REPO_ROOT]
//
// 1. kustomization.yaml: every listed resource exists, every YAML file in
//    deploy/k8s is listed, `images:` names the image the containers use.
// 2. Every document is instantiated as its kubernetes-models class (by
//    apiVersion/kind) and validate()d against the Kubernetes 1.27 JSON
//    schema. Those schemas do not forbid unknown fields (a misspelled
//    `imagePullPolicyy` passes them), while `kubectl apply` (strict field
//    validation, the default since 1.25) rejects them; so each document is
//    also walked against the same package's type declarations, read with
//    the TypeScript compiler, and any field the type does not have fails.
// 3. Semantic checks no schema can make (probes, ports, selectors, volume,
//    environment, memory limit/cap, grace period, security context,
//    Prometheus annotations).
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
// Model packages: Kubernetes itself, and cert-manager's CRDs (certificate.yaml).
const MODEL_PACKAGES = ['kubernetes-models', '@kubernetes-models/cert-manager'];
const modelsDir = (pkg) => path.dirname(require.resolve(pkg));

// ---------------------------------------------------------------- loading

function readBundle() {
    const kfile = path.join(K8S_DIR, 'kustomization.yaml');
    const b = { kustomization: null, files: {}, listing: [], loadErrors: [], options: null };
    b.listing = fs.readdirSync(K8S_DIR).filter((f) => /\.ya?ml$/.test(f)).sort();
    b.kustomization = parseDocs('kustomization.yaml', fs.readFileSync(kfile, 'utf8'), b)[0] || null;
    for (const f of b.listing) {
        if (f === 'kustomization.yaml') continue;
        b.files[f] = parseDocs(f, fs.readFileSync(path.join(K8S_DIR, f), 'utf8'), b);
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

// ------------------------------------------------------------- checks

function validateBundle(b) {
    const results = [];
    const check = (name, ok, detail) => {
        results.push({ name, ok: !!ok, detail: ok ? '' : detail || '' });
        return !!ok;
    };

    check('YAML parses without errors or warnings', b.loadErrors.length === 0, b.loadErrors.join('; '));

    // --- kustomization
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
    check('every YAML file in deploy/k8s is listed in kustomization.yaml', unlisted.length === 0,
        `not listed: ${unlisted.join(', ')}`);

    // --- every document: model class, JSON schema, strict fields
    const objects = [];
    for (const f of Object.keys(b.files)) {
        for (const o of b.files[f]) {
            const id = `${f}: ${o && o.kind}/${o && o.metadata && o.metadata.name}`;
            objects.push({ file: f, obj: o });
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
    const of = (kind) => objects.filter((x) => x.obj && x.obj.kind === kind).map((x) => x.obj);

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

    check('replicas is 1 (each pod is an independent server)', spec.replicas === 1, `replicas ${fmt(spec.replicas)}`);
    check('StatefulSet selector matches the pod template labels',
        subset(spec.selector && spec.selector.matchLabels, podLabels),
        `selector ${fmt(spec.selector)} labels ${fmt(podLabels)}`);

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

    // Services
    const svcs = of('Service');
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
    const certs = of('Certificate').filter((x) => !(x.spec && x.spec.isCA));
    check('the TLS Secret is written by a cert-manager Certificate (server, not CA) of the bundle',
        certAt && certs.some((x) => x.spec.secretName === certAt.secret),
        `Secret ${fmt(certAt && certAt.secret)} Certificates ${fmt(certs.map((x) => x.spec && x.spec.secretName))}`);
    for (const cert of certs) {
        const issuer = cert.spec.issuerRef || {};
        check(`Certificate ${cert.metadata.name} is issued by an Issuer of the bundle`,
            (issuer.kind || 'Issuer') === 'Issuer' && of('Issuer').some((i) => i.metadata.name === issuer.name),
            fmt(issuer));
        check(`Certificate ${cert.metadata.name} names the Services (${svcs.map((x) => x.metadata.name)})`,
            svcs.every((x) => (cert.spec.dnsNames || []).includes(x.metadata.name)), fmt(cert.spec.dnsNames));
    }
    check('/metrics tokens travel over TLS (SLIMVEC_METRICS_AUTH token needs SLIMVEC_METRICS_TLS on)',
        val('SLIMVEC_METRICS_AUTH') !== 'token' || metricsTls,
        `SLIMVEC_METRICS_AUTH ${fmt(val('SLIMVEC_METRICS_AUTH'))} SLIMVEC_METRICS_TLS ${fmt(val('SLIMVEC_METRICS_TLS'))}`);
    const tokAt = secretMountOf(val('SLIMVEC_TOKENS_FILE'));
    check('SLIMVEC_TOKENS_FILE is a file of a read-only Secret volume',
        tokAt && tokAt.mount.readOnly === true, `SLIMVEC_TOKENS_FILE ${fmt(val('SLIMVEC_TOKENS_FILE'))}`);

    // Environment: known options, listen addresses.
    if (b.options) {
        const unknown = Object.keys(env).filter((n) => n.startsWith('SLIMVEC_') && !b.options.includes(n));
        check('every SLIMVEC_* variable is an option of slimvecd (service/main.c)', unknown.length === 0,
            `unknown: ${unknown.join(', ')}`);
    }
    const serviceLinkPrefix = svcs.some((s) => s.metadata.name.toUpperCase().replace(/-/g, '_').startsWith('SLIMVEC'));
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

    // Security context.
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

    // Prometheus scrape annotations.
    const ann = (tmpl.metadata && tmpl.metadata.annotations) || {};
    check('prometheus.io/scrape is "true" and prometheus.io/path is /metrics',
        ann['prometheus.io/scrape'] === 'true' && ann['prometheus.io/path'] === '/metrics', fmt(ann));
    check("prometheus.io/port equals the metrics containerPort and SLIMVEC_METRICS_LISTEN's port",
        metricsPort && Number(ann['prometheus.io/port']) === metricsPort.containerPort &&
        Number(ann['prometheus.io/port']) === portOf(val('SLIMVEC_METRICS_LISTEN')),
        `annotation ${fmt(ann['prometheus.io/port'])} metrics port ${metricsPort && metricsPort.containerPort}`);

    // kustomize images: must name the containers' image or it retags nothing.
    const imageName = String(c.image || '').replace(/@.*$/, '').replace(/:[^/:]*$/, '');
    const kimages = Array.isArray(kz.images) ? kz.images : [];
    check(`kustomization images: names the container image (${imageName})`,
        kimages.length > 0 && kimages.every((i) => i.name === imageName), fmt(kimages));

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

function selfTest(bundle) {
    const out = [];
    for (const [what, mutate, expect] of BREAKAGES) {
        const b = clone(bundle);
        let failed = [];
        try {
            mutate(b);
            failed = validateBundle(b).filter((r) => !r.ok);
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
    let bundle;
    try {
        bundle = readBundle();
    } catch (e) {
        console.log(`FAIL reading deploy/k8s: ${e.message}`);
        process.exit(1);
    }
    for (const r of validateBundle(bundle)) {
        console.log(r.ok ? `ok   ${r.name}` : `FAIL ${r.name}: ${r.detail}`);
        if (!r.ok) bad++;
    }
    console.log(`negative self-test: ${BREAKAGES.length} broken copies, each must fail its check`);
    for (const r of selfTest(bundle)) {
        console.log(r.ok ? `ok   caught: ${r.what} -> ${r.detail}` : `FAIL not caught: ${r.what}: ${r.detail}`);
        if (!r.ok) bad++;
    }
    console.log(bad ? `${bad} check(s) FAILED` : 'all checks passed');
    process.exit(bad ? 1 : 0);
}

main();
