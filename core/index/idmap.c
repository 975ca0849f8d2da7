/*
 * Id map (see idmap.h): external ids <-> dense uint32 slots.
 *
 * keys[slot] is the source of truth for what a slot holds: UINT64_MAX when
 * unbound, the number itself for a numeric id, or a tagged pointer (bit 63
 * set) to a string allocation of 1 + len bytes (length byte, then the bytes).
 *
 * table[] is an open-addressing hash index over the bound slots. An entry is
 * slot + 1 (0 = empty), so the table stores no keys and no hashes: a probe
 * compares through keys[], and a rehash or a backward shift recomputes the
 * hash from keys[]. That keeps a numeric id at 8 + ~5 bytes.
 *
 * Every allocation goes through the sv_mem_* helpers with the allocator and
 * tally given at create, and each free passes the exact size that was asked
 * for, so the tally returns to zero when the map is freed.
 *
 * Hashing is keyed, with a key the outside never sees. Ids come from
 * clients, so anyone who can predict the hash can choose ids that share one
 * probe run, and linear probing then costs O(n) per insert, under the
 * collection's write lock. The old hash was mix64(id ^ seed), seed being the
 * collection's client-chosen and DescribeCollection-visible parameter;
 * mix64 is invertible, so 20,000 chosen numeric ids took 8.5 s to insert
 * instead of 0.23 s. Now every id goes through SipHash-2-4 (a keyed PRF made
 * for exactly this job; libsodium's crypto_shorthash_siphash24, rather than
 * our own copy) under a 16-byte key from libsodium's randombytes_buf (one
 * key per kind of id), drawn once per process. The keys are never written
 * anywhere: nothing persisted depends on the table order (snapshots store
 * each slot's id and rebuild the table at load), so a restart simply gets
 * new keys.
 *
 * What it costs (1M ids, old and new map in one process, 2 shared cores):
 * random numbers insert 13.5 -> 6.8 M/s and look up 23 -> 6.8 M/s; 20-byte
 * strings 3.9 -> 2.0 and 2.8 -> 1.9 M/s. One lookup waiting on the one
 * before: 190 -> 240 ns. SipHash of 8 bytes is 10 ns against under 1 ns for
 * mix64, but its ~130 instructions also stop the CPU overlapping the cache
 * misses of back-to-back operations, and every table doubling rehashes
 * every id. An inlined SipHash measured the same as libsodium's (10.3 vs
 * 10.5 ns; call overhead is not the cost), and prefetching ahead in the
 * rehash gained nothing measurable here. Next to a vector's insert into
 * the graph (10,000-25,000 vectors/s, 40-100 us each) the map stays small.
 */
#include "idmap.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNBOUND UINT64_MAX
#define STRING_TAG (UINT64_C(1) << 63)
#define NUMBER_LIMIT (UINT64_C(1) << 63) /* numeric ids are below this */

#define TABLE_MIN 16u
/* Load limit 80%: count * 5 <= cap * 4 holds after every insert, so the
 * table always has an empty entry and every probe loop ends. */
#define LOAD_NUM 4u
#define LOAD_DEN 5u

struct sv_idmap {
    sv_allocator alloc;    /* a copy, so the caller's struct need not outlive us */
    sv_tally *tally;       /* may be NULL */
    /* Identity mode: every bound slot's id is its own number (ids assigned
     * to a collection that only grew, or numbers given in slot order). Then
     * `bound` (one bit per slot, bits_cap of them) is all there is: no keys
     * and no table. The first binding that breaks it (a string, another
     * number, a move) builds keys[] and the table from the bits. */
    int identity;
    uint64_t *bound;
    uint32_t bits_cap;     /* slots the bitmap has room for (a multiple of 64) */
    uint32_t bits_n;       /* slots reserved (the callers' range) */
    uint64_t *keys;        /* keys_cap words */
    uint32_t keys_cap;
    uint32_t *table;       /* table_cap entries (power of two); NULL until the first insert */
    size_t table_cap;
    size_t count;          /* bound ids */
    uint64_t next_number;  /* counter for sv_idmap_next_free_number */
};

