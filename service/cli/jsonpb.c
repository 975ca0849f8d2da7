/* JSON <-> protobuf for the client's payloads and filters (see jsonpb.h). */
#include "jsonpb.h"

#include "slimvec.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* json-c's depth limits: a payload is object > array > value (3), a
 * filter object > array > condition > nested filter > array > condition >
 * range (7). A little room above each, so that one level too many reaches
 * our own check and its clear message rather than json-c's "nesting too
 * deep"; far below any depth at which json-c's recursion (freeing and
 * printing) would matter. */
#define PAYLOAD_DEPTH 6
#define FILTER_DEPTH 12

/* How much of a key or a place goes into a message. */
#define SHOW 80

static void set_err(svj_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(svj_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

/* ---- parsing text ------------------------------------------------------------------------- */

/*
 * json-c keeps object keys as C strings, so a key with an escaped NUL
 * ("a\u0000b") would silently become "a". A \u0000 escape (one preceded by
 * an odd run of backslashes) is refused up front, in keys and strings
 * alike: protobuf-c's strings cannot hold a NUL either. Returns its offset
 * or -1.
 */
static long find_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\')
            continue;
        size_t n = 0;
        while (i + n < len && s[i + n] == '\\')
            n++;
        if (n % 2 == 1 && len - (i + n) >= 5 && memcmp(s + i + n, "u0000", 5) == 0)
            return (long)(i + n - 1);
        i += n - 1;
    }
    return -1;
}

static int is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Parses text[0..len) (text[len] == '\0') as one JSON value, strictly,
 * with UTF-8 checked and at most `depth` levels. `where` starts every
 * message ("line 3" or "filter"). Returns the value, or NULL with err set.
 */
static json_object *parse_text(const char *text, size_t len, int depth, const char *where, svj_error *err)
{
    if (len > SVJ_TEXT_MAX) {
        set_err(err, "%s: %zu bytes, more than the %zu accepted", where, len, SVJ_TEXT_MAX);
        return NULL;
    }
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        set_err(err, "%s: a NUL byte at offset %zu", where, (size_t)(nul - text));
        return NULL;
    }
    long esc = find_nul_escape(text, len);
    if (esc >= 0) {
        set_err(err, "%s: \\u0000 (a NUL character) at offset %ld: not allowed in keys or strings", where, esc);
        return NULL;
    }
    size_t start = 0;
    while (start < len && is_json_space(text[start]))
        start++;
    if (start == len) {
        set_err(err, "%s: empty", where);
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(depth);
    if (!tok) {
        set_err(err, "%s: out of memory", where);
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* len + 1: the terminating NUL tells json-c that a number or a literal
     * at the very end is complete. len <= SVJ_TEXT_MAX fits in an int. */
    json_object *v = json_tokener_parse_ex(tok, text, (int)len + 1);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!v || e != json_tokener_success) {
        if (e == json_tokener_success)
            set_err(err, "%s: not valid JSON (null is not allowed)", where);
        else
            set_err(err, "%s: not valid JSON at offset %zu: %s", where, end,
                    e == json_tokener_error_depth ? "nested too deep" : json_tokener_error_desc(e));
        json_object_put(v);
        return NULL;
    }
    for (size_t i = end; i < len; i++) {
        if (!is_json_space(text[i])) {
            set_err(err, "%s: unexpected text after the JSON value at offset %zu", where, i);
            json_object_put(v);
            return NULL;
        }
    }
    return v;
}

/* ---- values ------------------------------------------------------------------------------------- */

/*
 * An int64 from a json-c integer. json-c saturates an integer beyond
 * int64 to -2^63, and keeps one above 2^63 - 1 as an unsigned value
 * (saturated at 2^64 - 1): both are refused, so -2^63 itself is too (it
 * cannot be told from a saturated one). Returns 0 or -1.
 */
static int int_of(json_object *v, int64_t *out)
{
    int64_t i = json_object_get_int64(v);
    if (i == INT64_MIN)
        return -1;
    if (i == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX)
        return -1;
    *out = i;
    return 0;
}

static const char *type_name(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_double: return "a double";
    case json_type_int: return "an integer";
    case json_type_object: return "an object";
    case json_type_array: return "an array";
    case json_type_string: return "a string";
    }
    return "?";
}

static char *dup_string(json_object *v)
{
    return strdup(json_object_get_string(v));
}

static void *new_msg(const ProtobufCMessageDescriptor *d)
{
    void *m = malloc(d->sizeof_message);
    if (m)
        protobuf_c_message_init(d, m);
    return m;
}

static int oom(svj_error *err, const char *where)
{
    set_err(err, "%s: out of memory", where);
    return -1;
}

/*
 * An array of only strings or only integers, into a new StringList or
 * IntList (*kind says which: 's' or 'i'). `what` names it in messages
 * ("line 3, key \"tags\"", "must[0].match_any"). Returns 0 or -1.
 */
