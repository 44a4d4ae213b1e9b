/*
 * What an optimizer file holds (sae.h, "Checkpoints"): the Adam moments in
 * SAELens's shapes and torch.optim.Adam's state names, the per-feature
 * activity counters, the step count and every option of the option table
 * (options.c), each value exactly as a hexadecimal float; and its loader.
 */
#include "checkpoint.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* The Adam moments by parameter, two each (exp_avg = m1, exp_avg_sq = m2):
 * W_dec, W_enc, b_dec, b_enc, and the parameters some models add: JumpReLU's
 * log thresholds (SAELens's name of the trained t), a Gated SAE's gate bias
 * (its b_enc, SAELens's "b_gate"), b_mag and r_mag, a skip transcoder's
 * W_skip. */
enum { P_W_DEC, P_W_ENC, P_B_DEC, P_B_ENC, P_LOG_THR, P_B_GATE, P_B_MAG, P_R_MAG, P_W_SKIP,
       N_PARAMS };
enum { N_MOMENTS = 2 * N_PARAMS, OPT_MAX_TENSORS = SAE_OPT_MAX_TENSORS, OPT_FIXED_META = 4 };
_Static_assert(1 + 2 * 7 <= OPT_MAX_TENSORS, "the counters and at most 7 parameters' moments");

static const char *const moment_names[N_MOMENTS] = {
    "W_dec.exp_avg", "W_dec.exp_avg_sq", "W_enc.exp_avg", "W_enc.exp_avg_sq",
    "b_dec.exp_avg", "b_dec.exp_avg_sq", "b_enc.exp_avg", "b_enc.exp_avg_sq",
    "log_threshold.exp_avg", "log_threshold.exp_avg_sq", "b_gate.exp_avg", "b_gate.exp_avg_sq",
    "b_mag.exp_avg", "b_mag.exp_avg_sq", "r_mag.exp_avg", "r_mag.exp_avg_sq",
    "W_skip.exp_avg", "W_skip.exp_avg_sq",
};
#define SINCE_FIRED_NAME "tokens_since_fired"
#define OPTION_PREFIX "option."

#define BAD(...) sae__fail(SAE_E_FORMAT, __VA_ARGS__)

/* What an optimizer's file holds: its parameters (P_*) in file order. */
typedef struct opt_shape {
    size_t d_in, d_out, d_sae;
    int params[N_PARAMS];
    size_t n_params;
} opt_shape;

/* The parameters of a layout (an optimizer's, a model's). */
static void shape_of_layout(const sae_layout *lay, size_t d_in, size_t d_sae, opt_shape *s)
{
    s->d_in = d_in;
    s->d_out = lay->d_out;
    s->d_sae = d_sae;
    s->n_params = 0;
    s->params[s->n_params++] = P_W_DEC;
    s->params[s->n_params++] = P_W_ENC;
    s->params[s->n_params++] = P_B_DEC;
    s->params[s->n_params++] = lay->gated_count ? P_B_GATE : P_B_ENC;
    if (lay->log_thr_count)
        s->params[s->n_params++] = P_LOG_THR;
    if (lay->gated_count) {
        s->params[s->n_params++] = P_B_MAG;
        s->params[s->n_params++] = P_R_MAG;
    }
    if (lay->w_skip_count)
        s->params[s->n_params++] = P_W_SKIP;
}

/* The view of parameter p's moment (second: exp_avg_sq) inside an optimizer. */
static float *moment_view(const sae_optimizer *o, int p, bool second)
{
    float *block = second ? o->m2 : o->m1;
    switch (p) {
    case P_W_DEC: return block + o->lay.w_dec;
    case P_W_ENC: return block + o->lay.w_enc_t;
    case P_B_DEC: return block + o->lay.b_dec;
    case P_B_ENC: case P_B_GATE: return block + o->lay.b_enc;
    case P_LOG_THR: return block + o->lay.log_thr;
    case P_B_MAG: return block + o->lay.b_mag;
    case P_R_MAG: return block + o->lay.r_mag;
    default: return block + o->lay.w_skip;
    }
}

/* The SAELens shape of parameter p (rank in *rank). */
static void param_shape(int p, const opt_shape *s, size_t *rank, size_t shape[2])
{
    switch (p) {
    case P_W_DEC: *rank = 2; shape[0] = s->d_sae; shape[1] = s->d_out; break;
    case P_W_ENC: *rank = 2; shape[0] = s->d_in; shape[1] = s->d_sae; break;
    case P_B_DEC: *rank = 1; shape[0] = s->d_out; shape[1] = 0; break;
    case P_W_SKIP: *rank = 2; shape[0] = s->d_out; shape[1] = s->d_in; break;
    default: *rank = 1; shape[0] = s->d_sae; shape[1] = 0; break; /* per feature */
    }
}

/* Whether parameter p is per feature (a shard holds its features' part). */
static bool per_feature(int p) { return p != P_B_DEC && p != P_W_SKIP; }

/* ---- writing -------------------------------------------------------------------- */

size_t sae__optimizer_tensors(const sae_optimizer *o, sae_st_out t[OPT_MAX_TENSORS])
{
    /* the 8-byte counters first keep every tensor naturally aligned */
    t[0] = (sae_st_out){SINCE_FIRED_NAME, SAE_ST_U64, 1, {o->d_sae_total, 0}, o->since_fired,
                        false, SAE_ST_AS_IS};
    opt_shape s;
    shape_of_layout(&o->lay, o->d_in, o->d_sae_total, &s);
    size_t n = 1;
    for (size_t i = 0; i < s.n_params; i++)
        for (int second = 0; second < 2; second++) {
            sae_st_out *x = &t[n++];
            memset(x, 0, sizeof *x);
            x->name = moment_names[2 * s.params[i] + second];
            x->dtype = SAE_ST_F32;
            param_shape(s.params[i], &s, &x->rank, x->shape);
            x->data = moment_view(o, s.params[i], second);
            x->transpose = s.params[i] == P_W_ENC; /* W_enc is stored transposed */
        }
    return n;
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

/* Exactly the counters and the moments of some layout, in consistent SAELens
 * shapes: *s gets what the file holds (its parameters from the names
 * present, d_in and d_sae from W_enc's moment, d_out from b_dec's). */
static int check_tensors(const sae_st_header *h, const sae_st_tensor *moments[N_MOMENTS],
                         opt_shape *s)
{
    const sae_st_tensor *since = sae__st_find(h, SINCE_FIRED_NAME);
    for (size_t k = 0; k < N_MOMENTS; k++)
        moments[k] = sae__st_find(h, moment_names[k]);
    const bool gated = moments[2 * P_B_GATE] || moments[2 * P_B_GATE + 1];
    sae_layout lay = {.log_thr_count = moments[2 * P_LOG_THR] || moments[2 * P_LOG_THR + 1],
                      .gated_count = gated,
                      .w_skip_count = moments[2 * P_W_SKIP] || moments[2 * P_W_SKIP + 1]};
    shape_of_layout(&lay, 0, 0, s);
    if (gated && (moments[2 * P_B_ENC] || moments[2 * P_B_ENC + 1]))
        return BAD("tensors \"b_enc.*\" and \"b_gate.*\": a Gated SAE has no b_enc");
    if (h->n_tensors != 1 + 2 * s->n_params)
        return BAD("%zu tensors, not the %zu of the optimizer its moments' names describe",
                   h->n_tensors, 1 + 2 * s->n_params);
    if (!since || since->dtype != SAE_ST_U64 || since->rank != 1)
        return BAD("tensor \"" SINCE_FIRED_NAME "\": %s", since ? "not a U64 vector" : "missing");
    for (size_t i = 0; i < s->n_params; i++)
        for (int second = 0; second < 2; second++) {
            const int k = 2 * s->params[i] + second;
            if (!moments[k] || moments[k]->dtype != SAE_ST_F32)
                return BAD("tensor \"%s\": %s", moment_names[k], moments[k] ? "not F32" : "missing");
        }
    const sae_st_tensor *w_enc = moments[2 * P_W_ENC], *b_dec = moments[2 * P_B_DEC];
    if (w_enc->rank != 2)
        return BAD("tensor \"%s\": rank %zu, not 2", w_enc->name, w_enc->rank);
    if (b_dec->rank != 1)
        return BAD("tensor \"%s\": rank %zu, not 1", b_dec->name, b_dec->rank);
    s->d_in = w_enc->shape[0];
    s->d_sae = w_enc->shape[1];
    s->d_out = b_dec->shape[0];
    if (s->d_in == 0 || s->d_sae == 0 || s->d_out == 0 || s->d_in > INT_MAX ||
        s->d_sae > INT_MAX || s->d_out > INT_MAX)
        return BAD("tensors \"%s\" and \"%s\": a dimension is 0 or above %d", w_enc->name,
                   b_dec->name, INT_MAX);
    if (since->shape[0] != s->d_sae)
        return BAD("tensor \"" SINCE_FIRED_NAME "\": not [d_sae] = [%zu]", s->d_sae);
    for (size_t i = 0; i < s->n_params; i++) {
        size_t rank, shape[2];
        param_shape(s->params[i], s, &rank, shape);
        for (int second = 0; second < 2; second++) {
            const int k = 2 * s->params[i] + second;
            if (!sae__st_shape_is(moments[k], rank, shape[0], shape[1]))
                return BAD("tensor \"%s\": its shape disagrees with the other moments'",
                           moment_names[k]);
        }
    }
    return SAE_OK;
}

/* The moments into o; second moments, averages of squares, must be >= 0.
 * An optimizer of a shard reads its features' part (b_dec's moments whole). */
static int read_moments(const sae_st_source *src, const sae_st_header *h,
                        const sae_st_tensor *moments[N_MOMENTS], const opt_shape *s,
                        sae_optimizer *o)
{
    const bool shard = o->d_sae_total > o->d_sae;
    const size_t begin = o->shard_begin, end = shard ? begin + o->d_sae : 0;
    for (size_t i = 0; i < s->n_params; i++)
        for (int second = 0; second < 2; second++) {
            const int p = s->params[i], k = 2 * p + second;
            float *dst = moment_view(o, p, second);
            int rc = per_feature(p) ? sae__read_f32_part(src, h, moments[k], dst, p == P_W_ENC,
                                                         begin, end)
                                    : sae__st_read_f32(src, h, moments[k], dst, 0, false);
            if (rc != SAE_OK)
                return sae__fail_context(rc, "tensor \"%s\"", moment_names[k]);
            size_t rank, shape[2];
            opt_shape mine = *s; /* this optimizer's part: its features */
            mine.d_sae = o->d_sae;
            param_shape(p, &mine, &rank, shape);
            const size_t count = rank == 2 ? shape[0] * shape[1] : shape[0];
            for (size_t j = 0; second && j < count; j++)
                if (dst[j] < 0.0f)
                    return BAD("tensor \"%s\": element %zu is negative", moment_names[k], j);
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

/* "for [d_in, d_out, d_sae] with b_gate, b_mag, r_mag": what an optimizer
 * holds, for messages. */
static void describe(const opt_shape *s, char *buf, size_t len)
{
    static const char *const extra[N_PARAMS] = {
        [P_LOG_THR] = "log_threshold", [P_B_GATE] = "b_gate", [P_B_MAG] = "b_mag",
        [P_R_MAG] = "r_mag", [P_W_SKIP] = "W_skip"};
    int at = snprintf(buf, len, "for [%zu, %zu, %zu]", s->d_in, s->d_out, s->d_sae);
    const char *sep = " with ";
    for (size_t i = 0; i < s->n_params && at > 0 && (size_t)at < len; i++)
        if (extra[s->params[i]]) {
            at += snprintf(buf + at, len - (size_t)at, "%s%s", sep, extra[s->params[i]]);
            sep = ", ";
        }
}

int sae__optimizer_file_load(const sae_st_source *src, const sae_model *m, sae_optimizer **out)
{
    sae_st_header h;
    int rc = sae__st_read_header(src, &h);
    if (rc != SAE_OK)
        return rc;
    sae_optimizer *o = NULL;
    uint64_t step = 0;
    size_t step_len;
    opt_shape file, model;
    const sae_st_tensor *moments[N_MOMENTS];
    const char *step_text = sae__st_metadata(&h, "step", &step_len);
    if (!sae__st_metadata_is(&h, "libsae_format", "optimizer"))
        rc = BAD("metadata \"libsae_format\" is not \"optimizer\"");
    else if (!sae__st_metadata_is(&h, "libsae_format_version", "1"))
        rc = BAD("metadata \"libsae_format_version\" is not \"1\"");
    else if (!step_text || !sae__parse_decimal(step_text, step_len, UINT64_MAX, &step))
        rc = BAD("metadata \"step\": %s", step_text ? "not a whole number" : "missing");
    else if ((rc = check_options(&h)) == SAE_OK)
        rc = check_tensors(&h, moments, &file);
    if (rc != SAE_OK)
        goto cleanup;
    shape_of_layout(&m->lay, m->d_in, sae__total_features(m), &model);
    if (file.d_in != model.d_in || file.d_out != model.d_out || file.d_sae != model.d_sae ||
        file.n_params != model.n_params ||
        memcmp(file.params, model.params, file.n_params * sizeof *file.params) != 0) {
        /* a good file, for another model */
        char has[96], wants[96];
        describe(&file, has, sizeof has);
        describe(&model, wants, sizeof wants);
        rc = sae__fail(SAE_E_INVALID_ARG, "the file is an optimizer %s, the model needs one %s",
                       has, wants);
        goto cleanup;
    }
    if ((rc = sae_optimizer_create(&o, m)) != SAE_OK)
        goto cleanup;
    apply_options(&h, o);
    if ((rc = read_moments(src, &h, moments, &file, o)) !=
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