/* ---- hashing ---------------------------------------------------------- */

/* One SipHash key per kind of id, so that an 8-byte string id and the
 * number spelt by the same bytes do not share a home position as well.
 * (They could never be confused: a lookup compares kinds through keys[].)
 * Written once by hash_keys_init under pthread_once; read without a lock:
 * a thread hashes only for a map that sv_idmap_create (after the
 * pthread_once) returned, to it or to a thread that handed it over under
 * the collection's lock, so the writes happen before every read. */
static unsigned char hash_key_number[crypto_shorthash_siphash24_KEYBYTES];
static unsigned char hash_key_string[crypto_shorthash_siphash24_KEYBYTES];
static int hash_keys_ready; /* 0 when sodium_init failed */
static pthread_once_t hash_keys_once = PTHREAD_ONCE_INIT;

static void hash_keys_init(void)
{
    /* sodium_init picks the randomness source (getrandom on Linux); calling
     * it again elsewhere in the process is harmless (it returns 1). */
    if (sodium_init() < 0)
        return;
    randombytes_buf(hash_key_number, sizeof hash_key_number);
    randombytes_buf(hash_key_string, sizeof hash_key_string);
    hash_keys_ready = 1;
}

static uint64_t siphash(const unsigned char *key, const unsigned char *in, size_t len)
{
    unsigned char out[crypto_shorthash_siphash24_BYTES];
    crypto_shorthash_siphash24(out, in, (unsigned long long)len, key);
    uint64_t h;
    memcpy(&h, out, sizeof h); /* any fixed byte order will do: all 64 bits are uniform */
    return h;
}

/* A number hashes as its 8 little-endian bytes, whatever the CPU. They are
 * written with one 8-byte store, not byte by byte: SipHash reads them back
 * as one 8-byte load, which cannot be forwarded from 8 one-byte stores and
 * then waits for them to retire, behind the previous lookup's cache
 * misses. That serialised back-to-back lookups (1M random numbers: 2.6
 * M/s instead of 6.8). */
static uint64_t hash_number(uint64_t num)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    num = __builtin_bswap64(num);
#endif
    unsigned char b[8];
    memcpy(b, &num, sizeof b);
    return siphash(hash_key_number, b, sizeof b);
}

static uint64_t hash_string(const unsigned char *s, size_t len)
{
    return siphash(hash_key_string, s, len);
}

/* ---- key words -------------------------------------------------------- */

static int word_is_string(uint64_t w)
{
    return w != UNBOUND && (w & STRING_TAG) != 0;
}

/* Always on (not assert()): a pointer with bit 63 set would be read back as
 * a different kind of key and silently corrupt the map. */
static uint64_t tag_string(const unsigned char *p)
{
    uint64_t bits = (uint64_t)(uintptr_t)p;
    if (bits & STRING_TAG) {
        fprintf(stderr, "slimvec idmap: pointer %p has bit 63 set\n", (const void *)p);
        abort();
    }
    return bits | STRING_TAG;
}

static unsigned char *untag_string(uint64_t w)
{
    return (unsigned char *)(uintptr_t)(w & ~STRING_TAG);
}

/* Hash of a bound key word, by its kind. */
static uint64_t hash_word(uint64_t w)
{
    if (word_is_string(w)) {
        const unsigned char *s = untag_string(w);
        return hash_string(s + 1, s[0]);
    }
    return hash_number(w);
}

static void free_word(sv_idmap *m, uint64_t w)
{
    if (word_is_string(w)) {
        unsigned char *s = untag_string(w);
        sv_mem_free(&m->alloc, m->tally, s, (size_t)s[0] + 1);
    }
}

/* ---- table ------------------------------------------------------------ */

/* Put an entry at the first empty position from its home. The caller
 * guarantees room (the load limit leaves at least one empty position). */
