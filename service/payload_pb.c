/* Payloads and filters between protobuf and the engine (see payload_pb.h). */
#include "payload_pb.h"

#include <stdio.h>
#include <string.h>

#include "handlers_impl.h"
#include "text.h"

/* A client's text: UTF-8 without NUL, else INVALID_ARGUMENT naming it. */
static int text_ok(const char *s, const char *what, size_t item, const char *key, svd_reply *r)
{
    char why[96];
    if (svd_text_check(s, why, sizeof why) == 0)
        return 1;
    svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "%s %zu%s%.64s%s: %s", what, item, key ? ", key \"" : "",
                    key ? key : "", key ? "\"" : "", why);
    return 0;
}

int svd_payloads_from_pb(Slimvec__V1__Payload *const *pb, size_t n, sv_payload **out, svd_reply *r)
{
    sv_payload *items = svd_own_array(r, n ? n : 1, sizeof *items);
    if (!items) {
        svd_reply_oom(r);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const Slimvec__V1__Payload *p = pb[i];
        size_t nf = p ? p->n_fields : 0;
        if (nf > SV_PAYLOAD_FIELDS_MAX) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "payload %zu: %zu fields (at most %d)", i, nf,
                            SV_PAYLOAD_FIELDS_MAX);
            return -1;
        }
        sv_pv_field *f = svd_own_array(r, nf ? nf : 1, sizeof *f);
        if (!f) {
            svd_reply_oom(r);
            return -1;
        }
        for (size_t j = 0; j < nf; j++) {
            const Slimvec__V1__Payload__FieldsEntry *e = p->fields[j];
            const Slimvec__V1__PayloadValue *v = e->value;
            memset(&f[j], 0, sizeof f[j]);
            if (!text_ok(e->key, "payload", i, NULL, r))
                return -1;
            f[j].key = e->key;
            switch (v ? v->kind_case : SLIMVEC__V1__PAYLOAD_VALUE__KIND__NOT_SET) {
            case SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE:
                if (!text_ok(v->string_value, "payload", i, e->key, r))
                    return -1;
                f[j].type = SV_PV_STRING;
                f[j].s = v->string_value;
                break;
            case SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE:
                f[j].type = SV_PV_INT;
                f[j].i = v->int_value;
                break;
            case SLIMVEC__V1__PAYLOAD_VALUE__KIND_DOUBLE_VALUE:
                f[j].type = SV_PV_DOUBLE;
                f[j].d = v->double_value;
                break;
            case SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE:
                f[j].type = SV_PV_BOOL;
                f[j].b = v->bool_value ? 1 : 0;
                break;
            case SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS:
                f[j].type = SV_PV_STRINGS;
                f[j].n = v->strings->n_values > UINT32_MAX ? UINT32_MAX : (uint32_t)v->strings->n_values;
                for (size_t k = 0; k < v->strings->n_values && k <= SV_PAYLOAD_LIST_MAX; k++)
                    if (!text_ok(v->strings->values[k], "payload", i, e->key, r))
                        return -1;
                f[j].ss = (const char *const *)v->strings->values;
                break;
            case SLIMVEC__V1__PAYLOAD_VALUE__KIND_INTS:
                f[j].type = SV_PV_INTS;
                f[j].n = v->ints->n_values > UINT32_MAX ? UINT32_MAX : (uint32_t)v->ints->n_values;
                f[j].is = v->ints->values;
                break;
            default:
                svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "payload %zu, key \"%.64s\": a value without a type",
                                i, e->key);
                return -1;
            }
        }
        items[i] = (sv_payload){f, (uint32_t)nf};
    }
    *out = items;
    return 0;
}

/* ---- filters ------------------------------------------------------------------------------------------------ */

static int bound_from(const Slimvec__V1__RangeBound *b, sv_bound *out)
{
    memset(out, 0, sizeof *out);
    if (!b || b->value_case == SLIMVEC__V1__RANGE_BOUND__VALUE__NOT_SET)
        return 0;
    out->set = 1;
    out->inclusive = b->inclusive ? 1 : 0;
    out->is_int = b->value_case == SLIMVEC__V1__RANGE_BOUND__VALUE_INT_VALUE;
    if (out->is_int)
        out->i = b->int_value;
    else
        out->d = b->double_value;
    return 1;
}

