/*
 * Checkpoints: saving and loading models (SAELens's safetensors layout for
 * each architecture, plus cfg.json in a directory) and optimizers (libsae's
 * own file in the same container), to files and to caller buffers. The format itself lives in
 * safetensors.c, atomic file replacement in fileio.c.
 *
 * Loading validates everything it can before allocating the model or
 * optimizer, then streams the tensors straight into it, converting and
 * checking each value; any failure frees what was made and leaves *out NULL.
 */
#include "checkpoint.h"
#include "fileio.h"
#include "internal.h"
#include "json.h"
#include "safetensors.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WEIGHTS_FILE SAE_WEIGHTS_FILE
#define CONFIG_FILE SAE_CONFIG_FILE
#define OPTIMIZER_FILE SAE_OPTIMIZER_FILE
#define CONFIG_MAX_BYTES (1u << 20)

/* ---- buffers as sinks and sources ---------------------------------------- */

typedef struct buffer_sink {
    unsigned char *buf;
    size_t capacity, pos;
} buffer_sink;

static int buffer_write(void *ctx, const void *data, size_t len)
{
    buffer_sink *b = ctx;
    if (len > b->capacity - b->pos)
        return SAE_E_INVALID_ARG; /* cannot happen: the size was checked first */
    memcpy(b->buf + b->pos, data, len);
    b->pos += len;
    return SAE_OK;
}

typedef struct buffer_source {
    sae_st_source src;
    const unsigned char *buf;
} buffer_source;

static int buffer_read(void *ctx, uint64_t offset, void *dst, size_t len)
{
    const buffer_source *b = ctx;
    if (offset > b->src.size || len > b->src.size - offset)
        return SAE_E_FORMAT;
    memcpy(dst, b->buf + offset, len);
    return SAE_OK;
}

static void buffer_source_init(buffer_source *b, const void *buf, size_t size)
{
    b->src.read = buffer_read;
    b->src.ctx = b;
    b->src.size = size;
    b->buf = buf;
}

/* ---- what a model file holds ----------------------------------------------- */

/* Architecture names in files: SAELens's "architecture" values, and libsae's
 * own "batchtopk", which SAELens is told is a "jumprelu" SAE. */
static const char *const arch_names[] = {
    [SAE_ARCH_RELU] = "standard",
    [SAE_ARCH_TOPK] = "topk",
    [SAE_ARCH_BATCHTOPK] = "batchtopk",
    [SAE_ARCH_JUMPRELU] = "jumprelu",
};
#define N_ARCHS (sizeof arch_names / sizeof arch_names[0])

/* The SAELens architecture of a libsae model. */
static int saelens_arch(int arch) { return arch == SAE_ARCH_BATCHTOPK ? SAE_ARCH_JUMPRELU : arch; }

/* Metadata of a model file (see sae.h, "Checkpoints"). */
#define META_VERSION "libsae_version"
#define META_ARCH "libsae_architecture"
#define META_K "libsae_k"                     /* TopK, BatchTopK: decimal */
#define META_THRESHOLD "libsae_threshold"     /* BatchTopK: its threshold, hex float */
#define META_LOG_THRESHOLD "libsae_log_threshold" /* JumpReLU: exact log thresholds */
#define THRESHOLD_NAME "threshold"

/* A decimal without sign or leading zeros. out: at least 21 bytes. By hand,
 * like the floats below: printf's output could depend on the locale. */
static void format_decimal(uint64_t v, char *out)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    int k = 0;
    while (n > 0)
        out[k++] = digits[--n];
    out[k] = '\0';
}

static void format_hex_double(double value, char *out);



/* The tensors in the order safetensors.torch.save_file would write them (by
 * name), then the metadata. */
void sae__model_contents(const sae_model *m, sae_model_contents *c)
{
    const size_t d_in = m->d_in, d_sae = sae__total_features(m);
    memset(c, 0, sizeof *c);
    const sae_st_values as_is = SAE_ST_AS_IS;
    c->t[0] = (sae_st_out){"W_dec", SAE_ST_F32, 2, {d_sae, d_in}, sae__w_dec(m), false, as_is};
    c->t[1] = (sae_st_out){"W_enc", SAE_ST_F32, 2, {d_in, d_sae}, sae__w_enc_t(m), true, as_is};
    c->t[2] = (sae_st_out){"b_dec", SAE_ST_F32, 1, {d_in, 0}, sae__b_dec(m), false, as_is};
    c->t[3] = (sae_st_out){"b_enc", SAE_ST_F32, 1, {d_sae, 0}, sae__b_enc(m), false, as_is};
    c->n_t = 4;
    c->meta[c->n_meta++] = (sae_st_kv){META_ARCH, arch_names[m->arch], NULL, 0};
    if (m->arch == SAE_ARCH_TOPK || m->arch == SAE_ARCH_BATCHTOPK) {
        format_decimal(m->k, c->k_text);
        c->meta[c->n_meta++] = (sae_st_kv){META_K, c->k_text, NULL, 0};
    }
    if (m->arch == SAE_ARCH_BATCHTOPK) {
        /* SAELens's BatchTopK saved for inference: a JumpReLU SAE with the
         * threshold in every feature. Unset (negative), libsae computes ReLU,
         * which is threshold 0; the value itself goes to the metadata. */
        format_hex_double(m->batch_threshold, c->threshold_text);
        c->meta[c->n_meta++] = (sae_st_kv){META_THRESHOLD, c->threshold_text, NULL, 0};
        c->saelens_threshold = m->batch_threshold > 0.0f ? m->batch_threshold : 0.0f;
        c->t[c->n_t++] = (sae_st_out){THRESHOLD_NAME, SAE_ST_F32, 1, {d_sae, 0},
                                      &c->saelens_threshold, false, SAE_ST_REPEAT};
    }
    c->meta[c->n_meta++] = (sae_st_kv){META_VERSION, sae_version_string(), NULL, 0};
    if (m->arch == SAE_ARCH_JUMPRELU) {
        /* SAELens's inference threshold theta = exp(t), as SAE_THRESHOLD reads
         * it; and t itself, exactly (log(exp(t)) in float is not always t). */
        c->t[c->n_t++] = (sae_st_out){THRESHOLD_NAME, SAE_ST_F32, 1, {d_sae, 0}, sae__log_thr(m),
                                      false, SAE_ST_EXP};
        c->meta[c->n_meta++] = (sae_st_kv){META_LOG_THRESHOLD, NULL,
                                           sae__is_shard(m) ? NULL : sae__log_thr(m), d_sae};
    }
}

