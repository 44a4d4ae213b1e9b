/*
 * What a model file holds (sae.h, "Checkpoints"): SAELens's tensors for the
 * model's architecture, float32, plus libsae's metadata, so that a single
 * file says what it is; and the loader, which decides what the file holds
 * (model_plan) before it makes anything, then streams each tensor into the
 * new model, converting and checking every value.
 */
#include "checkpoint.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- architectures in files --------------------------------------------------- */

/* SAELens's "architecture" values, and libsae's own "batchtopk", which
 * SAELens is told is a "jumprelu" SAE. */
static const char *const arch_names[] = {
    [SAE_ARCH_RELU] = "standard",
    [SAE_ARCH_TOPK] = "topk",
    [SAE_ARCH_BATCHTOPK] = "batchtopk",
    [SAE_ARCH_JUMPRELU] = "jumprelu",
};
#define N_ARCHS (sizeof arch_names / sizeof arch_names[0])

const char *sae__arch_name(int arch) { return arch_names[arch]; }

int sae__arch_by_name(const char *name, size_t len)
{
    for (size_t a = 0; a < N_ARCHS; a++)
        if (strlen(arch_names[a]) == len && memcmp(arch_names[a], name, len) == 0)
            return (int)a;
    return -1;
}

int sae__saelens_arch(int arch) { return arch == SAE_ARCH_BATCHTOPK ? SAE_ARCH_JUMPRELU : arch; }

/* Metadata of a model file. */
#define META_VERSION "libsae_version"
#define META_ARCH "libsae_architecture"
#define META_K "libsae_k"                     /* TopK, BatchTopK: decimal */
#define META_THRESHOLD "libsae_threshold"     /* BatchTopK: its threshold, hex float */
#define META_LOG_THRESHOLD "libsae_log_threshold" /* JumpReLU: exact log thresholds */
#define THRESHOLD_NAME "threshold"

