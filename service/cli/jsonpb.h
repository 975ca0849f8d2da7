/*
 * JSON <-> protobuf for the `slimvec` client's payloads and filters (the
 * files that hold them are read by lines.h). JSON is parsed by json-c; this file only maps
 * its values onto the slimvec.v1 messages and says precisely what it
 * refuses. Fuzzed by tests/fuzz/fuzz_clijson.c.
 *
 * Payloads: one JSON object per vector (`{}` = no payload):
 *   "s"            -> string_value
 *   7, -2          -> int_value (int64; -(2^63 - 1)..2^63 - 1: json-c turns
 *                     anything beyond into -2^63 or an unsigned value, so
 *                     those are refused, -2^63 with them)
 *   1.5, 1e3, 1.0  -> double_value (a fraction or an exponent makes a
 *                     double; finite only)
 *   true, false    -> bool_value
 *   ["a", "b"]     -> strings;  [1, 2] -> ints
 * Refused, with the line and the key: null, a nested object, an empty
 * array (it has no type: leave the key out, which is what "empty" means
 * to a filter), an array mixing types or holding anything but strings or
 * integers, a string with a NUL character (\u0000: protobuf strings are C
 * strings), a non-finite or out-of-range number. A key given twice in one
 * object: the last value counts (json-c's rule). The server checks its
 * own limits (key and string lengths, fields per payload, list lengths,
 * one type per key) and refuses the batch naming the vector.
 *
 * Filters, close to Qdrant's:
 *   {"must": [C...], "should": [C...], "must_not": [C...]}   (each optional)
 * where a condition C is one of
 *   {"key": K, "match": V}            V a string, an integer or a boolean
 *   {"key": K, "match_any": [V...]}   all strings or all integers
 *   {"key": K, "range": {"gt"|"gte": N, "lt"|"lte": N}}   N integer or double;
 *                                     at least one bound, one of each side
 *   {"has_id": ["3", "7"]}            ids as strings (integers are taken as
 *                                     their decimal string)
 *   {"is_empty": K}                   K absent, or an empty list
 *   {"filter": {"must": [...], "should": [...], "must_not": [...]}}
 *                                     one level of nesting: a nested filter
 *                                     holds only the five conditions above
 *                                     (the protocol's NestedFilter cannot hold
 *                                     another), so a deeper one is refused
 * A vector passes when it passes every must, at least one should (when
 * there are any) and no must_not. Anything else (an unknown field, a
 * condition with two kinds, a wrong type) is refused naming its place,
 * e.g. "must[1].filter.should[0]: range needs gt, gte, lt or lte". Keys the
 * collection does not have are the server's to refuse (INVALID_ARGUMENT).
 *
 * Every text is parsed in json-c's strict mode with UTF-8 checked, at
 * most SVJ_TEXT_MAX bytes, nesting at most a few levels deeper than the
 * syntax needs (json-c's own depth limit, so no input recurses far).
 * Messages built here are freed with svj_payload_free / svj_filter_free
 * (protobuf_c_message_free_unpacked: every part is malloc'd, and a part
 * is counted in its parent only once it is whole, so a half-built message
 * frees cleanly).
 */
#ifndef SV_CLI_JSONPB_H
#define SV_CLI_JSONPB_H

#include <stddef.h>
#include <stdio.h>

#include <json-c/json.h>

#include "slimvec/v1/slimvec.pb-c.h"

/* The longest payload line or filter accepted: far above what the server
 * takes (a payload encodes to at most 64 KiB, a filter holds at most
 * 16,384 values), and small enough that a wrong file (a .fvecs given as
 * the payloads, a line without newlines) is refused without reading it
 * all into memory. */
#define SVJ_TEXT_MAX ((size_t)4 << 20)

#define SVJ_ERR_LEN 512

typedef struct svj_error {
    char message[SVJ_ERR_LEN];
} svj_error;

/*
 * One payload: text[0..len) holds one JSON object and text[len] must be
 * '\0' (json-c needs it to end a number). `line` (1-based, 0 = none) is
 * named in messages: "line 3, key \"u\": 1.5e999 is not finite". On
 * success returns 0 and *out is a new Payload (no fields for {}); on
 * failure -1, *out NULL and err says why.
 */
int svj_payload_from_json(const char *text, size_t len, size_t line, Slimvec__V1__Payload **out,
                          svj_error *err);
void svj_payload_free(Slimvec__V1__Payload *p);

/*
 * The server's limits on a payload, and one kind a key across the lines of
 * a file, checked before anything is sent: a line the server would refuse
 * then refuses the ingest whole instead of stopping it after the batches
 * before it went in. (The kinds the collection's keys already hold are the
 * server's to check: a file that disagrees with them is refused at its
 * first batch that does.) `keys` remembers each key's first kind; create
 * with svj_keys_create, free with svj_keys_free. Returns 0, or -1 with err
 * naming the line and the key.
 */
typedef struct svj_keys svj_keys;
svj_keys *svj_keys_create(void); /* NULL: out of memory */
void svj_keys_free(svj_keys *k);
int svj_payload_check(const Slimvec__V1__Payload *p, svj_keys *keys, size_t line, svj_error *err);

/* One filter (the syntax above), text as for svj_payload_from_json. */
int svj_filter_from_json(const char *text, size_t len, Slimvec__V1__Filter **out, svj_error *err);
void svj_filter_free(Slimvec__V1__Filter *f);

/*
 * Output: a payload as a JSON object (the mapping above, reversed; a
 * double always has a '.' or an exponent, so it reads back as a double),
 * and a float as the shortest decimal that reads back as the same float.
 * New json-c objects (json_object_put them), or NULL when out of memory.
 * A NULL payload is {}.
 */
json_object *svj_payload_to_json(const Slimvec__V1__Payload *p);
json_object *svj_float_to_json(float v);

#endif