static int list_of(json_object *a, const char *what, int *kind, Slimvec__V1__StringList **ss,
                   Slimvec__V1__IntList **is, svj_error *err)
{
    size_t n = json_object_array_length(a);
    if (n == 0) {
        set_err(err, "%s: an empty array (it has no type)", what);
        return -1;
    }
    json_type t = json_object_get_type(json_object_array_get_idx(a, 0));
    if (t == json_type_string) {
        Slimvec__V1__StringList *l = new_msg(&slimvec__v1__string_list__descriptor);
        if (!l || !(l->values = calloc(n, sizeof *l->values))) {
            free(l);
            return oom(err, what);
        }
        *kind = 's';
        *ss = l;
        for (size_t i = 0; i < n; i++) {
            json_object *x = json_object_array_get_idx(a, i);
            if (!json_object_is_type(x, json_type_string)) {
                set_err(err, "%s: item %zu is %s in an array of strings (one type per array)", what, i,
                        type_name(x));
                return -1;
            }
            if (!(l->values[i] = dup_string(x)))
                return oom(err, what);
            l->n_values = i + 1;
        }
        return 0;
    }
    if (t == json_type_int) {
        Slimvec__V1__IntList *l = new_msg(&slimvec__v1__int_list__descriptor);
        if (!l || !(l->values = calloc(n, sizeof *l->values))) {
            free(l);
            return oom(err, what);
        }
        *kind = 'i';
        *is = l;
        for (size_t i = 0; i < n; i++) {
            json_object *x = json_object_array_get_idx(a, i);
            if (!json_object_is_type(x, json_type_int)) {
                set_err(err, "%s: item %zu is %s in an array of integers (one type per array)", what, i,
                        type_name(x));
                return -1;
            }
            if (int_of(x, &l->values[i]) != 0) {
                set_err(err, "%s: item %zu is out of the int64 range", what, i);
                return -1;
            }
            l->n_values = i + 1;
        }
        return 0;
    }
    set_err(err, "%s: an array of %ss: only strings or integers", what,
            t == json_type_double ? "double" : t == json_type_boolean ? "boolean" : t == json_type_null ? "null"
            : t == json_type_array ? "array" : "object");
    return -1;
}

/* ---- payloads ----------------------------------------------------------------------------------- */

static int payload_value(json_object *v, const char *what, Slimvec__V1__PayloadValue *pv, svj_error *err)
{
    int kind = 0;
    switch (json_object_get_type(v)) {
    case json_type_string:
        if (!(pv->string_value = dup_string(v)))
            return oom(err, what);
        pv->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE;
        return 0;
    case json_type_int:
        if (int_of(v, &pv->int_value) != 0) {
            set_err(err, "%s: the integer is out of the int64 range", what);
            return -1;
        }
        pv->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE;
        return 0;
    case json_type_double:
        pv->double_value = json_object_get_double(v);
        if (!isfinite(pv->double_value)) {
            set_err(err, "%s: the number is not finite", what);
            return -1;
        }
        pv->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_DOUBLE_VALUE;
        return 0;
    case json_type_boolean:
        pv->bool_value = json_object_get_boolean(v) ? 1 : 0;
        pv->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE;
        return 0;
    case json_type_array: {
        Slimvec__V1__StringList *ss = NULL;
        Slimvec__V1__IntList *is = NULL;
        int rc = list_of(v, what, &kind, &ss, &is, err);
        /* Set even on failure: the value owns what list_of made. */
        if (kind == 's') {
            pv->strings = ss;
            pv->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS;
        } else if (kind == 'i') {
            pv->ints = is;
            pv->kind_case = SLIMVEC__V1__PAYLOAD_VALUE__KIND_INTS;
        }
        return rc;
    }
    case json_type_null:
        set_err(err, "%s: null is not a payload value (leave the key out)", what);
        return -1;
    case json_type_object:
        set_err(err, "%s: a nested object (payload values are strings, numbers, booleans and arrays "
                     "of strings or of integers)", what);
        return -1;
    }
    set_err(err, "%s: an unknown JSON type", what);
    return -1;
}