static void table_place(uint32_t *table, size_t mask, uint64_t hash, uint32_t entry)
{
    size_t i = (size_t)hash & mask;
    while (table[i] != 0)
        i = (i + 1) & mask;
    table[i] = entry;
}

/* Whether a table of `cap` entries holds `need` within the 80% load limit.
 * In 64-bit arithmetic: need <= 2^32 and cap is bounded in table_reserve. */
static int table_fits(size_t cap, size_t need)
{
    return (uint64_t)need * LOAD_DEN <= (uint64_t)cap * LOAD_NUM;
}

/* Make room for `need` entries within the load limit, doubling as needed.
 * On failure the old table is untouched. */
static sv_status table_reserve(sv_idmap *m, size_t need)
{
    if (m->table && table_fits(m->table_cap, need))
        return SV_OK;

    size_t cap = m->table_cap ? m->table_cap : TABLE_MIN;
    while (!table_fits(cap, need)) {
        if (cap > SIZE_MAX / 2 / sizeof(uint32_t))
            return SV_ERR_RESOURCE;
        cap *= 2;
    }

    uint32_t *table = sv_mem_calloc(&m->alloc, m->tally, cap, sizeof(uint32_t));
    if (!table)
        return SV_ERR_RESOURCE;
    size_t mask = cap - 1;
    for (size_t i = 0; i < m->table_cap; i++) {
        uint32_t e = m->table[i];
        if (e != 0)
            table_place(table, mask, hash_word(m->keys[e - 1]), e);
    }
    sv_mem_free(&m->alloc, m->tally, m->table, m->table_cap * sizeof(uint32_t));
    m->table = table;
    m->table_cap = cap;
    return SV_OK;
}

/* Table position of a bound slot's entry. */
static size_t table_pos_of_slot(const sv_idmap *m, uint32_t slot)
{
    size_t mask = m->table_cap - 1;
    size_t i = (size_t)hash_word(m->keys[slot]) & mask;
    uint32_t want = slot + 1;
    while (m->table[i] != want)
        i = (i + 1) & mask; /* the entry is present: the loop ends */
    return i;
}

/* Empty position i, then pull later entries of the probe run back so that
 * every entry stays reachable from its home without tombstones. */
