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
 * SV_ERR_RESOURCE when out of memory; SV_ERR_INTERRUPTED when intr (may
 * be NULL, asked every 1,024 slots of a condition) said stop.
 */
sv_status sv_filter_eval(const sv_payloads *p, const sv_filter *f, uint32_t n_slots, sv_filter_id_fn id_slot,
                         void *id_ctx, const sv_interrupt *intr, const sv_allocator *a, sv_tally *t, uint64_t *out);

#endif
