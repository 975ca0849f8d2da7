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

/*
 * The same filter asked of one slot at a time: what a search that keeps
 * only a few candidates needs, instead of a bitmap over every slot (whose
 * evaluation costs the whole column). Prepared once (the string values'
 * codes, match-any values sorted, has-id slots looked up), then asked per
 * slot; valid while the store does not change (the caller's read lock).
 * A slot nobody uses passes as sv_filter_eval says. SV_ERR_RESOURCE when
 * out of memory.
 */
typedef struct sv_filter_probe sv_filter_probe;
sv_status sv_filter_probe_create(const sv_payloads *p, const sv_filter *f, sv_filter_id_fn id_slot, void *id_ctx,
                                 const sv_allocator *a, sv_tally *t, sv_filter_probe **out);
int sv_filter_probe_pass(const sv_filter_probe *pr, uint32_t slot);
void sv_filter_probe_free(sv_filter_probe *pr); /* NULL is a no-op */

#endif