static int model_encode(const sae_model *m, const sae_st_sink *sink, size_t *size)
{
    sae_model_contents c;
    sae__model_contents(m, &c);
    if (size)
        return sae__st_size(c.meta, c.n_meta, c.t, c.n_t, size) ? SAE_OK : SAE_E_INVALID_ARG;
    return sae__st_write(sink, c.meta, c.n_meta, c.t, c.n_t);
}

/* SAELens's cfg.json. The keys beyond the essentials are those older SAELens
 * versions (before 6.0) require to build their SAEConfig; 6.x converts such a
 * configuration itself. A TopK SAE is "architecture": "topk" with "k" (6.x)
 * and "activation_fn_str": "topk" with "activation_fn_kwargs": {"k": k} (5.x,
 * and 6.x's conversion of pre-6.0 configurations, which reads k there);
 * JumpReLU and BatchTopK SAEs are "jumprelu", with ReLU as the activation
 * inside the jump. "metadata" names the producer. */
int sae__config_encode(const sae_model *m, const sae_st_sink *sink)
{
    sae_emitter e = {.sink = sink};
    const int arch = saelens_arch(m->arch);
    sae__emit_str(&e, "{\n  \"architecture\": ");
    sae__emit_json_string(&e, arch_names[arch]);
    sae__emit_str(&e, ",\n  \"d_in\": ");
    sae__emit_u64(&e, m->d_in);
    sae__emit_str(&e, ",\n  \"d_sae\": ");
    sae__emit_u64(&e, sae__total_features(m));
    if (arch == SAE_ARCH_TOPK) {
        sae__emit_str(&e, ",\n  \"k\": ");
        sae__emit_u64(&e, m->k);
        sae__emit_str(&e, ",\n  \"rescale_acts_by_decoder_norm\": false");
    }
    sae__emit_str(&e, ",\n"
                      "  \"dtype\": \"float32\",\n"
                      "  \"device\": \"cpu\",\n"
                      "  \"apply_b_dec_to_input\": true,\n"
                      "  \"normalize_activations\": \"none\",\n");
    if (arch == SAE_ARCH_TOPK) {
        sae__emit_str(&e, "  \"activation_fn_str\": \"topk\",\n"
                          "  \"activation_fn_kwargs\": {\"k\": ");
        sae__emit_u64(&e, m->k);
        sae__emit_str(&e, "},\n");
    } else {
        sae__emit_str(&e, "  \"activation_fn_str\": \"relu\",\n"
                          "  \"activation_fn_kwargs\": {},\n");
    }
    sae__emit_str(&e, "  \"finetuning_scaling_factor\": false,\n"
                      "  \"reshape_activations\": \"none\",\n"
                      "  \"model_name\": \"\",\n"
                      "  \"hook_name\": \"\",\n"
                      "  \"hook_layer\": 0,\n"
                      "  \"hook_head_index\": null,\n"
                      "  \"context_size\": null,\n"
                      "  \"prepend_bos\": true,\n"
                      "  \"dataset_path\": \"\",\n"
                      "  \"dataset_trust_remote_code\": false,\n"
                      "  \"sae_lens_training_version\": null,\n"
                      "  \"neuronpedia_id\": null,\n"
                      "  \"model_from_pretrained_kwargs\": {},\n"
                      "  \"metadata\": {\"producer\": \"libsae\", \"libsae_version\": ");
    sae__emit_json_string(&e, sae_version_string());
    sae__emit_str(&e, "}\n}\n");
    return e.rc;
}

/* ---- what an optimizer file holds ------------------------------------------- */

/* The Adam moments in SAELens's names (torch.optim.Adam's state names), by
 * parameter: W_dec, W_enc, b_dec, b_enc, and JumpReLU's log thresholds. */
enum { N_MOMENTS = 10, N_BASE_MOMENTS = 8, OPT_MAX_TENSORS = SAE_OPT_MAX_TENSORS, OPT_FIXED_META = 4 };

static const char *const moment_names[N_MOMENTS] = {
    "W_dec.exp_avg", "W_dec.exp_avg_sq", "W_enc.exp_avg", "W_enc.exp_avg_sq",
    "b_dec.exp_avg", "b_dec.exp_avg_sq", "b_enc.exp_avg", "b_enc.exp_avg_sq",
    "log_threshold.exp_avg", "log_threshold.exp_avg_sq",
};
#define SINCE_FIRED_NAME "tokens_since_fired"

/* The moments an optimizer (of this layout) has: JumpReLU's two more. */
static size_t moment_count(const sae_layout *lay)
{
    return lay->log_thr_count ? N_MOMENTS : N_BASE_MOMENTS;
}

/* The view of tensor k of moment_names (k / 2: W_dec, W_enc, b_dec, b_enc,
 * log thresholds; k % 2: exp_avg = m1, exp_avg_sq = m2) inside an optimizer. */
static float *moment_view(const sae_optimizer *o, size_t k)
{
    float *block = k % 2 ? o->m2 : o->m1;
    switch (k / 2) {
    case 0: return block + o->lay.w_dec;
    case 1: return block + o->lay.w_enc_t;
    case 2: return block + o->lay.b_dec;
    case 3: return block + o->lay.b_enc;
    default: return block + o->lay.log_thr;
    }
}

/* The SAELens shape of moment k (rank in *rank). */
static void moment_shape(size_t k, size_t d_in, size_t d_sae, size_t *rank, size_t shape[2])
{
    switch (k / 2) {
    case 0: *rank = 2; shape[0] = d_sae; shape[1] = d_in; break;  /* W_dec */
    case 1: *rank = 2; shape[0] = d_in; shape[1] = d_sae; break;  /* W_enc */
    case 2: *rank = 1; shape[0] = d_in; shape[1] = 0; break;      /* b_dec */
    default: *rank = 1; shape[0] = d_sae; shape[1] = 0; break;    /* b_enc, log_threshold */
    }
}

/* The tensors of o's file; returns their count. */
size_t sae__optimizer_tensors(const sae_optimizer *o, sae_st_out t[OPT_MAX_TENSORS])
{
    /* the 8-byte counters first keep every tensor naturally aligned */
    t[0] = (sae_st_out){SINCE_FIRED_NAME, SAE_ST_U64, 1, {o->d_sae_total, 0}, o->since_fired,
                        false, SAE_ST_AS_IS};
    const size_t n = moment_count(&o->lay);
    for (size_t k = 0; k < n; k++) {
        sae_st_out *x = &t[1 + k];
        memset(x, 0, sizeof *x);
        x->name = moment_names[k];
        x->dtype = SAE_ST_F32;
        moment_shape(k, o->d_in, o->d_sae_total, &x->rank, x->shape);
        x->data = moment_view(o, k);
        x->transpose = k / 2 == 1; /* W_enc is stored transposed */
    }
    return 1 + n;
}