/* A leaf condition (Condition and LeafCondition share kinds 1..5). */
static int leaf_from(int kind, const Slimvec__V1__FieldMatch *m, const Slimvec__V1__FieldMatchAny *any,
                     const Slimvec__V1__FieldRange *range, const Slimvec__V1__HasId *has,
                     const Slimvec__V1__IsEmpty *empty, size_t item, sv_cond *c, svd_reply *r)
{
    memset(c, 0, sizeof *c);
    switch (kind) {
    case SLIMVEC__V1__CONDITION__KIND_MATCH:
        if (!text_ok(m->key, "filter condition", item, NULL, r))
            return -1;
        c->kind = SV_COND_MATCH;
        c->key = m->key;
        switch (m->value_case) {
        case SLIMVEC__V1__FIELD_MATCH__VALUE_STRING_VALUE:
            if (!text_ok(m->string_value, "filter condition", item, m->key, r))
                return -1;
            c->value = (sv_pv_field){.type = SV_PV_STRING, .s = m->string_value};
            return 0;
        case SLIMVEC__V1__FIELD_MATCH__VALUE_INT_VALUE:
            c->value = (sv_pv_field){.type = SV_PV_INT, .i = m->int_value};
            return 0;
        case SLIMVEC__V1__FIELD_MATCH__VALUE_BOOL_VALUE:
            c->value = (sv_pv_field){.type = SV_PV_BOOL, .b = m->bool_value ? 1 : 0};
            return 0;
        default: break;
        }
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter condition %zu, key \"%.64s\": a match without a value",
                        item, m->key);
        return -1;
    case SLIMVEC__V1__CONDITION__KIND_MATCH_ANY: {
        if (!text_ok(any->key, "filter condition", item, NULL, r))
            return -1;
        size_t n = any->n_strings ? any->n_strings : any->n_ints;
        if ((any->n_strings && any->n_ints) || n == 0 || n > SV_FILTER_VALUES_MAX) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT,
                            "filter condition %zu, key \"%.64s\": match any takes 1..%d strings or int64s", item,
                            any->key, SV_FILTER_VALUES_MAX);
            return -1;
        }
        sv_pv_field *vals = svd_own_array(r, n, sizeof *vals);
        if (!vals) {
            svd_reply_oom(r);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (any->n_strings) {
                if (!text_ok(any->strings[i], "filter condition", item, any->key, r))
                    return -1;
                vals[i] = (sv_pv_field){.type = SV_PV_STRING, .s = any->strings[i]};
            } else {
                vals[i] = (sv_pv_field){.type = SV_PV_INT, .i = any->ints[i]};
            }
        }
        *c = (sv_cond){.kind = SV_COND_MATCH_ANY, .key = any->key, .any = vals, .n_any = (uint32_t)n};
        return 0;
    }
    case SLIMVEC__V1__CONDITION__KIND_RANGE:
        if (!text_ok(range->key, "filter condition", item, NULL, r))
            return -1;
        c->kind = SV_COND_RANGE;
        c->key = range->key;
        bound_from(range->lower, &c->lo);
        bound_from(range->upper, &c->hi);
        return 0;
    case SLIMVEC__V1__CONDITION__KIND_HAS_ID:
        if (has->n_ids > SV_FILTER_VALUES_MAX) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter condition %zu: has id takes 1..%d ids", item,
                            SV_FILTER_VALUES_MAX);
            return -1;
        }
        for (size_t i = 0; i < has->n_ids; i++)
            if (!text_ok(has->ids[i], "filter condition", item, NULL, r))
                return -1;
        *c = (sv_cond){.kind = SV_COND_HAS_ID, .ids = (const char *const *)has->ids, .n_ids = (uint32_t)has->n_ids};
        return 0;
    case SLIMVEC__V1__CONDITION__KIND_IS_EMPTY:
        if (!text_ok(empty->key, "filter condition", item, NULL, r))
            return -1;
        *c = (sv_cond){.kind = SV_COND_IS_EMPTY, .key = empty->key};
        return 0;
    default:
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter condition %zu: a condition without a kind", item);
        return -1;
    }
}