static void table_delete_at(sv_idmap *m, size_t i)
{
    size_t mask = m->table_cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t e = m->table[j];
        if (e == 0)
            break;
        size_t home = (size_t)hash_word(m->keys[e - 1]) & mask;
        /* The entry at j may move to the hole at i only if its home is not
         * in the cyclic range (i, j]: i.e. it is at least as far from its
         * home as the hole is from j. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->table[i] = e;
            i = j;
        }
    }
    m->table[i] = 0;
}

/* ---- public ----------------------------------------------------------- */

sv_idmap *sv_idmap_create(const sv_allocator *a, sv_tally *t, uint64_t seed)
{
    (void)seed; /* no longer salts the hash: see the file header */
    pthread_once(&hash_keys_once, hash_keys_init);
    if (!hash_keys_ready)
        return NULL;
    sv_idmap *m = sv_mem_alloc(a, t, sizeof *m);
    if (!m)
        return NULL;
    *m = (sv_idmap){.alloc = *a, .tally = t, .identity = 1};
    return m;
}

static int bit_test(const sv_idmap *m, uint64_t slot)
{
    return slot < m->bits_n && (m->bound[slot >> 6] >> (slot & 63)) & 1;
}

/* Resize the identity bitmap to cover at least n slots (or shrink to n). */
static sv_status bits_resize(sv_idmap *m, uint64_t n)
{
    uint64_t words = (n + 63) / 64;
    size_t bytes = (size_t)words * sizeof(uint64_t);
    if (bytes)
        bytes = sv_good_size(&m->alloc, bytes);
    words = bytes / sizeof(uint64_t);
    if (words * 64 > UINT32_MAX)
        words = UINT32_MAX / 64;
    size_t old = (size_t)m->bits_cap / 64;
    if (words == old)
        return SV_OK;
    uint64_t *b = sv_mem_realloc(&m->alloc, m->tally, m->bound, old * sizeof(uint64_t),
                                 (size_t)words * sizeof(uint64_t));
    if (!b && words)
        return SV_ERR_RESOURCE;
    for (size_t i = old; i < words; i++)
        b[i] = 0;
    m->bound = b;
    m->bits_cap = (uint32_t)(words * 64);
    if (m->bits_n > m->bits_cap)
        m->bits_n = m->bits_cap;
    return SV_OK;
}

/*
 * Leave identity mode: keys[] for every slot the bitmap covers, each bound
 * slot's number in it, and the table. On failure nothing changed.
 */
static sv_status materialize(sv_idmap *m)
{
    if (!m->identity)
        return SV_OK;
    size_t cap = sv_good_size(&m->alloc, (size_t)(m->bits_n ? m->bits_n : 1) * sizeof(uint64_t)) /
                 sizeof(uint64_t);
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    uint64_t *keys = sv_mem_alloc(&m->alloc, m->tally, cap * sizeof(uint64_t));
    if (!keys)
        return SV_ERR_RESOURCE;
    m->keys = keys;
    m->keys_cap = (uint32_t)cap;
    m->identity = 0; /* table_reserve reads keys[] of the entries it moves */
    if (m->count && table_reserve(m, m->count) != SV_OK) {
        m->identity = 1;
        m->keys = NULL;
        m->keys_cap = 0;
        sv_mem_free(&m->alloc, m->tally, keys, cap * sizeof(uint64_t));
        return SV_ERR_RESOURCE;
    }
    for (size_t i = 0; i < cap; i++) {
        keys[i] = bit_test(m, i) ? (uint64_t)i : UNBOUND;
        if (keys[i] != UNBOUND)
            table_place(m->table, m->table_cap - 1, hash_number(i), (uint32_t)i + 1);
    }
    sv_mem_free(&m->alloc, m->tally, m->bound, (size_t)m->bits_cap / 64 * sizeof(uint64_t));
    m->bound = NULL;
    m->bits_cap = m->bits_n = 0;
    return SV_OK;
}

sv_status sv_idmap_materialize(sv_idmap *m)
{
    return materialize(m);
}

void sv_idmap_free(sv_idmap *m)
{
    if (!m)
        return;
    sv_mem_free(&m->alloc, m->tally, m->bound, (size_t)m->bits_cap / 64 * sizeof(uint64_t));
    for (uint32_t s = 0; s < m->keys_cap; s++)
        free_word(m, m->keys[s]);
    sv_mem_free(&m->alloc, m->tally, m->table, m->table_cap * sizeof(uint32_t));
    sv_mem_free(&m->alloc, m->tally, m->keys, (size_t)m->keys_cap * sizeof(uint64_t));
    sv_allocator a = m->alloc;
    sv_mem_free(&a, m->tally, m, sizeof *m);
}

int sv_id_parse_number(const char *id, size_t len, uint64_t *num)
{
    /* 2^63 - 1 has 19 digits; longer can never be below 2^63. */
    if (!id || len == 0 || len > 19)
        return 0;
    if (id[0] == '0' && len > 1)
        return 0; /* leading zero: not canonical */
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (uint64_t)(c - '0'); /* 19 digits < 10^19 < 2^64: no wrap */
    }
    if (v >= NUMBER_LIMIT)
        return 0;
    if (num)
        *num = v;
    return 1;
}

