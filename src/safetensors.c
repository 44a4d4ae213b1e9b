/*
 * The safetensors format (see safetensors.h): a validating header reader, dtype
 * conversion to float32, and a writer. Byte order is handled explicitly, so
 * files are little-endian whatever the host.
 */
#include "safetensors.h"

#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [SAE_ST_BOOL] = {"BOOL", 1},       [SAE_ST_U8] = {"U8", 1},
    [SAE_ST_I8] = {"I8", 1},           [SAE_ST_F8_E5M2] = {"F8_E5M2", 1},
    [SAE_ST_F8_E4M3] = {"F8_E4M3", 1}, [SAE_ST_I16] = {"I16", 2},
    [SAE_ST_U16] = {"U16", 2},         [SAE_ST_F16] = {"F16", 2},
    [SAE_ST_BF16] = {"BF16", 2},       [SAE_ST_I32] = {"I32", 4},
    [SAE_ST_U32] = {"U32", 4},         [SAE_ST_F32] = {"F32", 4},
    [SAE_ST_F64] = {"F64", 8},         [SAE_ST_I64] = {"I64", 8},
    [SAE_ST_U64] = {"U64", 8},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

static uint64_t load_le64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | b[k];
    return v;
}

static uint32_t load_le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void store_le64(unsigned char *b, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

static void store_le32(unsigned char *b, uint32_t v)
{
    for (int k = 0; k < 4; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

/* ---- reading ------------------------------------------------------------- */

static void header_reset(sae_st_header *h)
{
    memset(h, 0, sizeof *h);
    h->metadata = SIZE_MAX;
}

void sae__st_header_free(sae_st_header *h)
{
    sae__json_free(&h->doc);
    sae__free(h->tensors);
    sae__free(h->text);
    header_reset(h);
}

static bool parse_dtype(const sae_json *node, sae_st_dtype *out)
{
    for (size_t d = 0; d < N_DTYPES; d++)
        if (sae__json_is_string(node, dtypes[d].name)) {
            *out = (sae_st_dtype)d;
            return true;
        }
    return false;
}

/* One tensor entry: exactly {"dtype", "shape", "data_offsets"}. Returns NULL,
 * or what is wrong with it. */
static const char *parse_tensor(const sae_json_doc *doc, size_t v, sae_st_tensor *t)
{
    const sae_json *nodes = doc->nodes;
    /* with no duplicate keys, 3 found members are all there is */
    if (nodes[v].type != SAE_JSON_OBJECT || nodes[v].len != 3)
        return "not an object of exactly \"dtype\", \"shape\" and \"data_offsets\"";
    size_t dt = sae__json_member(doc, v, "dtype");
    size_t sh = sae__json_member(doc, v, "shape");
    size_t off = sae__json_member(doc, v, "data_offsets");
    if (dt == SIZE_MAX || sh == SIZE_MAX || off == SIZE_MAX)
        return "not an object of exactly \"dtype\", \"shape\" and \"data_offsets\"";
    if (!parse_dtype(&nodes[dt], &t->dtype))
        return "\"dtype\" is not a safetensors dtype";
    if (nodes[sh].type != SAE_JSON_ARRAY || nodes[sh].len > SAE_ST_MAX_RANK)
        return "\"shape\" is not an array of at most 8 dimensions";
    t->rank = nodes[sh].len;
    t->count = 1;
    for (size_t d = 0; d < t->rank; d++) {
        uint64_t dim;
        if (!sae__json_u64(&nodes[sh + 1 + d], &dim))
            return "\"shape\" holds something other than whole numbers";
        t->shape[d] = dim;
        if (dim != 0 && t->count > UINT64_MAX / dim)
            return "its element count overflows";
        t->count *= dim;
    }
    if (nodes[off].type != SAE_JSON_ARRAY || nodes[off].len != 2 ||
        !sae__json_u64(&nodes[off + 1], &t->begin) || !sae__json_u64(&nodes[off + 2], &t->end) ||
        t->end < t->begin)
        return "\"data_offsets\" is not [begin, end] with begin <= end";
    uint64_t esize = dtypes[t->dtype].size;
    if (t->count > UINT64_MAX / esize || t->end - t->begin != t->count * esize)
        return "its data_offsets do not span shape x dtype bytes";
    return NULL;
}

static int compare_offsets(const void *pa, const void *pb)
{
    const sae_st_tensor *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    return (a->end > b->end) - (a->end < b->end);
}

/* Walk the parsed header: metadata, tensors, and the tiling of the data. */
static int index_header(sae_st_header *h, uint64_t source_size)
{
    const sae_json_doc *doc = &h->doc;
    const sae_json *nodes = doc->nodes;
    if (nodes[0].type != SAE_JSON_OBJECT)
        return sae__fail(SAE_E_FORMAT, "header: not a JSON object");
    size_t members = nodes[0].len;
    size_t meta = sae__json_member(doc, 0, "__metadata__");
    size_t n_tensors = members - (meta != SIZE_MAX);
    if (meta != SIZE_MAX) {
        if (nodes[meta].type != SAE_JSON_OBJECT)
            return sae__fail(SAE_E_FORMAT, "header: \"__metadata__\" is not an object");
        size_t k = meta + 1;
        for (size_t m = 0; m < nodes[meta].len; m++) {
            if (nodes[k + 1].type != SAE_JSON_STRING)
                return sae__fail(SAE_E_FORMAT, "header: \"__metadata__\": \"%s\" is not a string",
                                 nodes[k].str);
            k = nodes[k + 1].next;
        }
        h->metadata = meta;
    }
    if (n_tensors > 0) {
        /* n_tensors < doc->count, itself bounded by the parser's node limit */
        h->tensors = sae__alloc(n_tensors * sizeof *h->tensors);
        if (!h->tensors)
            return sae__fail(SAE_E_NOMEM, "header: out of memory for %zu tensors", n_tensors);
    }
    size_t k = 1, i = 0;
    for (size_t m = 0; m < members; m++) {
        size_t v = k + 1;
        if (v != meta) {
            sae_st_tensor *t = &h->tensors[i++];
            memset(t, 0, sizeof *t);
            t->name = nodes[k].str;
            t->name_len = nodes[k].len;
            const char *why = parse_tensor(doc, v, t);
            if (why)
                return sae__fail(SAE_E_FORMAT, "header: tensor \"%s\": %s", t->name, why);
        }
        k = nodes[v].next;
    }
    h->n_tensors = n_tensors;
    if (n_tensors > 1)
        qsort(h->tensors, n_tensors, sizeof *h->tensors, compare_offsets);
    uint64_t pos = 0;
    for (i = 0; i < n_tensors; i++) {
        if (h->tensors[i].begin != pos)
            return sae__fail(SAE_E_FORMAT, "header: tensor \"%s\" starts at data byte %llu, "
                             "not %llu (a gap or an overlap)", h->tensors[i].name,
                             (unsigned long long)h->tensors[i].begin, (unsigned long long)pos);
        pos = h->tensors[i].end;
    }
    /* data_offset <= source_size was checked by the caller */
    if (pos != source_size - h->data_offset)
        return sae__fail(SAE_E_FORMAT, "the tensors end at data byte %llu, the data at %llu",
                         (unsigned long long)pos,
                         (unsigned long long)(source_size - h->data_offset));
    return SAE_OK;
}

int sae__st_read_header(const sae_st_source *src, sae_st_header *h)
{
    header_reset(h);
    if (src->size < 8)
        return sae__fail(SAE_E_FORMAT, "%llu bytes: too short for a safetensors file",
                         (unsigned long long)src->size);
    unsigned char prefix[8];
    int rc = src->read(src->ctx, 0, prefix, sizeof prefix);
    if (rc != SAE_OK)
        return rc;
    uint64_t n = load_le64(prefix);
    if (n < 2 || n > SAE_ST_MAX_HEADER || n > src->size - 8)
        return sae__fail(SAE_E_FORMAT, "header length %llu: not in [2, %u] or past the end of "
                         "the %llu bytes", (unsigned long long)n, SAE_ST_MAX_HEADER,
                         (unsigned long long)src->size);
    h->text = sae__alloc((size_t)n);
    if (!h->text)
        return sae__fail(SAE_E_NOMEM, "out of memory for a header of %llu bytes",
                         (unsigned long long)n);
    rc = src->read(src->ctx, 8, h->text, (size_t)n);
    if (rc == SAE_OK && h->text[0] != '{')
        rc = sae__fail(SAE_E_FORMAT, "header: does not start with '{'");
    if (rc == SAE_OK) {
        /* top object > tensor entry > shape: three levels are all a header has */
        const sae_json_limits limits = {.max_depth = 3, .max_nodes = (size_t)1 << 20};
        if ((rc = sae__json_parse(h->text, (size_t)n, &limits, &h->doc)) != SAE_OK)
            sae__fail_context(rc, "header");
    }
    if (rc == SAE_OK) {
        h->data_offset = 8 + n;
        rc = index_header(h, src->size);
    }
    if (rc != SAE_OK)
        sae__st_header_free(h);
    return rc;
}

const sae_st_tensor *sae__st_find(const sae_st_header *h, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < h->n_tensors; i++)
        if (h->tensors[i].name_len == n && memcmp(h->tensors[i].name, name, n) == 0)
            return &h->tensors[i];
    return NULL;
}

const char *sae__st_metadata(const sae_st_header *h, const char *key, size_t *len)
{
    if (h->metadata == SIZE_MAX)
        return NULL;
    size_t v = sae__json_member(&h->doc, h->metadata, key);
    if (v == SIZE_MAX)
        return NULL;
    if (len)
        *len = h->doc.nodes[v].len;
    return h->doc.nodes[v].str;
}

bool sae__st_metadata_at(const sae_st_header *h, size_t i, const sae_json **key,
                         const sae_json **value)
{
    if (h->metadata == SIZE_MAX || i >= h->doc.nodes[h->metadata].len)
        return false;
    size_t k = h->metadata + 1;
    for (size_t m = 0; m < i; m++)
        k = h->doc.nodes[k + 1].next;
    *key = &h->doc.nodes[k];
    *value = &h->doc.nodes[k + 1];
    return true;
}

bool sae__st_metadata_is(const sae_st_header *h, const char *key, const char *value)
{
    size_t len;
    const char *s = sae__st_metadata(h, key, &len);
    return s && len == strlen(value) && memcmp(s, value, len) == 0;
}

bool sae__st_shape_is(const sae_st_tensor *t, size_t rank, uint64_t a, uint64_t b)
{
    if (t->rank != rank || t->shape[0] != a)
        return false;
    return rank == 1 || t->shape[1] == b;
}

bool sae__st_is_float(sae_st_dtype dtype)
{
    return dtype == SAE_ST_F32 || dtype == SAE_ST_F16 || dtype == SAE_ST_BF16 ||
           dtype == SAE_ST_F64;
}

static float bits_to_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* IEEE half to float, exactly (every half is a float). */
static float half_to_float(unsigned h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    unsigned exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f; /* zero or subnormal: exact */
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_to_float(sign | 0x7F800000u | ((uint32_t)mant << 13)); /* Inf, NaN */
    return bits_to_float(sign | (uint32_t)(exp + 112) << 23 | (uint32_t)mant << 13);
}

/* Bytes per chunk when streaming tensor data: bounded stack use, no allocation. */
enum { CHUNK_BYTES = 4096 };

int sae__st_read_f32(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                     float *dst, size_t cols, bool transpose)
{
    if (!sae__st_is_float(t->dtype))
        return sae__fail(SAE_E_FORMAT, "tensor \"%s\": %s, not a float dtype", t->name,
                         dtypes[t->dtype].name);
    if (transpose && (cols == 0 || t->count % cols != 0))
        return sae__fail(SAE_E_FORMAT, "tensor \"%s\": not a matrix of %zu columns", t->name, cols);
    const size_t esize = dtypes[t->dtype].size;
    const size_t per_chunk = CHUNK_BYTES / esize;
    const size_t count = (size_t)t->count; /* the caller checked it fits dst */
    const size_t rows = transpose ? count / cols : 0;
    size_t r = 0, c = 0;
    unsigned char chunk[CHUNK_BYTES];
    for (size_t k = 0; k < count;) {
        size_t n = count - k < per_chunk ? count - k : per_chunk;
        int rc = src->read(src->ctx, h->data_offset + t->begin + (uint64_t)k * esize, chunk,
                           n * esize);
        if (rc != SAE_OK)
            return sae__fail_context(rc, "tensor \"%s\"", t->name);
        for (size_t e = 0; e < n; e++) {
            const unsigned char *b = chunk + e * esize;
            float v;
            switch (t->dtype) {
            case SAE_ST_F32: v = bits_to_float(load_le32(b)); break;
            case SAE_ST_F16: v = half_to_float((unsigned)b[0] | (unsigned)b[1] << 8); break;
            case SAE_ST_BF16: /* the top half of a float32 */
                v = bits_to_float(((uint32_t)b[0] | (uint32_t)b[1] << 8) << 16);
                break;
            default: { /* F64 */
                uint64_t bits = load_le64(b);
                double d;
                memcpy(&d, &bits, sizeof d);
                if (!(fabs(d) <= FLT_MAX)) /* NaN, Inf, or beyond float: no UB cast */
                    return sae__fail(SAE_E_FORMAT, "tensor \"%s\": element %zu (%g) is not a "
                                     "finite float", t->name, k + e, d);
                v = (float)d;
                break;
            }
            }
            if (!isfinite(v))
                return sae__fail(SAE_E_FORMAT, "tensor \"%s\": element %zu is %s", t->name,
                                 k + e, isnan(v) ? "NaN" : "infinite");
            if (transpose) {
                dst[c * rows + r] = v;
                if (++c == cols) {
                    c = 0;
                    r++;
                }
            } else {
                dst[k + e] = v;
            }
        }
        k += n;
    }
    return SAE_OK;
}

/* t->count 8-byte little-endian values, decoded to the host's order, to dst
 * (uint64_t or double: the bits as they are). */
static int read_8byte_values(const sae_st_source *src, const sae_st_header *h,
                             const sae_st_tensor *t, void *dst)
{
    const size_t per_chunk = CHUNK_BYTES / 8;
    const size_t count = (size_t)t->count;
    unsigned char chunk[CHUNK_BYTES];
    for (size_t k = 0; k < count;) {
        size_t n = count - k < per_chunk ? count - k : per_chunk;
        int rc = src->read(src->ctx, h->data_offset + t->begin + (uint64_t)k * 8, chunk, n * 8);
        if (rc != SAE_OK)
            return sae__fail_context(rc, "tensor \"%s\"", t->name);
        for (size_t e = 0; e < n; e++) {
            uint64_t bits = load_le64(chunk + e * 8);
            memcpy((unsigned char *)dst + 8 * (k + e), &bits, 8);
        }
        k += n;
    }
    return SAE_OK;
}

int sae__st_read_u64(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                     uint64_t *dst)
{
    if (t->dtype != SAE_ST_U64)
        return sae__fail(SAE_E_FORMAT, "tensor \"%s\": %s, not U64", t->name,
                         dtypes[t->dtype].name);
    return read_8byte_values(src, h, t, dst);
}

int sae__st_read_f64(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                     double *dst)
{
    if (t->dtype != SAE_ST_F64)
        return sae__fail(SAE_E_FORMAT, "tensor \"%s\": %s, not F64", t->name,
                         dtypes[t->dtype].name);
    return read_8byte_values(src, h, t, dst);
}

/* ---- caller buffers as sinks and sources ---------------------------------- */

static int buffer_sink_write(void *ctx, const void *data, size_t len)
{
    sae_st_buffer_sink *b = ctx;
    if (len > b->capacity - b->pos)
        return sae__fail(SAE_E_INVALID_ARG, "the buffer's %zu bytes are too few", b->capacity);
    memcpy(b->buf + b->pos, data, len);
    b->pos += len;
    return SAE_OK;
}

void sae__st_buffer_sink_init(sae_st_buffer_sink *b, void *buf, size_t capacity)
{
    b->sink.write = buffer_sink_write;
    b->sink.ctx = b;
    b->buf = buf;
    b->capacity = capacity;
    b->pos = 0;
}

int sae__st_save_buffer(const char *fn, sae_st_encode_fn encode, const void *obj, size_t size,
                        void *buf, size_t capacity, size_t *written)
{
    if (capacity < size)
        return sae__fail(SAE_E_INVALID_ARG, "%s: capacity %zu is below the %zu bytes needed", fn,
                         capacity, size);
    sae_st_buffer_sink b;
    sae__st_buffer_sink_init(&b, buf, capacity);
    int rc = encode(obj, &b.sink, NULL);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    if (written)
        *written = b.pos;
    return SAE_OK;
}

static int buffer_source_read(void *ctx, uint64_t offset, void *dst, size_t len)
{
    const sae_st_buffer_source *b = ctx;
    if (offset > b->src.size || len > b->src.size - offset)
        return sae__fail(SAE_E_FORMAT, "the buffer ends at byte %llu, before %llu + %zu",
                         (unsigned long long)b->src.size, (unsigned long long)offset, len);
    memcpy(dst, b->buf + offset, len);
    return SAE_OK;
}

void sae__st_buffer_source_init(sae_st_buffer_source *b, const void *buf, size_t size)
{
    b->src.read = buffer_source_read;
    b->src.ctx = b;
    b->src.size = size;
    b->buf = buf;
}

/* ---- writing ------------------------------------------------------------- */

void sae__emit(sae_emitter *e, const char *s, size_t len)
{
    if (e->sink && e->rc == SAE_OK && len > 0)
        e->rc = e->sink->write(e->sink->ctx, s, len);
    e->bytes += len;
}

void sae__emit_str(sae_emitter *e, const char *s) { sae__emit(e, s, strlen(s)); }

void sae__emit_json_string(sae_emitter *e, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sae__emit(e, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            sae__emit(e, esc, 2);
        } else if (*p < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            sae__emit(e, esc, 6);
        } else {
            sae__emit(e, (const char *)p, 1);
        }
    }
    sae__emit(e, "\"", 1);
}

void sae__emit_u64(sae_emitter *e, uint64_t v)
{
    char buf[20];
    size_t n = sizeof buf;
    do {
        buf[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sae__emit(e, buf + n, sizeof buf - n);
}

static bool tensor_bytes(const sae_st_out *t, size_t *bytes)
{
    size_t count = 1;
    for (size_t d = 0; d < t->rank; d++)
        if (!sae__mul(count, t->shape[d], &count))
            return false;
    return sae__mul(count, dtypes[t->dtype].size, bytes);
}

/* A metadata value made of floats' bit patterns (see sae_st_kv), quoted. */
/* The hex digits of count floats' bit patterns (no quotes); v NULL: zeros. */
static void emit_hex_digits(sae_emitter *e, const float *v, size_t count)
{
    static const char hex[] = "0123456789abcdef";
    if (!e->sink) {
        e->bytes += 8 * count; /* counting only: count <= INT_MAX (a d_sae) */
        return;
    }
    char chunk[8 * 128];
    for (size_t k = 0; k < count;) {
        size_t n = count - k < 128 ? count - k : 128;
        for (size_t j = 0; j < n; j++) {
            uint32_t bits = 0;
            if (v)
                memcpy(&bits, &v[k + j], sizeof bits);
            for (int d = 0; d < 8; d++)
                chunk[8 * j + (size_t)d] = hex[(bits >> (28 - 4 * d)) & 15];
        }
        sae__emit(e, chunk, 8 * n);
        k += n;
    }
}

static void emit_hex_floats(sae_emitter *e, const float *v, size_t count)
{
    sae__emit_str(e, "\"");
    if (e->mark_hex)
        e->mark = e->bytes; /* where the digits start */
    emit_hex_digits(e, v, count);
    sae__emit_str(e, "\"");
}

/* The JSON header followed by pad spaces. Offsets are recomputed from the
 * shapes, which sae__st_size checked for overflow. */
static void emit_header(sae_emitter *e, const sae_st_kv *meta, size_t n_meta,
                        const sae_st_out *t, size_t n_t, size_t pad)
{
    sae__emit_str(e, "{");
    if (n_meta > 0) {
        sae__emit_str(e, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i > 0)
                sae__emit_str(e, ",");
            sae__emit_json_string(e, meta[i].key);
            sae__emit_str(e, ":");
            if (meta[i].hex_floats || meta[i].hex_count)
                emit_hex_floats(e, meta[i].hex_floats, meta[i].hex_count);
            else
                sae__emit_json_string(e, meta[i].value);
        }
        sae__emit_str(e, "}");
    }
    size_t offset = 0;
    for (size_t i = 0; i < n_t; i++) {
        size_t bytes = 0;
        tensor_bytes(&t[i], &bytes);
        if (n_meta > 0 || i > 0)
            sae__emit_str(e, ",");
        sae__emit_json_string(e, t[i].name);
        sae__emit_str(e, ":{\"dtype\":");
        sae__emit_json_string(e, dtypes[t[i].dtype].name);
        sae__emit_str(e, ",\"shape\":[");
        for (size_t d = 0; d < t[i].rank; d++) {
            if (d > 0)
                sae__emit_str(e, ",");
            sae__emit_u64(e, t[i].shape[d]);
        }
        sae__emit_str(e, "],\"data_offsets\":[");
        sae__emit_u64(e, offset);
        sae__emit_str(e, ",");
        sae__emit_u64(e, offset + bytes);
        sae__emit_str(e, "]}");
        offset += bytes;
    }
    sae__emit_str(e, "}");
    for (size_t k = 0; k < pad; k++)
        sae__emit_str(e, " ");
}

/* Header length and padding so that 8 + header is a multiple of 8. */
static void header_length(const sae_st_kv *meta, size_t n_meta, const sae_st_out *t, size_t n_t,
                          size_t *len, size_t *pad)
{
    sae_emitter counter = {0};
    emit_header(&counter, meta, n_meta, t, n_t, 0);
    *pad = (8 - counter.bytes % 8) % 8;
    *len = counter.bytes + *pad;
}

bool sae__st_size(const sae_st_kv *meta, size_t n_meta, const sae_st_out *t, size_t n_t,
                  size_t *size)
{
    size_t total = 0;
    for (size_t i = 0; i < n_t; i++) {
        size_t bytes;
        if (!tensor_bytes(&t[i], &bytes) || !sae__add(total, bytes, &total))
            return false;
    }
    size_t len, pad;
    header_length(meta, n_meta, t, n_t, &len, &pad);
    if (len > SAE_ST_MAX_HEADER)
        return false;
    return sae__add(total, 8, &total) && sae__add(total, len, size);
}

/* Stream one tensor's data through a fixed chunk buffer. */
static void emit_tensor_data(sae_emitter *e, const sae_st_out *t)
{
    unsigned char chunk[CHUNK_BYTES];
    size_t fill = 0;
    if (t->dtype == SAE_ST_U64 || t->dtype == SAE_ST_F64) {
        /* 8-byte elements, rank 1 or 2 (the shapes were checked by sae__st_size) */
        const size_t count = t->shape[0] * (t->rank == 2 ? t->shape[1] : 1);
        const uint64_t *u = t->data;
        const double *d = t->data;
        for (size_t k = 0; k < count; k++) {
            uint64_t bits = 0;
            if (t->dtype == SAE_ST_U64)
                bits = u[k];
            else
                memcpy(&bits, &d[k], sizeof bits);
            store_le64(chunk + fill, bits);
            fill += 8;
            if (fill == sizeof chunk) {
                sae__emit(e, (const char *)chunk, fill);
                fill = 0;
            }
        }
    } else {
        const float *src = t->data;
        size_t rows = t->shape[0], cols = t->rank == 2 ? t->shape[1] : 1;
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++) {
                float v;
                if (t->values == SAE_ST_REPEAT)
                    v = src[0];
                else if (t->transpose)
                    v = src[c * rows + r];
                else
                    v = src[r * cols + c];
                if (t->values == SAE_ST_EXP)
                    v = expf(v);
                uint32_t bits;
                memcpy(&bits, &v, sizeof bits);
                store_le32(chunk + fill, bits);
                fill += 4;
                if (fill == sizeof chunk) {
                    sae__emit(e, (const char *)chunk, fill);
                    fill = 0;
                }
            }
    }
    sae__emit(e, (const char *)chunk, fill);
}

int sae__st_write(const sae_st_sink *sink, const sae_st_kv *meta, size_t n_meta,
                  const sae_st_out *t, size_t n_t)
{
    size_t size, len, pad;
    if (!sae__st_size(meta, n_meta, t, n_t, &size))
        return sae__fail(SAE_E_INVALID_ARG, "the file would exceed what safetensors allows");
    header_length(meta, n_meta, t, n_t, &len, &pad);
    sae_emitter e = {.sink = sink};
    unsigned char prefix[8];
    store_le64(prefix, len);
    sae__emit(&e, (const char *)prefix, sizeof prefix);
    emit_header(&e, meta, n_meta, t, n_t, pad);
    for (size_t i = 0; i < n_t && e.rc == SAE_OK; i++)
        emit_tensor_data(&e, &t[i]);
    return e.rc;
}

/* ---- a file written in parts (collective saves) ------------------------------ */

int sae__st_write_header(const sae_st_sink *sink, const sae_st_kv *meta, size_t n_meta,
                         const sae_st_out *t, size_t n_t, size_t *data_start, size_t *hex_at)
{
    size_t size, len, pad;
    if (!sae__st_size(meta, n_meta, t, n_t, &size))
        return SAE_E_INVALID_ARG;
    header_length(meta, n_meta, t, n_t, &len, &pad);
    sae_emitter e = {.sink = sink, .mark_hex = hex_at != NULL};
    unsigned char prefix[8];
    store_le64(prefix, len);
    sae__emit(&e, (const char *)prefix, sizeof prefix);
    emit_header(&e, meta, n_meta, t, n_t, pad);
    *data_start = 8 + len;
    if (hex_at)
        *hex_at = e.mark;
    return e.rc;
}

int sae__st_write_data(const sae_st_sink *sink, const sae_st_out *t)
{
    sae_emitter e = {.sink = sink};
    emit_tensor_data(&e, t);
    return e.rc;
}

int sae__st_write_hex(const sae_st_sink *sink, const float *v, size_t count)
{
    sae_emitter e = {.sink = sink};
    emit_hex_digits(&e, v, count);
    return e.rc;
}