/* ---- writing -------------------------------------------------------------------- */

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
        sae__format_decimal(m->k, c->k_text);
        c->meta[c->n_meta++] = (sae_st_kv){META_K, c->k_text, NULL, 0};
    }
    if (m->arch == SAE_ARCH_BATCHTOPK) {
        /* SAELens's BatchTopK saved for inference: a JumpReLU SAE with the
         * threshold in every feature. Unset (negative), libsae computes ReLU,
         * which is threshold 0; the value itself goes to the metadata. */
        sae__format_hex_double(m->batch_threshold, c->threshold_text);
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

int sae__model_file_encode(const sae_model *m, const sae_st_sink *sink, size_t *size)
{
    int rc = sae__family_check("saving a model", m, 0);
    if (rc != SAE_OK)
        return rc;
    sae_model_contents c;
    sae__model_contents(m, &c);
    if (!size)
        return sae__st_write(sink, c.meta, c.n_meta, c.t, c.n_t);
    if (!sae__st_size(c.meta, c.n_meta, c.t, c.n_t, size))
        return sae__fail(SAE_E_INVALID_ARG, "a model of d_sae = %zu: its file would exceed "
                         "the safetensors header limit", m->d_sae);
    return SAE_OK;
}

/* ---- reading -------------------------------------------------------------------- */

/* Tensors of SAE architectures or states libsae does not compute, whose
 * presence means a loaded model would compute something else: gated SAEs,
 * JumpReLU's training parameter (SAELens saves "threshold" instead), and
 * SAELens's BatchTopK training state. */
static const char *const foreign_tensors[] = {"log_threshold", "b_gate", "b_mag", "r_mag",
                                              "topk_threshold"};
/* Older SAELens files: per-feature decoder scales, harmless when all ones. */
static const char *const scale_tensors[] = {"scaling_factor", "finetuning_scaling_factor"};

#define BAD(...) sae__fail(SAE_E_FORMAT, __VA_ARGS__)

/* SAELens's BatchTopK and Matryoshka training checkpoints: their threshold,
 * a 0-dim float64 buffer (with cfg.json "architecture" "batchtopk" or
 * "matryoshka_batchtopk"). */
#define TOPK_THRESHOLD_NAME "topk_threshold"

/* The cfg.json of a SAELens BatchTopK or Matryoshka training checkpoint. */
static bool saelens_batch_config(const sae_saelens_config *cfg)
{
    return cfg && (cfg->arch == SAE_ARCH_BATCHTOPK || cfg->arch == SAE_ARCH_MATRYOSHKA);
}

/* What a model file turns out to hold, decided before anything is made. */
typedef struct model_plan {
    uint64_t d_in, d_sae;
    int arch;
    const sae_st_tensor *topk_threshold; /* SAELens's BatchTopK / Matryoshka checkpoints */
    bool fold;                      /* fold the decoder norms (rescale_acts_by_decoder_norm) */
    uint64_t k;                     /* TopK, BatchTopK */
    const sae_st_tensor *threshold; /* JumpReLU, BatchTopK */
    float batch_threshold;          /* BatchTopK: libsae_threshold */
    const char *log_hex;            /* JumpReLU: libsae_log_threshold, or NULL */
} model_plan;

/* The four tensors every model has, their shapes agreeing, and no tensor of
 * a model libsae cannot represent. */
static int plan_shapes(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    static const char *const names[4] = {"W_enc", "W_dec", "b_enc", "b_dec"};
    const sae_st_tensor *t[4];
    for (int k = 0; k < 4; k++) {
        if (!(t[k] = sae__st_find(h, names[k])))
            return BAD("tensor \"%s\" is missing", names[k]);
        if (!sae__st_is_float(t[k]->dtype))
            return BAD("tensor \"%s\": not F32, F16, BF16 or F64", names[k]);
    }
    if (t[0]->rank != 2)
        return BAD("tensor \"W_enc\": rank %zu, not 2", t[0]->rank);
    const uint64_t d_in = t[0]->shape[0], d_sae = t[0]->shape[1];
    if (d_in == 0 || d_sae == 0 || d_in > INT_MAX || d_sae > INT_MAX)
        return BAD("tensor \"W_enc\": shape [%llu, %llu]: each dimension must be 1 to %d",
                   (unsigned long long)d_in, (unsigned long long)d_sae, INT_MAX);
    if (!sae__st_shape_is(t[1], 2, d_sae, d_in))
        return BAD("tensor \"W_dec\": not [d_sae, d_in] = [%llu, %llu]",
                   (unsigned long long)d_sae, (unsigned long long)d_in);
    if (!sae__st_shape_is(t[2], 1, d_sae, 0))
        return BAD("tensor \"b_enc\": not [d_sae] = [%llu]", (unsigned long long)d_sae);
    if (!sae__st_shape_is(t[3], 1, d_in, 0))
        return BAD("tensor \"b_dec\": not [d_in] = [%llu]", (unsigned long long)d_in);
    if (cfg && cfg->d_in && cfg->d_in != d_in)
        return BAD("cfg.json's d_in (%llu) differs from the tensors' (%llu)",
                   (unsigned long long)cfg->d_in, (unsigned long long)d_in);
    if (cfg && cfg->d_sae && cfg->d_sae != d_sae)
        return BAD("cfg.json's d_sae (%llu) differs from the tensors' (%llu)",
                   (unsigned long long)cfg->d_sae, (unsigned long long)d_sae);
    for (size_t k = 0; k < sizeof foreign_tensors / sizeof foreign_tensors[0]; k++)
        if (sae__st_find(h, foreign_tensors[k]) &&
            !(saelens_batch_config(cfg) && strcmp(foreign_tensors[k], TOPK_THRESHOLD_NAME) == 0))
            return BAD("tensor \"%s\": a model libsae does not compute", foreign_tensors[k]);
    p->d_in = d_in;
    p->d_sae = d_sae;
    return SAE_OK;
}

/* The architecture, from libsae's metadata (or, in files without it, from
 * the tensors and cfg.json). */
static int plan_arch(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    size_t arch_len;
    const char *arch_text = sae__st_metadata(h, META_ARCH, &arch_len);
    p->threshold = sae__st_find(h, THRESHOLD_NAME);
    if (arch_text) {
        if ((p->arch = sae__arch_by_name(arch_text, arch_len)) < 0)
            return BAD("\"" META_ARCH "\": \"%s\" is not an architecture", arch_text);
    } else if (saelens_batch_config(cfg)) { /* a SAELens training checkpoint */
        if (!(p->topk_threshold = sae__st_find(h, TOPK_THRESHOLD_NAME)))
            return BAD("tensor \"" TOPK_THRESHOLD_NAME "\" is missing for cfg.json's "
                       "architecture \"%s\"", cfg->arch == SAE_ARCH_BATCHTOPK ? "batchtopk"
                                                                            : "matryoshka_batchtopk");
        if (p->threshold)
            return BAD("tensor \"" THRESHOLD_NAME "\" in a BatchTopK training checkpoint");
        if (p->topk_threshold->count != 1 || p->topk_threshold->rank > 1 ||
            !sae__st_is_float(p->topk_threshold->dtype))
            return BAD("tensor \"" TOPK_THRESHOLD_NAME "\": not one float");
        p->arch = cfg->arch;
        p->fold = cfg->rescale;
        return SAE_OK;
    } else if (sae__st_metadata(h, META_K, NULL) || sae__st_metadata(h, META_THRESHOLD, NULL) ||
               sae__st_metadata(h, META_LOG_THRESHOLD, NULL)) {
        return BAD("libsae metadata without \"" META_ARCH "\"");
    } else if (p->threshold) { /* as SAELens saves JumpReLU and BatchTopK SAEs */
        p->arch = SAE_ARCH_JUMPRELU;
    } else {
        p->arch = cfg && cfg->arch == SAE_ARCH_TOPK ? SAE_ARCH_TOPK : SAE_ARCH_RELU;
    }
    if (cfg && cfg->arch == SAE_ARCH_MATRYOSHKA)
        return BAD("cfg.json's architecture \"matryoshka_batchtopk\" differs from the file's \"%s\"",
                   arch_names[p->arch]);
    p->fold = cfg && cfg->rescale; /* TopK (the configuration allows no other) */
    if (cfg && cfg->arch >= 0 && cfg->arch != sae__saelens_arch(p->arch))
        return BAD("cfg.json's architecture \"%s\" differs from the file's \"%s\"",
                   arch_names[cfg->arch], arch_names[p->arch]);
    return SAE_OK;
}

/* k, the thresholds and their metadata: present exactly where the
 * architecture has them, and valid. */
static int plan_values(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    size_t k_len, thr_len, log_len;
    const char *k_text = sae__st_metadata(h, META_K, &k_len);
    const char *thr_text = sae__st_metadata(h, META_THRESHOLD, &thr_len);
    const char *log_text = sae__st_metadata(h, META_LOG_THRESHOLD, &log_len);
    const int arch = p->arch;
    if (p->topk_threshold) { /* SAELens's checkpoint: k from cfg.json, no libsae metadata */
        if (k_text || thr_text || log_text)
            return BAD("libsae metadata in a SAELens BatchTopK training checkpoint");
        if (cfg->k > p->d_sae)
            return BAD("cfg.json's k = %llu is not in [1, d_sae = %llu]",
                       (unsigned long long)cfg->k, (unsigned long long)p->d_sae);
        p->k = cfg->k;
        return SAE_OK;
    }
    const bool with_k = arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK;
    const bool with_threshold = arch == SAE_ARCH_JUMPRELU || arch == SAE_ARCH_BATCHTOPK;
    const bool libsae_file = sae__st_metadata(h, META_ARCH, NULL) != NULL;
    if ((p->threshold != NULL) != with_threshold)
        return BAD("tensor \"" THRESHOLD_NAME "\": %s for a %s model",
                   p->threshold ? "present" : "missing", arch_names[arch]);
    if (libsae_file && (k_text != NULL) != with_k)
        return BAD("\"" META_K "\": %s for a %s model", k_text ? "present" : "missing",
                   arch_names[arch]);
    if ((thr_text != NULL) != (arch == SAE_ARCH_BATCHTOPK))
        return BAD("\"" META_THRESHOLD "\": %s for a %s model", thr_text ? "present" : "missing",
                   arch_names[arch]);
    if (log_text && arch != SAE_ARCH_JUMPRELU)
        return BAD("\"" META_LOG_THRESHOLD "\" for a %s model", arch_names[arch]);
    if (p->threshold &&
        (!sae__st_is_float(p->threshold->dtype) || !sae__st_shape_is(p->threshold, 1, p->d_sae, 0)))
        return BAD("tensor \"" THRESHOLD_NAME "\": not a float [d_sae] = [%llu]",
                   (unsigned long long)p->d_sae);
    if (k_text && (!sae__parse_decimal(k_text, k_len, p->d_sae, &p->k) || p->k == 0))
        return BAD("\"" META_K "\": \"%s\" is not a whole number in [1, d_sae = %llu]", k_text,
                   (unsigned long long)p->d_sae);
    if (cfg && cfg->arch == SAE_ARCH_TOPK && arch == SAE_ARCH_TOPK) {
        if (p->k && p->k != cfg->k)
            return BAD("cfg.json's k (%llu) differs from the file's (%llu)",
                       (unsigned long long)cfg->k, (unsigned long long)p->k);
        p->k = cfg->k;
    }
    if (with_k && (p->k == 0 || p->k > p->d_sae))
        return BAD("k = %llu is not in [1, d_sae = %llu]", (unsigned long long)p->k,
                   (unsigned long long)p->d_sae);
    if (thr_text) {
        double v;
        if (!sae__parse_hex_double(thr_text, thr_len, &v) || !(fabs(v) <= FLT_MAX) ||
            (double)(float)v != v)
            return BAD("\"" META_THRESHOLD "\": \"%s\" is not a float as a hex float", thr_text);
        p->batch_threshold = (float)v;
    }
    if (log_text) {
        if (log_len != 8 * (size_t)p->d_sae)
            return BAD("\"" META_LOG_THRESHOLD "\": %zu characters, not 8 per feature", log_len);
        for (size_t i = 0; i < (size_t)p->d_sae; i++) {
            uint64_t bits;
            if (!sae__parse_hex(log_text + 8 * i, 8, &bits) ||
                (bits & 0x7F800000u) == 0x7F800000u)
                return BAD("\"" META_LOG_THRESHOLD "\": feature %zu is not a finite float's "
                           "8 hex digits", i);
        }
        p->log_hex = log_text;
    }
    return SAE_OK;
}

/* Decide what the file holds: the metadata, the tensors and cfg.json must
 * all agree, and every value must be valid. Allocates nothing. */
static int plan_model(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    memset(p, 0, sizeof *p);
    int rc = plan_shapes(h, cfg, p);
    if (rc == SAE_OK)
        rc = plan_arch(h, cfg, p);
    if (rc == SAE_OK)
        rc = plan_values(h, cfg, p);
    return rc;
}

/* A tensor read into dst, its failure naming it. */
static int read_tensor(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                       float *dst, size_t cols, bool transpose)
{
    int rc = sae__st_read_f32(src, h, t, dst, cols, transpose);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "tensor \"%s\"", t->name);
}