/* value, exactly, in the form of C99 "%a" as Python's float.hex() writes it:
 * "0x1.<13 hex digits>p<exp>", "0x0.<13 hex digits>p-1022" (subnormal) or
 * "0x0.0p+0", with a leading '-' if negative. Written by hand: printf's output
 * could depend on the locale. out: at least 32 bytes. */
static void format_hex_double(double value, char *out)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    char *p = out;
    if (bits >> 63)
        *p++ = '-';
    unsigned exp = (unsigned)(bits >> 52) & 0x7FFu;
    uint64_t mant = bits & ((UINT64_C(1) << 52) - 1);
    if (exp == 0 && mant == 0) {
        strcpy(p, "0x0.0p+0");
        return;
    }
    *p++ = '0';
    *p++ = 'x';
    *p++ = exp ? '1' : '0';
    *p++ = '.';
    for (int k = 12; k >= 0; k--)
        *p++ = "0123456789abcdef"[(mant >> (4 * k)) & 15];
    int e = exp ? (int)exp - 1023 : -1022;
    *p++ = 'p';
    *p++ = e < 0 ? '-' : '+';
    unsigned a = (unsigned)(e < 0 ? -e : e);
    char digits[8];
    int n = 0;
    do {
        digits[n++] = (char)('0' + a % 10);
        a /= 10;
    } while (a);
    while (n > 0)
        *p++ = digits[--n];
    *p = '\0';
}

