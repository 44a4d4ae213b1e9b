/*
 * What an optimizer file holds (sae.h, "Checkpoints"): the Adam moments in
 * SAELens's shapes and torch.optim.Adam's state names, the per-feature
 * activity counters, the step count and every option of the option table
 * (options.c), each value exactly as a hexadecimal float; and its loader.
 */
#include "checkpoint.h"

#include <limits.h>
#include <string.h>

/* The Adam moments by parameter: W_dec, W_enc, b_dec, b_enc, and JumpReLU's
 * log thresholds (SAELens's name of the trained t). */
enum { N_MOMENTS = 10, N_BASE_MOMENTS = 8, OPT_MAX_TENSORS = SAE_OPT_MAX_TENSORS, OPT_FIXED_META = 4 };

static const char *const moment_names[N_MOMENTS] = {
    "W_dec.exp_avg", "W_dec.exp_avg_sq", "W_enc.exp_avg", "W_enc.exp_avg_sq",
    "b_dec.exp_avg", "b_dec.exp_avg_sq", "b_enc.exp_avg", "b_enc.exp_avg_sq",
    "log_threshold.exp_avg", "log_threshold.exp_avg_sq",
};
#define SINCE_FIRED_NAME "tokens_since_fired"
#define OPTION_PREFIX "option."

#define BAD(...) sae__fail(SAE_E_FORMAT, __VA_ARGS__)

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

/* ---- writing -------------------------------------------------------------------- */

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

/* The text of one option's metadata entry. */
typedef struct option_text {
    char key[sizeof OPTION_PREFIX + SAE_DECIMAL_BYTES];
    char value[SAE_HEX_DOUBLE_BYTES];
} option_text;

/* The metadata: format, version, step, and every option of the table in
 * increasing number. Keys and values live in one allocation, *block. */
int sae__optimizer_metadata(const sae_optimizer *o, sae_st_kv **kv, size_t *n, void **block,
                            char step[SAE_DECIMAL_BYTES])
{
    const size_t n_options = sae__option_count();
    size_t count = OPT_FIXED_META + n_options;
    char *mem = sae__alloc(count * sizeof(sae_st_kv) + n_options * sizeof(option_text));
    if (!mem)
        return sae__fail(SAE_E_NOMEM, "out of memory for the metadata");
    sae_st_kv *out = (sae_st_kv *)(void *)mem;
    option_text *text = (option_text *)(void *)(mem + count * sizeof(sae_st_kv));
    sae__format_decimal(o->steps, step);
    out[0] = (sae_st_kv){"libsae_format", "optimizer", NULL, 0};
    out[1] = (sae_st_kv){"libsae_format_version", "1", NULL, 0};
    out[2] = (sae_st_kv){"libsae_version", sae_version_string(), NULL, 0};
    out[3] = (sae_st_kv){"step", step, NULL, 0};
    for (size_t i = 0; i < n_options; i++) {
        const sae_option_info *info = sae__option_at(i);
        memcpy(text[i].key, OPTION_PREFIX, sizeof OPTION_PREFIX - 1);
        sae__format_decimal((uint64_t)info->id, text[i].key + sizeof OPTION_PREFIX - 1);
        sae__format_hex_double(sae__option_read(&o->opt, info), text[i].value);
        out[OPT_FIXED_META + i] = (sae_st_kv){text[i].key, text[i].value, NULL, 0};
    }
    *kv = out;
    *n = count;
    *block = mem;
    return SAE_OK;
}

int sae__optimizer_file_encode(const sae_optimizer *o, const sae_st_sink *sink, size_t *size)
{
    /* the families' files (their models' and optimizers') are not written yet */
    if (o->kind != SAE_KIND_AUTOENCODER || o->arch == SAE_ARCH_GATED ||
        o->arch == SAE_ARCH_MATRYOSHKA)
        return sae__fail(SAE_E_INVALID_ARG, "saving the optimizer of %s: not available in "
                         "libsae %s", o->kind != SAE_KIND_AUTOENCODER ? "a transcoder"
                         : o->arch == SAE_ARCH_GATED ? "a Gated SAE" : "a Matryoshka SAE",
                         sae_version_string());
    sae_st_out t[OPT_MAX_TENSORS];
    const size_t n_t = sae__optimizer_tensors(o, t);
    sae_st_kv *meta = NULL;
    size_t n_meta = 0;
    void *block = NULL;
    char step[SAE_DECIMAL_BYTES];
    int rc = sae__optimizer_metadata(o, &meta, &n_meta, &block, step);
    if (rc != SAE_OK)
        return rc;
    if (!size)
        rc = sae__st_write(sink, meta, n_meta, t, n_t);
    else if (!sae__st_size(meta, n_meta, t, n_t, size))
        rc = sae__fail(SAE_E_INVALID_ARG, "the optimizer's file would exceed what safetensors "
                       "allows");
    sae__free(block);
    return rc;
}

