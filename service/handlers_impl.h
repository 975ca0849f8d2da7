/*
 * The handlers' shared pieces (handlers.c), for the cluster's router
 * (cluster/router.c), whose handlers answer the same messages the same way
 * and check them by the same rules.
 */
#ifndef SVD_HANDLERS_IMPL_H
#define SVD_HANDLERS_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "handlers.h"
#include "slimvec/v1/slimvec.pb-c.h"
#include "tokens.h"

/* Zeroed memory (n items) that lives until the reply is packed (NULL on OOM). */
void *svd_own(svd_reply *r, size_t size);
void *svd_own_array(svd_reply *r, size_t n, size_t size);
void svd_reply_oom(svd_reply *r);
grpc_status_code svd_code_of(sv_status s);
/* 0 and an INVALID_ARGUMENT reply when a text field has a NUL or is not
 * UTF-8 ("<what> <index> ..."; index SIZE_MAX: no index). */
int svd_field_ok(const char *field, const char *what, size_t index, svd_reply *r);
/* Keys to index (CreateIndex, CollectionSpec.indexed_keys): text of
 * 1..SV_PAYLOAD_KEY_MAX bytes, at most SVD_INDEXED_KEYS_MAX of them. */
#define SVD_INDEXED_KEYS_MAX 64
int svd_index_keys_ok(char *const *keys, size_t n, svd_reply *r);
/* SetPayload's id and payload checked, the payload converted (into r's
 * memory); NULL with r set when refused. The single node's and a router's. */
sv_payload *svd_set_payload_arg(svd_app *app, const Slimvec__V1__SetPayloadRequest *req, svd_reply *r);
/* The caller may act with role on the collection (else PERMISSION_DENIED). */
int svd_allowed(svd_ctx *ctx, svd_role role, const char *name, svd_reply *r);
/* The collection, if the caller may act with role on it; else an error
 * reply. Caller puts it. */
svd_coll *svd_lookup(svd_app *app, svd_ctx *ctx, svd_role role, const char *name, svd_reply *r);
int svd_memory_ok(svd_app *app, uint64_t need, int transient, svd_reply *r);
int svd_response_ok(svd_app *app, svd_ctx *ctx, uint64_t packed, uint64_t build, const char *what,
                    svd_reply *r);
/* n vectors of the collection's dimension in n_floats (n_ids 0 or n). */
int svd_batch_shape(svd_app *app, svd_coll *c, size_t n_floats, size_t n_ids, uint32_t declared_dim,
                    size_t *n_out, svd_reply *r);
/* The same for a collection of dimension dim (a router's, from the catalog). */
int svd_batch_shape_dim(svd_app *app, uint32_t dim, size_t n_floats, size_t n_ids, uint32_t declared_dim,
                        size_t *n_out, svd_reply *r);
int svd_ids_ok(svd_app *app, char **ids, size_t n, const char *what, svd_reply *r);
/* A stream's failed request as a BatchError (NULL when inner is OK). */
Slimvec__V1__BatchError *svd_batch_error(svd_reply *r, svd_reply *inner);
/* A stream message's step runs into a reply of its own (SVD_INNER(r): it
 * takes r's owned memory), so that its failure answers the message rather
 * than end the stream. Then: 1 when the step deferred (r defers too);
 * else 0, with its failure as the answer's BatchError (*berr; NULL when it
 * succeeded). */
#define SVD_INNER(r) ((svd_reply){.code = GRPC_STATUS_OK, .owned = (r)->owned, .free_fn = (r)->free_fn})
int svd_stream_step_done(svd_reply *r, svd_reply *inner, Slimvec__V1__BatchError **berr);
/* The spec's name, dimension and parameters, checked. */
int svd_spec_params(svd_app *app, const Slimvec__V1__CollectionSpec *spec, sv_params *p, svd_reply *r);
/* This server's own search of req (its local collection). */
void svd_search_into(svd_app *app, svd_ctx *ctx, const Slimvec__V1__SearchRequest *req,
                     Slimvec__V1__SearchResponse *resp, svd_reply *r);
/* spec (and its graph) from a collection's parameters; the name copied
 * into r's memory. 0 when out of memory. */
int svd_fill_spec(Slimvec__V1__CollectionSpec *spec, Slimvec__V1__GraphParams *graph, const char *name,
                  const sv_params *p, svd_reply *r);
/* The single-node handler of a method path (NULL when none). */
svd_handler_fn svd_local_handler(const char *path);

#endif
