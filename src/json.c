/*
 * The strict JSON parser (see json.h): recursive descent with a depth limit,
 * run twice over the text, first to validate and count, then to fill arrays of
 * exactly the counted sizes. Keys are checked for duplicates afterwards.
 */
#include "json.h"

#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct parser {
    const unsigned char *p, *end;
    const sae_json_limits *lim;
    sae_json *nodes; /* NULL in the counting pass */
    size_t n_nodes;
    char *strings;   /* NULL in the counting pass */
    size_t n_bytes;  /* string arena bytes used so far */
    bool too_deep;   /* why parsing stopped, when a limit stopped it */
    bool too_many;
} parser;

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Reserve the next node; SIZE_MAX when the document has too many. */
static size_t new_node(parser *ps, sae_json_type type)
{
    if (ps->n_nodes >= ps->lim->max_nodes) {
        ps->too_many = true;
        return SIZE_MAX;
    }
    size_t idx = ps->n_nodes++;
    if (ps->nodes) {
        ps->nodes[idx].type = type;
        ps->nodes[idx].len = 0;
        ps->nodes[idx].str = NULL;
        ps->nodes[idx].next = idx + 1;
    }
    return idx;
}

static void finish_node(parser *ps, size_t idx, size_t len)
{
    if (ps->nodes) {
        ps->nodes[idx].len = len;
        ps->nodes[idx].next = ps->n_nodes;
    }
}

/* Append decoded bytes to the current string (counted in both passes). */
static void put_bytes(parser *ps, const unsigned char *b, size_t n)
{
    if (ps->strings)
        memcpy(ps->strings + ps->n_bytes, b, n);
    ps->n_bytes += n;
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits after "\u"; false if malformed. */
static bool read_hex4(parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return false;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int d = hex_digit(ps->p[k]);
        if (d < 0)
            return false;
        v = v * 16 + (unsigned)d;
    }
    ps->p += 4;
    *out = v;
    return true;
}

/* Length of the valid UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 if invalid. Only for bytes >= 0x80. */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return n;
}

static void put_code_point(parser *ps, unsigned cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    put_bytes(ps, b, n);
}

/* A string starting at the opening quote. */
static bool parse_string(parser *ps)
{
    size_t idx = new_node(ps, SAE_JSON_STRING);
    if (idx == SIZE_MAX)
        return false;
    ps->p++; /* opening quote */
    size_t start = ps->n_bytes;
    for (;;) {
        if (ps->p >= ps->end)
            return false;
        unsigned char c = *ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (ps->end - ps->p < 2)
                return false;
            unsigned char e = ps->p[1];
            ps->p += 2;
            unsigned char out;
            switch (e) {
            case '"': out = '"'; break;
            case '\\': out = '\\'; break;
            case '/': out = '/'; break;
            case 'b': out = '\b'; break;
            case 'f': out = '\f'; break;
            case 'n': out = '\n'; break;
            case 'r': out = '\r'; break;
            case 't': out = '\t'; break;
            case 'u': {
                unsigned cp;
                if (!read_hex4(ps, &cp))
                    return false;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return false; /* a low surrogate without its high half */
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    unsigned low;
                    if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                        return false;
                    ps->p += 2;
                    if (!read_hex4(ps, &low) || low < 0xDC00 || low > 0xDFFF)
                        return false;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                }
                put_code_point(ps, cp);
                continue;
            }
            default: return false;
            }
            put_bytes(ps, &out, 1);
            continue;
        }
        if (c < 0x80) {
            put_bytes(ps, &c, 1);
            ps->p++;
            continue;
        }
        size_t n = utf8_sequence(ps->p, ps->end);
        if (n == 0)
            return false;
        put_bytes(ps, ps->p, n);
        ps->p += n;
    }
    size_t len = ps->n_bytes - start;
    const unsigned char nul = 0;
    put_bytes(ps, &nul, 1);
    if (ps->nodes) {
        ps->nodes[idx].str = ps->strings + start;
        ps->nodes[idx].len = len;
    }
    return true;
}

