/*
 * Fuzz target for untrusted request bytes: the first byte picks a method,
 * the rest is unpacked with that method's request descriptor (as the server
 * does) and, when it parses, handed to the method's handler against a live
 * collection. Built as a libFuzzer target with clang (-DSV_FUZZ=ON), and as
 * a corpus-driven ctest with any compiler: a fixed-seed stream of random
 * and mutated valid messages (run it under ASan).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"
#include "slimvec/v1/slimvec.pb-c.h"

static svd_app app;
static const svd_method *methods;
static size_t n_methods;

static void setup(void)
{
    if (methods)
        return;
    app.registry = svd_registry_create(NULL, NULL, 1);
    app.limits = (svd_limits){.max_dim = 64, .max_k = 50, .max_batch = 64, .max_id_len = 128,
                              .build_threads = 1, .memory_cap = 256u << 20};
    atomic_init(&app.serving, 1);
    methods = svd_methods(&n_methods);
    sv_params p;
    sv_params_default(&p, 4);
    p.threads = 1;
    p.flush_threshold = 256;
    svd_coll *c = NULL;
    sv_error err;
    if (svd_registry_create_collection(app.registry, "f", &p, &c, &err) != SV_OK)
        abort();
    svd_registry_put(app.registry, c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 1)
        return 0;
    const svd_method *m = &methods[data[0] % n_methods];
    /* Creating and dropping collections would only grow or empty the state. */
    if (strstr(m->path, "CreateCollection") || strstr(m->path, "DropCollection"))
        return 0;
    ProtobufCMessage *req = protobuf_c_message_unpack(m->request, NULL, size - 1, data + 1);
    if (!req)
        return 0;
    svd_reply r = {.code = GRPC_STATUS_OK};
    void *state = NULL;
    if (m->unary)
        m->unary(&app, req, &r);
    else
        m->stream(&app, &state, req, &r);
    /* The answer must pack: that is what the server does with it. */
    if (r.code == GRPC_STATUS_OK && r.msg) {
        size_t len = protobuf_c_message_get_packed_size(r.msg);
        uint8_t *buf = malloc(len ? len : 1);
        if (!buf || protobuf_c_message_pack(r.msg, buf) != len)
            abort();
        free(buf);
    }
    if (r.free_fn)
        r.free_fn(r.owned);
    protobuf_c_message_free_unpacked(req, NULL);
    return 0;
}

#ifndef SV_LIBFUZZER
/* Corpus-driven run: valid messages for each method, then byte mutations
 * of them, then random bytes. */
static uint64_t rng = 12345;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static size_t valid_message(uint8_t *buf, size_t cap, uint8_t *method)
{
    float v[16];
    for (int i = 0; i < 16; i++)
        v[i] = (float)((int)(next() % 2000) - 1000) / 100.0f;
    char *ids[4] = {"a", "", "17", "b"};
    switch (next() % 4) {
    case 0: {
        Slimvec__V1__IngestRequest q = SLIMVEC__V1__INGEST_REQUEST__INIT;
        q.collection = "f";
        q.n_vectors = 4 * (1 + next() % 4);
        q.vectors = v;
        if (next() % 2) {
            q.n_ids = q.n_vectors / 4;
            q.ids = ids;
        }
        *method = 4; /* Ingest */
        return protobuf_c_message_get_packed_size(&q.base) <= cap ? protobuf_c_message_pack(&q.base, buf) : 0;
    }
    case 1: {
        Slimvec__V1__SearchRequest q = SLIMVEC__V1__SEARCH_REQUEST__INIT;
        q.collection = "f";
        q.n_queries = 4 * (1 + next() % 2);
        q.queries = v;
        q.k = (uint32_t)(next() % 12);
        q.search_list = (uint32_t)(next() % 80);
        q.include_vectors = next() % 2;
        *method = next() % 2 ? 5 : 6; /* Search, SearchStream */
        return protobuf_c_message_get_packed_size(&q.base) <= cap ? protobuf_c_message_pack(&q.base, buf) : 0;
    }
    case 2: {
        Slimvec__V1__GetRequest q = SLIMVEC__V1__GET_REQUEST__INIT;
        q.collection = "f";
        q.n_ids = 1 + next() % 3;
        q.ids = ids;
        *method = 7; /* Get */
        return protobuf_c_message_get_packed_size(&q.base) <= cap ? protobuf_c_message_pack(&q.base, buf) : 0;
    }
    default: {
        Slimvec__V1__DeleteRequest q = SLIMVEC__V1__DELETE_REQUEST__INIT;
        q.collection = "f";
        q.n_ids = 1 + next() % 3;
        q.ids = ids;
        *method = 8; /* Delete */
        return protobuf_c_message_get_packed_size(&q.base) <= cap ? protobuf_c_message_pack(&q.base, buf) : 0;
    }
    }
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 20000;
    uint8_t buf[1024];
    for (long i = 0; i < rounds; i++) {
        uint8_t method = 0;
        size_t len = valid_message(buf + 1, sizeof buf - 1, &method);
        buf[0] = method;
        long kind = i % 3;
        if (kind == 1 && len > 0) {
            for (int k = 0; k < 1 + (int)(next() % 4); k++)
                buf[1 + next() % len] = (uint8_t)next();
        } else if (kind == 2) {
            len = next() % 64;
            for (size_t k = 0; k < len; k++)
                buf[1 + k] = (uint8_t)next();
            buf[0] = (uint8_t)next();
        }
        LLVMFuzzerTestOneInput(buf, len + 1);
    }
    svd_coll *c = svd_registry_get(app.registry, "f");
    /* The valid ingests must have landed, or the run exercised nothing. */
    uint64_t live = sv_collection_count(c->coll);
    svd_registry_put(app.registry, c);
    printf("fuzz_requests: %ld inputs, no crash; the collection holds %llu vectors\n", rounds,
           (unsigned long long)live);
    if (live == 0)
        return 1;
    svd_registry_free(app.registry);
    return 0;
}
#endif