/* A decimal integer without sign or leading zeros, at most max. */
static bool parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t k = 0; k < len; k++) {
        if (s[k] < '0' || s[k] > '9')
            return false;
        unsigned d = (unsigned)(s[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* Exactly the forms format_hex_double writes (and float.hex() in Python). */
static bool parse_hex_double(const char *s, size_t len, double *out)
{
    size_t pos = 0;
    uint64_t sign = 0;
    if (pos < len && s[pos] == '-') {
        sign = UINT64_C(1) << 63;
        pos++;
    }
    if (len - pos == 8 && memcmp(s + pos, "0x0.0p+0", 8) == 0) {
        memcpy(out, &sign, sizeof *out);
        return true;
    }
    if (len - pos < 4 + 13 + 3 || memcmp(s + pos, "0x", 2) != 0 ||
        (s[pos + 2] != '0' && s[pos + 2] != '1') || s[pos + 3] != '.')
        return false;
    bool normal = s[pos + 2] == '1';
    pos += 4;
    uint64_t mant = 0;
    for (int k = 0; k < 13; k++, pos++) {
        char c = s[pos];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        mant = mant << 4 | (uint64_t)d;
    }
    if (s[pos] != 'p' || (s[pos + 1] != '+' && s[pos + 1] != '-'))
        return false;
    bool negative = s[pos + 1] == '-';
    pos += 2;
    uint64_t e;
    if (!parse_decimal(s + pos, len - pos, 1100, &e))
        return false;
    uint64_t bits;
    if (normal) {
        long ex = negative ? -(long)e : (long)e;
        if (ex < -1022 || ex > 1023)
            return false;
        bits = sign | (uint64_t)(ex + 1023) << 52 | mant;
    } else {
        if (!negative || e != 1022 || mant == 0)
            return false;
        bits = sign | mant;
    }
    memcpy(out, &bits, sizeof *out);
    return true;
}

/* The optimizer's metadata: format, version, step, options. Keys and values
 * live in one allocation owned by *block. */
typedef struct option_text {
    char key[32];
    char value[32];
} option_text;

int sae__optimizer_metadata(const sae_optimizer *o, sae_st_kv **kv, size_t *n, void **block,
                            char step[24])
{
    /* every option of the table (options.c), in increasing number */
    const size_t n_options = sae__option_count();
    size_t count = OPT_FIXED_META + n_options;
    char *mem = sae__alloc(count * sizeof(sae_st_kv) + n_options * sizeof(option_text));
    if (!mem)
        return SAE_E_NOMEM;
    sae_st_kv *out = (sae_st_kv *)(void *)mem;
    option_text *text = (option_text *)(void *)(mem + count * sizeof(sae_st_kv));
    format_decimal(o->steps, step);
    out[0] = (sae_st_kv){"libsae_format", "optimizer", NULL, 0};
    out[1] = (sae_st_kv){"libsae_format_version", "1", NULL, 0};
    out[2] = (sae_st_kv){"libsae_version", sae_version_string(), NULL, 0};
    out[3] = (sae_st_kv){"step", step, NULL, 0};
    for (size_t i = 0; i < n_options; i++) {
        const sae_option_info *info = sae__option_at(i);
        memcpy(text[i].key, "option.", 7);
        format_decimal((uint64_t)info->id, text[i].key + 7);
        format_hex_double(sae__option_read(&o->opt, info), text[i].value);
        out[OPT_FIXED_META + i] = (sae_st_kv){text[i].key, text[i].value, NULL, 0};
    }
    *kv = out;
    *n = OPT_FIXED_META + n_options;
    *block = mem;
    return SAE_OK;
}

static int optimizer_encode(const sae_optimizer *o, const sae_st_sink *sink, size_t *size)
{
    sae_st_out t[OPT_MAX_TENSORS];
    const size_t n_t = sae__optimizer_tensors(o, t);
    sae_st_kv *meta;
    size_t n_meta;
    void *block;
    char step[24];
    int rc = sae__optimizer_metadata(o, &meta, &n_meta, &block, step);
    if (rc != SAE_OK)
        return rc;
    if (size)
        rc = sae__st_size(meta, n_meta, t, n_t, size) ? SAE_OK : SAE_E_INVALID_ARG;
    else
        rc = sae__st_write(sink, meta, n_meta, t, n_t);
    sae__free(block);
    return rc;
}

/* ---- saving ---------------------------------------------------------------- */

typedef int (*encode_fn)(const void *obj, const sae_st_sink *sink);

static int encode_model_fn(const void *obj, const sae_st_sink *sink)
{
    return model_encode(obj, sink, NULL);
}

static int encode_config_fn(const void *obj, const sae_st_sink *sink)
{
    return sae__config_encode(obj, sink);
}

static int encode_optimizer_fn(const void *obj, const sae_st_sink *sink)
{
    return optimizer_encode(obj, sink, NULL);
}

/* Write one temporary file, finished (flushed, fsync'ed, closed) but not yet
 * renamed into place. */
static int prepare_file(sae_tmpfile *t, const char *path, encode_fn encode, const void *obj)
{
    int rc = sae__tmpfile_open(t, path);
    if (rc != SAE_OK)
        return rc;
    const sae_st_sink sink = {sae__tmpfile_write, t};
    rc = encode(obj, &sink);
    if (rc != SAE_OK) {
        sae__tmpfile_abort(t);
        return rc;
    }
    return sae__tmpfile_finish(t);
}

/* Save one or two files: all are written before any replaces its destination. */
static int save_files(const char *path1, encode_fn encode1, const char *path2, encode_fn encode2,
                      const void *obj)
{
    sae_tmpfile t1, t2;
    memset(&t2, 0, sizeof t2);
    int rc = prepare_file(&t1, path1, encode1, obj);
    if (rc != SAE_OK)
        return rc;
    if (path2 && (rc = prepare_file(&t2, path2, encode2, obj)) != SAE_OK) {
        sae__tmpfile_abort(&t1);
        return rc;
    }
    rc = sae__tmpfile_commit(&t1);
    if (rc != SAE_OK) {
        sae__tmpfile_abort(&t2);
        return rc;
    }
    return path2 ? sae__tmpfile_commit(&t2) : SAE_OK;
}

int sae_model_save_size(const sae_model *m, size_t *size)
{
    if (!m || !size)
        return SAE_E_INVALID_ARG;
    if (sae__is_shard(m)) /* the collective save writes a shard's part */
        return sae__check_whole("sae_model_save_size", m);
    return model_encode(m, NULL, size);
}

int sae_model_save_buffer(const sae_model *m, void *buf, size_t capacity, size_t *written)
{
    size_t size;
    if (m && sae__is_shard(m))
        return sae__check_whole("sae_model_save_buffer", m);
    if (!m || !buf || model_encode(m, NULL, &size) != SAE_OK || capacity < size)
        return SAE_E_INVALID_ARG;
    buffer_sink b = {buf, capacity, 0};
    const sae_st_sink sink = {buffer_write, &b};
    int rc = model_encode(m, &sink, NULL);
    if (rc == SAE_OK && written)
        *written = b.pos;
    return rc;
}

int sae_model_save(const sae_model *m, const char *path)
{
    if (!m || !path)
        return SAE_E_INVALID_ARG;
    if (sae__is_shard(m))
        return sae__check_whole("sae_model_save", m);
    if (!sae__is_directory(path))
        return save_files(path, encode_model_fn, NULL, NULL, m);
    char *weights = sae__path_join(path, WEIGHTS_FILE);
    char *config = weights ? sae__path_join(path, CONFIG_FILE) : NULL;
    int rc = config ? save_files(weights, encode_model_fn, config, encode_config_fn, m)
                    : SAE_E_NOMEM;
    sae__free(config);
    sae__free(weights);
    return rc;
}

/* SAE_E_STATE for an optimizer of a shard: its file would not be the model's. */
static int check_whole_optimizer(const char *fn, const sae_optimizer *o)
{
    if (o->d_sae_total > o->d_sae)
        return sae__fail(SAE_E_STATE, "%s: the optimizer is a shard's (features [%zu, %zu) of "
                         "%zu): save it collectively", fn, o->shard_begin,
                         o->shard_begin + o->d_sae, o->d_sae_total);
    return SAE_OK;
}

int sae_optimizer_save_size(const sae_optimizer *o, size_t *size)
{
    if (!o || !size)
        return SAE_E_INVALID_ARG;
    if (check_whole_optimizer("sae_optimizer_save_size", o) != SAE_OK)
        return SAE_E_STATE;
    return optimizer_encode(o, NULL, size);
}

int sae_optimizer_save_buffer(const sae_optimizer *o, void *buf, size_t capacity, size_t *written)
{
    if (!o || !buf)
        return SAE_E_INVALID_ARG;
    if (check_whole_optimizer("sae_optimizer_save_buffer", o) != SAE_OK)
        return SAE_E_STATE;
    size_t size;
    int rc = optimizer_encode(o, NULL, &size);
    if (rc != SAE_OK)
        return rc;
    if (capacity < size)
        return SAE_E_INVALID_ARG;
    buffer_sink b = {buf, capacity, 0};
    const sae_st_sink sink = {buffer_write, &b};
    rc = optimizer_encode(o, &sink, NULL);
    if (rc == SAE_OK && written)
        *written = b.pos;
    return rc;
}

int sae_optimizer_save(const sae_optimizer *o, const char *path)
{
    if (!o || !path)
        return SAE_E_INVALID_ARG;
    if (check_whole_optimizer("sae_optimizer_save", o) != SAE_OK)
        return SAE_E_STATE;
    if (!sae__is_directory(path))
        return save_files(path, encode_optimizer_fn, NULL, NULL, o);
    char *file = sae__path_join(path, OPTIMIZER_FILE);
    int rc = file ? save_files(file, encode_optimizer_fn, NULL, NULL, o) : SAE_E_NOMEM;
    sae__free(file);
    return rc;
}

/* ---- loading a model ---------------------------------------------------------- */

/* What a cfg.json says about the SAE, as SAELens would build it. */
typedef struct model_config {
    uint64_t d_in, d_sae; /* 0: not given */
    int arch;             /* SAE_ARCH_RELU ("standard", also when absent), _TOPK or
                             _JUMPRELU; -1: there is no cfg.json */
    uint64_t k;           /* TopK: k (always given) */
} model_config;

/* The architecture called name[0..len), or -1. */
static int arch_by_name(const char *name, size_t len)
{
    for (size_t a = 0; a < N_ARCHS; a++)
        if (strlen(arch_names[a]) == len && memcmp(arch_names[a], name, len) == 0)
            return (int)a;
    return -1;
}

static bool is_one_of_absent_or(const sae_json_doc *doc, const char *key, const char *value)
{
    size_t v = sae__json_member(doc, 0, key);
    return v == SIZE_MAX || sae__json_is_string(&doc->nodes[v], value);
}

/* The k of a TopK cfg.json: "k" (SAELens 6) and/or "activation_fn_kwargs":
 * {"k": ...} (before 6.0); at least one, all equal and nonzero. */
static bool config_k(const sae_json_doc *doc, uint64_t *k)
{
    uint64_t top = 0, kw = 0;
    size_t v = sae__json_member(doc, 0, "k");
    if (v != SIZE_MAX && (!sae__json_u64(&doc->nodes[v], &top) || top == 0))
        return false;
    v = sae__json_member(doc, 0, "activation_fn_kwargs");
    if (v != SIZE_MAX) {
        if (doc->nodes[v].type != SAE_JSON_OBJECT)
            return false;
        size_t kv = sae__json_member(doc, v, "k");
        if (kv != SIZE_MAX && (!sae__json_u64(&doc->nodes[kv], &kw) || kw == 0))
            return false;
    }
    if ((top == 0 && kw == 0) || (top && kw && top != kw))
        return false;
    *k = top ? top : kw;
    return true;
}

/* Check a SAELens cfg.json (text[0..len)): the SAE it describes must be one
 * libsae computes the same way. */
static int check_config(const char *text, size_t len, model_config *cfg)
{
    const sae_json_limits limits = {.max_depth = 64, .max_nodes = (size_t)1 << 16};
    sae_json_doc doc;
    int rc = sae__json_parse(text, len, &limits, &doc);
    if (rc != SAE_OK)
        return rc;
    rc = SAE_E_FORMAT;
    if (doc.nodes[0].type != SAE_JSON_OBJECT)
        goto done;
    size_t v = sae__json_member(&doc, 0, "architecture");
    cfg->arch = SAE_ARCH_RELU; /* SAELens's default */
    if (v != SIZE_MAX) {
        const sae_json *a = &doc.nodes[v];
        cfg->arch = a->type != SAE_JSON_STRING ? -1
                    : sae__json_is_string(a, "standard") ? SAE_ARCH_RELU
                    : sae__json_is_string(a, "topk")     ? SAE_ARCH_TOPK
                    : sae__json_is_string(a, "jumprelu") ? SAE_ARCH_JUMPRELU
                                                         : -1;
        if (cfg->arch < 0)
            goto done;
    }
    /* the activation: TopK's own, or ReLU (inside the jump for JumpReLU) */
    const char *activation = cfg->arch == SAE_ARCH_TOPK ? "topk" : "relu";
    if (!is_one_of_absent_or(&doc, "activation_fn", activation) ||
        !is_one_of_absent_or(&doc, "activation_fn_str", activation))
        goto done;
    if (cfg->arch == SAE_ARCH_TOPK && !config_k(&doc, &cfg->k))
        goto done;
    v = sae__json_member(&doc, 0, "rescale_acts_by_decoder_norm");
    if (v != SIZE_MAX && doc.nodes[v].type != SAE_JSON_FALSE)
        goto done;
    v = sae__json_member(&doc, 0, "apply_b_dec_to_input");
    if (v != SIZE_MAX && doc.nodes[v].type != SAE_JSON_TRUE)
        goto done;
    v = sae__json_member(&doc, 0, "normalize_activations");
    if (v != SIZE_MAX && doc.nodes[v].type != SAE_JSON_NULL &&
        doc.nodes[v].type != SAE_JSON_FALSE && !sae__json_is_string(&doc.nodes[v], "none"))
        goto done;
    v = sae__json_member(&doc, 0, "d_in");
    if (v != SIZE_MAX && (!sae__json_u64(&doc.nodes[v], &cfg->d_in) || cfg->d_in == 0))
        goto done;
    v = sae__json_member(&doc, 0, "d_sae");
    if (v != SIZE_MAX && (!sae__json_u64(&doc.nodes[v], &cfg->d_sae) || cfg->d_sae == 0))
        goto done;
    rc = SAE_OK;
done:
    sae__json_free(&doc);
    return rc;
}

/* Read and check dir/cfg.json if there is one. */
static int read_config(const char *dir, model_config *cfg)
{
    char *path = sae__path_join(dir, CONFIG_FILE);
    if (!path)
        return SAE_E_NOMEM;
    sae_file_source fs;
    bool missing;
    int rc = sae__file_source_open(&fs, path, &missing);
    sae__free(path);
    if (rc != SAE_OK)
        return missing ? SAE_OK : rc;
    char *text = NULL;
    if (fs.src.size == 0 || fs.src.size > CONFIG_MAX_BYTES)
        rc = SAE_E_FORMAT;
    else if (!(text = sae__alloc((size_t)fs.src.size)))
        rc = SAE_E_NOMEM;
    else
        rc = fs.src.read(fs.src.ctx, 0, text, (size_t)fs.src.size);
    if (rc == SAE_OK)
        rc = check_config(text, (size_t)fs.src.size, cfg);
    sae__free(text);
    sae__file_source_close(&fs);
    return rc;
}

static bool shape_is(const sae_st_tensor *t, size_t rank, uint64_t a, uint64_t b)
{
    if (t->rank != rank || t->shape[0] != a)
        return false;
    return rank == 1 || t->shape[1] == b;
}

/* Tensors of SAE architectures or states libsae does not compute, whose
 * presence means a loaded model would compute something else: gated SAEs,
 * JumpReLU's training parameter (SAELens saves "threshold" instead), and
 * SAELens's BatchTopK training state. */
static const char *const foreign_tensors[] = {"log_threshold", "b_gate", "b_mag", "r_mag",
                                              "topk_threshold"};
/* Older SAELens files: per-feature decoder scales, harmless when all ones. */
static const char *const scale_tensors[] = {"scaling_factor", "finetuning_scaling_factor"};

/* s[0..8): a float's bits as 8 lower-case hex digits (see sae_st_kv). */
static bool parse_hex_bits(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < 8; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

static bool parse_hex_double(const char *s, size_t len, double *out);
static bool parse_decimal(const char *s, size_t len, uint64_t max, uint64_t *out);

/* A shard's part of a float tensor: its first axis's [begin, end) (rows of
 * a rank-2 tensor, whole), or with columns its second axis's [begin, end),
 * to dst transposed ((end - begin) x shape[0], as W_enc is kept). The whole
 * tensor when end is 0. */
static int read_f32_part(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                         float *dst, bool columns, size_t begin, size_t end)
{
    const size_t rows = (size_t)t->shape[0], cols = t->rank == 2 ? (size_t)t->shape[1] : 1;
    if (end == 0)
        return sae__st_read_f32(src, h, t, dst, cols, columns);
    if (!sae__st_is_float(t->dtype) || t->count == 0)
        return SAE_E_FORMAT;
    const uint64_t esize = (t->end - t->begin) / t->count;
    sae_st_tensor part = *t;
    if (!columns) { /* rows [begin, end): one run */
        part.begin = t->begin + (uint64_t)begin * cols * esize;
        part.count = (uint64_t)(end - begin) * cols;
        part.end = part.begin + part.count * esize;
        return sae__st_read_f32(src, h, &part, dst, 0, false);
    }
    const size_t width = end - begin; /* a run of each row, gathered into a column of dst */
    float *run = sae__alloc(width * sizeof(float));
    if (!run)
        return SAE_E_NOMEM;
    int rc = SAE_OK;
    for (size_t r = 0; r < rows && rc == SAE_OK; r++) {
        part.begin = t->begin + ((uint64_t)r * cols + begin) * esize;
        part.count = width;
        part.end = part.begin + width * esize;
        rc = sae__st_read_f32(src, h, &part, run, 0, false);
        for (size_t c = 0; rc == SAE_OK && c < width; c++)
            dst[c * rows + r] = run[c];
    }
    sae__free(run);
    return rc;
}

/* Elements [begin, end) of a rank-1 U64 tensor (all of it when end is 0). */
static int read_u64_part(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                         uint64_t *dst, size_t begin, size_t end)
{
    if (end == 0)
        return sae__st_read_u64(src, h, t, dst);
    sae_st_tensor part = *t;
    part.begin = t->begin + (uint64_t)begin * 8;
    part.count = end - begin;
    part.end = part.begin + part.count * 8;
    return sae__st_read_u64(src, h, &part, dst);
}

/* What a model file turns out to hold, decided before anything is made. */
typedef struct model_plan {
    int arch;
    uint64_t k;                     /* TopK, BatchTopK */
    const sae_st_tensor *threshold; /* JumpReLU, BatchTopK */
    float batch_threshold;          /* BatchTopK: libsae_threshold */
    const char *log_hex;            /* JumpReLU: libsae_log_threshold, or NULL */
} model_plan;

/* The architecture, from libsae's metadata (or, in files without it, from
 * the tensors and cfg.json); the metadata, the tensors and cfg.json must all
 * agree, and every value must be valid. Allocates nothing. */
static bool plan_model(const sae_st_header *h, const model_config *cfg, uint64_t d_sae,
                       model_plan *p)
{
    size_t arch_len, k_len, thr_len, log_len;
    const char *arch_text = sae__st_metadata(h, META_ARCH, &arch_len);
    const char *k_text = sae__st_metadata(h, META_K, &k_len);
    const char *thr_text = sae__st_metadata(h, META_THRESHOLD, &thr_len);
    const char *log_text = sae__st_metadata(h, META_LOG_THRESHOLD, &log_len);
    memset(p, 0, sizeof *p);
    p->threshold = sae__st_find(h, THRESHOLD_NAME);
    if (arch_text)
        p->arch = arch_by_name(arch_text, arch_len);
    else if (k_text || thr_text || log_text)
        return false; /* libsae's values without libsae's architecture */
    else if (p->threshold) /* as SAELens saves JumpReLU and BatchTopK SAEs */
        p->arch = SAE_ARCH_JUMPRELU;
    else
        p->arch = cfg && cfg->arch == SAE_ARCH_TOPK ? SAE_ARCH_TOPK : SAE_ARCH_RELU;
    const int arch = p->arch;
    if (arch < 0)
        return false;
    const bool with_k = arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK;
    const bool with_threshold = arch == SAE_ARCH_JUMPRELU || arch == SAE_ARCH_BATCHTOPK;
    if ((p->threshold != NULL) != with_threshold || (arch_text && (k_text != NULL) != with_k) ||
        (thr_text != NULL) != (arch == SAE_ARCH_BATCHTOPK) ||
        (log_text != NULL && arch != SAE_ARCH_JUMPRELU))
        return false;
    if (p->threshold &&
        (!sae__st_is_float(p->threshold->dtype) || !shape_is(p->threshold, 1, d_sae, 0)))
        return false;
    if (k_text && (!parse_decimal(k_text, k_len, d_sae, &p->k) || p->k == 0))
        return false;
    if (cfg && cfg->arch >= 0) {
        if (cfg->arch != saelens_arch(arch))
            return false;
        if (arch == SAE_ARCH_TOPK) {
            if (p->k && p->k != cfg->k)
                return false;
            p->k = cfg->k;
        }
    }
    if (with_k && (p->k == 0 || p->k > d_sae))
        return false;
    if (thr_text) {
        double v;
        if (!parse_hex_double(thr_text, thr_len, &v) || !(fabs(v) <= FLT_MAX) ||
            (double)(float)v != v)
            return false;
        p->batch_threshold = (float)v;
    }
    if (log_text) {
        if (log_len != 8 * (size_t)d_sae)
            return false;
        for (size_t i = 0; i < (size_t)d_sae; i++) {
            uint32_t bits;
            if (!parse_hex_bits(log_text + 8 * i, &bits) || (bits & 0x7F800000u) == 0x7F800000u)
                return false; /* not hex, or not finite */
        }
        p->log_hex = log_text;
    }
    return true;
}

/* JumpReLU: the thresholds theta (each in [1e-30, 1e30], the range of
 * sae_model_create_arch, so that exp(log(theta)) stays finite) become the log
 * thresholds t: exactly those of libsae_log_threshold
 * when the file has them (exp(t) must then be theta, to 2^-20 relative: the
 * writer's expf may differ from ours in the last bit), else logf(theta) as
 * sae_model_set_tensor computes them. */
static int read_log_thresholds(const sae_st_source *src, const sae_st_header *h,
                               const model_plan *p, sae_model *m, size_t end)
{
    float *t = sae__log_thr(m);
    int rc = read_f32_part(src, h, p->threshold, t, false, m->shard_begin, end);
    if (rc != SAE_OK)
        return rc;
    for (size_t i = 0; i < m->d_sae; i++) {
        const float theta = t[i];
        if (!(theta >= 1e-30f && theta <= 1e30f))
            return SAE_E_FORMAT;
        if (!p->log_hex) {
            t[i] = logf(theta);
            continue;
        }
        uint32_t bits = 0;
        parse_hex_bits(p->log_hex + 8 * (m->shard_begin + i), &bits); /* checked by plan_model */
        float exact;
        memcpy(&exact, &bits, sizeof exact);
        if (!(fabsf(expf(exact) - theta) <= theta * 0x1p-20f))
            return SAE_E_FORMAT;
        t[i] = exact;
    }
    return SAE_OK;
}

/* BatchTopK: every threshold must be the one SAELens was given for
 * libsae_threshold (itself, or 0 while it is unset). scratch: d_sae floats. */
static int read_batch_threshold(const sae_st_source *src, const sae_st_header *h,
                                const model_plan *p, sae_model *m, float *scratch, size_t end)
{
    int rc = read_f32_part(src, h, p->threshold, scratch, false, m->shard_begin, end);
    if (rc != SAE_OK)
        return rc;
    const float want = p->batch_threshold > 0.0f ? p->batch_threshold : 0.0f;
    for (size_t i = 0; i < m->d_sae; i++)
        if (scratch[i] != want)
            return SAE_E_FORMAT;
    m->batch_threshold = p->batch_threshold;
    return SAE_OK;
}

/* The model in src, or (end > 0) its features [begin, end) as a shard. */
static int load_model_from(const sae_st_source *src, const model_config *cfg, size_t begin,
                           size_t end, sae_model **out)
{
    sae_st_header h;
    int rc = sae__st_read_header(src, &h);
    if (rc != SAE_OK)
        return rc;
    rc = SAE_E_FORMAT;
    sae_model *m = NULL;
    model_plan plan;
    const sae_st_tensor *w_enc = sae__st_find(&h, "W_enc"), *w_dec = sae__st_find(&h, "W_dec");
    const sae_st_tensor *b_enc = sae__st_find(&h, "b_enc"), *b_dec = sae__st_find(&h, "b_dec");
    if (!w_enc || !w_dec || !b_enc || !b_dec || !sae__st_is_float(w_enc->dtype) ||
        !sae__st_is_float(w_dec->dtype) || !sae__st_is_float(b_enc->dtype) ||
        !sae__st_is_float(b_dec->dtype) || w_enc->rank != 2)
        goto done;
    const uint64_t d_in = w_enc->shape[0], d_sae = w_enc->shape[1];
    if (d_in == 0 || d_sae == 0 || d_in > INT_MAX || d_sae > INT_MAX ||
        !shape_is(w_dec, 2, d_sae, d_in) || !shape_is(b_enc, 1, d_sae, 0) ||
        !shape_is(b_dec, 1, d_in, 0))
        goto done;
    if (cfg && ((cfg->d_in && cfg->d_in != d_in) || (cfg->d_sae && cfg->d_sae != d_sae)))
        goto done;
    for (size_t k = 0; k < sizeof foreign_tensors / sizeof foreign_tensors[0]; k++)
        if (sae__st_find(&h, foreign_tensors[k]))
            goto done;
    if (!plan_model(&h, cfg, d_sae, &plan))
        goto done;
    if (end > d_sae) { /* a slice this model does not have */
        rc = SAE_E_INVALID_ARG;
        goto done;
    }
    rc = sae__model_create(&m, (size_t)d_in, (size_t)d_sae, begin, end ? end : (size_t)d_sae, 0,
                           plan.arch, plan.arch == SAE_ARCH_JUMPRELU ? 1.0 : (double)plan.k);
    if (rc != SAE_OK) {
        rc = rc == SAE_E_NOMEM ? rc : SAE_E_FORMAT;
        goto done;
    }
    /* A scale vector must be all ones; b_enc's storage holds it while it is
     * checked (b_enc itself is read afterwards), and BatchTopK's thresholds. */
    for (size_t k = 0; k < sizeof scale_tensors / sizeof scale_tensors[0]; k++) {
        const sae_st_tensor *s = sae__st_find(&h, scale_tensors[k]);
        if (!s)
            continue;
        if (!shape_is(s, 1, d_sae, 0)) {
            rc = SAE_E_FORMAT;
            goto done;
        }
        if ((rc = read_f32_part(src, &h, s, sae__b_enc(m), false, begin, end)) != SAE_OK)
            goto done;
        for (size_t i = 0; i < m->d_sae; i++)
            if (sae__b_enc(m)[i] != 1.0f) {
                rc = SAE_E_FORMAT;
                goto done;
            }
    }
    if (plan.arch == SAE_ARCH_BATCHTOPK)
        rc = read_batch_threshold(src, &h, &plan, m, sae__b_enc(m), end);
    else if (plan.arch == SAE_ARCH_JUMPRELU)
        rc = read_log_thresholds(src, &h, &plan, m, end);
    if (rc != SAE_OK)
        goto done;
    if ((rc = read_f32_part(src, &h, w_enc, sae__w_enc_t(m), true, begin, end)) != SAE_OK ||
        (rc = read_f32_part(src, &h, w_dec, sae__w_dec(m), false, begin, end)) != SAE_OK ||
        (rc = read_f32_part(src, &h, b_enc, sae__b_enc(m), false, begin, end)) != SAE_OK ||
        (rc = sae__st_read_f32(src, &h, b_dec, sae__b_dec(m), 0, false)) != SAE_OK)
        goto done;
    sae__model_refresh_absmax(m);
    *out = m;
    m = NULL;
done:
    sae_model_free(m);
    sae__st_header_free(&h);
    return rc;
}

int sae_model_load_buffer(sae_model **out, const void *buf, size_t size)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    *out = NULL;
    if (!buf)
        return SAE_E_INVALID_ARG;
    buffer_source b;
    buffer_source_init(&b, buf, size);
    return load_model_from(&b.src, NULL, 0, 0, out);
}

/* sae_model_load, or (end > 0) sae_model_load_shard. */
static int load_model_path(sae_model **out, const char *path, size_t begin, size_t end)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    *out = NULL;
    if (!path)
        return SAE_E_INVALID_ARG;
    model_config cfg = {0, 0, -1, 0};
    char *weights = NULL;
    const char *file = path;
    if (sae__is_directory(path)) {
        int rc = read_config(path, &cfg);
        if (rc != SAE_OK)
            return rc;
        if (!(weights = sae__path_join(path, WEIGHTS_FILE)))
            return SAE_E_NOMEM;
        file = weights;
    }
    sae_file_source fs;
    int rc = sae__file_source_open(&fs, file, NULL);
    if (rc == SAE_OK) {
        rc = load_model_from(&fs.src, &cfg, begin, end, out);
        sae__file_source_close(&fs);
    }
    sae__free(weights);
    return rc;
}

int sae_model_load(sae_model **out, const char *path)
{
    return load_model_path(out, path, 0, 0);
}

int sae_model_load_shard(sae_model **out, const char *path, size_t begin, size_t end)
{
    if (out && begin >= end) {
        *out = NULL;
        return sae__fail(SAE_E_INVALID_ARG, "sae_model_load_shard: [%zu, %zu) is empty", begin,
                         end);
    }
    return load_model_path(out, path, begin, end);
}

/* ---- loading an optimizer ------------------------------------------------------ */

/* "option.<n>" with n a decimal in [1, INT_MAX]: *id = n. */
static bool option_key(const sae_json *key, int *id)
{
    uint64_t n;
    if (key->len <= 7 || memcmp(key->str, "option.", 7) != 0 ||
        !parse_decimal(key->str + 7, key->len - 7, INT_MAX, &n) || n == 0)
        return false;
    *id = (int)n;
    return true;
}

/* Check every "option.*" entry of the metadata (before anything is made). */
static int check_options(const sae_st_header *h)
{
    const sae_json *key, *value;
    for (size_t i = 0; sae__st_metadata_at(h, i, &key, &value); i++) {
        int id;
        double v;
        if (key->len >= 7 && memcmp(key->str, "option.", 7) == 0 &&
            (!option_key(key, &id) || !parse_hex_double(value->str, value->len, &v)))
            return SAE_E_FORMAT;
    }
    return SAE_OK;
}

/* Apply the options in increasing number, so an option that depends on
 * another always finds it set. */
static int apply_options(const sae_st_header *h, sae_optimizer *o)
{
    int last = 0;
    for (;;) {
        int next = INT_MAX;
        double value = 0.0;
        bool found = false;
        const sae_json *key, *val;
        for (size_t i = 0; sae__st_metadata_at(h, i, &key, &val); i++) {
            int id;
            if (option_key(key, &id) && id > last && (!found || id < next)) {
                next = id;
                found = true;
                parse_hex_double(val->str, val->len, &value); /* checked before */
            }
        }
        if (!found)
            return SAE_OK;
        int rc = sae_optimizer_set(o, next, value);
        if (rc != SAE_OK)
            return rc == SAE_E_NOMEM ? rc : SAE_E_FORMAT;
        last = next;
    }
}

static bool metadata_is(const sae_st_header *h, const char *key, const char *value)
{
    size_t len;
    const char *s = sae__st_metadata(h, key, &len);
    return s && len == strlen(value) && memcmp(s, value, len) == 0;
}

static int load_optimizer_from(const sae_st_source *src, const sae_model *m, sae_optimizer **out)
{
    sae_st_header h;
    int rc = sae__st_read_header(src, &h);
    if (rc != SAE_OK)
        return rc;
    rc = SAE_E_FORMAT;
    sae_optimizer *o = NULL;
    uint64_t step;
    size_t step_len;
    const char *step_text = sae__st_metadata(&h, "step", &step_len);
    if (!metadata_is(&h, "libsae_format", "optimizer") ||
        !metadata_is(&h, "libsae_format_version", "1") || !step_text ||
        !parse_decimal(step_text, step_len, UINT64_MAX, &step) || check_options(&h) != SAE_OK)
        goto done;
    /* Exactly the counters and the moments (JumpReLU's two more), in
     * consistent SAELens shapes. */
    const sae_st_tensor *since = sae__st_find(&h, SINCE_FIRED_NAME);
    const sae_st_tensor *moments[N_MOMENTS];
    for (size_t k = 0; k < N_MOMENTS; k++)
        moments[k] = sae__st_find(&h, moment_names[k]);
    const bool jumprelu = moments[N_BASE_MOMENTS] || moments[N_BASE_MOMENTS + 1];
    const size_t n_moments = jumprelu ? N_MOMENTS : N_BASE_MOMENTS;
    if (h.n_tensors != 1 + n_moments || !since || since->dtype != SAE_ST_U64 || since->rank != 1)
        goto done;
    for (size_t k = 0; k < n_moments; k++)
        if (!moments[k] || moments[k]->dtype != SAE_ST_F32)
            goto done;
    if (moments[2]->rank != 2)
        goto done;
    const uint64_t d_in = moments[2]->shape[0], d_sae = moments[2]->shape[1];
    if (d_in == 0 || d_sae == 0 || since->shape[0] != d_sae)
        goto done;
    for (size_t k = 0; k < n_moments; k++) {
        size_t rank, shape[2];
        moment_shape(k, (size_t)d_in, (size_t)d_sae, &rank, shape);
        if (!shape_is(moments[k], rank, shape[0], shape[1]))
            goto done;
    }
    if (d_in != m->d_in || d_sae != sae__total_features(m) ||
        jumprelu != (m->lay.log_thr_count > 0)) {
        rc = SAE_E_INVALID_ARG; /* a good file, for another model */
        goto done;
    }
    if ((rc = sae_optimizer_create(&o, m)) != SAE_OK || (rc = apply_options(&h, o)) != SAE_OK)
        goto done;
    /* a shard reads its features' part (b_dec's moments whole) */
    const size_t begin = m->shard_begin, end = sae__is_shard(m) ? begin + m->d_sae : 0;
    for (size_t k = 0; k < n_moments; k++) {
        float *dst = moment_view(o, k);
        rc = k / 2 == 2 ? sae__st_read_f32(src, &h, moments[k], dst, 0, false)
                        : read_f32_part(src, &h, moments[k], dst, k / 2 == 1, begin, end);
        if (rc != SAE_OK)
            goto done;
        size_t count = k / 2 == 2 ? m->d_in : k / 2 <= 1 ? m->d_in * m->d_sae : m->d_sae;
        if (k % 2 == 1) /* second moments are averages of squares */
            for (size_t i = 0; i < count; i++)
                if (dst[i] < 0.0f) {
                    rc = SAE_E_FORMAT;
                    goto done;
                }
    }
    if ((rc = read_u64_part(src, &h, since, o->since_fired, begin, end)) != SAE_OK)
        goto done;
    o->steps = step;
    /* The update's overflow guard needs upper bounds of |m1| and m2: recomputed
     * from the moments themselves (exactly what the last step left), never
     * taken from the file. */
    o->m1_absmax = sae__absmax(o->m1, o->lay.total);
    o->m2_max = sae__absmax(o->m2, o->lay.total);
    *out = o;
    o = NULL;
done:
    sae_optimizer_free(o);
    sae__st_header_free(&h);
    return rc;
}

int sae_optimizer_load_buffer(sae_optimizer **out, const sae_model *m, const void *buf,
                              size_t size)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    *out = NULL;
    if (!m || !buf)
        return SAE_E_INVALID_ARG;
    buffer_source b;
    buffer_source_init(&b, buf, size);
    return load_optimizer_from(&b.src, m, out);
}

int sae_optimizer_load(sae_optimizer **out, const sae_model *m, const char *path)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    *out = NULL;
    if (!m || !path)
        return SAE_E_INVALID_ARG;
    char *joined = NULL;
    const char *file = path;
    if (sae__is_directory(path)) {
        if (!(joined = sae__path_join(path, OPTIMIZER_FILE)))
            return SAE_E_NOMEM;
        file = joined;
    }
    sae_file_source fs;
    int rc = sae__file_source_open(&fs, file, NULL);
    if (rc == SAE_OK) {
        rc = load_optimizer_from(&fs.src, m, out);
        sae__file_source_close(&fs);
    }
    sae__free(joined);
    return rc;
}
