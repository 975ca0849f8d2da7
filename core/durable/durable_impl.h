/* durable.c's internals for recovery.c (core only). */
#ifndef SV_DURABLE_IMPL_H
#define SV_DURABLE_IMPL_H

#include "durable.h"
#include "log.h"
#include "follow.h"

/* The collection behind the handle (recovery and tests). */
sv_collection *sv_durable_collection(sv_durable *d);
/* A durable collection over c (always manual flush). */
sv_durable *sv_durable_wrap(const char *dir, sv_collection *c, const sv_durable_options *o);
/* Give it its log (the durable handle owns it from here); old_log_bytes is log replayed at open and not yet in a
 * snapshot. When log_mean, the mean trained during the replay is logged. */
sv_status sv_durable_attach_log(sv_durable *d, sv_log *log, uint64_t old_log_bytes, int log_mean,
                                sv_error *err);

/* Make it a follower of l and w (both taken; w NULL: out of memory) from LSN
 * `applied` (follow.h). */
sv_status sv_durable_attach_follower(sv_durable *d, sv_log *l, const sv_follow_ids *f, sv_follow_window *w,
                                     uint64_t applied, uint64_t old_log_bytes, sv_error *err);

#endif