/* A shard's part of a float tensor whose first axis (rows of a rank-2
 * tensor, whole) or, with columns, second axis is the features: features
 * [begin, end), to dst ((end - begin) x shape[0], transposed, as W_enc is
 * kept, with columns). The whole tensor when end is 0. */
int sae__read_f32_part(const sae_st_source *src, const sae_st_header *h, const sae_st_tensor *t,
                       float *dst, bool columns, size_t begin, size_t end)
{
    const size_t rows = (size_t)t->shape[0], cols = t->rank == 2 ? (size_t)t->shape[1] : 1;
    if (end == 0)
        return read_tensor(src, h, t, dst, columns ? cols : 0, columns);
    if (!sae__st_is_float(t->dtype) || t->count == 0)
        return BAD("tensor \"%s\": not a float tensor", t->name);
    const uint64_t esize = (t->end - t->begin) / t->count;
    sae_st_tensor part = *t;
    if (!columns) { /* rows [begin, end): one run */
        part.begin = t->begin + (uint64_t)begin * cols * esize;
        part.count = (uint64_t)(end - begin) * cols;
        part.end = part.begin + part.count * esize;
        return read_tensor(src, h, &part, dst, 0, false);
    }
    const size_t width = end - begin; /* a run of each row, gathered into a column of dst */
    float *run = sae__alloc(width * sizeof(float));
    if (!run)
        return sae__fail(SAE_E_NOMEM, "out of memory for %zu floats", width);
    int rc = SAE_OK;
    for (size_t r = 0; r < rows && rc == SAE_OK; r++) {
        part.begin = t->begin + ((uint64_t)r * cols + begin) * esize;
        part.count = width;
        part.end = part.begin + width * esize;
        rc = read_tensor(src, h, &part, run, 0, false);
        for (size_t c = 0; rc == SAE_OK && c < width; c++)
            dst[c * rows + r] = run[c];
    }
    sae__free(run);
    return rc;
}

