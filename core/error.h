/*
 * Filling an sv_error, for core code (slimvec.h has the types). Every core
 * function that can fail reports through these, so the messages look alike.
 */
#ifndef SV_ERROR_H
#define SV_ERROR_H

#include "slimvec.h"

/* Set err (may be NULL) to code and a printf-formatted message; returns code. */
sv_status sv_fail(sv_error *err, sv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Set err (may be NULL) to SV_OK with an empty message; returns SV_OK. */
sv_status sv_ok(sv_error *err);

/* Monotonic seconds, for durations the durability code reports. */
double sv_now_seconds(void);

#endif