int svj_payload_from_json(const char *text, size_t len, size_t line, Slimvec__V1__Payload **out,
                          svj_error *err)
{
    char where[48], what[64 + SHOW];
    if (line)
        snprintf(where, sizeof where, "line %zu", line);
    else
        snprintf(where, sizeof where, "payload");
    *out = NULL;
    size_t i = 0;
    while (i < len && is_json_space(text[i]))
        i++;
    if (i == len) {
        set_err(err, "%s: empty ({} is a vector without payload)", where);
        return -1;
    }
    json_object *o = parse_text(text, len, PAYLOAD_DEPTH, where, err);
    if (!o)
        return -1;
    int rc = -1;
    Slimvec__V1__Payload *p = NULL;
    if (!json_object_is_type(o, json_type_object)) {
        set_err(err, "%s: %s, not a JSON object ({} for no payload)", where, type_name(o));
        goto cleanup;
    }
    size_t n = (size_t)json_object_object_length(o);
    p = new_msg(&slimvec__v1__payload__descriptor);
    if (!p || (n && !(p->fields = calloc(n, sizeof *p->fields)))) {
        oom(err, where);
        goto cleanup;
    }
    json_object_object_foreach(o, key, v) {
        snprintf(what, sizeof what, "%s, key \"%.*s%s\"", where, SHOW, key, strlen(key) > SHOW ? "..." : "");
        Slimvec__V1__Payload__FieldsEntry *e = new_msg(&slimvec__v1__payload__fields_entry__descriptor);
        if (!e) {
            oom(err, what);
            goto cleanup;
        }
        p->fields[p->n_fields++] = e;
        if (!(e->key = strdup(key)) || !(e->value = new_msg(&slimvec__v1__payload_value__descriptor))) {
            oom(err, what);
            goto cleanup;
        }
        if (payload_value(v, what, e->value, err) != 0)
            goto cleanup;
    }
    *out = p;
    p = NULL;
    rc = 0;
cleanup:
    svj_payload_free(p);
    json_object_put(o);
    return rc;
}

void svj_payload_free(Slimvec__V1__Payload *p)
{
    if (p)
        protobuf_c_message_free_unpacked(&p->base, NULL);
}

/* ---- filters ------------------------------------------------------------------------------------ */

/* The place of a part, for messages: "must[1].filter.should[0]". */
static void path_join(char *dst, size_t cap, const char *base, const char *part, long index)
{
    /* The syntax nests two filters at most, so a place is short; were it
     * cut anyway, the message would still be a message. */
    int n = index >= 0 ? snprintf(dst, cap, "%s%s%s[%ld]", base, *base ? "." : "", part, index)
                       : snprintf(dst, cap, "%s%s%s", base, *base ? "." : "", part);
    if (n < 0)
        dst[0] = '\0';
}

#define PATH_LEN 192

static const char condition_forms[] =
    "a condition is {\"key\":K,\"match\":V}, {\"key\":K,\"match_any\":[...]}, "
    "{\"key\":K,\"range\":{\"gte\":N,...}}, {\"has_id\":[...]}, {\"is_empty\":K} or {\"filter\":{...}}";

static int key_of(json_object *o, const char *path, char **out, svj_error *err)
{
    json_object *k = NULL;
    if (!json_object_object_get_ex(o, "key", &k)) {
        set_err(err, "%s: missing \"key\"", path);
        return -1;
    }
    if (!json_object_is_type(k, json_type_string)) {
        set_err(err, "%s: \"key\" is %s, not a string", path, type_name(k));
        return -1;
    }
    if (!(*out = dup_string(k)))
        return oom(err, path);
    return 0;
}

static int match_of(json_object *o, const char *path, Slimvec__V1__FieldMatch **out, svj_error *err)
{
    Slimvec__V1__FieldMatch *m = new_msg(&slimvec__v1__field_match__descriptor);
    if (!m)
        return oom(err, path);
    *out = m;
    if (key_of(o, path, &m->key, err) != 0)
        return -1;
    json_object *v = json_object_object_get(o, "match");
    switch (json_object_get_type(v)) {
    case json_type_string:
        if (!(m->string_value = dup_string(v)))
            return oom(err, path);
        m->value_case = SLIMVEC__V1__FIELD_MATCH__VALUE_STRING_VALUE;
        return 0;
    case json_type_int:
        if (int_of(v, &m->int_value) != 0) {
            set_err(err, "%s: match: the integer is out of the int64 range", path);
            return -1;
        }
        m->value_case = SLIMVEC__V1__FIELD_MATCH__VALUE_INT_VALUE;
        return 0;
    case json_type_boolean:
        m->bool_value = json_object_get_boolean(v) ? 1 : 0;
        m->value_case = SLIMVEC__V1__FIELD_MATCH__VALUE_BOOL_VALUE;
        return 0;
    default:
        break;
    }
    set_err(err, "%s: match takes a string, an integer or a boolean, not %s%s", path, type_name(v),
            json_object_is_type(v, json_type_double) ? " (a range compares doubles)" : "");
    return -1;
}