/* JumpReLU: the thresholds theta (each in [1e-30, 1e30], the range of
 * sae_model_create_arch, so that exp(log(theta)) stays finite) become the log
 * thresholds t: exactly those of libsae_log_threshold when the file has them
 * (exp(t) must then be theta, to 2^-20 relative: the writer's expf may
 * differ from ours in the last bit), else logf(theta) as
 * sae_model_set_tensor computes them. */
static int read_log_thresholds(const sae_st_source *src, const sae_st_header *h,
                               const model_plan *p, sae_model *m, size_t end)
{
    float *t = sae__log_thr(m);
    const size_t begin = m->shard_begin;
    int rc = sae__read_f32_part(src, h, p->threshold, t, false, begin, end);
    if (rc != SAE_OK)
        return rc;
    for (size_t i = 0; i < m->d_sae; i++) {
        const float theta = t[i];
        if (!(theta >= 1e-30f && theta <= 1e30f))
            return BAD("tensor \"" THRESHOLD_NAME "\": feature %zu: %g is not in [1e-30, 1e30]",
                       begin + i, (double)theta);
        if (!p->log_hex) {
            t[i] = logf(theta);
            continue;
        }
        uint64_t bits = 0;
        sae__parse_hex(p->log_hex + 8 * (begin + i), 8, &bits); /* checked by plan_values */
        uint32_t bits32 = (uint32_t)bits;
        float exact;
        memcpy(&exact, &bits32, sizeof exact);
        if (!(fabsf(expf(exact) - theta) <= theta * 0x1p-20f))
            return BAD("\"" META_LOG_THRESHOLD "\": feature %zu: exp(%g) is not the threshold %g",
                       begin + i, (double)exact, (double)theta);
        t[i] = exact;
    }
    return SAE_OK;
}

