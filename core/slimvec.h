/*
 * slimvec core: the public API of the in-memory index engine.
 *
 * A collection holds vectors of one dimension under one metric. New vectors
 * go to a write buffer (searchable at once, brute force); a flush quantizes
 * them into the vector store, links them into the Vamana graph and frees the
 * buffer. Deletes are tombstones until a consolidation repairs the graph and
 * recycles the slots.
 *
 * Ids. An id is a string of 1..SV_ID_MAX bytes. A canonical decimal number
 * below 2^63 ("0", "42", never "042" or "+1") is stored as an integer and
 * costs no string storage; any other id is kept as a string in the id map.
 * Ids left empty are assigned by the engine: the smallest unused numbers from
 * a counter, returned as integers (their string form is the decimal).
 * Duplicate ids are rejected (never upserted): a batch holding an id twice or
 * an id the collection already has fails whole with SV_ERR_ALREADY_EXISTS.
 *
 * Errors. Every call that can fail returns an sv_status and, when `err` is
 * not NULL, fills it with the same code and a message naming the offending
 * item. A failed call changes nothing.
 *
 * Threads. All calls are thread-safe. Searches run concurrently with adds,
 * deletes, flushes and consolidation; a flush uses `threads` worker threads.
 */
#ifndef SLIMVEC_H
#define SLIMVEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SV_ID_MAX 128      /* longest string id, bytes */
#define SV_DIM_MAX 65536   /* largest dimension (keeps u8 dot sums in u32) */
#define SV_R_MAX 255       /* largest graph degree (fits the packed edge word) */
#define SV_K_MAX 10000     /* most neighbours one search returns */
#define SV_L_MAX 100000    /* largest search list */

typedef enum sv_status {
    SV_OK = 0,
    SV_ERR_INVALID_ARGUMENT, /* bad parameter or bad vector (dim, NaN, ...) */
    SV_ERR_NOT_FOUND,        /* unknown id */
    SV_ERR_ALREADY_EXISTS,   /* duplicate id */
    SV_ERR_RESOURCE,         /* out of memory or over a capacity limit */
    SV_ERR_INTERNAL,         /* a broken invariant (validator) */
    SV_ERR_IO,               /* a file operation failed (disk full, fsync error, ...) */
    SV_ERR_CORRUPT,          /* a data file fails its checks (checksum, size, content) */
    SV_ERR_INTERRUPTED,      /* the caller's sv_interrupt said stop; nothing changed */
    SV_ERR_BUSY,             /* not now (a full write buffer); nothing changed, retry later */
    SV_ERR_CONFLICT          /* engine.h's two-step calls only: an id the call names has a
                              * write in flight; nothing changed (the durable layer waits
                              * for the writes in flight and asks again). The calls in this
                              * header never return it. */
} sv_status;

typedef struct sv_error {
    sv_status code;
    char message[256];
} sv_error;

const char *sv_status_name(sv_status s);

typedef enum sv_metric { SV_METRIC_L2 = 0, SV_METRIC_IP, SV_METRIC_COSINE } sv_metric;
typedef enum sv_storage { SV_STORAGE_F32 = 0, SV_STORAGE_INT8 } sv_storage;
/* Where full-precision originals live besides the codes (int8 only):
 * nowhere, or in a file, memory-mapped, never in the arena (originals.h).
 * With them a search re-ranks its best candidates by exact distance and a
 * get returns the original. */
typedef enum sv_originals_mode { SV_ORIGINALS_NONE = 0, SV_ORIGINALS_DISK } sv_originals_mode;

const char *sv_metric_name(sv_metric m);
const char *sv_storage_name(sv_storage s);

/*
 * Allocator hook. Every byte a collection holds is allocated through it, so
 * binding it to a jemalloc arena makes the arena's counters the collection's
 * true memory. `good_size` (may be NULL) returns the usable size the
 * allocator really reserves for a request, so that growable arrays use the
 * slack they are charged for anyway.
 */
