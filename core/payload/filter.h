/*
 * Filters over payloads: must / should / must_not lists of conditions
 * (match a value, match any of a set, a range, has id, is empty, or a
 * nested filter), evaluated into a bitmap over slots.
 *
 * Semantics: a slot passes when it passes every `must`, at least one
 * `should` (when there are any) and no `must_not`; an empty filter passes
 * every slot. A condition on a list holds when it holds for any item. A
 * slot without the key matches no value and no range, and is empty.
 * Conditions name keys the collection has (else INVALID_ARGUMENT: a typo
 * would otherwise match nothing, silently) with values of the key's type.
 */
#ifndef SV_FILTER_H
#define SV_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "payload.h"
#include "slimvec.h"

#define SV_FILTER_DEPTH_MAX 8        /* nesting of filters in filters */
#define SV_FILTER_CONDITIONS_MAX 256 /* conditions of a whole filter */
#define SV_FILTER_VALUES_MAX 1024    /* values of a match-any, ids of a has-id */

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

/* Check a filter against the collection's keys and the limits above:
 * INVALID_ARGUMENT naming what is wrong (and where: "must[2].should[0]"). */
sv_status sv_filter_check(const sv_payloads *p, const sv_filter *f, sv_error *err);

/* The slot of an id, or -1 when no live vector has it (HAS_ID). */
typedef int64_t (*sv_filter_id_fn)(void *ctx, const char *id);

/*
 * Set in out (n_slots bits, 64 a word, the rest of the last word clear)
 * the slots in [0, n_slots) that pass a checked filter. Slots nobody uses
 * (free, deleted) pass a must_not-only filter: the caller ANDs with its
 * live slots. Scratch words come from a and are charged to t.
 * SV_ERR_RESOURCE when out of memory.
 */
sv_status sv_filter_eval(const sv_payloads *p, const sv_filter *f, uint32_t n_slots, sv_filter_id_fn id_slot,
                         void *id_ctx, const sv_allocator *a, sv_tally *t, uint64_t *out);

#endif
