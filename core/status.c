/* Names for the core's enums, and filling an sv_error (error.h). */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "error.h"
#include "slimvec.h"

sv_status sv_fail(sv_error *err, sv_status code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

sv_status sv_ok(sv_error *err)
{
    if (err) {
        err->code = SV_OK;
        err->message[0] = '\0';
    }
    return SV_OK;
}

double sv_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *sv_status_name(sv_status s)
{
    switch (s) {
    case SV_OK: return "OK";
    case SV_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case SV_ERR_NOT_FOUND: return "NOT_FOUND";
    case SV_ERR_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case SV_ERR_RESOURCE: return "RESOURCE";
    case SV_ERR_INTERNAL: return "INTERNAL";
    case SV_ERR_IO: return "IO";
    case SV_ERR_CORRUPT: return "CORRUPT";
    case SV_ERR_INTERRUPTED: return "INTERRUPTED";
    case SV_ERR_BUSY: return "BUSY";
    case SV_ERR_CONFLICT: return "CONFLICT";
    }
    return "UNKNOWN";
}

const char *sv_metric_name(sv_metric m)
{
    switch (m) {
    case SV_METRIC_L2: return "l2";
    case SV_METRIC_IP: return "ip";
    case SV_METRIC_COSINE: return "cosine";
    }
    return "unknown";
}

const char *sv_storage_name(sv_storage s)
{
    switch (s) {
    case SV_STORAGE_F32: return "f32";
    case SV_STORAGE_INT8: return "int8";
    }
    return "unknown";
}