sv_status sv_idmap_reserve_slots(sv_idmap *m, uint32_t n_slots)
{
    if (m->identity) {
        if (n_slots <= m->bits_n)
            return SV_OK;
        if (n_slots > m->bits_cap) {
            uint64_t want = (uint64_t)m->bits_cap + m->bits_cap / 4;
            sv_status st = bits_resize(m, want > n_slots ? want : n_slots);
            if (st != SV_OK)
                return st;
        }
        m->bits_n = n_slots;
        return SV_OK;
    }
    if (n_slots <= m->keys_cap)
        return SV_OK;

    /* Grow by a quarter (or to the request when larger): slots come in
     * batches, and a modest factor wastes little memory on large maps. */
    uint64_t want = (uint64_t)m->keys_cap + m->keys_cap / 4;
    if (want < n_slots)
        want = n_slots;
    if (want > UINT32_MAX)
        want = UINT32_MAX;
    if (want > SIZE_MAX / sizeof(uint64_t))
        return SV_ERR_RESOURCE;

    /* Take the allocator's slack: it is charged for it anyway. */
    size_t bytes = sv_good_size(&m->alloc, (size_t)want * sizeof(uint64_t));
    uint64_t cap = bytes / sizeof(uint64_t);
    if (cap < want)
        cap = want; /* a good_size below the request would be a broken hook */
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;

    uint64_t *keys = sv_mem_realloc(&m->alloc, m->tally, m->keys,
                                    (size_t)m->keys_cap * sizeof(uint64_t),
                                    (size_t)cap * sizeof(uint64_t));
    if (!keys)
        return SV_ERR_RESOURCE;
    for (uint64_t s = m->keys_cap; s < cap; s++)
        keys[s] = UNBOUND;
    m->keys = keys;
    m->keys_cap = (uint32_t)cap;
    return SV_OK;
}

void sv_idmap_move_slot(sv_idmap *m, uint32_t from, uint32_t to)
{
    /* A move gives a number another slot: no identity any more. The
     * caller materialized first (the move itself cannot fail). */
    if (m->identity && (!bit_test(m, from) || materialize(m) != SV_OK))
        return;
    if (from >= m->keys_cap || m->keys[from] == UNBOUND || to >= m->keys_cap)
        return;
    /* The entry's position depends only on the key, which moves with it. */
    size_t i = table_pos_of_slot(m, from);
    m->keys[to] = m->keys[from];
    m->keys[from] = UNBOUND;
    m->table[i] = to + 1;
}

void sv_idmap_shrink_slots(sv_idmap *m, uint32_t n_slots)
{
    if (m->identity) {
        if (n_slots < m->bits_n)
            m->bits_n = n_slots; /* all unbound there */
        if ((uint64_t)n_slots + 64 * 4 < m->bits_cap) /* only when it frees something */
            bits_resize(m, n_slots);
        return;
    }
    size_t bytes = sv_good_size(&m->alloc, (size_t)(n_slots ? n_slots : 1) * sizeof(uint64_t));
    uint64_t cap = bytes / sizeof(uint64_t);
    /* Only when it frees a quarter or more: shrinking is a copy. */
    if (cap >= m->keys_cap || (m->keys_cap - cap) * 4 < m->keys_cap)
        return;
    uint64_t *keys = sv_mem_realloc(&m->alloc, m->tally, m->keys, (size_t)m->keys_cap * sizeof(uint64_t),
                                    (size_t)cap * sizeof(uint64_t));
    if (!keys)
        return; /* keep the larger array: nothing is lost */
    m->keys = keys;
    m->keys_cap = (uint32_t)cap;
}

int sv_idmap_find_number(const sv_idmap *m, uint64_t num, uint32_t *slot)
{
    /* Numbers from 2^63 up are not ids, and could equal a tagged pointer. */
    if (num >= NUMBER_LIMIT || m->count == 0)
        return 0;
    if (m->identity) {
        if (!bit_test(m, num))
            return 0;
        if (slot)
            *slot = (uint32_t)num;
        return 1;
    }
    size_t mask = m->table_cap - 1;
    size_t i = (size_t)hash_number(num) & mask;
    for (uint32_t e; (e = m->table[i]) != 0; i = (i + 1) & mask) {
        if (m->keys[e - 1] == num) {
            if (slot)
                *slot = e - 1;
            return 1;
        }
    }
    return 0;
}