static int match_any_of(json_object *o, const char *path, Slimvec__V1__FieldMatchAny **out, svj_error *err)
{
    Slimvec__V1__FieldMatchAny *m = new_msg(&slimvec__v1__field_match_any__descriptor);
    if (!m)
        return oom(err, path);
    *out = m;
    if (key_of(o, path, &m->key, err) != 0)
        return -1;
    json_object *a = json_object_object_get(o, "match_any");
    char what[PATH_LEN + 16];
    path_join(what, sizeof what, path, "match_any", -1);
    if (!json_object_is_type(a, json_type_array)) {
        set_err(err, "%s: %s, not an array", what, type_name(a));
        return -1;
    }
    int kind = 0;
    Slimvec__V1__StringList *ss = NULL;
    Slimvec__V1__IntList *is = NULL;
    int rc = list_of(a, what, &kind, &ss, &is, err);
    /* The lists' arrays move into the condition (it frees them); the
     * list messages themselves go. */
    if (ss) {
        m->strings = ss->values;
        m->n_strings = ss->n_values;
        free(ss);
    }
    if (is) {
        m->ints = is->values;
        m->n_ints = is->n_values;
        free(is);
    }
    return rc;
}

/* One side of a range: "gt"/"gte" or "lt"/"lte". */
static int bound_of(json_object *r, const char *path, const char *strict, const char *incl,
                    Slimvec__V1__RangeBound **out, svj_error *err)
{
    json_object *vs = NULL, *vi = NULL;
    int has_s = json_object_object_get_ex(r, strict, &vs);
    int has_i = json_object_object_get_ex(r, incl, &vi);
    if (!has_s && !has_i)
        return 0;
    if (has_s && has_i) {
        set_err(err, "%s: both %s and %s", path, strict, incl);
        return -1;
    }
    json_object *v = has_s ? vs : vi;
    const char *name = has_s ? strict : incl;
    Slimvec__V1__RangeBound *b = new_msg(&slimvec__v1__range_bound__descriptor);
    if (!b)
        return oom(err, path);
    *out = b;
    b->inclusive = has_i ? 1 : 0;
    if (json_object_is_type(v, json_type_int)) {
        if (int_of(v, &b->int_value) != 0) {
            set_err(err, "%s: %s: the integer is out of the int64 range", path, name);
            return -1;
        }
        b->value_case = SLIMVEC__V1__RANGE_BOUND__VALUE_INT_VALUE;
        return 0;
    }
    if (json_object_is_type(v, json_type_double)) {
        b->double_value = json_object_get_double(v);
        if (!isfinite(b->double_value)) {
            set_err(err, "%s: %s: the number is not finite", path, name);
            return -1;
        }
        b->value_case = SLIMVEC__V1__RANGE_BOUND__VALUE_DOUBLE_VALUE;
        return 0;
    }
    set_err(err, "%s: %s is %s, not a number", path, name, type_name(v));
    return -1;
}

static int range_of(json_object *o, const char *path, Slimvec__V1__FieldRange **out, svj_error *err)
{
    Slimvec__V1__FieldRange *m = new_msg(&slimvec__v1__field_range__descriptor);
    if (!m)
        return oom(err, path);
    *out = m;
    if (key_of(o, path, &m->key, err) != 0)
        return -1;
    json_object *r = json_object_object_get(o, "range");
    char what[PATH_LEN + 16];
    path_join(what, sizeof what, path, "range", -1);
    if (!json_object_is_type(r, json_type_object)) {
        set_err(err, "%s: %s, not an object", what, type_name(r));
        return -1;
    }
    json_object_object_foreach(r, k, v) {
        (void)v;
        if (strcmp(k, "gt") && strcmp(k, "gte") && strcmp(k, "lt") && strcmp(k, "lte")) {
            set_err(err, "%s: unknown field \"%.*s\" (gt, gte, lt, lte)", what, SHOW, k);
            return -1;
        }
    }
    if (bound_of(r, what, "gt", "gte", &m->lower, err) != 0 || bound_of(r, what, "lt", "lte", &m->upper, err) != 0)
        return -1;
    if (!m->lower && !m->upper) {
        set_err(err, "%s: needs gt, gte, lt or lte", what);
        return -1;
    }
    return 0;
}

static int has_id_of(json_object *o, const char *path, Slimvec__V1__HasId **out, svj_error *err)
{
    Slimvec__V1__HasId *m = new_msg(&slimvec__v1__has_id__descriptor);
    if (!m)
        return oom(err, path);
    *out = m;
    json_object *a = json_object_object_get(o, "has_id");
    if (!json_object_is_type(a, json_type_array)) {
        set_err(err, "%s: has_id is %s, not an array of ids", path, type_name(a));
        return -1;
    }
    size_t n = json_object_array_length(a);
    if (n == 0) {
        set_err(err, "%s: has_id: an empty array", path);
        return -1;
    }
    if (!(m->ids = calloc(n, sizeof *m->ids)))
        return oom(err, path);
    for (size_t i = 0; i < n; i++) {
        json_object *x = json_object_array_get_idx(a, i);
        char num[24];
        int64_t id;
        if (json_object_is_type(x, json_type_string)) {
            m->ids[i] = dup_string(x);
        } else if (json_object_is_type(x, json_type_int) && int_of(x, &id) == 0) {
            snprintf(num, sizeof num, "%" PRId64, id);
            m->ids[i] = strdup(num);
        } else {
            set_err(err, "%s: has_id: item %zu is %s, not an id (a string)", path, i, type_name(x));
            return -1;
        }
        if (!m->ids[i])
            return oom(err, path);
        m->n_ids = i + 1;
    }
    return 0;
}