static bool is_digit(const parser *ps)
{
    return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool parse_number(parser *ps)
{
    size_t idx = new_node(ps, SAE_JSON_NUMBER);
    if (idx == SIZE_MAX)
        return false;
    const unsigned char *start = ps->p;
    if (*ps->p == '-')
        ps->p++;
    if (!is_digit(ps))
        return false;
    if (*ps->p == '0')
        ps->p++;
    else
        while (is_digit(ps))
            ps->p++;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!is_digit(ps))
            return false;
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!is_digit(ps))
            return false;
        while (is_digit(ps))
            ps->p++;
    }
    if (ps->nodes) {
        ps->nodes[idx].str = (const char *)start;
        ps->nodes[idx].len = (size_t)(ps->p - start);
    }
    return true;
}

static bool parse_literal(parser *ps, const char *word, sae_json_type type)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return false;
    ps->p += n;
    return new_node(ps, type) != SIZE_MAX;
}

static bool parse_value(parser *ps, size_t depth);

/* An array or object starting at its opening bracket. */
static bool parse_container(parser *ps, size_t depth, bool object)
{
    if (depth > ps->lim->max_depth) {
        ps->too_deep = true;
        return false;
    }
    size_t idx = new_node(ps, object ? SAE_JSON_OBJECT : SAE_JSON_ARRAY);
    if (idx == SIZE_MAX)
        return false;
    const unsigned char close = object ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    size_t count = 0;
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        finish_node(ps, idx, 0);
        return true;
    }
    for (;;) {
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"' || !parse_string(ps))
                return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return false;
            ps->p++;
        }
        if (!parse_value(ps, depth + 1))
            return false;
        count++;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return false;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p != close)
            return false;
        ps->p++;
        finish_node(ps, idx, count);
        return true;
    }
}

static bool parse_value(parser *ps, size_t depth)
{
    skip_ws(ps);
    if (ps->p >= ps->end)
        return false;
    switch (*ps->p) {
    case '{': return parse_container(ps, depth, true);
    case '[': return parse_container(ps, depth, false);
    case '"': return parse_string(ps);
    case 't': return parse_literal(ps, "true", SAE_JSON_TRUE);
    case 'f': return parse_literal(ps, "false", SAE_JSON_FALSE);
    case 'n': return parse_literal(ps, "null", SAE_JSON_NULL);
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return parse_number(ps);
        return false;
    }
}

static bool parse_document(parser *ps, const char *text, size_t len)
{
    ps->p = (const unsigned char *)text;
    ps->end = ps->p + len;
    ps->n_nodes = 0;
    ps->n_bytes = 0;
    if (!parse_value(ps, 1))
        return false;
    skip_ws(ps);
    return ps->p == ps->end;
}

static bool same_string(const sae_json *a, const sae_json *b)
{
    return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
}

static int compare_keys(const void *pa, const void *pb)
{
    const sae_json *a = *(const sae_json *const *)pa;
    const sae_json *b = *(const sae_json *const *)pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->str, b->str, n);
    if (c != 0)
        return c;
    return (a->len > b->len) - (a->len < b->len);
}

/* SAE_E_FORMAT if any object repeats a key. Small objects are checked pairwise,
 * large ones by sorting their keys in a scratch array. */
static int check_duplicate_keys(const sae_json_doc *doc)
{
    enum { PAIRWISE_MAX = 16 };
    size_t max_members = 0;
    for (size_t i = 0; i < doc->count; i++)
        if (doc->nodes[i].type == SAE_JSON_OBJECT && doc->nodes[i].len > max_members)
            max_members = doc->nodes[i].len;
    const sae_json **keys = NULL;
    if (max_members > PAIRWISE_MAX) {
        /* max_members < count <= max_nodes: the product cannot overflow */
        keys = sae__alloc(max_members * sizeof *keys);
        if (!keys)
            return sae__fail(SAE_E_NOMEM, "out of memory for %zu keys", max_members);
    }
    int rc = SAE_OK;
    for (size_t i = 0; i < doc->count && rc == SAE_OK; i++) {
        const sae_json *obj = &doc->nodes[i];
        if (obj->type != SAE_JSON_OBJECT || obj->len < 2)
            continue;
        if (obj->len <= PAIRWISE_MAX) {
            const sae_json *small[PAIRWISE_MAX];
            size_t k = i + 1;
            for (size_t m = 0; m < obj->len; m++) {
                small[m] = &doc->nodes[k];
                for (size_t q = 0; q < m && rc == SAE_OK; q++)
                    if (same_string(small[q], small[m]))
                        rc = sae__fail(SAE_E_FORMAT, "duplicate key \"%s\"", small[m]->str);
                k = doc->nodes[k + 1].next;
            }
        } else {
            size_t k = i + 1;
            for (size_t m = 0; m < obj->len; m++) {
                keys[m] = &doc->nodes[k];
                k = doc->nodes[k + 1].next;
            }
            qsort(keys, obj->len, sizeof *keys, compare_keys);
            for (size_t m = 1; m < obj->len && rc == SAE_OK; m++)
                if (same_string(keys[m - 1], keys[m]))
                    rc = sae__fail(SAE_E_FORMAT, "duplicate key \"%s\"", keys[m]->str);
        }
    }
    sae__free(keys);
    return rc;
}