/* ---- reading -------------------------------------------------------------------- */

/* The option a metadata key names, if it is "option.<n>": *info = the
 * table's row (NULL: not an option key at all). SAE_E_FORMAT for a
 * malformed number or one that is not an option of this version. */
static int option_of_key(const sae_json *key, const sae_option_info **info)
{
    const size_t prefix = sizeof OPTION_PREFIX - 1;
    *info = NULL;
    if (key->len < prefix || memcmp(key->str, OPTION_PREFIX, prefix) != 0)
        return SAE_OK;
    uint64_t n;
    if (!sae__parse_decimal(key->str + prefix, key->len - prefix, INT_MAX, &n) ||
        !(*info = sae__option_find((int)n)))
        return BAD("metadata \"%s\": not an option of this version", key->str);
    return SAE_OK;
}

/* Check every "option.*" entry of the metadata (before anything is made):
 * a known option, a hex float value it allows. */
static int check_options(const sae_st_header *h)
{
    const sae_json *key, *value;
    for (size_t i = 0; sae__st_metadata_at(h, i, &key, &value); i++) {
        const sae_option_info *info;
        int rc = option_of_key(key, &info);
        if (rc != SAE_OK)
            return rc;
        if (!info)
            continue;
        double v;
        if (!sae__parse_hex_double(value->str, value->len, &v))
            return BAD("metadata \"%s\": \"%s\" is not a hex float", key->str, value->str);
        if ((rc = sae__option_check("metadata", info, v)) != SAE_OK)
            return SAE_E_FORMAT;
    }
    return SAE_OK;
}

/* Apply the options the file holds, in the table's order (increasing
 * number); the others keep their defaults. Checked by check_options. */
static void apply_options(const sae_st_header *h, sae_optimizer *o)
{
    for (size_t i = 0; i < sae__option_count(); i++) {
        const sae_option_info *info = sae__option_at(i);
        char key[sizeof OPTION_PREFIX + SAE_DECIMAL_BYTES] = OPTION_PREFIX;
        sae__format_decimal((uint64_t)info->id, key + sizeof OPTION_PREFIX - 1);
        size_t len;
        const char *text = sae__st_metadata(h, key, &len);
        double v;
        if (text && sae__parse_hex_double(text, len, &v))
            sae__option_write(&o->opt, info, v);
    }
}

/* Exactly the counters and the moments (JumpReLU's two more), in consistent
 * SAELens shapes: *d_in, *d_sae and whether it is a JumpReLU optimizer. */
static int check_tensors(const sae_st_header *h, const sae_st_tensor *moments[N_MOMENTS],
                         uint64_t *d_in, uint64_t *d_sae, bool *jumprelu)
{
    const sae_st_tensor *since = sae__st_find(h, SINCE_FIRED_NAME);
    for (size_t k = 0; k < N_MOMENTS; k++)
        moments[k] = sae__st_find(h, moment_names[k]);
    *jumprelu = moments[N_BASE_MOMENTS] || moments[N_BASE_MOMENTS + 1];
    const size_t n_moments = *jumprelu ? N_MOMENTS : N_BASE_MOMENTS;
    if (h->n_tensors != 1 + n_moments)
        return BAD("%zu tensors, not the %zu of a%s optimizer", h->n_tensors, 1 + n_moments,
                   *jumprelu ? " JumpReLU" : "n");
    if (!since || since->dtype != SAE_ST_U64 || since->rank != 1)
        return BAD("tensor \"" SINCE_FIRED_NAME "\": %s", since ? "not a U64 vector" : "missing");
    for (size_t k = 0; k < n_moments; k++)
        if (!moments[k] || moments[k]->dtype != SAE_ST_F32)
            return BAD("tensor \"%s\": %s", moment_names[k], moments[k] ? "not F32" : "missing");
    if (moments[2]->rank != 2)
        return BAD("tensor \"%s\": rank %zu, not 2", moment_names[2], moments[2]->rank);
    *d_in = moments[2]->shape[0];
    *d_sae = moments[2]->shape[1];
    if (*d_in == 0 || *d_sae == 0)
        return BAD("tensor \"%s\": a zero dimension", moment_names[2]);
    if (since->shape[0] != *d_sae)
        return BAD("tensor \"" SINCE_FIRED_NAME "\": not [d_sae] = [%llu]",
                   (unsigned long long)*d_sae);
    for (size_t k = 0; k < n_moments; k++) {
        size_t rank, shape[2];
        moment_shape(k, (size_t)*d_in, (size_t)*d_sae, &rank, shape);
        if (!sae__st_shape_is(moments[k], rank, shape[0], shape[1]))
            return BAD("tensor \"%s\": its shape disagrees with the other moments'",
                       moment_names[k]);
    }
    return SAE_OK;
}