static int is_empty_of(json_object *o, const char *path, Slimvec__V1__IsEmpty **out, svj_error *err)
{
    Slimvec__V1__IsEmpty *m = new_msg(&slimvec__v1__is_empty__descriptor);
    if (!m)
        return oom(err, path);
    *out = m;
    json_object *k = json_object_object_get(o, "is_empty");
    if (!json_object_is_type(k, json_type_string)) {
        set_err(err, "%s: is_empty is %s, not a key (a string)", path, type_name(k));
        return -1;
    }
    if (!(m->key = dup_string(k)))
        return oom(err, path);
    return 0;
}

/* A condition's parsed form: its kind (Condition's and LeafCondition's
 * numbers agree, 1..6) and its message. */
typedef struct cond {
    int kind;
    ProtobufCMessage *msg;
} cond;

static int nested_of(json_object *o, const char *path, Slimvec__V1__NestedFilter **out, svj_error *err);

/*
 * One condition object. `leaf`: inside a nested filter, where another
 * filter is refused. On failure c->msg may hold a half-built message (the
 * caller frees it).
 */
static int condition_of(json_object *o, const char *path, int leaf, cond *c, svj_error *err)
{
    if (!json_object_is_type(o, json_type_object)) {
        set_err(err, "%s: %s, not a condition object (%s)", path, type_name(o), condition_forms);
        return -1;
    }
    /* Which kind: exactly one of the kind fields, and "key" only beside
     * match, match_any and range. */
    static const char *const kinds[] = {"match", "match_any", "range", "has_id", "is_empty", "filter"};
    static const int kind_no[] = {
        SLIMVEC__V1__CONDITION__KIND_MATCH,  SLIMVEC__V1__CONDITION__KIND_MATCH_ANY,
        SLIMVEC__V1__CONDITION__KIND_RANGE,  SLIMVEC__V1__CONDITION__KIND_HAS_ID,
        SLIMVEC__V1__CONDITION__KIND_IS_EMPTY, SLIMVEC__V1__CONDITION__KIND_FILTER,
    };
    const char *found = NULL;
    int kind = 0, has_key = 0;
    json_object_object_foreach(o, k, v) {
        (void)v;
        if (!strcmp(k, "key")) {
            has_key = 1;
            continue;
        }
        size_t i = 0;
        while (i < sizeof kinds / sizeof *kinds && strcmp(k, kinds[i]))
            i++;
        if (i == sizeof kinds / sizeof *kinds) {
            set_err(err, "%s: unknown field \"%.*s\" (%s)", path, SHOW, k, condition_forms);
            return -1;
        }
        if (found) {
            set_err(err, "%s: both %s and %s: one condition per object (combine them in must or should)",
                    path, found, kinds[i]);
            return -1;
        }
        found = kinds[i];
        kind = kind_no[i];
    }
    if (!found) {
        set_err(err, "%s: no condition (%s)", path, condition_forms);
        return -1;
    }
    int keyed = kind == SLIMVEC__V1__CONDITION__KIND_MATCH || kind == SLIMVEC__V1__CONDITION__KIND_MATCH_ANY ||
                kind == SLIMVEC__V1__CONDITION__KIND_RANGE;
    if (has_key && !keyed) {
        set_err(err, "%s: \"key\" does not go with %s%s", path, found,
                kind == SLIMVEC__V1__CONDITION__KIND_IS_EMPTY ? " (write {\"is_empty\": K})" : "");
        return -1;
    }
    c->kind = kind;
    switch (kind) {
    case SLIMVEC__V1__CONDITION__KIND_MATCH:
        return match_of(o, path, (Slimvec__V1__FieldMatch **)&c->msg, err);
    case SLIMVEC__V1__CONDITION__KIND_MATCH_ANY:
        return match_any_of(o, path, (Slimvec__V1__FieldMatchAny **)&c->msg, err);
    case SLIMVEC__V1__CONDITION__KIND_RANGE:
        return range_of(o, path, (Slimvec__V1__FieldRange **)&c->msg, err);
    case SLIMVEC__V1__CONDITION__KIND_HAS_ID:
        return has_id_of(o, path, (Slimvec__V1__HasId **)&c->msg, err);
    case SLIMVEC__V1__CONDITION__KIND_IS_EMPTY:
        return is_empty_of(o, path, (Slimvec__V1__IsEmpty **)&c->msg, err);
    default: /* SLIMVEC__V1__CONDITION__KIND_FILTER */
        if (leaf) {
            set_err(err, "%s: a filter inside a nested filter: the protocol allows one level of nesting "
                         "(a nested filter holds match, match_any, range, has_id and is_empty only)", path);
            return -1;
        }
        return nested_of(json_object_object_get(o, "filter"), path, (Slimvec__V1__NestedFilter **)&c->msg, err);
    }
}