typedef struct sv_allocator {
    void *(*alloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    size_t (*good_size)(void *ctx, size_t size);
    void *ctx;
} sv_allocator;

/* The process allocator (malloc/realloc/free). */
const sv_allocator *sv_allocator_default(void);

typedef struct sv_params {
    uint32_t dim;              /* 1..SV_DIM_MAX */
    sv_metric metric;
    sv_storage storage;
    uint32_t R;                /* max out-degree, 2..SV_R_MAX */
    uint32_t L_build;          /* search list size while inserting, R..SV_L_MAX */
    float alpha;               /* robust-prune slack, 1.0..2.0 */
    uint64_t seed;             /* randomness (insert order in a flush) */
    uint32_t threads;          /* flush/consolidate threads; 0 = all cores */
    uint32_t flush_threshold;  /* buffered vectors that make an add flush; 0 = only
                                  sv_collection_flush (a server flushes on its own
                                  thread instead and always sets one) */
    const sv_allocator *allocator; /* NULL = sv_allocator_default() */
    sv_originals_mode originals;   /* SV_ORIGINALS_DISK needs storage int8 */
    const char *originals_path;    /* the originals file (opened or created); NULL:
                                      an unnamed temporary file, gone with the
                                      collection (the durable layer names one in
                                      its directory); not copied: must outlive
                                      sv_collection_create only */
} sv_params;

/* Defaults: L2, int8, R=32, L_build=64, alpha=1.0 below SV_DENSE_ALPHA_DIM
 * dimensions and 1.1 from it, seed=1, all cores, flush at 8192 buffered
 * vectors. */
#define SV_DENSE_ALPHA_DIM 256
void sv_params_default(sv_params *p, uint32_t dim);

typedef struct sv_collection sv_collection;

sv_status sv_collection_create(const sv_params *params, sv_collection **out, sv_error *err);
void sv_collection_free(sv_collection *c); /* NULL is a no-op */
const sv_params *sv_collection_params(const sv_collection *c);

/*
 * Add n vectors (row-major n x dim floats; dim must be the collection's). `ids` may be NULL (all assigned)
 * or hold n entries, each NULL or "" to be assigned. `assigned` may be NULL or
 * hold n entries: entry i receives the numeric id of vector i when it was
 * assigned or given as a canonical number, else UINT64_MAX. The whole batch is
 * checked before anything is applied. May run a flush (flush_threshold).
 */
sv_status sv_collection_add(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                            const char *const *ids, uint64_t *assigned, sv_error *err);

typedef struct sv_hit {
    float distance;            /* L2: squared distance; IP: -dot; cosine: 1 - cos */
    char id[SV_ID_MAX + 1];    /* NUL-terminated */
} sv_hit;

/* ---- payloads and filters (core/payload: payload.h, filter.h say how) ------- */

/* Payloads: a few typed fields per vector; a key has one type in a
 * collection while it holds any value. */
#define SV_PAYLOAD_KEY_MAX 64        /* bytes of a key */
#define SV_PAYLOAD_STRING_MAX 1024   /* bytes of a string value */
#define SV_PAYLOAD_LIST_MAX 256      /* items of a list */
#define SV_PAYLOAD_FIELDS_MAX 64     /* fields of one payload */
#define SV_PAYLOAD_KEYS_MAX 1024     /* keys of one collection */
#define SV_PAYLOAD_BYTES_MAX 65536   /* one payload, encoded (pcodec.h) */

typedef enum sv_pv_type {
    SV_PV_NONE = 0,
    SV_PV_STRING = 1,
    SV_PV_INT = 2,    /* int64 */
    SV_PV_DOUBLE = 3, /* finite */
    SV_PV_BOOL = 4,
    SV_PV_STRINGS = 5, /* a list of strings */
    SV_PV_INTS = 6,    /* a list of int64 */
} sv_pv_type;

/* One field as a caller gives it (and as sv_payloads_get returns it). */
typedef struct sv_pv_field {
    const char *key;        /* NUL-terminated UTF-8, 1..SV_PAYLOAD_KEY_MAX bytes */
    sv_pv_type type;
    const char *s;          /* STRING: NUL-terminated UTF-8 */
    int64_t i;              /* INT */
    double d;               /* DOUBLE */
    int b;                  /* BOOL: 0 or 1 */
    const char *const *ss;  /* STRINGS: n items */
    const int64_t *is;      /* INTS: n items */
    uint32_t n;             /* items of a list */
} sv_pv_field;

typedef struct sv_payload {
    const sv_pv_field *fields;
    uint32_t n;
} sv_payload;

typedef enum sv_payload_mode {
    SV_PAYLOAD_REPLACE = 0, /* the slot's fields become exactly these */
    SV_PAYLOAD_PATCH = 1,   /* these fields set, the others kept */
} sv_payload_mode;

/* Filters: a vector passes when it passes every `must`, at least one
 * `should` (when there are any) and no `must_not`; a condition on a list
 * holds for any item; a vector without the key matches no value and no
 * range, and is empty. Conditions name keys the collection has. */
#define SV_FILTER_DEPTH_MAX 8        /* nesting of filters in filters */
#define SV_FILTER_CONDITIONS_MAX 256 /* conditions of a whole filter */
#define SV_FILTER_VALUES_MAX 1024    /* values of a match-any, ids of a has-id */
#define SV_FILTER_VALUES_TOTAL_MAX 16384 /* values and ids of a whole filter */

typedef enum sv_cond_kind {
    SV_COND_MATCH = 1,     /* key's value (or a list item) equals `value` */
    SV_COND_MATCH_ANY = 2, /* ... equals one of `any` */
    SV_COND_RANGE = 3,     /* key's number (or a list item) within lo..hi */
    SV_COND_HAS_ID = 4,    /* the vector's id is one of `ids` */
    SV_COND_IS_EMPTY = 5,  /* key absent, or an empty list */
    SV_COND_FILTER = 6,    /* `sub` passes */
} sv_cond_kind;

/* A range bound: unset, or a number (int64 or double) and whether it is
 * included. Compared exactly (int64 and double as long double). */
typedef struct sv_bound {
    int set;
    int inclusive;
    int is_int;
    int64_t i;
    double d;
} sv_bound;

struct sv_filter;

typedef struct sv_cond {
    sv_cond_kind kind;
    const char *key;            /* all but HAS_ID and FILTER */
    sv_pv_field value;          /* MATCH: STRING, INT or BOOL (key unused) */
    const sv_pv_field *any;     /* MATCH_ANY: n_any values, all STRING or all INT */
    uint32_t n_any;
    sv_bound lo, hi;            /* RANGE: at least one set; finite */
    const char *const *ids;     /* HAS_ID */
    uint32_t n_ids;
    const struct sv_filter *sub; /* FILTER */
} sv_cond;

typedef struct sv_filter {
    const sv_cond *must;
    uint32_t n_must;
    const sv_cond *should;
    uint32_t n_should;
    const sv_cond *must_not;
    uint32_t n_must_not;
} sv_filter;

/*
 * k nearest neighbours of one query. search_list (>= k; smaller is raised to
 * k) trades speed for recall. Writes up to k hits, nearest first, and their
 * count to *n_hits. Tombstoned vectors are never returned.
 */
sv_status sv_collection_search(sv_collection *c, const float *query, uint32_t dim, uint32_t k,
                               uint32_t search_list, sv_hit *hits, size_t *n_hits,
                               sv_error *err);

/*
 * A way for the caller to stop a long call: `stop` is asked every few dozen
 * steps of work (graph expansions, buffered rows) and returns nonzero to
 * stop; the call then returns SV_ERR_INTERRUPTED having changed nothing.
 * It must be cheap and thread-safe (a server checks a deadline and a
 * cancelled flag).
 */
typedef struct sv_interrupt {
    int (*stop)(void *ctx);
    void *ctx;
} sv_interrupt;

/* sv_collection_search that `intr` (may be NULL) can stop. */
sv_status sv_collection_search_ex(sv_collection *c, const float *query, uint32_t dim, uint32_t k,
                                  uint32_t search_list, const sv_interrupt *intr, sv_hit *hits,
                                  size_t *n_hits, sv_error *err);

/*
 * Search with every option. rerank (collections with originals on disk):
 * how many of the best candidates by code distance get their exact
 * distance from the originals and are ordered by it; 0 = the search list,
 * SV_RERANK_OFF = none (the hits then carry code distances). Raised to k.
 */
#define SV_RERANK_OFF UINT32_MAX
/* sv_collection_add with a payload per vector (payloads may be NULL: none;
 * else n of them, each checked with the batch: nothing is added when one
 * is refused). */
sv_status sv_collection_add_payloads(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                                     const char *const *ids, const sv_payload *payloads, uint64_t *assigned,
                                     sv_error *err);
/*
 * Upsert: as sv_collection_add_payloads, but a given id the collection has
 * is replaced, vector and payload (none when payloads is NULL), instead of
 * refused. Each replacement happens in one step under the write lock: a
 * search sees the old vector or the new one, never both or neither. An id
 * given twice in the batch is still refused. *replaced (may be NULL): how
 * many existing ids were replaced; the rest were inserted.
 */
sv_status sv_collection_upsert(sv_collection *c, const float *vectors, size_t n, uint32_t dim,
                               const char *const *ids, const sv_payload *payloads, uint64_t *assigned,
                               size_t *replaced, sv_error *err);
/*
 * Index a payload key (the key is made, with no values, when the
 * collection has none yet): matches and ranges on it then find their
 * vectors by binary search over the key's sorted (value, vector) pairs
 * instead of scanning its whole column, when few pass. For string, int64,
 * double keys and lists of them (a bool key's index is never read). Its
 * bytes are the collection's (payload part). Indexing an indexed key is a
 * no-op.
 */
sv_status sv_collection_index_key(sv_collection *c, const char *key, sv_error *err);
/* The indexed keys: their count; the first cap names into keys (valid
 * while the collection's keys do not change: keys are never dropped). */
uint32_t sv_collection_indexed_keys(sv_collection *c, const char **keys, uint32_t cap);
/* Replace (SV_PAYLOAD_REPLACE) or patch a live vector's payload. */
sv_status sv_collection_set_payload(sv_collection *c, const char *id, const sv_payload *payload,
                                    sv_payload_mode mode, sv_error *err);
/* A live vector's payload copied into buf[0..cap) (8-byte aligned; fields,
 * lists and texts, *out pointing into it); *need receives the bytes it
 * takes. SV_ERR_RESOURCE with *need set when cap is too small. */
sv_status sv_collection_get_payload(sv_collection *c, const char *id, void *buf, size_t cap, sv_payload *out,
                                    size_t *need, sv_error *err);
/* Live vectors passing filter (NULL: all). intr (may be NULL) may stop the
 * filter's evaluation (SV_ERR_INTERRUPTED), as for scroll below. */
sv_status sv_collection_count_filtered(sv_collection *c, const struct sv_filter *filter, const sv_interrupt *intr,
                                        uint64_t *count, sv_error *err);

/*
 * The live vectors passing filter (NULL: all), a page at a time in slot
 * order: up to limit ids from *cursor (0: the start) into ids[]; *n of
 * them; *cursor becomes the next page's (0 when there is none). A vector
 * added during a scroll may or may not come; one deleted before its page
 * does not. A cursor from before a compaction (slots moved) is
 * SV_ERR_INVALID_ARGUMENT: start again.
 */
sv_status sv_collection_scroll(sv_collection *c, const struct sv_filter *filter, const sv_interrupt *intr,
                               uint64_t *cursor, uint32_t limit, char (*ids)[SV_ID_MAX + 1], uint32_t *n,
                               sv_error *err);

typedef struct sv_search_opts {
    uint32_t k;
    uint32_t search_list;
    uint32_t rerank;
    const sv_interrupt *intr;  /* may be NULL */
    /* 0 < target_recall <= 1: the search list is the calibration's smallest
     * one that reached this recall@10 (sv_collection_calibrate), the largest
     * it measured when none did, scaled by ceil(k / 10) for k > 10;
     * search_list is used when the collection has no calibration yet. */
    float target_recall;
    uint32_t *used_search_list; /* may be NULL: receives the list searched */
    /* May be NULL. Hits then all pass it, and there are k of them whenever
     * k live vectors pass: a filter few vectors pass is searched
     * exhaustively, one many pass inside the graph (search.c says when). */
    const struct sv_filter *filter;
    /* With a filter: the most passing vectors scanned instead of searching
     * the graph (0: 64 per search-list entry; 1: the graph whenever more
     * than one passes). */
    uint32_t filter_scan;
} sv_search_opts;
sv_status sv_collection_search_opts(sv_collection *c, const float *query, uint32_t dim,
                                    const sv_search_opts *o, sv_hit *hits, size_t *n_hits,
                                    sv_error *err);

/*
 * Recall calibration (calibrate.c): `queries` (1..1000) of the collection's
 * own vectors, picked with `seed`, each searched for with itself left out,
 * give recall@10 at each search list of a grid (10 .. 1024, stopping once
 * recall reaches 0.9995), against the exact answer over every live vector
 * (the originals when on disk: then the figures include the codes' error;
 * else the stored vectors). The curve is kept (replacing the last) for
 * target_recall and sv_collection_calibration. Runs concurrently with
 * everything; takes about queries x (live vectors + the grid's searches).
 */
typedef struct sv_calib_point {
    uint32_t search_list;
    float recall;
} sv_calib_point;
typedef struct sv_calibration {
    uint32_t queries;
    uint64_t live;           /* live vectors when it ran */
    int exact;               /* 1: against the originals on disk */
    double seconds;
    uint32_t n_points;       /* 0: never calibrated */
    sv_calib_point points[16];
} sv_calibration;
sv_status sv_collection_calibrate(sv_collection *c, uint32_t queries, uint64_t seed, sv_error *err);
/* The last calibration; 0 when there is none. */
int sv_collection_calibration(sv_collection *c, sv_calibration *out);
/* The smallest search list that reached target, 0 when none did. */
uint32_t sv_calibration_search_list(const sv_calibration *cal, float target);
/* The list a target_recall search for k neighbours uses: the smallest that
 * reached target, else the largest measured, times ceil(k / 10) for k > 10
 * (the curve is recall@10: an estimate, recall@k is not measured); 0 when
 * there is no curve. */
uint32_t sv_calibration_list_for(const sv_calibration *cal, float target, uint32_t k);

/* The stored vector of an id (the original when originals are on disk, else
 * dequantized for int8; normalised for cosine). */
sv_status sv_collection_get(sv_collection *c, const char *id, float *out, uint32_t dim,
                            sv_error *err);

/* Delete n ids; unknown ids fail the whole call with SV_ERR_NOT_FOUND. An
 * id repeated in the call is deleted once. */
sv_status sv_collection_delete(sv_collection *c, const char *const *ids, size_t n,
                               sv_error *err);

uint64_t sv_collection_count(sv_collection *c); /* live vectors */
/* The longest id the collection has held since it was created or loaded
 * (an upper bound for sizing answers; assigned ids count up to 19 bytes). */
size_t sv_collection_id_len_max(sv_collection *c);

/* Move the write buffer into the graph and free it. */
sv_status sv_collection_flush(sv_collection *c, sv_error *err);

/* Repair the neighbours of deleted nodes, recycle their slots, free their edges. */
sv_status sv_collection_consolidate(sv_collection *c, sv_error *err);

/* Move the vectors at the top of the slot range into slots consolidation
 * freed and give the top back: the memory of a collection that was churned
 * shrinks to what its live vectors need. */
sv_status sv_collection_compact(sv_collection *c, sv_error *err);

/* Check the graph: degrees <= R, no self-loops or duplicate edges, every edge
 * to a used slot, every live indexed node reachable from the entry point. */
sv_status sv_collection_validate(sv_collection *c, sv_error *err);

/* What the graph's connect step did (the pass at the end of every flush
 * and consolidation that gives cut-off nodes an in-edge back). */
typedef struct sv_connect_stats {
    uint64_t calls;              /* connect passes counted here */
    double seconds;              /* their wall time */
    uint64_t rounds;             /* linking rounds (0: nothing was unreachable) */
    uint64_t unreachable_before; /* live indexed nodes the entry did not reach at the start */
    uint64_t linked;             /* in-edges added */
    uint64_t replaced;           /* of those, how many took the place of another edge */
    uint64_t searches;           /* nodes whose linker took a search from the entry */
    uint64_t scans;              /* nodes whose linker took a scan of every slot */
    uint64_t unreachable_after;  /* still unreachable when it returned (0 unless it failed) */
} sv_connect_stats;

/*
 * Statistics. Counts are exact. The byte figures per part are the engine's
 * own sum of the allocator's usable sizes (an estimate of the breakdown);
 * the measurement of the whole is the arena the allocator hook is bound to.
 */
typedef struct sv_stats {
    uint64_t live;            /* vectors visible to search */
    uint64_t indexed;         /* live vectors in the graph */
    uint64_t buffered;        /* live vectors in the write buffer */
    uint64_t tombstones;      /* deleted, awaiting consolidation */
    uint64_t slots;           /* slots in use (live + tombstones) */
    uint64_t free_slots;      /* recycled slots awaiting reuse */
    double avg_degree;        /* mean out-degree of indexed nodes */
    double avg_edge_slots;    /* mean edge slots per indexed node (= avg_degree: a
                                 list's block holds exactly its edges) */
    double avg_edge_bytes;    /* mean bytes of a node's list: its block + its 4-byte
                                 handle (the slabs' free space is not in it) */
    uint32_t max_degree;
    uint64_t est_bytes_vectors; /* vector store (codes + per-vector params) */
    uint64_t est_bytes_edges;   /* neighbour lists + their index */
    uint64_t est_bytes_idmap;   /* id map (hash + slot->id + strings) */
    uint64_t est_bytes_buffer;  /* write buffer */
    uint64_t est_bytes_other;   /* slot states, quantizer, bookkeeping */
    uint64_t est_bytes_payload; /* payloads: columns, lists, string dictionary */
    /* Originals on disk (0 without): not memory of the collection. */
    uint64_t orig_file_bytes;     /* the file's length */
    uint64_t orig_disk_bytes;     /* blocks it holds on disk */
    uint64_t orig_resident_bytes; /* its mapped records in the page cache */
    sv_connect_stats connect_last;  /* the last flush's or consolidation's connect */
    sv_connect_stats connect_total; /* every connect since the collection was made or loaded */
} sv_stats;

void sv_collection_stats(sv_collection *c, sv_stats *out);

#ifdef __cplusplus
}
#endif
#endif
