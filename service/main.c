/*
 * slimvecd: the slimvec gRPC server.
 *
 * Start-up opens every collection of the data directory (snapshot + log
 * replay) before it listens, so a server that answers is whole.
 *
 * Signals: SIGINT/SIGTERM are blocked in every thread and taken with
 * sigwait in main; then health goes NOT_SERVING, the server stops taking
 * calls, running calls get --grace seconds, the rest are cancelled, every
 * collection with log since its last snapshot is snapshotted (so the next
 * start only loads snapshots), and the process exits 0.
 */
#include <errno.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "access.h"
#include "client.h"
#include "cluster.h"
#include "handlers.h"
#include "http.h"
#include "maintenance.h"
#include "memory.h"
#include "metrics.h"
#include "rpc.h"
#include "tls.h"
#include "tokens.h"

typedef struct config {
    const char *listen;
    const char *metrics_listen;
    const char *data_dir;      /* NULL: in memory */
    sv_durable_options durable;
    uint64_t memory_limit;     /* bytes, 0 = unknown */
    uint64_t memory_cap;       /* bytes, 0 = none */
    svd_server_config rpc;     /* limits of the RPC runtime (listen and observers set later) */
    double grace;
    size_t max_collections;
    unsigned arenas;
    svd_maint_options maint;
    svd_limits limits;
    svd_tls_options tls;       /* cert NULL: plaintext */
    const char *tokens_file;   /* NULL: no tokens */
    int metrics_tls;           /* the HTTP port over TLS too */
    int metrics_auth;          /* /metrics needs a token */
    double reload_seconds;
    int cluster;               /* cluster mode (--cluster-nats) */
    svc_cluster_config cl;
    char advertise_buf[300];
} config;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: slimvecd [options]   (each option also reads SLIMVEC_<NAME> from the environment)\n"
            "  --listen ADDR        gRPC address (SLIMVEC_LISTEN, default 127.0.0.1:50051)\n"
            "  --metrics-listen ADDR  HTTP /metrics, /healthz, /readyz (SLIMVEC_METRICS_LISTEN, default 127.0.0.1:9464)\n"
            "  --data-dir DIR       collections, logs and snapshots; :memory: keeps nothing on disk\n"
            "                       (SLIMVEC_DATA_DIR, default ./slimvec-data)\n"
            "  --sync-interval-ms N 0: fsync the log before acknowledging each write (group commit);\n"
            "                       N > 0: acknowledge at once and fsync every N ms, so a power loss can\n"
            "                       lose the last N ms of writes (SLIMVEC_SYNC_INTERVAL_MS, default 0)\n"
            "  --snapshot-log-bytes BYTES  snapshot a collection in the background once its log passes\n"
            "                       this; 0 = only on demand and at shutdown\n"
            "                       (SLIMVEC_SNAPSHOT_LOG_BYTES, default 134217728)\n"
            "  --threads N          work threads running requests (SLIMVEC_THREADS, default 4); health is\n"
            "                       answered apart from them, whatever they do\n"
            "  --max-message BYTES  largest message received or sent (SLIMVEC_MAX_MESSAGE, default 67108864)\n"
            "  --max-calls N        calls open at once, streams included (SLIMVEC_MAX_CALLS, default 1024)\n"
            "  --max-streams N      streaming calls open at once (SLIMVEC_MAX_STREAMS, default 256)\n"
            "  --inflight-memory BYTES  decoded requests + responses not yet sent, whole server; under\n"
            "                       a memory cap at most cap / 8 (SLIMVEC_INFLIGHT_MEMORY, default 268435456)\n"
            "  --grpc-memory BYTES  gRPC's own transport buffers (a resource quota; 0 = gRPC's default)\n"
            "                       (SLIMVEC_GRPC_MEMORY, default 536870912)\n"
            "  --send-timeout SECONDS  a stream whose client reads no response for this long is closed\n"
            "                       (SLIMVEC_SEND_TIMEOUT, default 30)\n"
            "  --max-dim N          largest collection dimension (SLIMVEC_MAX_DIM, default 4096)\n"
            "  --max-k N            most neighbours per query (SLIMVEC_MAX_K, default 1000)\n"
            "  --max-search-list N  largest search list per query (SLIMVEC_MAX_SEARCH_LIST, default 1024)\n"
            "  --default-target-recall R  a search that gives neither search_list nor target_recall\n"
            "                       gets the search list the collection's calibration says reaches\n"
            "                       recall@10 R (SLIMVEC_DEFAULT_TARGET_RECALL, default 0.95; 0 = the\n"
            "                       fixed list 64; 64 too before a collection is calibrated)\n"
            "  --calibration-queries N  vectors of its own a collection is calibrated with (recall by\n"
            "                       search list; see Describe) (SLIMVEC_CALIBRATION_QUERIES, default\n"
            "                       100; 0 = never)\n"
            "  --calibration-min N  calibrate once a collection holds N vectors, again when it has\n"
            "                       doubled or halved (SLIMVEC_CALIBRATION_MIN, default 1000)\n"
            "  --max-search-work N  most work per search request: queries x (search list + buffered\n"
            "                       vectors / 16) (SLIMVEC_MAX_SEARCH_WORK, default 2000000)\n"
            "  --max-batch N        most vectors or queries per message (SLIMVEC_MAX_BATCH, default 10000)\n"
            "  --max-get-ids N      most ids per Get (SLIMVEC_MAX_GET_IDS, default 1000)\n"
            "  --max-id-len N       longest id in bytes, <= 128 (SLIMVEC_MAX_ID_LEN, default 128)\n"
            "  --max-collections N  most collections (SLIMVEC_MAX_COLLECTIONS, default 10000)\n"
            "  --max-flush-threshold N  largest flush threshold a collection may ask for\n"
            "                       (SLIMVEC_MAX_FLUSH_THRESHOLD, default 65536)\n"
            "  --buffer-factor N    ingest waits while a collection holds N x its flush threshold of\n"
            "                       vectors not yet in the graph (every search scans those by brute\n"
            "                       force) (SLIMVEC_BUFFER_FACTOR, default 2)\n"
            "  --consolidate-ratio R  consolidate a collection once deleted vectors are this share of\n"
            "                       its vectors (SLIMVEC_CONSOLIDATE_RATIO, default 0.05)\n"
            "  --consolidate-min N  ... and at least this many (SLIMVEC_CONSOLIDATE_MIN, default 64)\n"
            "  --compact-ratio R    move vectors into freed slots and give the rest back once free slots\n"
            "                       are this share of a collection's slots; 0 = never\n"
            "                       (SLIMVEC_COMPACT_RATIO, default 0.05)\n"
            "  --quiet-seconds S    a collection with no write for this long is consolidated and compacted\n"
            "                       down to no tombstone and no free slot; 0 = never\n"
            "                       (SLIMVEC_QUIET_SECONDS, default 10)\n"
            "  --arenas N           shared jemalloc arenas for the collections (SLIMVEC_ARENAS, default 16)\n"
            "  --build-threads N    flush threads per collection, 0 = all cores, at most 64 are used\n"
            "                       (SLIMVEC_BUILD_THREADS, default 0)\n"
            "  --grace SECONDS      drain time at shutdown; calls still running are then cancelled and\n"
            "                       stop within 2 s (SLIMVEC_GRACE, default 10)\n"
            "  --memory-cap BYTES|N%%  jemalloc allocated + metadata past which ingest and creates are\n"
            "                       refused (RESOURCE_EXHAUSTED); searches, gets and lists past it + the\n"
            "                       in-flight memory; N%% of the memory limit; 0 = no cap\n"
            "                       (SLIMVEC_MEMORY_CAP, default 0)\n"
            "  --tls-cert FILE      PEM certificate chain: the gRPC port speaks TLS (SLIMVEC_TLS_CERT)\n"
            "  --tls-key FILE       PEM private key of that certificate (SLIMVEC_TLS_KEY)\n"
            "  --tls-client-ca FILE PEM CAs whose client certificates are accepted (SLIMVEC_TLS_CLIENT_CA)\n"
            "  --tls-client-auth none|optional|require  client certificates: not asked for, verified when\n"
            "                       sent, or required (SLIMVEC_TLS_CLIENT_AUTH, default require with a\n"
            "                       client CA, else none)\n"
            "  --tokens-file FILE   bearer tokens by SHA-256 hash with their roles: every call but health\n"
            "                       needs one (SLIMVEC_TOKENS_FILE; see README, Security)\n"
            "  --metrics-tls off|on the HTTP port over TLS with the same certificate (SLIMVEC_METRICS_TLS,\n"
            "                       default off)\n"
            "  --metrics-auth none|token  /metrics needs a token with the metrics role (or admin)\n"
            "                       (SLIMVEC_METRICS_AUTH, default token with a tokens file, else none)\n"
            "  --reload-seconds S   how often certificate and tokens files are looked at for changes\n"
            "                       (SLIMVEC_RELOAD_SECONDS, default 5)\n"
            "Cluster mode (README, Cluster): set --cluster-nats to run as one replica of one shard\n"
            "  --cluster-nats URLS  NATS servers with JetStream, comma-separated nats:// or tls:// URLs: the\n"
            "                       cluster's logs (SLIMVEC_CLUSTER_NATS; unset: a single node)\n"
            "  --shards N           shards of every collection (SLIMVEC_SHARDS, default 1)\n"
            "  --shard N            the shard this pod joins when the shard map does not name it yet\n"
            "                       (SLIMVEC_SHARD, default the ordinal at the end of --pod-name, modulo\n"
            "                       --shards); after that the map says (moves change it)\n"
            "  --pod-name NAME      this pod's name, e.g. slimvec-r0-1 (SLIMVEC_POD_NAME, default $HOSTNAME)\n"
            "  --replica-set NAME   this pod's replica set, e.g. r0 (SLIMVEC_REPLICA_SET)\n"
            "  --cluster-etcd EPS   etcd members' client endpoints, host:port,... (SLIMVEC_CLUSTER_ETCD):\n"
            "                       the shard map, the pods' leases, the catalog of collections\n"
            "  --cluster-name NAME  the cluster's keys in etcd are under /slimvec/NAME/ (SLIMVEC_CLUSTER_NAME,\n"
            "                       default slimvec)\n"
            "  --advertise ADDR     host:port the other pods reach this one at (SLIMVEC_ADVERTISE, default\n"
            "                       --listen, its host replaced by the pod name when it is 0.0.0.0 or [::])\n"
            "  --lease-seconds N    the pod's key in etcd lives this long without keep-alives\n"
            "                       (SLIMVEC_LEASE_SECONDS, default 5)\n"
            "  --etcd-timeout-ms MS each call to an etcd member (SLIMVEC_ETCD_TIMEOUT_MS, default 2000)\n"
            "  --etcd-ca FILE, --etcd-cert FILE, --etcd-key FILE  TLS to etcd (SLIMVEC_ETCD_CA,\n"
            "                       SLIMVEC_ETCD_CERT, SLIMVEC_ETCD_KEY)\n"
            "  --ready-lag N        a replica catching up turns ready (read from) within N records of\n"
            "                       the end of every stream (SLIMVEC_READY_LAG, default 64)\n"            "  --router-only 0|1    1: this pod serves no shard, it only routes; shards are never\n"
            "                       moved to it (SLIMVEC_ROUTER_ONLY, default 0)\n"
            "  --stream-replicas N  copies NATS keeps of each stream (SLIMVEC_STREAM_REPLICAS, default 3)\n"
            "  --hedge-ms MS        a read not answered by one replica of a shard after this also asks\n"
            "                       another (SLIMVEC_HEDGE_MS, default 50)\n"
            "  --outcome-seconds S  a write with ids of its own waits this long to hear how it applied\n"
            "                       (SLIMVEC_OUTCOME_SECONDS, default 5)\n"
            "  --nats-timeout-ms MS how long an append waits for the log's acknowledgement\n"
            "                       (SLIMVEC_NATS_TIMEOUT_MS, default 5000)\n"
            "  --nats-ca FILE, --nats-cert FILE, --nats-key FILE, --nats-token TOKEN  TLS and the token\n"
            "                       for NATS (SLIMVEC_NATS_CA, SLIMVEC_NATS_CERT, SLIMVEC_NATS_KEY,\n"
            "                       SLIMVEC_NATS_TOKEN)\n"
            "  --peer-ca FILE, --peer-cert FILE, --peer-key FILE  TLS to the other pods (the caller's token\n"
            "                       is passed on) (SLIMVEC_PEER_CA, SLIMVEC_PEER_CERT, SLIMVEC_PEER_KEY)\n"
            "  --peer-token TOKEN   this pod's own token (admin role) for what it asks other pods by\n"
            "                       itself: a peer's snapshot when it joins a shard (SLIMVEC_PEER_TOKEN;\n"
            "                       needed when the pods check tokens)\n"
            "  --test-apply-delay-ms MS  tests only: this pod applies its streams in passes this far\n"
            "                       apart, a replica made to lag (SLIMVEC_TEST_APPLY_DELAY_MS, default 0)\n"
            "  --test-map-delay-ms MS  tests only: this pod reads the shard map this often and ignores\n"
            "                       etcd's watch (a router with a stale map) (SLIMVEC_TEST_MAP_DELAY_MS)\n"
            "  --memory-limit BYTES the memory the process may use (a container's limit; in Kubernetes set\n"
            "                       SLIMVEC_MEMORY_LIMIT from limits.memory); 0 = read the cgroup's\n"
            "                       memory.max (SLIMVEC_MEMORY_LIMIT, default 0)\n");
}

