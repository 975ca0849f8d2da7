/*
 * Following a log another process writes (cluster mode): a replica of a
 * shard applies the shard's stream in order, so every replica holds the
 * same ids and vectors after the same LSN (their graphs may differ, which
 * is harmless). Writers (routers) append ADD and DELETE records only;
 * flushes, training and consolidations are each replica's own business
 * and never logged: its snapshots keep them.
 *
 * Applying is deterministic: a record is applied whole or not at all, by
 * the same checks on every replica (an id that already exists, a delete of
 * an id that does not, a vector the engine refuses), so a record refused
 * on one replica is refused on all of them, with the same outcome.
 *
 * Ids the cluster assigns: a record leaves them to the follower (an ADD
 * entry without an id); vector i of the record at LSN `lsn` of shard s of
 * S is
 *     S * (ceil(2^62 / S) + lsn * 2^20 + i) + s
 * unique cluster-wide (a shard and LSN never repeat), at or above 2^62 so
 * no client's numeric id below 2^62 can collide, and routed back to s by
 * sv_follow_route. A record holds at most 2^20 vectors.
 *
 * Writes sent twice: a writer wraps each record with its key (KEYED:
 * u8 key length | key | u32 type | payload), the same key when it sends
 * the record again. The log de-duplicates by key too (a stream's message
 * id), but not always: a record committed while the log's servers crash
 * can come back after the de-duplication state is rebuilt, and the resend
 * is taken as new. So followers check as well, the same way on every
 * replica: a keyed record whose key's first copy is one of the
 * SV_FOLLOW_WINDOW records (by LSN) before it is a duplicate: applied as
 * nothing, answered as the first one was (duplicate_of). The window is a
 * matter of LSNs alone, so a follower that starts from a snapshot and
 * reads the window's records before it again (sv_follow_window_note)
 * decides every later record as one that never stopped; the log keeps
 * that many records below the lowest snapshot.
 */
#ifndef SV_FOLLOW_H
#define SV_FOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include "slimvec.h"

#define SV_FOLLOW_BATCH_MAX (1u << 20)
#define SV_FOLLOW_ASSIGNED_MIN (UINT64_C(1) << 62)

typedef struct sv_follow_ids {
    uint32_t shards; /* S >= 1 */
    uint32_t shard;  /* s < S */
} sv_follow_ids;

/* The id of vector i of the record at lsn; 0 when the LSN is past what the
 * scheme can number (lsn * 2^20 * S must stay below 2^62). */
uint64_t sv_follow_assigned_id(const sv_follow_ids *f, uint64_t lsn, uint32_t i);
/* The shard an id belongs to: a canonical decimal id below 2^63 by its
 * number (mod S), any other by the CRC-32C of its bytes (mod S). Stable
 * across versions: it decides where data lives. */
uint32_t sv_follow_route(const char *id, size_t len, uint32_t shards);
/* 1 when a client may give this id in cluster mode (numbers from 2^62 up
 * are the cluster's to assign). */
int sv_follow_id_allowed(const char *id, size_t len);

#define SV_FOLLOW_WINDOW 4096u
#define SV_FOLLOW_KEY_MAX 200u

/* The keys of the last SV_FOLLOW_WINDOW keyed records and their outcomes. */
typedef struct sv_follow_window sv_follow_window;
sv_follow_window *sv_follow_window_create(void); /* NULL when out of memory */
void sv_follow_window_free(sv_follow_window *w);
/* A record before the snapshot a follower starts from: its key goes into
 * the window (its outcome is not known again: answered as applied). */
void sv_follow_window_note(sv_follow_window *w, uint32_t type, uint64_t lsn, const uint8_t *payload, size_t len);

/* A KEYED record's parts (0 when it does not decode). */
int sv_follow_unwrap(const uint8_t *p, size_t len, const uint8_t **key, size_t *key_len, uint32_t *type,
                     const uint8_t **inner, size_t *inner_len);

typedef struct sv_follow_result {
    sv_status outcome;     /* SV_OK: applied; else the refusal (the same on every replica) */
    uint64_t count;        /* vectors added, distinct ids deleted */
    uint64_t duplicate_of; /* a duplicate: the LSN of the first (nothing applied now) */
} sv_follow_result;

/* The window's entry for the keyed record at lsn (its first copy): 1 and
 * *res when the window holds it (a record read back at a restart, before
 * the snapshot, is answered as applied with a count of 0: its outcome is
 * not known again). */
int sv_follow_window_outcome(const sv_follow_window *w, uint64_t lsn, sv_follow_result *res);

/*
 * Apply one record of a followed log to c. SV_OK: the record is done
 * (applied, refused by the deterministic checks, or a duplicate: res says
 * which, `err` the refusal's reason). Any other status (out of memory, a
 * damaged record) applied nothing and must be retried or reported:
 * skipping it would let replicas differ. w may be NULL (no keyed records
 * expected).
 */
sv_status sv_follow_apply(sv_collection *c, const sv_follow_ids *f, sv_follow_window *w, uint32_t type,
                          uint64_t lsn, const uint8_t *payload, size_t len, sv_follow_result *res, sv_error *err);

#endif