/* Lookup of a non-numeric string id. */
static int find_string(const sv_idmap *m, const unsigned char *id, size_t len, uint32_t *slot)
{
    if (m->count == 0 || m->identity)
        return 0;
    size_t mask = m->table_cap - 1;
    size_t i = (size_t)hash_string(id, len) & mask;
    for (uint32_t e; (e = m->table[i]) != 0; i = (i + 1) & mask) {
        uint64_t w = m->keys[e - 1];
        if (!word_is_string(w))
            continue;
        const unsigned char *s = untag_string(w);
        if (s[0] == len && memcmp(s + 1, id, len) == 0) {
            if (slot)
                *slot = e - 1;
            return 1;
        }
    }
    return 0;
}

int sv_idmap_find(const sv_idmap *m, const char *id, size_t len, uint32_t *slot)
{
    uint64_t num;
    if (sv_id_parse_number(id, len, &num))
        return sv_idmap_find_number(m, num, slot);
    if (len == 0 || len > SV_ID_MAX)
        return 0; /* never stored */
    return find_string(m, (const unsigned char *)id, len, slot);
}

/* Cheap guard of the caller's part of the contract: a slot out of range or
 * already bound would corrupt keys[] or leak a string. */
static int slot_is_free(const sv_idmap *m, uint32_t slot)
{
    if (m->identity)
        return slot < m->bits_n && !bit_test(m, slot);
    return slot < m->keys_cap && m->keys[slot] == UNBOUND;
}

sv_status sv_idmap_insert_number(sv_idmap *m, uint64_t num, uint32_t slot)
{
    if (num >= NUMBER_LIMIT || !slot_is_free(m, slot))
        return SV_ERR_INVALID_ARGUMENT;
    if (m->identity && num == slot) {
        m->bound[slot >> 6] |= UINT64_C(1) << (slot & 63);
        m->count++;
        return SV_OK;
    }
    sv_status st = materialize(m);
    if (st != SV_OK)
        return st;
    st = table_reserve(m, m->count + 1);
    if (st != SV_OK)
        return st;
    m->keys[slot] = num;
    table_place(m->table, m->table_cap - 1, hash_number(num), slot + 1);
    m->count++;
    return SV_OK;
}

sv_status sv_idmap_insert(sv_idmap *m, const char *id, size_t len, uint32_t slot)
{
    uint64_t num;
    if (sv_id_parse_number(id, len, &num))
        return sv_idmap_insert_number(m, num, slot);
    if (len == 0 || len > SV_ID_MAX || !slot_is_free(m, slot))
        return SV_ERR_INVALID_ARGUMENT;
    if (materialize(m) != SV_OK)
        return SV_ERR_RESOURCE;

    /* Hashed from the caller's bytes, not from the copy below: SipHash's
     * 8-byte loads of bytes memcpy has just stored (in overlapping 16-byte
     * pieces) can miss store forwarding and stall (1M 20-byte ids: 1.8 M/s
     * hashing the copy, 1.9-2.0 hashing the caller's bytes). */
    uint64_t hash = hash_string((const unsigned char *)id, len);
    sv_status st = SV_OK;
    /* The string first, then the table: if the table cannot grow, the
     * string is freed again and the tally is exactly as before. */
    unsigned char *s = sv_mem_alloc(&m->alloc, m->tally, len + 1);
    if (!s) {
        st = SV_ERR_RESOURCE;
        goto cleanup;
    }
    s[0] = (unsigned char)len;
    memcpy(s + 1, id, len);

    st = table_reserve(m, m->count + 1);
    if (st != SV_OK)
        goto cleanup;

    m->keys[slot] = tag_string(s);
    table_place(m->table, m->table_cap - 1, hash, slot + 1);
    m->count++;
    s = NULL; /* owned by the map now */

cleanup:
    sv_mem_free(&m->alloc, m->tally, s, len + 1);
    return st;
}