/* Parse a whole non-negative number in [lo, hi]. */
static int parse_num(const char *name, const char *v, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "slimvecd: %s: '%s' is not a number in %g..%g\n", name, v, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

typedef struct option_def {
    const char *flag;    /* "--max-k" */
    const char *env;     /* "SLIMVEC_MAX_K" */
    double lo, hi;
    double *target;      /* numbers */
    const char **text;   /* strings */
} option_def;

/* The cgroup's memory limit in bytes (v2 memory.max, else v1), 0 when none. */
static uint64_t cgroup_memory_limit(void)
{
    static const char *files[] = {"/sys/fs/cgroup/memory.max",
                                  "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f)
            continue;
        char buf[64] = "";
        char *got = fgets(buf, sizeof buf, f);
        fclose(f);
        if (!got || strncmp(buf, "max", 3) == 0)
            return 0;
        unsigned long long v = strtoull(buf, NULL, 10);
        /* cgroup v1 says "no limit" with a number near 2^63. */
        return v >= (1ull << 60) ? 0 : v;
    }
    return 0;
}

/*
 * --memory-cap: bytes, or "N%" of the memory limit (--memory-limit, else
 * the cgroup's). Tying the two keeps a container from being OOM-killed:
 * ingest is refused first, and the rest is headroom for searches, request
 * decoding, gRPC buffers and snapshots. A percentage with no limit known
 * means no cap (said at start-up).
 */
static int memory_cap_of(const char *text, uint64_t limit, uint64_t *cap, int *from_limit)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    *from_limit = 0;
    if (errno || end == text || !(v >= 0)) {
        fprintf(stderr, "slimvecd: --memory-cap: '%s' is not a byte count or a percentage\n", text);
        return -1;
    }
    if (*end == '%' && end[1] == '\0') {
        if (v > 100) {
            fprintf(stderr, "slimvecd: --memory-cap: %s is over 100%%\n", text);
            return -1;
        }
        *from_limit = 1;
        *cap = (uint64_t)((double)limit * v / 100.0);
        return 0;
    }
    if (*end || v > 1e18) {
        fprintf(stderr, "slimvecd: --memory-cap: '%s' is not a byte count or a percentage\n", text);
        return -1;
    }
    *cap = (uint64_t)v;
    return 0;
}

