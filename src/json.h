/*
 * A strict JSON parser (RFC 8259) for file headers that come from untrusted
 * sources: safetensors headers and SAELens cfg.json files. Not installed.
 *
 * The parser builds a flat tree of nodes in two passes over the text: the first
 * validates it and counts nodes and decoded string bytes without allocating;
 * the second fills exactly-sized arrays. So every allocation is sized from a
 * count the parser itself made and checked against the limits below.
 *
 * Rejected (SAE_E_FORMAT): anything RFC 8259 rejects (including control
 * characters in strings, invalid UTF-8, overlong encodings, lone surrogates in
 * \u escapes, leading zeros, a lone '-', trailing commas, trailing garbage
 * other than whitespace), duplicate keys in any object, nesting deeper than
 * max_depth, and more than max_nodes values.
 *
 * Layout: nodes are stored in document order. An object's members follow it as
 * key, value, key, value, ...; an array's elements follow it; every node's
 * `next` is the index just past its subtree, i.e. its next sibling.
 */
#ifndef LIBSAE_JSON_H
#define LIBSAE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sae_json_type {
    SAE_JSON_NULL,
    SAE_JSON_FALSE,
    SAE_JSON_TRUE,
    SAE_JSON_NUMBER,
    SAE_JSON_STRING,
    SAE_JSON_ARRAY,
    SAE_JSON_OBJECT
} sae_json_type;

typedef struct sae_json {
    sae_json_type type;
    size_t len;      /* STRING: decoded bytes; NUMBER: text bytes;
                        ARRAY: elements; OBJECT: members (key-value pairs) */
    const char *str; /* STRING: decoded UTF-8, NUL-terminated, may contain NUL;
                        NUMBER: its text inside the input (not terminated) */
    size_t next;     /* index of the node after this value's subtree */
} sae_json;

typedef struct sae_json_doc {
    sae_json *nodes; /* nodes[0] is the top-level value */
    size_t count;
    char *strings;   /* arena holding every decoded string */
} sae_json_doc;

typedef struct sae_json_limits {
    size_t max_depth; /* nesting of arrays and objects (top level = 1) */
    size_t max_nodes; /* values in the document, keys included */
} sae_json_limits;

/* Parse text[0..len) (no terminator needed) into *doc. Leading and trailing
 * whitespace is allowed. Returns SAE_OK, SAE_E_FORMAT or SAE_E_NOMEM; on error
 * *doc is zeroed and nothing stays allocated. */
int sae__json_parse(const char *text, size_t len, const sae_json_limits *limits, sae_json_doc *doc);

void sae__json_free(sae_json_doc *doc); /* zeroes *doc; a zeroed doc is fine */

/* The value of member `key` of the object at index obj, or SIZE_MAX if obj is
 * not an object or has no such member. */
size_t sae__json_member(const sae_json_doc *doc, size_t obj, const char *key);

/* Whether node is a string equal to the NUL-terminated s. */
bool sae__json_is_string(const sae_json *node, const char *s);

/* *out = node's value if it is a non-negative integer without fraction or
 * exponent that fits in uint64_t; false otherwise. */
bool sae__json_u64(const sae_json *node, uint64_t *out);

#endif /* LIBSAE_JSON_H */
