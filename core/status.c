/* Names for the core's enums. */
#include "slimvec.h"

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