static int load_config(config *cfg, int argc, char **argv)
{
    double threads = 4, max_message = 64 << 20, max_dim = 4096, max_k = 1000, max_batch = 10000,
           max_id = 128, build_threads = 0, grace = 10, memory_limit = 0, sync_ms = 0,
           snapshot_bytes = 128 << 20, max_calls = 1024, max_streams = 256,
           inflight = 256 << 20, grpc_memory = 512 << 20, send_timeout = 30, max_list = 1024,
           max_work = 2000000, max_get = 1000, max_colls = 10000, max_threshold = 65536,
           buffer_factor = 2, cons_ratio = 0.05, cons_min = 64, compact_ratio = 0.05, quiet = 10,
           arenas = 16, target_recall = 0.95, cal_queries = 100, cal_min = 1000;
    const char *memory_cap = "0", *client_auth = NULL, *metrics_tls = "off", *metrics_auth = NULL;
    double reload_seconds = 5;
    double apply_delay_ms = 0;
    double shards = 1, shard = -1, stream_replicas = 3, hedge_ms = 50, outcome_s = 5, nats_timeout = 5000;
    double lease_seconds = 5, etcd_timeout = 2000, ready_lag = 64, map_delay_ms = 0, router_only = 0;
    const char *pod_name = getenv("HOSTNAME");
    memset(&cfg->cl, 0, sizeof cfg->cl);
    cfg->tls = (svd_tls_options){0};
    cfg->tokens_file = NULL;
    cfg->listen = "127.0.0.1:50051";
    cfg->data_dir = "slimvec-data";
    cfg->metrics_listen = "127.0.0.1:9464";
    option_def defs[] = {
        {"--listen", "SLIMVEC_LISTEN", 0, 0, NULL, &cfg->listen},
        {"--metrics-listen", "SLIMVEC_METRICS_LISTEN", 0, 0, NULL, &cfg->metrics_listen},
        {"--data-dir", "SLIMVEC_DATA_DIR", 0, 0, NULL, &cfg->data_dir},
        {"--sync-interval-ms", "SLIMVEC_SYNC_INTERVAL_MS", 0, 60000, &sync_ms, NULL},
        {"--snapshot-log-bytes", "SLIMVEC_SNAPSHOT_LOG_BYTES", 0, 1e15, &snapshot_bytes, NULL},
        {"--threads", "SLIMVEC_THREADS", 1, 256, &threads, NULL},
        {"--max-message", "SLIMVEC_MAX_MESSAGE", 1024, 1 << 30, &max_message, NULL},
        {"--max-calls", "SLIMVEC_MAX_CALLS", 1, 1000000, &max_calls, NULL},
        {"--max-streams", "SLIMVEC_MAX_STREAMS", 1, 1000000, &max_streams, NULL},
        {"--inflight-memory", "SLIMVEC_INFLIGHT_MEMORY", 1 << 20, 1e15, &inflight, NULL},
        {"--grpc-memory", "SLIMVEC_GRPC_MEMORY", 0, 1e15, &grpc_memory, NULL},
        {"--send-timeout", "SLIMVEC_SEND_TIMEOUT", 0.1, 86400, &send_timeout, NULL},
        {"--max-dim", "SLIMVEC_MAX_DIM", 1, SV_DIM_MAX, &max_dim, NULL},
        {"--max-k", "SLIMVEC_MAX_K", 1, SV_K_MAX, &max_k, NULL},
        {"--max-search-list", "SLIMVEC_MAX_SEARCH_LIST", 1, SV_L_MAX, &max_list, NULL},
        {"--max-search-work", "SLIMVEC_MAX_SEARCH_WORK", 1, 1e15, &max_work, NULL},
        {"--default-target-recall", "SLIMVEC_DEFAULT_TARGET_RECALL", 0, 1, &target_recall, NULL},
        {"--calibration-queries", "SLIMVEC_CALIBRATION_QUERIES", 0, 1000, &cal_queries, NULL},
        {"--calibration-min", "SLIMVEC_CALIBRATION_MIN", 12, 1e12, &cal_min, NULL},
        {"--max-batch", "SLIMVEC_MAX_BATCH", 1, 1000000, &max_batch, NULL},
        {"--max-get-ids", "SLIMVEC_MAX_GET_IDS", 1, 1000000, &max_get, NULL},
        {"--max-id-len", "SLIMVEC_MAX_ID_LEN", 1, SV_ID_MAX, &max_id, NULL},
        {"--max-collections", "SLIMVEC_MAX_COLLECTIONS", 1, 1e9, &max_colls, NULL},
        {"--max-flush-threshold", "SLIMVEC_MAX_FLUSH_THRESHOLD", 1, 1e9, &max_threshold, NULL},
        {"--buffer-factor", "SLIMVEC_BUFFER_FACTOR", 1, 1000, &buffer_factor, NULL},
        {"--consolidate-ratio", "SLIMVEC_CONSOLIDATE_RATIO", 0.001, 1, &cons_ratio, NULL},
        {"--consolidate-min", "SLIMVEC_CONSOLIDATE_MIN", 1, 1e12, &cons_min, NULL},
        {"--compact-ratio", "SLIMVEC_COMPACT_RATIO", 0, 1, &compact_ratio, NULL},
        {"--quiet-seconds", "SLIMVEC_QUIET_SECONDS", 0, 1e6, &quiet, NULL},
        {"--arenas", "SLIMVEC_ARENAS", 1, 256, &arenas, NULL},
        {"--build-threads", "SLIMVEC_BUILD_THREADS", 0, 1e6, &build_threads, NULL},
        {"--grace", "SLIMVEC_GRACE", 0, 3600, &grace, NULL},
        {"--memory-cap", "SLIMVEC_MEMORY_CAP", 0, 0, NULL, &memory_cap},
        {"--memory-limit", "SLIMVEC_MEMORY_LIMIT", 0, 1e18, &memory_limit, NULL},
        {"--tls-cert", "SLIMVEC_TLS_CERT", 0, 0, NULL, &cfg->tls.cert},
        {"--tls-key", "SLIMVEC_TLS_KEY", 0, 0, NULL, &cfg->tls.key},
        {"--tls-client-ca", "SLIMVEC_TLS_CLIENT_CA", 0, 0, NULL, &cfg->tls.client_ca},
        {"--tls-client-auth", "SLIMVEC_TLS_CLIENT_AUTH", 0, 0, NULL, &client_auth},
        {"--tokens-file", "SLIMVEC_TOKENS_FILE", 0, 0, NULL, &cfg->tokens_file},
        {"--metrics-tls", "SLIMVEC_METRICS_TLS", 0, 0, NULL, &metrics_tls},
        {"--metrics-auth", "SLIMVEC_METRICS_AUTH", 0, 0, NULL, &metrics_auth},
        {"--reload-seconds", "SLIMVEC_RELOAD_SECONDS", 0.1, 86400, &reload_seconds, NULL},
        {"--cluster-nats", "SLIMVEC_CLUSTER_NATS", 0, 0, NULL, &cfg->cl.nats.urls},
        {"--shards", "SLIMVEC_SHARDS", 1, SVC_SHARDS_MAX, &shards, NULL},
        {"--shard", "SLIMVEC_SHARD", 0, SVC_SHARDS_MAX - 1, &shard, NULL},
        {"--pod-name", "SLIMVEC_POD_NAME", 0, 0, NULL, &pod_name},
        {"--replica-set", "SLIMVEC_REPLICA_SET", 0, 0, NULL, &cfg->cl.replica_set},
        {"--cluster-etcd", "SLIMVEC_CLUSTER_ETCD", 0, 0, NULL, &cfg->cl.meta.etcd.endpoints},
        {"--cluster-name", "SLIMVEC_CLUSTER_NAME", 0, 0, NULL, &cfg->cl.meta.cluster},
        {"--advertise", "SLIMVEC_ADVERTISE", 0, 0, NULL, &cfg->cl.meta.address},
        {"--lease-seconds", "SLIMVEC_LEASE_SECONDS", 1, 3600, &lease_seconds, NULL},
        {"--etcd-timeout-ms", "SLIMVEC_ETCD_TIMEOUT_MS", 50, 600000, &etcd_timeout, NULL},
        {"--etcd-ca", "SLIMVEC_ETCD_CA", 0, 0, NULL, &cfg->cl.meta.etcd.tls.ca},
        {"--etcd-cert", "SLIMVEC_ETCD_CERT", 0, 0, NULL, &cfg->cl.meta.etcd.tls.cert},
        {"--etcd-key", "SLIMVEC_ETCD_KEY", 0, 0, NULL, &cfg->cl.meta.etcd.tls.key},
        {"--ready-lag", "SLIMVEC_READY_LAG", 0, 1e9, &ready_lag, NULL},
        {"--router-only", "SLIMVEC_ROUTER_ONLY", 0, 1, &router_only, NULL},
        {"--stream-replicas", "SLIMVEC_STREAM_REPLICAS", 1, 5, &stream_replicas, NULL},
        {"--hedge-ms", "SLIMVEC_HEDGE_MS", 1, 60000, &hedge_ms, NULL},
        {"--outcome-seconds", "SLIMVEC_OUTCOME_SECONDS", 0.1, 3600, &outcome_s, NULL},
        {"--nats-timeout-ms", "SLIMVEC_NATS_TIMEOUT_MS", 100, 600000, &nats_timeout, NULL},
        {"--nats-ca", "SLIMVEC_NATS_CA", 0, 0, NULL, &cfg->cl.nats.ca_file},
        {"--nats-cert", "SLIMVEC_NATS_CERT", 0, 0, NULL, &cfg->cl.nats.cert_file},
        {"--nats-key", "SLIMVEC_NATS_KEY", 0, 0, NULL, &cfg->cl.nats.key_file},
        {"--nats-token", "SLIMVEC_NATS_TOKEN", 0, 0, NULL, &cfg->cl.nats.token},
        {"--peer-ca", "SLIMVEC_PEER_CA", 0, 0, NULL, &cfg->cl.peer.ca},
        {"--peer-cert", "SLIMVEC_PEER_CERT", 0, 0, NULL, &cfg->cl.peer.cert},
        {"--peer-key", "SLIMVEC_PEER_KEY", 0, 0, NULL, &cfg->cl.peer.key},
        {"--peer-token", "SLIMVEC_PEER_TOKEN", 0, 0, NULL, &cfg->cl.peer.token},
        {"--test-apply-delay-ms", "SLIMVEC_TEST_APPLY_DELAY_MS", 0, 600000, &apply_delay_ms, NULL},
        {"--test-map-delay-ms", "SLIMVEC_TEST_MAP_DELAY_MS", 0, 600000, &map_delay_ms, NULL},
    };
    size_t n_defs = sizeof defs / sizeof defs[0];
    for (size_t d = 0; d < n_defs; d++) {
        const char *v = getenv(defs[d].env);
        if (!v)
            continue;
        if (defs[d].text)
            *defs[d].text = v;
        else if (parse_num(defs[d].env, v, defs[d].lo, defs[d].hi, defs[d].target))
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        size_t d = 0;
        while (d < n_defs && strcmp(argv[i], defs[d].flag) != 0)
            d++;
        if (d == n_defs || i + 1 >= argc) {
            fprintf(stderr, "slimvecd: unknown option or missing value: %s\n", argv[i]);
            usage(stderr);
            return -1;
        }
        const char *v = argv[++i];
        if (defs[d].text)
            *defs[d].text = v;
        else if (parse_num(defs[d].flag, v, defs[d].lo, defs[d].hi, defs[d].target))
            return -1;
    }
    if (strcmp(cfg->data_dir, ":memory:") == 0)
        cfg->data_dir = NULL;
    else if (!cfg->data_dir[0]) {
        fprintf(stderr, "slimvecd: --data-dir is empty (use :memory: to keep nothing on disk)\n");
        return -1;
    }
    /* An empty file name (a variable set from something unset) is an
     * error, not "none": it must not turn TLS or tokens off unnoticed. */
    const char **files[] = {&cfg->tls.cert, &cfg->tls.key, &cfg->tls.client_ca, &cfg->tokens_file};
    const char *file_flags[] = {"--tls-cert", "--tls-key", "--tls-client-ca", "--tokens-file"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++)
        if (*files[f] && !**files[f]) {
            fprintf(stderr, "slimvecd: %s is empty (leave it unset for none)\n", file_flags[f]);
            return -1;
        }
    if ((cfg->tls.cert != NULL) != (cfg->tls.key != NULL)) {
        fprintf(stderr, "slimvecd: TLS needs both --tls-cert and --tls-key\n");
        return -1;
    }
    if (cfg->tls.client_ca && !cfg->tls.cert) {
        fprintf(stderr, "slimvecd: --tls-client-ca needs --tls-cert and --tls-key\n");
        return -1;
    }
    cfg->tls.client_auth = cfg->tls.client_ca ? SVD_CLIENT_AUTH_REQUIRE : SVD_CLIENT_AUTH_NONE;
    if (client_auth && *client_auth && svd_client_auth_parse(client_auth, &cfg->tls.client_auth) != 0) {
        fprintf(stderr, "slimvecd: --tls-client-auth: '%s' is not none, optional or require\n", client_auth);
        return -1;
    }
    if (cfg->tls.client_auth != SVD_CLIENT_AUTH_NONE && !cfg->tls.client_ca) {
        fprintf(stderr, "slimvecd: --tls-client-auth %s needs --tls-client-ca\n", client_auth);
        return -1;
    }
    cfg->tls.reload_seconds = reload_seconds;
    cfg->reload_seconds = reload_seconds;
    if (strcmp(metrics_tls, "on") && strcmp(metrics_tls, "off")) {
        fprintf(stderr, "slimvecd: --metrics-tls: '%s' is not on or off\n", metrics_tls);
        return -1;
    }
    cfg->metrics_tls = !strcmp(metrics_tls, "on");
    if (cfg->metrics_tls && !cfg->tls.cert) {
        fprintf(stderr, "slimvecd: --metrics-tls on needs --tls-cert and --tls-key\n");
        return -1;
    }
    cfg->metrics_auth = cfg->tokens_file != NULL;
    if (metrics_auth && *metrics_auth) {
        if (strcmp(metrics_auth, "none") && strcmp(metrics_auth, "token")) {
            fprintf(stderr, "slimvecd: --metrics-auth: '%s' is not none or token\n", metrics_auth);
            return -1;
        }
        cfg->metrics_auth = !strcmp(metrics_auth, "token");
    }
    if (cfg->metrics_auth && !cfg->tokens_file) {
        fprintf(stderr, "slimvecd: --metrics-auth token needs --tokens-file\n");
        return -1;
    }
    cfg->cluster = cfg->cl.nats.urls && *cfg->cl.nats.urls;
    if (cfg->cluster) {
        if (!cfg->data_dir) {
            fprintf(stderr, "slimvecd: cluster mode needs a --data-dir (its snapshots)\n");
            return -1;
        }
        if ((cfg->cl.nats.cert_file != NULL) != (cfg->cl.nats.key_file != NULL) ||
            (cfg->cl.peer.cert != NULL) != (cfg->cl.peer.key != NULL) ||
            (cfg->cl.meta.etcd.tls.cert != NULL) != (cfg->cl.meta.etcd.tls.key != NULL)) {
            fprintf(stderr, "slimvecd: a client certificate needs its key (--nats-cert/--nats-key, "
                            "--peer-cert/--peer-key, --etcd-cert/--etcd-key)\n");
            return -1;
        }
        if (!cfg->cl.meta.etcd.endpoints || !*cfg->cl.meta.etcd.endpoints) {
            fprintf(stderr, "slimvecd: cluster mode needs --cluster-etcd (the shard map and catalog)\n");
            return -1;
        }
        if (!pod_name || !*pod_name) {
            fprintf(stderr, "slimvecd: cluster mode needs --pod-name (or $HOSTNAME)\n");
            return -1;
        }
        cfg->cl.meta.pod = pod_name;
        if (!cfg->cl.meta.address) {
            /* Others cannot call 0.0.0.0: the pod's name is its host (a
             * StatefulSet's headless Service resolves it). */
            const char *colon = strrchr(cfg->listen, ':');
            int any = !colon || colon == cfg->listen || !strncmp(cfg->listen, "0.0.0.0:", 8) ||
                      !strncmp(cfg->listen, "[::]:", 5);
            if (any) {
                snprintf(cfg->advertise_buf, sizeof cfg->advertise_buf, "%s%s", pod_name, colon ? colon : ":50051");
                cfg->cl.meta.address = cfg->advertise_buf;
            } else {
                cfg->cl.meta.address = cfg->listen;
            }
        }
        cfg->cl.meta.lease_seconds = (int)lease_seconds;
        cfg->cl.meta.etcd.timeout_seconds = etcd_timeout / 1000.0;
        if (cfg->cl.meta.etcd.tls.ca || cfg->cl.meta.etcd.tls.cert)
            cfg->cl.meta.etcd.tls.tls = 1;
        cfg->cl.ready_lag = (uint64_t)ready_lag;
        cfg->cl.meta.test_read_seconds = map_delay_ms / 1000.0;
        cfg->cl.meta.router_only = router_only != 0;
        if (shard < 0) {
            /* A StatefulSet's pods end in their ordinal: slimvec-r0-3. */
            const char *dash = pod_name ? strrchr(pod_name, '-') : NULL;
            char *end = NULL;
            long ord = dash ? strtol(dash + 1, &end, 10) : -1;
            if (!dash || end == dash + 1 || *end || ord < 0) {
                fprintf(stderr, "slimvecd: no --shard, and the pod name \"%s\" ends in no ordinal\n",
                        pod_name ? pod_name : "");
                return -1;
            }
            shard = (double)(ord % (long)shards);
        }
        if (shard >= shards) {
            fprintf(stderr, "slimvecd: --shard %g is not below --shards %g\n", shard, shards);
            return -1;
        }
        cfg->cl.shards = (uint32_t)shards;
        cfg->cl.shard = (uint32_t)shard;
        cfg->cl.stream_replicas = (int)stream_replicas;
        cfg->cl.hedge_seconds = hedge_ms / 1000.0;
        cfg->cl.outcome_seconds = outcome_s;
        cfg->cl.nats.timeout_ms = (int64_t)nats_timeout;
        cfg->cl.apply_delay_seconds = apply_delay_ms / 1000.0;
        if (cfg->cl.peer.ca || cfg->cl.peer.cert)
            cfg->cl.peer.tls = 1;
    }
    cfg->durable = (sv_durable_options){(uint32_t)sync_ms, (uint64_t)snapshot_bytes,
                                        (uint32_t)buffer_factor};
    /* The engine uses at most 64 flush threads. A larger value is what a
     * pod without a CPU limit gets from the downward API (the node's
     * cores): use 64 rather than refuse to start. */
    if (build_threads > 64) {
        fprintf(stderr, "slimvecd: --build-threads %g: using 64, the most a collection uses\n", build_threads);
        build_threads = 64;
    }
    cfg->memory_limit = memory_limit > 0 ? (uint64_t)memory_limit : cgroup_memory_limit();
    uint64_t cap = 0;
    int from_limit = 0;
    if (memory_cap_of(memory_cap, cfg->memory_limit, &cap, &from_limit) != 0)
        return -1;
    if (from_limit && !cfg->memory_limit)
        fprintf(stderr, "slimvecd: --memory-cap %s: no memory limit is known, so there is no cap\n",
                memory_cap);
    cfg->memory_cap = cap;
    /* Under a cap, answers in flight get at most an eighth of it on top
     * (memory.h): the headroom between the cap and the limit covers them. */
    if (cap && inflight > (double)(cap / 8))
        inflight = (double)(cap / 8) > (double)(1 << 20) ? (double)(cap / 8) : (double)(1 << 20);
    cfg->rpc = (svd_server_config){.threads = (int)threads,
                                   .io_threads = 2,
                                   .max_message_bytes = (int)max_message,
                                   .max_calls = (int)max_calls,
                                   .max_streams = (int)max_streams,
                                   .inflight_bytes = (size_t)inflight,
                                   .grpc_memory = (size_t)grpc_memory,
                                   .send_timeout = send_timeout,
                                   .stream_queue = 4};
    cfg->grace = grace;
    cfg->max_collections = (size_t)max_colls;
    cfg->arenas = (unsigned)arenas;
    cfg->maint = (svd_maint_options){.period_ms = 1000,
                                     .consolidate_ratio = cons_ratio,
                                     .consolidate_min = (uint64_t)cons_min,
                                     .compact_ratio = compact_ratio,
                                     .quiet_seconds = quiet,
                                     .calibration_queries = (uint32_t)cal_queries,
                                     .calibration_min = (uint64_t)cal_min,
                                     .snapshots = cfg->data_dir && snapshot_bytes > 0};
    cfg->limits = (svd_limits){.max_dim = (uint32_t)max_dim,
                               .max_k = (uint32_t)max_k,
                               .max_batch = (uint32_t)max_batch,
                               .max_id_len = (uint32_t)max_id,
                               .build_threads = (uint32_t)build_threads,
                               .max_search_list = (uint32_t)max_list,
                               .max_search_work = (uint64_t)max_work,
                               .max_get_ids = (uint32_t)max_get,
                               .max_flush_threshold = (uint32_t)max_threshold,
                               .default_target_recall = (float)target_recall};
    return 0;
}

