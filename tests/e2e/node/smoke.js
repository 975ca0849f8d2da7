#!/usr/bin/env node
// Second-language smoke test of the slimvec.v1 contract: a real slimvecd
// driven from Node.js with @grpc/grpc-js, the .proto loaded at run time by
// @grpc/proto-loader (no generated code), so only the contract is shared.
//
// Usage (ctest runs it): node smoke.js SLIMVECD_PATH PROTO_DIR
//   PROTO_DIR holds slimvec/v1/slimvec.proto.
// A secured server (tests/e2e/test_security.py runs it so): the client
// reads SLIMVEC_CA (TLS, trusting that CA), SLIMVEC_CERT/SLIMVEC_KEY (a
// client certificate), SLIMVEC_SERVER_NAME and SLIMVEC_TOKEN (bearer token
// metadata on every call), as the CLI does; SLIMVEC_SMOKE_SERVER_ARGS (a
// JSON array) is added to slimvecd's arguments.
// Exits 0 on success; on any failure prints a message, kills the server and
// exits nonzero. The whole run is bounded by OVERALL_TIMEOUT_MS.
'use strict';

const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');

const OVERALL_TIMEOUT_MS = 60_000;
const READY_TIMEOUT_MS = 15_000;
const RPC_TIMEOUT_MS = 15_000;
const EXIT_TIMEOUT_MS = 20_000;

const DIM = 8;
const BATCH = 100;
const BATCHES = 3;
const INVALID_ARGUMENT = 3;

let grpc;
let protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (e) {
  console.error(`smoke: cannot load @grpc/grpc-js / @grpc/proto-loader (${e.message});` +
    ` run "npm ci" in ${__dirname}`);
  process.exit(2);
}

const [slimvecd, protoDir] = process.argv.slice(2);
if (!slimvecd || !protoDir) {
  console.error('usage: node smoke.js SLIMVECD_PATH PROTO_DIR');
  process.exit(2);
}

let server = null;        // the child process
let serverExited = null;  // {code, signal} once it has exited
let serverLog = '';       // its stdout+stderr (tail kept)
let client = null;

class Failure extends Error {}

function fail(msg) {
  throw new Failure(msg);
}

function check(cond, msg) {
  if (!cond) fail(msg);
}

function log(msg) {
  console.log(`smoke: ${msg}`);
}

function killServer() {
  if (server && serverExited === null) {
    try { server.kill('SIGKILL'); } catch (_) { /* already gone */ }
  }
}

function finish(code, msg) {
  if (msg) console.error(`smoke: FAIL: ${msg}`);
  if (code !== 0) {
    killServer();
    if (serverLog) console.error(`smoke: slimvecd output (tail):\n${serverLog.slice(-4000)}`);
  }
  if (client) { try { client.close(); } catch (_) { /* ignore */ } }
  process.exit(code);
}

const overall = setTimeout(
  () => finish(1, `overall timeout of ${OVERALL_TIMEOUT_MS / 1000} s exceeded`),
  OVERALL_TIMEOUT_MS);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function deadline(ms = RPC_TIMEOUT_MS) {
  return new Date(Date.now() + ms);
}

// The connection as the environment says (see the top).
function credentials() {
  const env = process.env;
  if (!env.SLIMVEC_CA && !env.SLIMVEC_CERT) return grpc.credentials.createInsecure();
  const read = (f) => (f ? fs.readFileSync(f) : null);
  return grpc.credentials.createSsl(read(env.SLIMVEC_CA), read(env.SLIMVEC_KEY), read(env.SLIMVEC_CERT));
}