/* BatchTopK: every threshold must be the one SAELens was given for
 * libsae_threshold (itself, or 0 while it is unset). scratch: m->d_sae floats
 * (a shard checks its features). */
static int read_batch_threshold(const sae_st_source *src, const sae_st_header *h,
                                const model_plan *p, sae_model *m, float *scratch, size_t end)
{
    int rc = sae__read_f32_part(src, h, p->threshold, scratch, false, m->shard_begin, end);
    if (rc != SAE_OK)
        return rc;
    const float want = p->batch_threshold > 0.0f ? p->batch_threshold : 0.0f;
    for (size_t i = 0; i < m->d_sae; i++)
        if (scratch[i] != want)
            return BAD("tensor \"" THRESHOLD_NAME "\": feature %zu holds %g, not the recorded "
                       "threshold %g", m->shard_begin + i, (double)scratch[i], (double)want);
    m->batch_threshold = p->batch_threshold;
    return SAE_OK;
}

/* SAELens's BatchTopK threshold (topk_threshold, on the rescaled
 * pre-activations when rescale_acts_by_decoder_norm, which are the folded
 * model's): every feature's, as its inference save gives it. Below 0 it
 * selects what libsae's unset threshold does (ReLU); it is kept as it is. */
static int read_topk_threshold(const sae_st_source *src, const sae_st_header *h,
                               const model_plan *p, sae_model *m)
{
    float thr;
    int rc = read_tensor(src, h, p->topk_threshold, &thr, 0, false);
    if (rc == SAE_OK)
        m->batch_threshold = thr;
    return rc;
}