/*
 * Each collection keeps its log open, and gRPC, the metrics daemon and the
 * data directory need their own descriptors: the default soft limit (1024)
 * is far below what ten thousand collections need. Raise it to the hard
 * limit, which a container sets.
 */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            fprintf(stderr, "slimvecd: cannot raise the open-file limit: %s\n", strerror(errno));
    }
}

/* The server that deferred calls wait on, for the threads that wake them
 * (maintenance, the cluster's applier and calls). The lock keeps a wake
 * from using a server that is being stopped and freed. */
static pthread_mutex_t running_mu = PTHREAD_MUTEX_INITIALIZER;

static void wake_server(void *ctx)
{
    pthread_mutex_lock(&running_mu);
    svd_server *s = atomic_load((_Atomic(svd_server *) *)ctx);
    if (s)
        svd_server_wake(s);
    pthread_mutex_unlock(&running_mu);
}

static void set_running(_Atomic(svd_server *) *running, svd_server *s)
{
    pthread_mutex_lock(&running_mu);
    atomic_store(running, s);
    pthread_mutex_unlock(&running_mu);
}

/* Secure by default where it does not break the first run: a server that
 * others can reach without TLS or tokens says so, loudly. */
static void warn_if_open(const config *cfg)
{
    if (svd_address_is_local(cfg->listen))
        return;
    if (!cfg->tls.cert)
        fprintf(stderr,
                "slimvecd: WARNING ********************************************************\n"
                "slimvecd: WARNING %s is reachable from other machines WITHOUT TLS:\n"
                "slimvecd: WARNING vectors%s travel in clear text. Set --tls-cert and --tls-key.\n",
                cfg->listen, cfg->tokens_file ? " and tokens" : "");
    if (cfg->tokens_file && cfg->metrics_auth && !cfg->metrics_tls && !svd_address_is_local(cfg->metrics_listen))
        fprintf(stderr,
                "slimvecd: WARNING %s: /metrics tokens travel in clear text; set --metrics-tls on\n",
                cfg->metrics_listen);
    if (!cfg->tokens_file)
        fprintf(stderr,
                "slimvecd: WARNING ********************************************************\n"
                "slimvecd: WARNING %s is reachable from other machines WITHOUT TOKENS:\n"
                "slimvecd: WARNING anyone who reaches it can read, write and drop every collection.\n"
                "slimvecd: WARNING Set --tokens-file.\n",
                cfg->listen);
}

