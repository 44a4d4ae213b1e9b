/*
 * The safetensors format: reading and validating a header from an untrusted
 * source, converting tensors to float32, and writing files. Not installed.
 *
 * Format (huggingface/safetensors): 8 bytes N (little-endian u64), N bytes of
 * UTF-8 JSON (an object: tensor name -> {"dtype", "shape", "data_offsets":
 * [begin, end]}, plus an optional "__metadata__" object of string -> string;
 * may be padded with trailing spaces), then the data section: raw little-endian
 * row-major tensor bytes, offsets relative to the data section's start.
 *
 * The reader accepts a header only if: 2 <= N <= 100,000,000 and N <= size - 8;
 * it starts with '{' and is strict JSON (json.h) with no duplicate keys; every
 * tensor entry has exactly dtype (a known safetensors dtype), shape (at most
 * SAE_ST_MAX_RANK non-negative integers) and data_offsets (two integers), and
 * nothing else; shape x dtype size equals end - begin without overflow; sorted
 * by offset, the tensors tile the data section exactly from 0 (no gap, no
 * overlap), and the data section ends exactly at the end of the source.
 */
#ifndef LIBSAE_SAFETENSORS_H
#define LIBSAE_SAFETENSORS_H

#include "json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAE_ST_MAX_HEADER 100000000u /* the reference implementation's limit */
#define SAE_ST_MAX_RANK 8

typedef enum sae_st_dtype {
    SAE_ST_BOOL, SAE_ST_U8, SAE_ST_I8, SAE_ST_F8_E5M2, SAE_ST_F8_E4M3, SAE_ST_I16,
    SAE_ST_U16, SAE_ST_F16, SAE_ST_BF16, SAE_ST_I32, SAE_ST_U32, SAE_ST_F32,
    SAE_ST_F64, SAE_ST_I64, SAE_ST_U64
} sae_st_dtype;

typedef struct sae_st_tensor {
    const char *name; /* decoded, NUL-terminated (owned by the header) */
    size_t name_len;
    sae_st_dtype dtype;
    size_t rank;
    uint64_t shape[SAE_ST_MAX_RANK];
    uint64_t count;      /* elements: the product of shape (1 for rank 0) */
    uint64_t begin, end; /* byte range in the data section */
} sae_st_tensor;

/* A random-access byte source: a caller's buffer or a file. read() fills
 * dst with len bytes at offset; SAE_OK, SAE_E_IO, or SAE_E_FORMAT when the
 * source ends early (a file truncated while being read). */
typedef struct sae_st_source {
    int (*read)(void *ctx, uint64_t offset, void *dst, size_t len);
    void *ctx;
    uint64_t size;
} sae_st_source;

typedef struct sae_st_header {
    char *text;            /* the JSON header (the parsed numbers point into it) */
    sae_json_doc doc;
    size_t metadata;       /* node of the "__metadata__" object, or SIZE_MAX */
    sae_st_tensor *tensors; /* sorted by data offset */
    size_t n_tensors;
    uint64_t data_offset;  /* 8 + N: where the data section starts in the source */
} sae_st_header;

/* Read and validate the header of src (see above). SAE_OK, SAE_E_FORMAT,
 * SAE_E_IO or SAE_E_NOMEM; on error *h is zeroed and nothing is allocated. */
int sae__st_read_header(const sae_st_source *src, sae_st_header *h);
void sae__st_header_free(sae_st_header *h);

/* The tensor called name, or NULL. */
const sae_st_tensor *sae__st_find(const sae_st_header *h, const char *name);

/* The metadata value of key (decoded, NUL-terminated; *len its length), or
 * NULL if there is no such key. */
const char *sae__st_metadata(const sae_st_header *h, const char *key, size_t *len);

/* The i-th metadata entry (0 <= i < count), for iterating; false past the end. */
bool sae__st_metadata_at(const sae_st_header *h, size_t i, const sae_json **key,
                         const sae_json **value);

/* Whether the metadata value of key is exactly the NUL-terminated value. */
bool sae__st_metadata_is(const sae_st_header *h, const char *key, const char *value);

/* Whether tensor t has rank `rank` (1 or 2) and shape [a] or [a, b]. */
bool sae__st_shape_is(const sae_st_tensor *t, size_t rank, uint64_t a, uint64_t b);

/* Whether the dtype is one sae__st_read_f32 converts (F32, F16, BF16, F64). */
bool sae__st_is_float(sae_st_dtype dtype);

/* Convert tensor t (a float dtype) to float32. Without transpose, element k
 * goes to dst[k]. With transpose, t is read as a matrix of t->count / cols
 * rows and cols columns and element (r, c) goes to dst[c * rows + r].
 * SAE_E_FORMAT if a value is NaN or infinite (or a float64 outside the float
 * range); SAE_E_IO / SAE_E_FORMAT from the source. dst may be partly written
 * on error. */
int sae__st_read_f32(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                     float *dst, size_t cols, bool transpose);

/* Copy a U64 tensor to dst (t->count values). */
int sae__st_read_u64(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                     uint64_t *dst);

/* Copy an F64 tensor to dst (t->count values, exactly; NaN and Inf are the
 * caller's to check). */
int sae__st_read_f64(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                     double *dst);

/* ---- caller buffers as sources and sinks ---------------------------------- */

/* A source reading buf[0..size). */
typedef struct sae_st_buffer_source {
    sae_st_source src; /* src.ctx points to this struct: do not copy it */
    const unsigned char *buf;
} sae_st_buffer_source;