/* SAELens's _fold_norm_topk, for a TopK-family SAE trained with
 * rescale_acts_by_decoder_norm: with n_i = max(||W_dec[i,:]||, 1e-8),
 * b_enc_i *= n_i, W_enc[:,i] *= n_i, W_dec[i,:] /= n_i. The folded model's
 * plain TopK (BatchTopK threshold) is SAELens's rescaled one exactly: its
 * pre-activations are the rescaled ones and its decoder reads f / n. With
 * norms of 1 (an inference save, already folded) it changes nothing beyond
 * rounding. SAE_E_FORMAT if a folded value overflows. */
static int fold_decoder_norms(sae_model *m)
{
    const size_t d_in = m->d_in, d_out = m->d_out;
    float *w_enc_t = sae__w_enc_t(m), *w_dec = sae__w_dec(m), *b_enc = sae__b_enc(m);
    for (size_t i = 0; i < m->d_sae; i++) {
        double sum = 0.0;
        for (size_t j = 0; j < d_out; j++)
            sum += (double)w_dec[i * d_out + j] * w_dec[i * d_out + j];
        float n = (float)sqrt(sum);
        n = n > 1e-8f ? n : 1e-8f;
        float b = b_enc[i] * n;
        bool bad = b - b != 0.0f;
        for (size_t j = 0; j < d_in; j++) {
            float w = w_enc_t[i * d_in + j] * n;
            bad |= w - w != 0.0f;
            w_enc_t[i * d_in + j] = w;
        }
        if (bad)
            return BAD("folding the decoder norms (rescale_acts_by_decoder_norm): feature %zu's "
                       "encoder overflows", i);
        b_enc[i] = b;
        for (size_t j = 0; j < d_out; j++)
            w_dec[i * d_out + j] /= n;
    }
    return SAE_OK;
}

/* Older SAELens files' decoder scales must be all ones (a shard checks its
 * features [begin, end); end 0: all). scratch: the model's d_sae floats. */
static int check_scales(const sae_st_source *src, const sae_st_header *h, size_t d_sae,
                        size_t begin, size_t end, float *scratch)
{
    for (size_t k = 0; k < sizeof scale_tensors / sizeof scale_tensors[0]; k++) {
        const sae_st_tensor *s = sae__st_find(h, scale_tensors[k]);
        if (!s)
            continue;
        if (!sae__st_shape_is(s, 1, d_sae, 0))
            return BAD("tensor \"%s\": not [d_sae] = [%zu]", scale_tensors[k], d_sae);
        int rc = sae__read_f32_part(src, h, s, scratch, false, begin, end);
        if (rc != SAE_OK)
            return rc;
        for (size_t i = 0; i < (end ? end - begin : d_sae); i++)
            if (scratch[i] != 1.0f)
                return BAD("tensor \"%s\": feature %zu scales the decoder by %g, not 1",
                           scale_tensors[k], begin + i, (double)scratch[i]);
    }
    return SAE_OK;
}