/* The three lists of a filter object: checked for unknown fields, and
 * each an array (or absent: *arr NULL). */
static int filter_lists(json_object *o, const char *path, json_object *arr[3], svj_error *err)
{
    static const char *const names[3] = {"must", "should", "must_not"};
    if (!json_object_is_type(o, json_type_object)) {
        set_err(err, "%s: %s, not a filter object ({\"must\":[...], \"should\":[...], \"must_not\":[...]})",
                *path ? path : "filter", type_name(o));
        return -1;
    }
    json_object_object_foreach(o, k, v) {
        (void)v;
        if (strcmp(k, "must") && strcmp(k, "should") && strcmp(k, "must_not")) {
            set_err(err, "%s: unknown field \"%.*s\" (a filter has must, should and must_not)",
                    *path ? path : "filter", SHOW, k);
            return -1;
        }
    }
    for (int i = 0; i < 3; i++) {
        arr[i] = NULL;
        json_object *a = NULL;
        if (!json_object_object_get_ex(o, names[i], &a))
            continue;
        if (!json_object_is_type(a, json_type_array)) {
            char what[PATH_LEN];
            path_join(what, sizeof what, path, names[i], -1);
            set_err(err, "%s: %s, not an array of conditions", what, type_name(a));
            return -1;
        }
        arr[i] = a;
    }
    return 0;
}

static const char *const list_names[3] = {"must", "should", "must_not"};