static int leaves_from(Slimvec__V1__LeafCondition *const *pb, size_t n, const sv_cond **out, uint32_t *n_out,
                       size_t *item, svd_reply *r)
{
    sv_cond *cs = svd_own_array(r, n ? n : 1, sizeof *cs);
    if (!cs) {
        svd_reply_oom(r);
        return -1;
    }
    for (size_t i = 0; i < n; i++, (*item)++) {
        const Slimvec__V1__LeafCondition *l = pb[i];
        if (leaf_from((int)l->kind_case, l->match, l->match_any, l->range, l->has_id, l->is_empty, *item, &cs[i], r))
            return -1;
    }
    *out = cs;
    *n_out = (uint32_t)n;
    return 0;
}

static int conds_from(Slimvec__V1__Condition *const *pb, size_t n, const sv_cond **out, uint32_t *n_out, size_t *item,
                      svd_reply *r)
{
    if (n > SV_FILTER_CONDITIONS_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter: more than %d conditions", SV_FILTER_CONDITIONS_MAX);
        return -1;
    }
    sv_cond *cs = svd_own_array(r, n ? n : 1, sizeof *cs);
    if (!cs) {
        svd_reply_oom(r);
        return -1;
    }
    for (size_t i = 0; i < n; i++, (*item)++) {
        const Slimvec__V1__Condition *c = pb[i];
        if (c->kind_case != SLIMVEC__V1__CONDITION__KIND_FILTER) {
            if (leaf_from((int)c->kind_case, c->match, c->match_any, c->range, c->has_id, c->is_empty, *item, &cs[i],
                          r))
                return -1;
            continue;
        }
        const Slimvec__V1__NestedFilter *nf = c->filter;
        sv_filter *sub = svd_own(r, sizeof *sub);
        if (!sub) {
            svd_reply_oom(r);
            return -1;
        }
        memset(sub, 0, sizeof *sub);
        if (nf->n_must + nf->n_should + nf->n_must_not > SV_FILTER_CONDITIONS_MAX) {
            svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter: more than %d conditions",
                            SV_FILTER_CONDITIONS_MAX);
            return -1;
        }
        if (leaves_from(nf->must, nf->n_must, &sub->must, &sub->n_must, item, r) ||
            leaves_from(nf->should, nf->n_should, &sub->should, &sub->n_should, item, r) ||
            leaves_from(nf->must_not, nf->n_must_not, &sub->must_not, &sub->n_must_not, item, r))
            return -1;
        cs[i] = (sv_cond){.kind = SV_COND_FILTER, .sub = sub};
    }
    *out = cs;
    *n_out = (uint32_t)n;
    return 0;
}

/* Values a leaf brings (match-any values, has-id ids). */
static size_t leaf_values(int kind, const Slimvec__V1__FieldMatchAny *any, const Slimvec__V1__HasId *has)
{
    if (kind == SLIMVEC__V1__CONDITION__KIND_MATCH_ANY && any)
        return any->n_strings + any->n_ints;
    if (kind == SLIMVEC__V1__CONDITION__KIND_HAS_ID && has)
        return has->n_ids;
    return 0;
}

/* The whole filter's conditions and values, counted before anything is
 * built from it: a request's few bytes per value must not become an
 * engine struct each past the engine's own limits. */