void sv_idmap_remove_slot(sv_idmap *m, uint32_t slot)
{
    if (m->identity) {
        if (bit_test(m, slot)) {
            m->bound[slot >> 6] &= ~(UINT64_C(1) << (slot & 63));
            m->count--;
        }
        return;
    }
    if (slot >= m->keys_cap || m->keys[slot] == UNBOUND)
        return;
    table_delete_at(m, table_pos_of_slot(m, slot));
    free_word(m, m->keys[slot]);
    m->keys[slot] = UNBOUND;
    m->count--;
}

size_t sv_idmap_format(const sv_idmap *m, uint32_t slot, char *buf, size_t cap)
{
    if (cap == 0)
        return 0;
    buf[0] = '\0';
    uint64_t w;
    if (m->identity) {
        if (!bit_test(m, slot))
            return 0;
        w = slot;
    } else {
        if (slot >= m->keys_cap || m->keys[slot] == UNBOUND)
            return 0;
        w = m->keys[slot];
    }
    if (word_is_string(w)) {
        const unsigned char *s = untag_string(w);
        size_t len = s[0];
        if (len + 1 > cap)
            return 0; /* contract says cap > SV_ID_MAX; never truncate an id */
        memcpy(buf, s + 1, len);
        buf[len] = '\0';
        return len;
    }

    /* Digits are produced backwards into a scratch buffer. */
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + w % 10);
        w /= 10;
    } while (w != 0);
    if (n + 1 > cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        buf[i] = digits[n - 1 - i];
    buf[n] = '\0';
    return n;
}

uint64_t sv_idmap_next_free_number(sv_idmap *m)
{
    /* The counter only moves up, so each bound number is skipped once over
     * the map's life. Reaching 2^63 would take 2^63 calls or bindings. */
    while (sv_idmap_find_number(m, m->next_number, NULL))
        m->next_number++;
    return m->next_number++;
}

size_t sv_idmap_count(const sv_idmap *m)
{
    return m->count;
}

int sv_idmap_slot_id(const sv_idmap *m, uint32_t slot, uint64_t *num, const char **str, size_t *len)
{
    if (m->identity) {
        if (!bit_test(m, slot))
            return 0;
        *num = slot;
        return 1;
    }
    if (slot >= m->keys_cap || m->keys[slot] == UNBOUND)
        return 0;
    uint64_t w = m->keys[slot];
    if (word_is_string(w)) {
        const unsigned char *s = untag_string(w);
        *len = s[0];
        *str = (const char *)s + 1;
        return 2;
    }
    *num = w;
    return 1;
}

/* Read off the table rather than counted during lookups: counting would
 * write from sv_idmap_find, which readers call concurrently under the
 * collection's shared lock, and would cost every lookup a store. */
void sv_idmap_probe_stats(const sv_idmap *m, sv_idmap_probes *out)
{
    *out = (sv_idmap_probes){.table_cap = m->table_cap};
    if (m->count == 0 || m->identity)
        return;
    size_t mask = m->table_cap - 1;
    /* Start just after an empty position (the load limit leaves one), so a
     * run that wraps past the end is counted whole. */
    size_t start = 0;
    while (m->table[start] != 0)
        start++;
    size_t run = 0;
    for (size_t k = 1; k <= m->table_cap; k++) {
        size_t i = (start + k) & mask;
        uint32_t e = m->table[i];
        if (e == 0) {
            run = 0;
            continue;
        }
        size_t home = (size_t)hash_word(m->keys[e - 1]) & mask;
        uint64_t probes = ((i - home) & mask) + 1;
        out->ids++;
        out->total_probes += probes;
        if (probes > out->max_probes)
            out->max_probes = probes;
        if (++run > out->longest_run)
            out->longest_run = run;
    }
}

uint64_t sv_idmap_counter(const sv_idmap *m)
{
    return m->next_number;
}

void sv_idmap_set_counter(sv_idmap *m, uint64_t counter)
{
    m->next_number = counter;
}