/* The moments into o; second moments, averages of squares, must be >= 0.
 * An optimizer of a shard reads its features' part (b_dec's moments whole). */
static int read_moments(const sae_st_source *src, const sae_st_header *h,
                        const sae_st_tensor *moments[N_MOMENTS], size_t n_moments,
                        sae_optimizer *o)
{
    const bool shard = o->d_sae_total > o->d_sae;
    const size_t begin = o->shard_begin, end = shard ? begin + o->d_sae : 0;
    for (size_t k = 0; k < n_moments; k++) {
        float *dst = moment_view(o, k);
        int rc = k / 2 == 2 ? sae__st_read_f32(src, h, moments[k], dst, 0, false)
                            : sae__read_f32_part(src, h, moments[k], dst, k / 2 == 1, begin, end);
        if (rc != SAE_OK)
            return sae__fail_context(rc, "tensor \"%s\"", moment_names[k]);
        const size_t count = k / 2 == 2 ? o->d_in : k / 2 <= 1 ? o->d_in * o->d_sae : o->d_sae;
        if (k % 2 == 1)
            for (size_t i = 0; i < count; i++)
                if (dst[i] < 0.0f)
                    return BAD("tensor \"%s\": element %zu is negative", moment_names[k], i);
    }
    return SAE_OK;
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

int sae__optimizer_file_load(const sae_st_source *src, const sae_model *m, sae_optimizer **out)
{
    sae_st_header h;
    int rc = sae__st_read_header(src, &h);
    if (rc != SAE_OK)
        return rc;
    sae_optimizer *o = NULL;
    uint64_t step = 0, d_in = 0, d_sae = 0;
    size_t step_len;
    bool jumprelu = false;
    const sae_st_tensor *moments[N_MOMENTS];
    const char *step_text = sae__st_metadata(&h, "step", &step_len);
    if (!sae__st_metadata_is(&h, "libsae_format", "optimizer"))
        rc = BAD("metadata \"libsae_format\" is not \"optimizer\"");
    else if (!sae__st_metadata_is(&h, "libsae_format_version", "1"))
        rc = BAD("metadata \"libsae_format_version\" is not \"1\"");
    else if (!step_text || !sae__parse_decimal(step_text, step_len, UINT64_MAX, &step))
        rc = BAD("metadata \"step\": %s", step_text ? "not a whole number" : "missing");
    else if ((rc = check_options(&h)) == SAE_OK)
        rc = check_tensors(&h, moments, &d_in, &d_sae, &jumprelu);
    if (rc != SAE_OK)
        goto cleanup;
    if (d_in != m->d_in || d_sae != sae__total_features(m) ||
        jumprelu != (m->lay.log_thr_count > 0)) {
        /* a good file, for another model */
        rc = sae__fail(SAE_E_INVALID_ARG, "the file is a%s optimizer for [%llu, %llu], the model "
                       "a%s model of [%zu, %zu]", jumprelu ? " JumpReLU" : "n",
                       (unsigned long long)d_in, (unsigned long long)d_sae,
                       m->lay.log_thr_count ? " JumpReLU" : "", m->d_in, sae__total_features(m));
        goto cleanup;
    }
    if ((rc = sae_optimizer_create(&o, m)) != SAE_OK)
        goto cleanup;
    apply_options(&h, o);
    if ((rc = read_moments(src, &h, moments, jumprelu ? N_MOMENTS : N_BASE_MOMENTS, o)) !=
            SAE_OK ||
        (rc = read_u64_part(src, &h, sae__st_find(&h, SINCE_FIRED_NAME), o->since_fired,
                            o->shard_begin, o->d_sae_total > o->d_sae ? o->shard_begin + o->d_sae
                                                                      : 0)) != SAE_OK) {
        if (rc != SAE_OK && !strstr(sae_error_detail(), "tensor \""))
            sae__fail_context(rc, "tensor \"" SINCE_FIRED_NAME "\"");
        goto cleanup;
    }
    o->steps = step;
    /* The update's overflow guard needs upper bounds of |m1| and m2: recomputed
     * from the moments themselves (exactly what the last step left), never
     * taken from the file. */
    o->m1_absmax = sae__absmax(o->m1, o->lay.total);
    o->m2_max = sae__absmax(o->m2, o->lay.total);
    *out = o;
    o = NULL;
cleanup:
    sae_optimizer_free(o);
    sae__st_header_free(&h);
    return rc;
}