static int filter_size_ok(const Slimvec__V1__Filter *pb, svd_reply *r)
{
    size_t conds = 0, values = 0;
    Slimvec__V1__Condition *const *lists[3] = {pb->must, pb->should, pb->must_not};
    size_t ns[3] = {pb->n_must, pb->n_should, pb->n_must_not};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < ns[l] && conds <= SV_FILTER_CONDITIONS_MAX; i++) {
            const Slimvec__V1__Condition *c = lists[l][i];
            conds++;
            values += leaf_values((int)c->kind_case, c->match_any, c->has_id);
            if (c->kind_case != SLIMVEC__V1__CONDITION__KIND_FILTER || !c->filter)
                continue;
            const Slimvec__V1__NestedFilter *nf = c->filter;
            Slimvec__V1__LeafCondition *const *ll[3] = {nf->must, nf->should, nf->must_not};
            size_t nl[3] = {nf->n_must, nf->n_should, nf->n_must_not};
            for (int m = 0; m < 3; m++) {
                for (size_t j = 0; j < nl[m] && conds <= SV_FILTER_CONDITIONS_MAX; j++) {
                    conds++;
                    values += leaf_values((int)ll[m][j]->kind_case, ll[m][j]->match_any, ll[m][j]->has_id);
                }
            }
        }
    }
    if (conds > SV_FILTER_CONDITIONS_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter: more than %d conditions", SV_FILTER_CONDITIONS_MAX);
        return 0;
    }
    if (values > SV_FILTER_VALUES_TOTAL_MAX) {
        svd_reply_error(r, GRPC_STATUS_INVALID_ARGUMENT, "filter: %zu values and ids in all (at most %d)", values,
                        SV_FILTER_VALUES_TOTAL_MAX);
        return 0;
    }
    return 1;
}

int svd_filter_from_pb(const Slimvec__V1__Filter *pb, sv_filter *out, svd_reply *r)
{
    memset(out, 0, sizeof *out);
    if (!filter_size_ok(pb, r))
        return -1;
    size_t item = 0;
    if (conds_from(pb->must, pb->n_must, &out->must, &out->n_must, &item, r) ||
        conds_from(pb->should, pb->n_should, &out->should, &out->n_should, &item, r) ||
        conds_from(pb->must_not, pb->n_must_not, &out->must_not, &out->n_must_not, &item, r))
        return -1;
    return 0;
}

/* ---- out ---------------------------------------------------------------------------------------------------- */

Slimvec__V1__Payload *svd_payload_to_pb(const sv_payload *pl, svd_reply *r)
{
    Slimvec__V1__Payload *p = svd_own(r, sizeof *p);
    Slimvec__V1__Payload__FieldsEntry **ep = svd_own_array(r, pl->n ? pl->n : 1, sizeof *ep);
    Slimvec__V1__Payload__FieldsEntry *e = svd_own_array(r, pl->n ? pl->n : 1, sizeof *e);
    Slimvec__V1__PayloadValue *v = svd_own_array(r, pl->n ? pl->n : 1, sizeof *v);
    if (!p || !ep || !e || !v)
        goto oom;
    slimvec__v1__payload__init(p);
    for (uint32_t i = 0; i < pl->n; i++) {
        const sv_pv_field *f = &pl->fields[i];
        slimvec__v1__payload__fields_entry__init(&e[i]);
        slimvec__v1__payload_value__init(&v[i]);
        e[i].key = (char *)f->key;
        e[i].value = &v[i];
        ep[i] = &e[i];
        switch (f->type) {
        case SV_PV_STRING:
            v[i].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE;
            v[i].string_value = (char *)f->s;
            break;
        case SV_PV_INT:
            v[i].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE;
            v[i].int_value = f->i;
            break;
        case SV_PV_DOUBLE:
            v[i].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_DOUBLE_VALUE;
            v[i].double_value = f->d;
            break;
        case SV_PV_BOOL:
            v[i].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE;
            v[i].bool_value = f->b;
            break;
        case SV_PV_STRINGS: {
            Slimvec__V1__StringList *l = svd_own(r, sizeof *l);
            if (!l)
                goto oom;
            slimvec__v1__string_list__init(l);
            l->n_values = f->n;
            l->values = (char **)f->ss;
            v[i].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS;
            v[i].strings = l;
            break;
        }
        default: {
            Slimvec__V1__IntList *l = svd_own(r, sizeof *l);
            if (!l)
                goto oom;
            slimvec__v1__int_list__init(l);
            l->n_values = f->n;
            l->values = (int64_t *)f->is;
            v[i].kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_INTS;
            v[i].ints = l;
            break;
        }
        }
    }
    p->n_fields = pl->n;
    p->fields = ep;
    return p;
oom:
    svd_reply_oom(r);
    return NULL;
}
