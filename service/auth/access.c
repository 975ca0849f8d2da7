#include "access.h"

#include <stdio.h>

grpc_status_code svd_access_check(void *auth, int method, int role, const char *value, size_t len,
                                  struct svd_principal **principal, char *msg, size_t msg_cap)
{
    (void)method;
    svd_principal *p = NULL;
    svd_auth_status st = svd_tokens_check(auth, value, len, &p, msg, msg_cap);
    if (st == SVD_AUTH_NOMEM)
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    if (st != SVD_AUTH_OK)
        return GRPC_STATUS_UNAUTHENTICATED;
    if (role > 0 && !svd_principal_allows_some(p, (svd_role)role)) {
        snprintf(msg, msg_cap, "this method needs the %s role; the token has %s",
                 svd_role_name((svd_role)role), svd_role_name(svd_principal_max_role(p)));
        svd_principal_free(p);
        return GRPC_STATUS_PERMISSION_DENIED;
    }
    *principal = p;
    return GRPC_STATUS_OK;
}

grpc_status_code svd_access_recheck(void *auth, struct svd_principal *principal)
{
    svd_auth_status st = svd_tokens_recheck(auth, principal);
    return st == SVD_AUTH_OK ? GRPC_STATUS_OK
           : st == SVD_AUTH_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED
                                  : GRPC_STATUS_UNAUTHENTICATED;
}
