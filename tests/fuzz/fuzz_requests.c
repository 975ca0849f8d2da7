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
static unsigned long n_deferred, n_refused_text;

static void setup(void)
{
    if (methods)
        return;
    svd_registry_options ro = {.durable = {.buffer_factor = 4}, .build_threads = 1,
                               .max_collections = 16, .arenas = 2};
    app.registry = svd_registry_create(&ro);
    app.memory = svd_memory_create(256u << 20, 0, 32u << 20);
    app.limits = (svd_limits){.max_dim = 64, .max_k = 50, .max_batch = 64, .max_id_len = 128,
                              .build_threads = 1, .max_search_list = 200, .max_search_work = 100000,
                              .max_get_ids = 16, .max_flush_threshold = 4096};
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
    /* Decoded as the server does (the arena that knows each string's
     * length: ids with NULs must be refused, not truncated). */
    svd_decoded *mem = NULL;
    ProtobufCMessage *req = svd_decode(m->request, data + 1, size - 1, &mem);
    if (!req) {
        svd_decoded_free(mem);
        return 0;
    }
    svd_ctx ctx;
    svd_ctx_init_local(&ctx, 1u << 20, 0);
    svd_reply r = {.code = GRPC_STATUS_OK};
    void *state = NULL;
    m->handle(&app, &ctx, &state, req, &r);
    if (r.defer) {
        /* A full write buffer: flush as the maintenance thread would, then
         * the same request runs again (as after svd_server_wake). */
        n_deferred++;
        if (r.free_fn)
            r.free_fn(r.owned);
        r = (svd_reply){.code = GRPC_STATUS_OK};
        svd_coll *c = svd_registry_get(app.registry, "f");
        sv_durable_flush(c->dur, NULL);
        svd_registry_put(app.registry, c);
        m->handle(&app, &ctx, &state, req, &r);
        if (r.defer)
            abort(); /* an empty buffer must take the batch */
    }
    if (r.code == GRPC_STATUS_INVALID_ARGUMENT &&
        (strstr(r.message, "NUL byte") || strstr(r.message, "UTF-8")))
        n_refused_text++;
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
    if (m->end)
        m->end(&app, state, 0);
    svd_decoded_free(mem);
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

/* Payloads and a filter of every kind, for the messages below (static:
 * the packer reads them after the builder returns). */
static Slimvec__V1__PayloadValue pv[5];
static Slimvec__V1__StringList tags;
static Slimvec__V1__Payload__FieldsEntry pe[5], *pep[5];
static Slimvec__V1__Payload pls[4], *plp[4];
static Slimvec__V1__FieldMatch fm;
static Slimvec__V1__FieldRange fr;
static Slimvec__V1__RangeBound lo, hi;
static Slimvec__V1__FieldMatchAny fma;
static Slimvec__V1__IsEmpty fe;
static Slimvec__V1__LeafCondition leaf[2], *leafp[2];
static Slimvec__V1__NestedFilter nested;
static Slimvec__V1__Condition cond[4], *condp[4];
static Slimvec__V1__Filter filter;

static void build_payloads(void)
{
    static char *tag_values[2] = {"red", "big"};
    static char *keys[5] = {"class", "u", "x", "ok", "tags"};
    static char *classes[2] = {"coat", "bag"};
    for (int i = 0; i < 5; i++) {
        slimvec__v1__payload_value__init(&pv[i]);
        slimvec__v1__payload__fields_entry__init(&pe[i]);
        pe[i].key = keys[i];
        pe[i].value = &pv[i];
        pep[i] = &pe[i];
    }
    pv[0].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE;
    pv[0].string_value = classes[next() % 2];
    pv[1].kind_case = next() % 8 ? SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE
                                 : SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE; /* a wrong type now and then */
    if (pv[1].kind_case == SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE)
        pv[1].int_value = (int64_t)(next() % 100);
    else
        pv[1].string_value = "oops";
    pv[2].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_DOUBLE_VALUE;
    pv[2].double_value = (double)(next() % 100) / 3.0;
    pv[3].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE;
    pv[3].bool_value = next() % 2;
    slimvec__v1__string_list__init(&tags);
    tags.n_values = next() % 3;
    tags.values = tag_values;
    pv[4].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS;
    pv[4].strings = &tags;
    for (int i = 0; i < 4; i++) {
        slimvec__v1__payload__init(&pls[i]);
        pls[i].n_fields = 1 + next() % 5;
        pls[i].fields = pep;
        plp[i] = &pls[i];
    }
    slimvec__v1__field_match__init(&fm);
    fm.key = next() % 8 ? "class" : "nope";
    fm.value_case = SLIMVEC__V1__FIELD_MATCH__VALUE_STRING_VALUE;
    fm.string_value = "coat";
    slimvec__v1__range_bound__init(&lo);
    lo.value_case = SLIMVEC__V1__RANGE_BOUND__VALUE_INT_VALUE;
    lo.int_value = (int64_t)(next() % 50);
    slimvec__v1__range_bound__init(&hi);
    hi.value_case = SLIMVEC__V1__RANGE_BOUND__VALUE_DOUBLE_VALUE;
    hi.double_value = 70.5;
    hi.inclusive = 1;
    slimvec__v1__field_range__init(&fr);
    fr.key = "u";
    fr.lower = &lo;
    fr.upper = next() % 2 ? &hi : NULL;
    slimvec__v1__field_match_any__init(&fma);
    fma.key = "tags";
    fma.n_strings = tags.n_values ? tags.n_values : 1;
    fma.strings = tag_values;
    slimvec__v1__is_empty__init(&fe);
    fe.key = "x";
    for (int i = 0; i < 2; i++) {
        slimvec__v1__leaf_condition__init(&leaf[i]);
        leafp[i] = &leaf[i];
    }
    leaf[0].kind_case = SLIMVEC__V1__LEAF_CONDITION__KIND_MATCH_ANY;
    leaf[0].match_any = &fma;
    leaf[1].kind_case = SLIMVEC__V1__LEAF_CONDITION__KIND_IS_EMPTY;
    leaf[1].is_empty = &fe;
    slimvec__v1__nested_filter__init(&nested);
    nested.n_should = 2;
    nested.should = leafp;
    for (int i = 0; i < 4; i++) {
        slimvec__v1__condition__init(&cond[i]);
        condp[i] = &cond[i];
    }
    cond[0].kind_case = SLIMVEC__V1__CONDITION__KIND_MATCH;
    cond[0].match = &fm;
    cond[1].kind_case = SLIMVEC__V1__CONDITION__KIND_RANGE;
    cond[1].range = &fr;
    cond[2].kind_case = SLIMVEC__V1__CONDITION__KIND_FILTER;
    cond[2].filter = &nested;
    cond[3].kind_case = SLIMVEC__V1__CONDITION__KIND_IS_EMPTY;
    cond[3].is_empty = &fe;
    slimvec__v1__filter__init(&filter);
    filter.n_must = next() % 3;
    filter.must = condp;
    filter.n_must_not = next() % 2;
    filter.must_not = condp + 3;
}

static size_t valid_message(uint8_t *buf, size_t cap, uint8_t *method)
{
    build_payloads();
    float v[16];
    for (int i = 0; i < 16; i++)
        v[i] = (float)((int)(next() % 2000) - 1000) / 100.0f;
    char *ids[4] = {"a", "", "17", "b"};
    static char bad_utf8[] = {'b', (char)0xff, 0};
    if (next() % 8 == 0)
        ids[next() % 4] = bad_utf8;
    if (next() % 8 == 0) {
        /* The packer writes C strings: a NUL inside an id needs the wire
         * bytes by hand (Get or Delete of collection "f", id "x\0one"). */
        static const uint8_t nul_id[] = {0x0a, 1, 'f', 0x12, 5, 'x', 0, 'o', 'n', 'e'};
        memcpy(buf, nul_id, sizeof nul_id);
        *method = next() % 2 ? 7 : 8;
        return sizeof nul_id;
    }
    switch (next() % 7) {
    case 0: {
        Slimvec__V1__IngestRequest q = SLIMVEC__V1__INGEST_REQUEST__INIT;
        q.collection = "f";
        q.n_vectors = 4 * (1 + next() % 4);
        q.vectors = v;
        if (next() % 2) {
            q.n_ids = q.n_vectors / 4;
            q.ids = ids;
        }
        if (next() % 2) {
            q.n_payloads = q.n_vectors / 4;
            q.payloads = plp;
        }
        q.upsert = next() % 2;
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
        q.with_payload = next() % 2;
        q.filter = next() % 2 ? &filter : NULL;
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
    case 4: {
        Slimvec__V1__SetPayloadRequest q = SLIMVEC__V1__SET_PAYLOAD_REQUEST__INIT;
        q.collection = "f";
        q.id = ids[next() % 4];
        q.payload = plp[0];
        q.patch = next() % 2;
        *method = 11; /* SetPayload */
        return protobuf_c_message_get_packed_size(&q.base) <= cap ? protobuf_c_message_pack(&q.base, buf) : 0;
    }
    case 5: {
        Slimvec__V1__CountRequest q = SLIMVEC__V1__COUNT_REQUEST__INIT;
        q.collection = "f";
        q.filter = next() % 4 ? &filter : NULL;
        *method = 12; /* Count */
        return protobuf_c_message_get_packed_size(&q.base) <= cap ? protobuf_c_message_pack(&q.base, buf) : 0;
    }
    case 6: {
        /* Indexes on the keys the payloads use, one they do not, bad ones:
         * the filters after go through them. */
        static char *const index_keys[] = {"class", "u", "tags", "x", "nope", "", bad_utf8};
        Slimvec__V1__CreateIndexRequest q = SLIMVEC__V1__CREATE_INDEX_REQUEST__INIT;
        q.collection = "f";
        q.key = index_keys[next() % 7];
        *method = 14; /* CreateIndex */
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
    uint64_t live = sv_durable_count(c->dur);
    sv_error verr;
    sv_status vst = sv_durable_validate(c->dur, &verr);
    svd_registry_put(app.registry, c);
    printf("fuzz_requests: %ld inputs, no crash; the collection holds %llu vectors; %lu deferred "
           "by a full buffer; %lu refused for a NUL or invalid UTF-8\n",
           rounds, (unsigned long long)live, n_deferred, n_refused_text);
    if (live == 0 || n_refused_text == 0 || vst != SV_OK) {
        if (vst != SV_OK)
            printf("validate: %s\n", verr.message);
        return 1;
    }
    svd_registry_free(app.registry);
    svd_memory_free(app.memory);
    return 0;
}
#endif