/* Look at the certificate and tokens files again (the main thread, every
 * second between signals). */
static void refresh_files(svd_tls *tls, svd_tokens *tokens, svd_http *http)
{
    char err[512];
    if (tokens) {
        int r = svd_tokens_refresh(tokens, err, sizeof err);
        if (r > 0) {
            svd_tokens_stats ts;
            svd_tokens_get_stats(tokens, &ts);
            fprintf(stderr, "slimvecd: tokens file reloaded: %zu lines in force\n", ts.lines);
        } else if (r < 0) {
            fprintf(stderr, "slimvecd: tokens file refused, the previous one stays: %s\n", err);
        }
    }
    if (tls) {
        int r = svd_tls_refresh(tls, 0, err, sizeof err);
        if (r < 0)
            fprintf(stderr, "slimvecd: new TLS files refused, the previous certificate stays: %s\n", err);
        if (http && svd_http_refresh(http, err, sizeof err) < 0)
            fprintf(stderr, "slimvecd: HTTP port: %s\n", err);
    }
}

int main(int argc, char **argv)
{
    config cfg;
    if (load_config(&cfg, argc, argv))
        return 2;
    raise_fd_limit();
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every thread */

    /* Certificates and tokens first: a wrong file fails in milliseconds,
     * not after every collection was opened. */
    char err[512];
    svd_tls *tls = NULL;
    svd_tokens *tokens = NULL;
    if (cfg.tls.cert && !(tls = svd_tls_open(&cfg.tls, err, sizeof err))) {
        fprintf(stderr, "slimvecd: cannot start: %s\n", err);
        return 1;
    }
    if (cfg.tokens_file && !(tokens = svd_tokens_open(cfg.tokens_file, err, sizeof err))) {
        fprintf(stderr, "slimvecd: cannot start: %s\n", err);
        svd_tls_free(tls);
        return 1;
    }
    if (tls) {
        svd_tls_stats ls;
        svd_tls_get_stats(tls, &ls);
        if (ls.not_after && ls.not_after < (int64_t)time(NULL))
            fprintf(stderr, "slimvecd: WARNING: the certificate in %s has expired: clients will refuse "
                            "it until it is renewed\n", cfg.tls.cert);
    }

    /* Cluster mode: NATS and the catalog before the collections, which
     * follow their shards' streams. */
    svc_cluster *cluster = NULL;
    if (cfg.cluster) {
        grpc_init(); /* the links to the other pods are made now */
        sv_error cerr;
        if (svc_cluster_create(&cfg.cl, 120, &cluster, &cerr) != SV_OK) {
            fprintf(stderr, "slimvecd: cannot start the cluster mode: %s\n", cerr.message);
            grpc_shutdown_blocking();
            svd_tokens_free(tokens);
            svd_tls_free(tls);
            return 1;
        }
        fprintf(stderr, "slimvecd: cluster mode: pod %s (%s), shard %d of %u, replica set %s, logs on NATS at %s, "
                        "metadata in etcd at %s\n",
                cfg.cl.meta.pod, cfg.cl.meta.address, svc_cluster_shard(cluster), cfg.cl.shards, cfg.cl.replica_set,
                cfg.cl.nats.urls, cfg.cl.meta.etcd.endpoints);
    }
    svd_registry_options ro = {.data_dir = cfg.data_dir,
                               .durable = cfg.durable,
                               .build_threads = cfg.limits.build_threads,
                               .max_collections = cfg.max_collections,
                               .arenas = cfg.arenas,
                               .follow = cluster ? svc_cluster_follow(cluster) : NULL};
    svd_app app = {.registry = svd_registry_create(&ro),
                   .limits = cfg.limits,
                   .memory = svd_memory_create(cfg.memory_cap, cfg.memory_limit,
                                               cfg.rpc.inflight_bytes)};
    atomic_init(&app.serving, 1);
    app.cluster = cluster;
    int rc = 1;
    svd_metrics *metrics = NULL;
    svd_http *http = NULL;
    svd_server *srv = NULL;
    grpc_server_credentials *creds = NULL;
    int grpc_started = 0;
    _Atomic(svd_server *) running = NULL;
    if (!app.registry || !app.memory) {
        fprintf(stderr, "slimvecd: out of memory\n");
        goto cleanup;
    }
    double recovery_seconds = 0;
    sv_error oerr;
    if (svd_registry_open_all(app.registry, &recovery_seconds, &oerr) != SV_OK) {
        fprintf(stderr, "slimvecd: cannot start: %s\n", oerr.message);
        goto cleanup;
    }
    if (cfg.memory_cap)
        fprintf(stderr, "slimvecd: memory cap %llu bytes (memory limit %llu)\n",
                (unsigned long long)cfg.memory_cap, (unsigned long long)cfg.memory_limit);
    fprintf(stderr, "slimvecd: data in %s (%s)\n", cfg.data_dir ? cfg.data_dir : ":memory:",
            !cfg.data_dir ? "nothing is kept on disk"
            : cluster ? "snapshots; the log is each shard's stream on NATS, acknowledged by its quorum"
            : cfg.durable.sync_interval_ms ? "log fsynced on an interval"
                                           : "log fsynced before every acknowledgement");
    if (!cluster)
        grpc_init();
    grpc_started = 1;
    size_t n_methods = 0;
    const svd_method *methods = cluster ? svc_router_methods(&n_methods) : svd_methods(&n_methods);
    cfg.maint.wake = wake_server;
    cfg.maint.wake_ctx = &running;
    app.maint = svd_maint_start(app.registry, &cfg.maint);
    metrics = svd_metrics_create(methods, n_methods, app.registry, &app.serving);
    if (!app.maint || !metrics) {
        fprintf(stderr, "slimvecd: %s\n", !app.maint ? "cannot start the maintenance thread" : "out of memory");
        goto cleanup;
    }
    svd_metrics_set_recovery(metrics, recovery_seconds);
    svd_metrics_set_memory(metrics, cfg.memory_limit, cfg.memory_cap);
    svd_metrics_set_auth(metrics, tokens, tls);
    if (cluster)
        svd_metrics_set_extra(metrics, svc_cluster_metrics, cluster);
    svd_http_options ho = {.listen = cfg.metrics_listen,
                           .metrics = metrics,
                           .serving = &app.serving,
                           .tokens = cfg.metrics_auth ? tokens : NULL,
                           .tls = cfg.metrics_tls ? tls : NULL};
    if (!(http = svd_http_start(&ho, err, sizeof err))) {
        fprintf(stderr, "slimvecd: %s\n", err);
        goto cleanup;
    }
    svd_server_config scfg = cfg.rpc;
    scfg.listen = cfg.listen;
    scfg.observer = metrics;
    scfg.on_message = svd_metrics_message;
    scfg.on_call_end = svd_metrics_call_end;
    scfg.on_stream_denied = svd_metrics_stream_denied;
    if (tls && !(creds = svd_tls_server_credentials(tls))) {
        fprintf(stderr, "slimvecd: cannot make the TLS credentials\n");
        goto cleanup;
    }
    scfg.credentials = creds;
    if (tokens) {
        scfg.auth = tokens;
        scfg.authenticate = svd_access_check;
        scfg.principal_free = svd_principal_free;
        scfg.recheck = svd_access_recheck;
    }
    /* Every collection of the catalog is here before the first call. */
    if (cluster && svc_cluster_start(cluster, &app, wake_server, &running, &oerr) != SV_OK) {
        fprintf(stderr, "slimvecd: cannot start the cluster mode: %s\n", oerr.message);
        goto cleanup;
    }
    srv = svd_server_start(&scfg, methods, n_methods, &app, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "slimvecd: %s\n", err);
        goto cleanup;
    }
    set_running(&running, srv);
    svd_metrics_set_server(metrics, srv);

    fprintf(stderr, "slimvecd: listening on %s (%s%s), metrics on %s://%s/metrics%s\n", cfg.listen,
            tls ? "TLS" : "plaintext",
            !tls ? "" : cfg.tls.client_auth == SVD_CLIENT_AUTH_REQUIRE ? ", client certificates required"
                      : cfg.tls.client_auth == SVD_CLIENT_AUTH_OPTIONAL ? ", client certificates verified when sent"
                                                                         : "",
            cfg.metrics_tls ? "https" : "http", cfg.metrics_listen,
            cfg.metrics_auth ? " (token needed)" : "");
    if (tokens) {
        svd_tokens_stats ts;
        svd_tokens_get_stats(tokens, &ts);
        fprintf(stderr, "slimvecd: tokens from %s: %zu lines\n", cfg.tokens_file, ts.lines);
    }
    warn_if_open(&cfg);

    /* Between signals, the certificate and tokens files are looked at
     * every --reload-seconds (gRPC also asks for the certificate at each new
     * connection, rate-limited the same way in tls.c). */
    int sig = 0;
    double tick_s = cfg.reload_seconds < 1 ? cfg.reload_seconds : 1, since = 0;
    for (;;) {
        struct timespec tick = {(time_t)tick_s, (long)((tick_s - (double)(time_t)tick_s) * 1e9)};
        sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig > 0)
            break;
        since += tick_s;
        if (since + 1e-9 >= cfg.reload_seconds) {
            since = 0;
            refresh_files(tls, tokens, http);
        }
    }
    fprintf(stderr, "slimvecd: %s, draining for up to %g s\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            cfg.grace);
    atomic_store(&app.serving, 0);
    svd_metrics_set_server(metrics, NULL);
    set_running(&running, NULL);
    if (svd_server_stop(srv, cfg.grace, 2.0) != 0) {
        /* A handler stuck past the grace (a hung disk): everything
         * acknowledged is in the log already; do not wait for it. */
        fprintf(stderr, "slimvecd: calls did not stop %g s after the grace; exiting without the "
                        "shutdown snapshot (the log holds every acknowledged write)\n", 2.0);
        return 1;
    }
    srv = NULL;
    svc_cluster_stop(cluster); /* nothing more is applied; the snapshots hold what was */
    svd_maint_stop(app.maint);
    app.maint = NULL;
    /* A failed shutdown snapshot loses nothing (the log stays), but say so. */
    rc = svd_snapshot_all(app.registry) ? 1 : 0;
    if (!rc)
        fprintf(stderr, "slimvecd: stopped\n");

cleanup:
    set_running(&running, NULL);
    if (srv)
        svd_server_stop(srv, 0, 2.0);
    svc_cluster_stop(cluster);
    svd_maint_stop(app.maint);
    svd_http_stop(http);
    svd_metrics_free(metrics);
    if (app.registry)
        svd_registry_free(app.registry);
    svc_cluster_free(cluster); /* after the collections: their logs use its NATS connection */
    svd_memory_free(app.memory);
    if (creds)
        grpc_server_credentials_release(creds);
    if (grpc_started)
        grpc_shutdown_blocking();
    svd_tokens_free(tokens);
    svd_tls_free(tls);
    return rc;
}