int sae__json_parse(const char *text, size_t len, const sae_json_limits *limits, sae_json_doc *doc)
{
    memset(doc, 0, sizeof *doc);
    if (!text || !limits)
        return sae__fail(SAE_E_FORMAT, "no text");
    parser ps = {0};
    ps.lim = limits;
    if (!parse_document(&ps, text, len)) {
        if (ps.too_many)
            return sae__fail(SAE_E_FORMAT, "more than %zu JSON values", limits->max_nodes);
        if (ps.too_deep)
            return sae__fail(SAE_E_FORMAT, "JSON nested deeper than %zu", limits->max_depth);
        return sae__fail(SAE_E_FORMAT, "not strict JSON at byte %zu of %zu",
                         (size_t)((const char *)ps.p - text), len);
    }
    /* n_nodes <= max_nodes and n_bytes <= 2 * len (each decoded string is no
     * longer than its text, plus one terminator per string): both bounded. */
    size_t node_bytes;
    if (!sae__mul(ps.n_nodes, sizeof(sae_json), &node_bytes))
        return sae__fail(SAE_E_FORMAT, "too many JSON values");
    int rc;
    doc->nodes = sae__alloc(node_bytes);
    doc->strings = doc->nodes && ps.n_bytes ? sae__alloc(ps.n_bytes) : NULL;
    if (!doc->nodes || (ps.n_bytes && !doc->strings)) {
        rc = sae__fail(SAE_E_NOMEM, "out of memory for %zu JSON values", ps.n_nodes);
        goto cleanup;
    }
    ps.nodes = doc->nodes;
    ps.strings = doc->strings;
    bool ok = parse_document(&ps, text, len);
    (void)ok; /* the same text parsed the same way a moment ago */
    doc->count = ps.n_nodes;
    rc = check_duplicate_keys(doc);
cleanup:
    if (rc != SAE_OK)
        sae__json_free(doc);
    return rc;
}

void sae__json_free(sae_json_doc *doc)
{
    sae__free(doc->nodes);
    sae__free(doc->strings);
    memset(doc, 0, sizeof *doc);
}

size_t sae__json_member(const sae_json_doc *doc, size_t obj, const char *key)
{
    if (obj >= doc->count || doc->nodes[obj].type != SAE_JSON_OBJECT)
        return SIZE_MAX;
    size_t k = obj + 1;
    for (size_t m = 0; m < doc->nodes[obj].len; m++) {
        if (sae__json_is_string(&doc->nodes[k], key))
            return k + 1;
        k = doc->nodes[k + 1].next;
    }
    return SIZE_MAX;
}

bool sae__json_is_string(const sae_json *node, const char *s)
{
    size_t n = strlen(s);
    return node->type == SAE_JSON_STRING && node->len == n && memcmp(node->str, s, n) == 0;
}

bool sae__json_u64(const sae_json *node, uint64_t *out)
{
    if (node->type != SAE_JSON_NUMBER || node->len == 0)
        return false;
    uint64_t v = 0;
    for (size_t k = 0; k < node->len; k++) {
        char c = node->str[k];
        if (c < '0' || c > '9')
            return false; /* '-', '.', 'e': not a non-negative integer */
        unsigned d = (unsigned)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}