static int nested_of(json_object *o, const char *path, Slimvec__V1__NestedFilter **out, svj_error *err)
{
    char base[PATH_LEN], what[PATH_LEN];
    path_join(base, sizeof base, path, "filter", -1);
    json_object *arr[3];
    if (filter_lists(o, base, arr, err) != 0)
        return -1;
    Slimvec__V1__NestedFilter *f = new_msg(&slimvec__v1__nested_filter__descriptor);
    if (!f)
        return oom(err, base);
    *out = f;
    size_t *counts[3] = {&f->n_must, &f->n_should, &f->n_must_not};
    Slimvec__V1__LeafCondition ***lists[3] = {&f->must, &f->should, &f->must_not};
    for (int l = 0; l < 3; l++) {
        size_t n = arr[l] ? json_object_array_length(arr[l]) : 0;
        if (n == 0)
            continue;
        if (!(*lists[l] = calloc(n, sizeof **lists[l])))
            return oom(err, base);
        for (size_t i = 0; i < n; i++) {
            path_join(what, sizeof what, base, list_names[l], (long)i);
            Slimvec__V1__LeafCondition *c = new_msg(&slimvec__v1__leaf_condition__descriptor);
            if (!c)
                return oom(err, what);
            (*lists[l])[(*counts[l])++] = c;
            cond pc = {0, NULL};
            int rc = condition_of(json_object_array_get_idx(arr[l], i), what, 1, &pc, err);
            /* The kinds 1..5 agree between Condition and LeafCondition, and
             * every member of the union is a message pointer. */
            c->kind_case = (Slimvec__V1__LeafCondition__KindCase)pc.kind;
            switch (pc.kind) {
            case SLIMVEC__V1__LEAF_CONDITION__KIND_MATCH: c->match = (void *)pc.msg; break;
            case SLIMVEC__V1__LEAF_CONDITION__KIND_MATCH_ANY: c->match_any = (void *)pc.msg; break;
            case SLIMVEC__V1__LEAF_CONDITION__KIND_RANGE: c->range = (void *)pc.msg; break;
            case SLIMVEC__V1__LEAF_CONDITION__KIND_HAS_ID: c->has_id = (void *)pc.msg; break;
            case SLIMVEC__V1__LEAF_CONDITION__KIND_IS_EMPTY: c->is_empty = (void *)pc.msg; break;
            default:
                c->kind_case = SLIMVEC__V1__LEAF_CONDITION__KIND__NOT_SET;
                protobuf_c_message_free_unpacked(pc.msg, NULL); /* NULL-safe */
                break;
            }
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

int svj_filter_from_json(const char *text, size_t len, Slimvec__V1__Filter **out, svj_error *err)
{
    char what[PATH_LEN];
    *out = NULL;
    json_object *o = parse_text(text, len, FILTER_DEPTH, "filter", err);
    if (!o)
        return -1;
    int rc = -1;
    Slimvec__V1__Filter *f = NULL;
    json_object *arr[3];
    if (filter_lists(o, "", arr, err) != 0)
        goto cleanup;
    if (!(f = new_msg(&slimvec__v1__filter__descriptor))) {
        oom(err, "filter");
        goto cleanup;
    }
    size_t *counts[3] = {&f->n_must, &f->n_should, &f->n_must_not};
    Slimvec__V1__Condition ***lists[3] = {&f->must, &f->should, &f->must_not};
    for (int l = 0; l < 3; l++) {
        size_t n = arr[l] ? json_object_array_length(arr[l]) : 0;
        if (n == 0)
            continue;
        if (!(*lists[l] = calloc(n, sizeof **lists[l]))) {
            oom(err, "filter");
            goto cleanup;
        }
        for (size_t i = 0; i < n; i++) {
            path_join(what, sizeof what, "", list_names[l], (long)i);
            Slimvec__V1__Condition *c = new_msg(&slimvec__v1__condition__descriptor);
            if (!c) {
                oom(err, what);
                goto cleanup;
            }
            (*lists[l])[(*counts[l])++] = c;
            cond pc = {0, NULL};
            int crc = condition_of(json_object_array_get_idx(arr[l], i), what, 0, &pc, err);
            c->kind_case = (Slimvec__V1__Condition__KindCase)pc.kind;
            switch (pc.kind) {
            case SLIMVEC__V1__CONDITION__KIND_MATCH: c->match = (void *)pc.msg; break;
            case SLIMVEC__V1__CONDITION__KIND_MATCH_ANY: c->match_any = (void *)pc.msg; break;
            case SLIMVEC__V1__CONDITION__KIND_RANGE: c->range = (void *)pc.msg; break;
            case SLIMVEC__V1__CONDITION__KIND_HAS_ID: c->has_id = (void *)pc.msg; break;
            case SLIMVEC__V1__CONDITION__KIND_IS_EMPTY: c->is_empty = (void *)pc.msg; break;
            case SLIMVEC__V1__CONDITION__KIND_FILTER: c->filter = (void *)pc.msg; break;
            default:
                c->kind_case = SLIMVEC__V1__CONDITION__KIND__NOT_SET;
                protobuf_c_message_free_unpacked(pc.msg, NULL);
                break;
            }
            if (crc != 0)
                goto cleanup;
        }
    }
    *out = f;
    f = NULL;
    rc = 0;
cleanup:
    svj_filter_free(f);
    json_object_put(o);
    return rc;
}

void svj_filter_free(Slimvec__V1__Filter *f)
{
    if (f)
        protobuf_c_message_free_unpacked(&f->base, NULL);
}

/* ---- output ------------------------------------------------------------------------------------- */

/*
 * The shortest "%.Ng" (N from min_digits up to max_digits) that reads back
 * as v (as a float when is_float), with ".0" added where it would read as
 * an integer. v is finite.
 */
static json_object *number_json(double v, int is_float)
{
    char s[40];
    int lo = is_float ? 6 : 15, hi = is_float ? 9 : 17;
    for (int p = lo; p <= hi; p++) {
        snprintf(s, sizeof s - 2, "%.*g", p, v);
        if (is_float ? strtof(s, NULL) == (float)v : strtod(s, NULL) == v)
            break;
    }
    if (!strpbrk(s, ".eEni"))
        strcat(s, ".0");
    return json_object_new_double_s(v, s);
}

json_object *svj_float_to_json(float v)
{
    if (!isfinite(v))
        return json_object_new_double((double)v); /* not from our server; json-c spells it */
    return number_json((double)v, 1);
}

static json_object *value_json(const Slimvec__V1__PayloadValue *v)
{
    json_object *a = NULL;
    switch (v ? v->kind_case : SLIMVEC__V1__PAYLOAD_VALUE__KIND__NOT_SET) {
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE:
        return json_object_new_string(v->string_value);
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE:
        return json_object_new_int64(v->int_value);
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_DOUBLE_VALUE:
        return isfinite(v->double_value) ? number_json(v->double_value, 0) : json_object_new_double(v->double_value);
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE:
        return json_object_new_boolean(v->bool_value ? 1 : 0);
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS:
        if (!(a = json_object_new_array()))
            return NULL;
        for (size_t i = 0; v->strings && i < v->strings->n_values; i++) {
            json_object *s = json_object_new_string(v->strings->values[i]);
            if (!s || json_object_array_add(a, s) != 0) {
                json_object_put(s);
                json_object_put(a);
                return NULL;
            }
        }
        return a;
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_INTS:
        if (!(a = json_object_new_array()))
            return NULL;
        for (size_t i = 0; v->ints && i < v->ints->n_values; i++) {
            json_object *n = json_object_new_int64(v->ints->values[i]);
            if (!n || json_object_array_add(a, n) != 0) {
                json_object_put(n);
                json_object_put(a);
                return NULL;
            }
        }
        return a;
    default:
        return json_object_new_null(); /* a value without a type: say so as null */
    }
}

json_object *svj_payload_to_json(const Slimvec__V1__Payload *p)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    for (size_t i = 0; p && i < p->n_fields; i++) {
        const Slimvec__V1__Payload__FieldsEntry *e = p->fields[i];
        json_object *v = value_json(e->value);
        /* json_object_new_null() is NULL too: a null value is fine. */
        if (!v && e->value && e->value->kind_case != SLIMVEC__V1__PAYLOAD_VALUE__KIND__NOT_SET) {
            json_object_put(o);
            return NULL;
        }
        if (json_object_object_add(o, e->key, v) != 0) {
            json_object_put(v);
            json_object_put(o);
            return NULL;
        }
    }
    return o;
}

/* ---- a file's payloads against the server's limits ---------------------------------------------- */

struct svj_keys {
    char **name;
    int *kind;
    size_t n, cap;
};

svj_keys *svj_keys_create(void)
{
    return calloc(1, sizeof(svj_keys));
}

void svj_keys_free(svj_keys *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n; i++)
        free(k->name[i]);
    free(k->name);
    free(k->kind);
    free(k);
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE: return "a string";
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_INT_VALUE: return "an integer";
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_DOUBLE_VALUE: return "a double";
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_BOOL_VALUE: return "a boolean";
    case SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS: return "a list of strings";
    default: return "a list of integers";
    }
}