void sae__st_buffer_source_init(sae_st_buffer_source *b, const void *buf, size_t size);

/* ---- writing ------------------------------------------------------------- */

/* Where bytes go: write() returns SAE_OK or an error status. */
typedef struct sae_st_sink {
    int (*write)(void *ctx, const void *data, size_t len);
    void *ctx;
} sae_st_sink;

/* A sink filling buf[0..capacity): a write past the end fails with
 * SAE_E_INVALID_ARG (callers size the buffer with sae__st_size first). */
typedef struct sae_st_buffer_sink {
    sae_st_sink sink; /* sink.ctx points to this struct: do not copy it */
    unsigned char *buf;
    size_t capacity, pos; /* pos: bytes written */
} sae_st_buffer_sink;

void sae__st_buffer_sink_init(sae_st_buffer_sink *b, void *buf, size_t capacity);

/* What writes a file's bytes to sink, or with size non-NULL only measures
 * them into *size (sink unused). */
typedef int (*sae_st_encode_fn)(const void *obj, const sae_st_sink *sink, size_t *size);

/* The *_save_buffer functions: obj's `size` bytes (as encode measured them)
 * into the caller's buf (not NULL) of capacity bytes; SAE_E_INVALID_ARG if
 * capacity is below size, or encode's error, each with a detail naming fn;
 * *written (may be NULL) gets the bytes written. */
int sae__st_save_buffer(const char *fn, sae_st_encode_fn encode, const void *obj, size_t size,
                        void *buf, size_t capacity, size_t *written);

/* How an F32 tensor's values come from its data. */
typedef enum sae_st_values {
    SAE_ST_AS_IS = 0,   /* the floats themselves */
    SAE_ST_EXP,         /* expf() of each float (JumpReLU's log thresholds) */
    SAE_ST_REPEAT       /* data is one float, repeated shape[0] times (rank 1) */
} sae_st_values;

/* A tensor to write: F32 (from floats), U64 (from uint64_t) or F64 (from
 * doubles). */
typedef struct sae_st_out {
    const char *name;   /* plain ASCII, no quotes or backslashes */
    sae_st_dtype dtype; /* SAE_ST_F32, SAE_ST_U64 or SAE_ST_F64 */
    size_t rank;        /* 1 or 2 */
    size_t shape[2];
    const void *data;
    bool transpose;     /* F32 rank 2 only: data holds shape[1] x shape[0],
                           written transposed */
    sae_st_values values; /* F32 only */
} sae_st_out;

/* A metadata entry. With hex_floats set, value is ignored and the value
 * written is the IEEE-754 bit patterns of hex_count floats, each as 8
 * lower-case hexadecimal digits, most significant first ("3f800000" is 1). */
typedef struct sae_st_kv {
    const char *key, *value; /* NUL-terminated UTF-8 */
    const float *hex_floats;
    size_t hex_count;
} sae_st_kv;

/* The exact number of bytes sae__st_write produces; false if it overflows or
 * if the header would exceed SAE_ST_MAX_HEADER (a file no reader accepts). */
bool sae__st_size(const sae_st_kv *meta, size_t n_meta, const sae_st_out *t, size_t n_t,
                  size_t *size);

/* Write the file: header (metadata first, then the tensors in the given order,
 * offsets consecutive from 0), padded with spaces so the data starts at a
 * multiple of 8 bytes, then the data in little-endian. Returns the first
 * error of sink->write, else SAE_OK; SAE_E_INVALID_ARG (nothing written) if
 * sae__st_size would fail. */
int sae__st_write(const sae_st_sink *sink, const sae_st_kv *meta, size_t n_meta,
                  const sae_st_out *t, size_t n_t);

/* JSON text helpers shared with the cfg.json writer: append to an emitter
 * that either counts bytes (sink NULL) or forwards them to a sink. */
typedef struct sae_emitter {
    const sae_st_sink *sink;
    size_t bytes; /* emitted so far */
    int rc;       /* first sink error */
    bool mark_hex; /* note in mark where a hex_floats value's digits start */
    size_t mark;
} sae_emitter;

void sae__emit(sae_emitter *e, const char *s, size_t len);
void sae__emit_str(sae_emitter *e, const char *s);        /* raw text */
void sae__emit_json_string(sae_emitter *e, const char *s); /* quoted, escaped */
void sae__emit_u64(sae_emitter *e, uint64_t v);            /* decimal */

/* ---- a file written in parts (collective saves: several writers, each
 * placing its parts with positioned writes) -------------------------------- */

/* The bytes before the data section (the length and the header) of the file
 * sae__st_write would write; *data_start = their count. A hex_floats entry
 * whose hex_floats is NULL gets 8 hex_count zeros in place of the digits, and
 * *hex_at (may be NULL) the byte offset where that entry's digits start (one
 * such entry at most). SAE_E_INVALID_ARG as sae__st_write. */
int sae__st_write_header(const sae_st_sink *sink, const sae_st_kv *meta, size_t n_meta,
                         const sae_st_out *t, size_t n_t, size_t *data_start, size_t *hex_at);

/* The data of tensor t alone, as sae__st_write writes it (little-endian, in
 * row-major order of t's shape; EXP, REPEAT and transpose applied). */
int sae__st_write_data(const sae_st_sink *sink, const sae_st_out *t);

/* The hex digits of count floats, as in a hex_floats metadata value. */
int sae__st_write_hex(const sae_st_sink *sink, const float *v, size_t count);

#endif /* LIBSAE_SAFETENSORS_H */
