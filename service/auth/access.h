/*
 * The RPC runtime's authentication hook (rpc.h: svd_server_config's
 * authenticate) over a tokens table: a missing, malformed or unknown token
 * is UNAUTHENTICATED; a token whose strongest role is below the method's
 * is PERMISSION_DENIED at once. Per-collection rights are checked by the
 * handlers (svd_principal_allows on the collection named).
 */
#ifndef SVD_ACCESS_H
#define SVD_ACCESS_H

#include <grpc/grpc.h>
#include <stddef.h>

#include "tokens.h"

/* auth is the svd_tokens table; role < 0: an unknown method (any valid
 * token may learn it is unknown). */
grpc_status_code svd_access_check(void *auth, int method, int role, const char *value, size_t len,
                                  struct svd_principal **principal, char *msg, size_t msg_cap);

/* The runtime's recheck hook: svd_tokens_recheck as a gRPC status. */
grpc_status_code svd_access_recheck(void *auth, struct svd_principal *principal);

#endif