function channelOptions() {
  const name = process.env.SLIMVEC_SERVER_NAME;
  return name ? { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': name } : {};
}

function callMetadata() {
  const md = new grpc.Metadata();
  if (process.env.SLIMVEC_TOKEN) md.set('authorization', `Bearer ${process.env.SLIMVEC_TOKEN}`);
  return md;
}

// Unary call as a promise.
function unary(method, req) {
  return new Promise((resolve, reject) => {
    client[method](req, callMetadata(), { deadline: deadline() }, (err, resp) => {
      if (err) reject(new Failure(`${method} failed: ${err.code} ${err.details || err.message}`));
      else resolve(resp);
    });
  });
}

// Bidirectional call: writes every request, half-closes, collects responses.
function bidi(method, reqs) {
  return new Promise((resolve, reject) => {
    const call = client[method](callMetadata(), { deadline: deadline() });
    const out = [];
    call.on('data', (r) => out.push(r));
    call.on('error', (err) =>
      reject(new Failure(`${method} stream failed: ${err.code} ${err.details || err.message}`)));
    call.on('end', () => resolve(out));
    for (const r of reqs) call.write(r);
    call.end();
  });
}

function waitForReady(addr) {
  return new Promise((resolve, reject) => {
    client.waitForReady(deadline(READY_TIMEOUT_MS), (err) => {
      if (err) reject(new Failure(`slimvecd at ${addr} not ready: ${err.message}`));
      else resolve();
    });
  });
}

function waitForExit(ms) {
  return new Promise((resolve, reject) => {
    if (serverExited !== null) return resolve(serverExited);
    const t = setTimeout(() => reject(new Failure(`slimvecd did not exit within ${ms / 1000} s`)), ms);
    server.once('exit', (code, signal) => { clearTimeout(t); resolve({ code, signal }); });
  });
}

function randomVectors(n) {
  const v = new Array(n * DIM);
  for (let i = 0; i < v.length; i++) v[i] = Math.random() * 2 - 1;
  // Round-trip through float32 so what we query equals what was sent.
  return Array.from(Float32Array.from(v));
}

async function main() {
  const protoFile = path.join(protoDir, 'slimvec', 'v1', 'slimvec.proto');
  check(fs.existsSync(protoFile), `no ${protoFile}`);
  check(fs.existsSync(slimvecd), `no slimvecd at ${slimvecd}`);

  const def = protoLoader.loadSync('slimvec/v1/slimvec.proto', {
    includeDirs: [protoDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def);
  const SlimVec = pkg.slimvec && pkg.slimvec.v1 && pkg.slimvec.v1.SlimVec;
  check(typeof SlimVec === 'function', 'slimvec.v1.SlimVec not found in the loaded proto');

  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  log(`starting ${slimvecd} --listen ${addr}`);
  // Its own metrics port too: other servers (tests run in parallel) hold the default.
  const metricsAddr = `127.0.0.1:${await freePort()}`;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'slimvec-node-'));
  process.on('exit', () => fs.rmSync(dataDir, { recursive: true, force: true }));
  const extraArgs = JSON.parse(process.env.SLIMVEC_SMOKE_SERVER_ARGS || '[]');
  server = spawn(slimvecd, ['--listen', addr, '--metrics-listen', metricsAddr, '--grace', '5',
                            '--data-dir', dataDir, ...extraArgs],
                 { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (d) => { serverLog = (serverLog + d.toString()).slice(-16000); };
  server.stdout.on('data', keep);
  server.stderr.on('data', keep);
  const earlyExit = new Promise((_, reject) => {
    server.on('error', (e) => reject(new Failure(`cannot start slimvecd: ${e.message}`)));
    server.on('exit', (code, signal) => {
      serverExited = { code, signal };
      reject(new Failure(`slimvecd exited early (code ${code}, signal ${signal})`));
    });
  });
  earlyExit.catch(() => {});  // observed through race() below
  const guard = (p) => Promise.race([p, earlyExit]);

  client = new SlimVec(addr, credentials(), channelOptions());
  await guard(waitForReady(addr));
  log('server ready');

  // CreateCollection.
  const name = `node_smoke_${process.pid}`;
  const created = await guard(unary('CreateCollection', {
    spec: { name, dimension: DIM, metric: 'METRIC_L2', storage: 'STORAGE_INT8' },
  }));
  check(created.info && created.info.spec && created.info.spec.name === name,
    `CreateCollection: unexpected info ${JSON.stringify(created.info)}`);
  check(created.info.spec.dimension === DIM && created.info.spec.metric === 'METRIC_L2' &&
    created.info.spec.storage === 'STORAGE_INT8',
    `CreateCollection: spec not echoed: ${JSON.stringify(created.info.spec)}`);
  log(`created collection ${name}`);

  // Ingest: 3 good batches then one bad batch (7 floats, not a multiple of 8).
  const batches = [];
  for (let b = 0; b < BATCHES; b++) batches.push(randomVectors(BATCH));
  const reqs = batches.map((vectors, b) => ({ collection: name, sequence: String(b + 1), vectors }));
  const badSeq = String(BATCHES + 1);
  reqs.push({ collection: name, sequence: badSeq, vectors: [1, 2, 3, 4, 5, 6, 7] });
  const acks = await guard(bidi('Ingest', reqs));
  check(acks.length === reqs.length, `Ingest: ${acks.length} acks for ${reqs.length} batches`);
  const ids = [];
  for (let b = 0; b < BATCHES; b++) {
    const a = acks[b];
    check(a.sequence === String(b + 1), `Ingest ack ${b}: sequence ${a.sequence}, want ${b + 1}`);
    check(!a.error, `Ingest ack ${b}: unexpected error ${JSON.stringify(a.error)}`);
    check(a.applied === BATCH, `Ingest ack ${b}: applied ${a.applied}, want ${BATCH}`);
    check(Array.isArray(a.ids) && a.ids.length === BATCH,
      `Ingest ack ${b}: ${a.ids && a.ids.length} ids, want ${BATCH}`);
    check(a.ids.every((id) => typeof id === 'string' && id.length > 0),
      `Ingest ack ${b}: empty id in ${JSON.stringify(a.ids)}`);
    ids.push(...a.ids);
  }
  check(new Set(ids).size === ids.length, 'Ingest: assigned ids are not unique');
  const bad = acks[BATCHES];
  check(bad.sequence === badSeq, `Ingest bad-batch ack: sequence ${bad.sequence}, want ${badSeq}`);
  check(bad.error && bad.error.code === INVALID_ARGUMENT,
    `Ingest bad batch: error ${JSON.stringify(bad.error)}, want code ${INVALID_ARGUMENT}`);
  check(bad.applied === 0, `Ingest bad batch: applied ${bad.applied}, want 0`);
  log(`ingested ${ids.length} vectors in ${BATCHES} batches; bad batch rejected ` +
    `(code ${bad.error.code}: ${bad.error.message})`);

  // Search for one of the inserted vectors: it must be its own nearest hit.
  const pick = 150;
  const all = [].concat(...batches);
  const query = all.slice(pick * DIM, (pick + 1) * DIM);
  const sr = await guard(unary('Search', { collection: name, queries: query, k: 5 }));
  check(sr.results.length === 1, `Search: ${sr.results.length} results, want 1`);
  const hits = sr.results[0].hits;
  check(hits.length > 0, 'Search: no hits');
  check(hits[0].id === ids[pick],
    `Search: first hit ${hits[0].id} (distance ${hits[0].distance}), want ${ids[pick]}`);
  for (let i = 1; i < hits.length; i++) {
    check(hits[i - 1].distance <= hits[i].distance, `Search: hits not nearest first: ${JSON.stringify(hits)}`);
  }
  log(`Search: first hit ${hits[0].id} at distance ${hits[0].distance}`);

  // SearchStream: 5 tagged requests, tags must come back in order.
  const tags = ['7', '3', '11', '1', '5'];
  const sreqs = tags.map((tag, i) => ({
    collection: name, queries: all.slice(i * DIM, (i + 1) * DIM), k: 3, tag,
  }));
  const sresps = await guard(bidi('SearchStream', sreqs));
  check(sresps.length === tags.length, `SearchStream: ${sresps.length} responses, want ${tags.length}`);
  sresps.forEach((r, i) => {
    check(!r.error, `SearchStream response ${i}: error ${JSON.stringify(r.error)}`);
    check(r.tag === tags[i], `SearchStream response ${i}: tag ${r.tag}, want ${tags[i]}`);
    check(r.results.length === 1 && r.results[0].hits.length > 0,
      `SearchStream response ${i}: no hits`);
    check(r.results[0].hits[0].id === ids[i],
      `SearchStream response ${i}: first hit ${r.results[0].hits[0].id}, want ${ids[i]}`);
  });
  log(`SearchStream: tags ${sresps.map((r) => r.tag).join(',')} in order`);

  // DescribeCollection.
  const dr = await guard(unary('DescribeCollection', { name }));
  check(dr.info && dr.info.vectors === String(BATCH * BATCHES),
    `DescribeCollection: vectors ${dr.info && dr.info.vectors}, want ${BATCH * BATCHES}`);
  log(`DescribeCollection: vectors ${dr.info.vectors}`);

  // Graceful shutdown: SIGTERM must end the server with exit code 0.
  client.close();
  client = null;
  if (serverExited !== null) fail(`slimvecd exited before SIGTERM (${JSON.stringify(serverExited)})`);
  server.kill('SIGTERM');
  const { code, signal } = await waitForExit(EXIT_TIMEOUT_MS);
  check(code === 0, `slimvecd after SIGTERM: exit code ${code}, signal ${signal}, want code 0`);
  log('slimvecd exited with code 0 after SIGTERM');
}

main().then(
  () => {
    clearTimeout(overall);
    log('PASS');
    finish(0);
  },
  (e) => {
    clearTimeout(overall);
    finish(1, e instanceof Failure ? e.message : (e && e.stack) || String(e));
  });