int sae__model_file_load(const sae_st_source *src, const sae_saelens_config *cfg,
                         size_t begin, size_t end, sae_model **out)
{
    sae_st_header h;
    int rc = sae__st_read_header(src, &h);
    if (rc != SAE_OK)
        return rc;
    sae_model *m = NULL;
    float *scratch = NULL;
    model_plan plan;
    if ((rc = plan_model(&h, cfg, &plan)) != SAE_OK)
        goto cleanup;
    const size_t d_in = (size_t)plan.d_in, d_sae = (size_t)plan.d_sae;
    if (end > d_sae) { /* a slice this model does not have */
        rc = sae__fail(SAE_E_INVALID_ARG, "features [%zu, %zu) of a model of d_sae = %zu", begin,
                       end, d_sae);
        goto cleanup;
    }
    if (plan.arch == SAE_ARCH_MATRYOSHKA) {
        if (begin != 0 || (end != 0 && end != d_sae)) {
            rc = sae__fail(SAE_E_INVALID_ARG, "a Matryoshka SAE is not loaded in shards");
            goto cleanup;
        }
        rc = sae_model_create_matryoshka(&m, d_in, d_sae, 0, (size_t)plan.k, cfg->widths,
                                         cfg->n_widths);
        if (rc != SAE_OK) {
            char why[256];
            snprintf(why, sizeof why, "%s", sae_error_detail());
            rc = rc == SAE_E_NOMEM ? rc : BAD("cfg.json's \"matryoshka_widths\": %s", why);
            goto cleanup;
        }
    } else if ((rc = sae__model_create(&m, d_in, d_sae, begin, end ? end : d_sae, 0, plan.arch,
                                       plan.arch == SAE_ARCH_JUMPRELU ? 1.0 : (double)plan.k)) !=
               SAE_OK) {
        rc = rc == SAE_E_NOMEM ? rc : BAD("a model of [%zu, %zu] cannot be made", d_in, d_sae);
        goto cleanup;
    }
    if (!(scratch = sae__alloc(m->d_sae * sizeof(float)))) {
        rc = sae__fail(SAE_E_NOMEM, "out of memory for %zu floats", m->d_sae);
        goto cleanup;
    }
    if ((rc = check_scales(src, &h, d_sae, begin, end, scratch)) != SAE_OK)
        goto cleanup;
    if (plan.topk_threshold)
        rc = read_topk_threshold(src, &h, &plan, m);
    else if (plan.arch == SAE_ARCH_BATCHTOPK)
        rc = read_batch_threshold(src, &h, &plan, m, scratch, end);
    else if (plan.arch == SAE_ARCH_JUMPRELU)
        rc = read_log_thresholds(src, &h, &plan, m, end);
    if (rc != SAE_OK ||
        (rc = sae__read_f32_part(src, &h, sae__st_find(&h, "W_enc"), sae__w_enc_t(m), true, begin,
                                 end)) != SAE_OK ||
        (rc = sae__read_f32_part(src, &h, sae__st_find(&h, "W_dec"), sae__w_dec(m), false, begin,
                                 end)) != SAE_OK ||
        (rc = sae__read_f32_part(src, &h, sae__st_find(&h, "b_enc"), sae__b_enc(m), false, begin,
                                 end)) != SAE_OK ||
        (rc = read_tensor(src, &h, sae__st_find(&h, "b_dec"), sae__b_dec(m), 0, false)) != SAE_OK)
        goto cleanup;
    if (plan.fold && (rc = fold_decoder_norms(m)) != SAE_OK)
        goto cleanup;
    sae__model_refresh_absmax(m);
    *out = m;
    m = NULL;
cleanup:
    sae__free(scratch);
    sae_model_free(m);
    sae__st_header_free(&h);
    return rc;
}