/* The kind key had first (and remember this one when new): -1 when out of
 * memory or past the server's number of keys. */
static int first_kind(svj_keys *k, const char *key, int kind, size_t line, svj_error *err)
{
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->name[i], key) == 0)
            return k->kind[i];
    if (k->n >= SV_PAYLOAD_KEYS_MAX) {
        set_err(err, "line %zu, key \"%.64s\": more than %d keys in the file (the server's limit)", line, key,
                SV_PAYLOAD_KEYS_MAX);
        return -1;
    }
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        char **nn = realloc(k->name, cap * sizeof *nn);
        if (nn)
            k->name = nn;
        int *nk = nn ? realloc(k->kind, cap * sizeof *nk) : NULL;
        if (!nk) {
            set_err(err, "out of memory");
            return -1;
        }
        k->kind = nk;
        k->cap = cap;
    }
    if (!(k->name[k->n] = strdup(key))) {
        set_err(err, "out of memory");
        return -1;
    }
    k->kind[k->n++] = kind;
    return kind;
}

static int text_fits(const char *s, size_t line, const char *key, svj_error *err)
{
    size_t len = strlen(s);
    if (len <= SV_PAYLOAD_STRING_MAX)
        return 1;
    set_err(err, "line %zu, key \"%.64s\": a string of %zu bytes (the server takes up to %d)", line, key, len,
            SV_PAYLOAD_STRING_MAX);
    return 0;
}

int svj_payload_check(const Slimvec__V1__Payload *p, svj_keys *keys, size_t line, svj_error *err)
{
    if (p->n_fields > SV_PAYLOAD_FIELDS_MAX) {
        set_err(err, "line %zu: %zu keys (the server takes up to %d a vector)", line, p->n_fields,
                SV_PAYLOAD_FIELDS_MAX);
        return -1;
    }
    for (size_t i = 0; i < p->n_fields; i++) {
        const char *key = p->fields[i]->key;
        const Slimvec__V1__PayloadValue *v = p->fields[i]->value;
        if (strlen(key) == 0 || strlen(key) > SV_PAYLOAD_KEY_MAX) {
            set_err(err, "line %zu: a key of %zu bytes (the server takes 1..%d)", line, strlen(key),
                    SV_PAYLOAD_KEY_MAX);
            return -1;
        }
        int kind = (int)v->kind_case;
        if (kind == SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRING_VALUE && !text_fits(v->string_value, line, key, err))
            return -1;
        size_t items = kind == SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS ? v->strings->n_values
                       : kind == SLIMVEC__V1__PAYLOAD_VALUE__KIND_INTS  ? v->ints->n_values
                                                                         : 0;
        if (items > SV_PAYLOAD_LIST_MAX) {
            set_err(err, "line %zu, key \"%.64s\": a list of %zu items (the server takes up to %d)", line, key,
                    items, SV_PAYLOAD_LIST_MAX);
            return -1;
        }
        for (size_t j = 0; kind == SLIMVEC__V1__PAYLOAD_VALUE__KIND_STRINGS && j < items; j++)
            if (!text_fits(v->strings->values[j], line, key, err))
                return -1;
        int first = first_kind(keys, key, kind, line, err);
        if (first < 0)
            return -1;
        if (first != kind) {
            set_err(err, "line %zu, key \"%.64s\": %s, but earlier lines gave it %s (a key holds one kind; "
                         "write 1.0 for a double)", line, key, kind_name(kind), kind_name(first));
            return -1;
        }
    }
    return 0;
}
