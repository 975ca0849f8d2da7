/*
 * Payloads and filters between the protobuf messages (slimvec.proto) and
 * the engine's structs (core/slimvec.h). What the engine needs is built in
 * memory the reply owns (svd_own): it lives as long as the call. Text is
 * checked here (UTF-8, no NUL: svd_text_check) with the item named; types,
 * limits and key types are the engine's to check (sv_payloads_check,
 * sv_filter_check), so both paths give the same answers.
 */
#ifndef SVD_PAYLOAD_PB_H
#define SVD_PAYLOAD_PB_H

#include "rpc.h"
#include "slimvec.h"
#include "slimvec/v1/slimvec.pb-c.h"

/* n protobuf payloads into *out (n of them). 0, or -1 with the error
 * replied (INVALID_ARGUMENT naming the item and key). */
int svd_payloads_from_pb(Slimvec__V1__Payload *const *pb, size_t n, sv_payload **out, svd_reply *r);
/* A filter into *out (its conditions owned by r). */
int svd_filter_from_pb(const Slimvec__V1__Filter *pb, sv_filter *out, svd_reply *r);
/* An engine payload (valid while the reply lives) as a message owned by r;
 * NULL when out of memory (replied). */
Slimvec__V1__Payload *svd_payload_to_pb(const sv_payload *pl, svd_reply *r);

#endif
