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

/* libsae's names of its architectures in files (libsae_architecture): SAELens's
 * "architecture" values where SAELens has the architecture, and libsae's own
 * "batchtopk" and "matryoshka_batchtopk" (SAELens's training configurations
 * of those, whose inference saves SAELens makes "jumprelu" SAEs). */
static const char *const arch_names[] = {
    [SAE_ARCH_RELU] = "standard",
    [SAE_ARCH_TOPK] = "topk",
    [SAE_ARCH_BATCHTOPK] = "batchtopk",
    [SAE_ARCH_JUMPRELU] = "jumprelu",
    [SAE_ARCH_GATED] = "gated",
    [SAE_ARCH_MATRYOSHKA] = "matryoshka_batchtopk",
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

int sae__saelens_arch(int arch) { return sae__batch_selected(arch) ? SAE_ARCH_JUMPRELU : arch; }

/* SAELens's transcoder architectures (transcoder.py): the activation (what
 * sae__saelens_arch gives) and kind of each. "topk_transcoder" and
 * "topk_skip_transcoder" are libsae's (sparsify's TopK transcoders): SAELens
 * has no such class and refuses them rather than computing something else. */
static const struct {
    const char *name;
    int arch, kind;
} transcoder_names[] = {
    {"transcoder", SAE_ARCH_RELU, SAE_KIND_TRANSCODER},
    {"skip_transcoder", SAE_ARCH_RELU, SAE_KIND_SKIP_TRANSCODER},
    {"jumprelu_transcoder", SAE_ARCH_JUMPRELU, SAE_KIND_TRANSCODER},
    {"jumprelu_skip_transcoder", SAE_ARCH_JUMPRELU, SAE_KIND_SKIP_TRANSCODER},
    {"topk_transcoder", SAE_ARCH_TOPK, SAE_KIND_TRANSCODER},
    {"topk_skip_transcoder", SAE_ARCH_TOPK, SAE_KIND_SKIP_TRANSCODER},
};
#define N_TRANSCODER_NAMES (sizeof transcoder_names / sizeof transcoder_names[0])

const char *sae__saelens_name(int arch, int kind)
{
    const int a = sae__saelens_arch(arch);
    for (size_t i = 0; kind != SAE_KIND_AUTOENCODER && i < N_TRANSCODER_NAMES; i++)
        if (transcoder_names[i].arch == a && transcoder_names[i].kind == kind)
            return transcoder_names[i].name;
    return arch_names[a];
}

int sae__saelens_by_name(const char *name, size_t len, int *kind)
{
    for (size_t i = 0; i < N_TRANSCODER_NAMES; i++)
        if (strlen(transcoder_names[i].name) == len &&
            memcmp(transcoder_names[i].name, name, len) == 0) {
            *kind = transcoder_names[i].kind;
            return transcoder_names[i].arch;
        }
    *kind = SAE_KIND_AUTOENCODER;
    return sae__arch_by_name(name, len);
}

/* Metadata of a model file. */
#define META_VERSION "libsae_version"
#define META_ARCH "libsae_architecture"
#define META_KIND "libsae_kind"               /* transcoders: "transcoder" or "skip_transcoder" */
#define META_K "libsae_k"                     /* TopK, BatchTopK, Matryoshka: decimal */
#define META_THRESHOLD "libsae_threshold"     /* BatchTopK, Matryoshka: its threshold, hex float */
#define META_WIDTHS "libsae_matryoshka_widths" /* Matryoshka: "w1,w2,...,d_sae" */
#define META_LOG_THRESHOLD "libsae_log_threshold" /* JumpReLU: exact log thresholds */
#define THRESHOLD_NAME "threshold"
#define LOG_THRESHOLD_NAME "log_threshold"   /* SAELens's JumpReLU training parameter */

static const char *const kind_names[] = {
    [SAE_KIND_AUTOENCODER] = "autoencoder",
    [SAE_KIND_TRANSCODER] = "transcoder",
    [SAE_KIND_SKIP_TRANSCODER] = "skip_transcoder",
};

/* ---- writing -------------------------------------------------------------------- */

/* "w1,w2,...": the Matryoshka widths in decimal, into text (room for
 * SAE_MAX_LEVELS numbers). */
static void format_widths(const sae_model *m, char *text)
{
    size_t at = 0;
    for (size_t l = 0; l < m->n_levels; l++) {
        if (l)
            text[at++] = ',';
        sae__format_decimal(m->widths[l], text + at);
        at += strlen(text + at);
    }
    text[at] = '\0';
}

/* The tensors in the order safetensors.torch.save_file would write them (by
 * name: upper case first), then the metadata. SAELens's names throughout:
 * a Gated SAE's gate bias is "b_gate" (it has no b_enc), a skip
 * transcoder's map "W_skip" [d_out, d_in]. */
void sae__model_contents(const sae_model *m, sae_model_contents *c)
{
    const size_t d_in = m->d_in, d_out = m->d_out, d_sae = sae__total_features(m);
    const bool gated = m->arch == SAE_ARCH_GATED;
    memset(c, 0, sizeof *c);
    const sae_st_values as_is = SAE_ST_AS_IS;
    c->t[c->n_t++] = (sae_st_out){"W_dec", SAE_ST_F32, 2, {d_sae, d_out}, sae__w_dec(m), false, as_is};
    c->t[c->n_t++] = (sae_st_out){"W_enc", SAE_ST_F32, 2, {d_in, d_sae}, sae__w_enc_t(m), true, as_is};
    if (m->lay.w_skip_count)
        c->t[c->n_t++] = (sae_st_out){"W_skip", SAE_ST_F32, 2, {d_out, d_in}, sae__w_skip(m), false,
                                      as_is};
    c->t[c->n_t++] = (sae_st_out){"b_dec", SAE_ST_F32, 1, {d_out, 0}, sae__b_dec(m), false, as_is};
    c->t[c->n_t++] = (sae_st_out){gated ? "b_gate" : "b_enc", SAE_ST_F32, 1, {d_sae, 0},
                                  sae__b_enc(m), false, as_is};
    if (gated) {
        c->t[c->n_t++] = (sae_st_out){"b_mag", SAE_ST_F32, 1, {d_sae, 0}, sae__b_mag(m), false, as_is};
        c->t[c->n_t++] = (sae_st_out){"r_mag", SAE_ST_F32, 1, {d_sae, 0}, sae__r_mag(m), false, as_is};
    }
    c->meta[c->n_meta++] = (sae_st_kv){META_ARCH, arch_names[m->arch], NULL, 0};
    if (m->kind != SAE_KIND_AUTOENCODER)
        c->meta[c->n_meta++] = (sae_st_kv){META_KIND, kind_names[m->kind], NULL, 0};
    if (sae__has_k(m->arch)) {
        sae__format_decimal(m->k, c->k_text);
        c->meta[c->n_meta++] = (sae_st_kv){META_K, c->k_text, NULL, 0};
    }
    if (sae__batch_selected(m->arch)) {
        /* SAELens's BatchTopK (and Matryoshka) saved for inference: a JumpReLU
         * SAE with the threshold in every feature. Unset (negative), libsae
         * computes ReLU, which is threshold 0; the value itself goes to the
         * metadata. */
        sae__format_hex_double(m->batch_threshold, c->threshold_text);
        c->meta[c->n_meta++] = (sae_st_kv){META_THRESHOLD, c->threshold_text, NULL, 0};
        c->saelens_threshold = m->batch_threshold > 0.0f ? m->batch_threshold : 0.0f;
        c->t[c->n_t++] = (sae_st_out){THRESHOLD_NAME, SAE_ST_F32, 1, {d_sae, 0},
                                      &c->saelens_threshold, false, SAE_ST_REPEAT};
    }
    if (m->arch == SAE_ARCH_MATRYOSHKA) {
        format_widths(m, c->widths_text);
        c->meta[c->n_meta++] = (sae_st_kv){META_WIDTHS, c->widths_text, NULL, 0};
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

/* Tensors of states libsae does not compute: SAELens's BatchTopK training
 * state (accepted in its training checkpoints only). */
static const char *const foreign_tensors[] = {"topk_threshold"};
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
    uint64_t d_in, d_out, d_sae;
    int arch, kind;
    bool gated;                     /* b_gate, b_mag, r_mag instead of b_enc */
    const sae_st_tensor *w_skip;    /* skip transcoders */
    const sae_st_tensor *topk_threshold; /* SAELens's BatchTopK / Matryoshka checkpoints */
    bool fold;                      /* fold the decoder norms (rescale_acts_by_decoder_norm) */
    uint64_t k;                     /* TopK, BatchTopK, Matryoshka */
    const sae_st_tensor *threshold; /* JumpReLU, BatchTopK, Matryoshka */
    const sae_st_tensor *log_threshold; /* JumpReLU: SAELens's training parameter */
    float batch_threshold;          /* BatchTopK, Matryoshka: libsae_threshold */
    const char *log_hex;            /* JumpReLU: libsae_log_threshold, or NULL */
    size_t n_widths;                /* Matryoshka: libsae_matryoshka_widths */
    size_t widths[SAE_MAX_LEVELS];
} model_plan;

/* A float tensor that must be there, of rank 1 and length n. */
static int vector_of(const sae_st_header *h, const char *name, uint64_t n, const char *what,
                     const sae_st_tensor **out)
{
    const sae_st_tensor *t = sae__st_find(h, name);
    if (!t)
        return BAD("tensor \"%s\" is missing", name);
    if (!sae__st_is_float(t->dtype))
        return BAD("tensor \"%s\": not F32, F16, BF16 or F64", name);
    if (!sae__st_shape_is(t, 1, n, 0))
        return BAD("tensor \"%s\": not [%s] = [%llu]", name, what, (unsigned long long)n);
    *out = t;
    return SAE_OK;
}

/* The tensors every model has (a Gated SAE's b_gate, b_mag and r_mag for
 * b_enc), their shapes agreeing with each other and with cfg.json, and no
 * tensor of a state libsae does not compute. */
static int plan_shapes(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    const sae_st_tensor *w_enc = sae__st_find(h, "W_enc"), *w_dec = sae__st_find(h, "W_dec"), *v;
    if (!w_enc || !w_dec)
        return BAD("tensor \"%s\" is missing", w_enc ? "W_dec" : "W_enc");
    if (!sae__st_is_float(w_enc->dtype) || !sae__st_is_float(w_dec->dtype))
        return BAD("tensor \"%s\": not F32, F16, BF16 or F64",
                   sae__st_is_float(w_enc->dtype) ? "W_dec" : "W_enc");
    if (w_enc->rank != 2)
        return BAD("tensor \"W_enc\": rank %zu, not 2", w_enc->rank);
    const uint64_t d_in = w_enc->shape[0], d_sae = w_enc->shape[1];
    if (d_in == 0 || d_sae == 0 || d_in > INT_MAX || d_sae > INT_MAX)
        return BAD("tensor \"W_enc\": shape [%llu, %llu]: each dimension must be 1 to %d",
                   (unsigned long long)d_in, (unsigned long long)d_sae, INT_MAX);
    if (w_dec->rank != 2 || w_dec->shape[0] != d_sae || w_dec->shape[1] == 0 ||
        w_dec->shape[1] > INT_MAX)
        return BAD("tensor \"W_dec\": not [d_sae, d_out] = [%llu, 1 to %d]",
                   (unsigned long long)d_sae, INT_MAX);
    const uint64_t d_out = w_dec->shape[1];
    int rc = vector_of(h, "b_dec", d_out, "d_out", &v);
    if (rc != SAE_OK)
        return rc;
    p->gated = sae__st_find(h, "b_gate") != NULL;
    if (p->gated && sae__st_find(h, "b_enc"))
        return BAD("tensors \"b_enc\" and \"b_gate\": a Gated SAE has no b_enc");
    static const char *const gated_names[] = {"b_gate", "b_mag", "r_mag"};
    for (size_t k = 0; k < (p->gated ? 3 : 1) && rc == SAE_OK; k++)
        rc = vector_of(h, p->gated ? gated_names[k] : "b_enc", d_sae, "d_sae", &v);
    if (rc != SAE_OK)
        return rc;
    for (size_t k = 1; k < 3 && !p->gated; k++)
        if (sae__st_find(h, gated_names[k]))
            return BAD("tensor \"%s\" without \"b_gate\"", gated_names[k]);
    if ((p->w_skip = sae__st_find(h, "W_skip")) &&
        (!sae__st_is_float(p->w_skip->dtype) || !sae__st_shape_is(p->w_skip, 2, d_out, d_in)))
        return BAD("tensor \"W_skip\": not a float [d_out, d_in] = [%llu, %llu]",
                   (unsigned long long)d_out, (unsigned long long)d_in);
    const struct {
        const char *key;
        uint64_t file, cfg;
    } dims[] = {{"d_in", d_in, cfg ? cfg->d_in : 0}, {"d_sae", d_sae, cfg ? cfg->d_sae : 0},
                {"d_out", d_out, cfg ? cfg->d_out : 0}};
    for (size_t k = 0; k < 3; k++)
        if (dims[k].cfg && dims[k].cfg != dims[k].file)
            return BAD("cfg.json: key \"%s\" (%llu) differs from the tensors' (%llu)", dims[k].key,
                       (unsigned long long)dims[k].cfg, (unsigned long long)dims[k].file);
    for (size_t k = 0; k < sizeof foreign_tensors / sizeof foreign_tensors[0]; k++)
        if (sae__st_find(h, foreign_tensors[k]) &&
            !(saelens_batch_config(cfg) && strcmp(foreign_tensors[k], TOPK_THRESHOLD_NAME) == 0))
            return BAD("tensor \"%s\": a model libsae does not compute", foreign_tensors[k]);
    p->d_in = d_in;
    p->d_out = d_out;
    p->d_sae = d_sae;
    return SAE_OK;
}

/* The kind: libsae's metadata, else cfg.json's architecture, else the
 * tensors (W_skip: a skip transcoder; d_out != d_in: a transcoder). */
static int plan_kind(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    size_t len;
    const char *text = sae__st_metadata(h, META_KIND, &len);
    if (text) {
        p->kind = -1;
        for (int k = SAE_KIND_TRANSCODER; k <= SAE_KIND_SKIP_TRANSCODER; k++)
            if (strlen(kind_names[k]) == len && memcmp(kind_names[k], text, len) == 0)
                p->kind = k;
        if (p->kind < 0)
            return BAD("\"" META_KIND "\": \"%s\" is not \"transcoder\" or \"skip_transcoder\"",
                       text);
        if (!sae__st_metadata(h, META_ARCH, NULL))
            return BAD("libsae metadata without \"" META_ARCH "\"");
    } else if (cfg && cfg->arch >= 0) {
        p->kind = cfg->kind;
    } else {
        p->kind = p->w_skip ? SAE_KIND_SKIP_TRANSCODER
                  : p->d_out != p->d_in ? SAE_KIND_TRANSCODER : SAE_KIND_AUTOENCODER;
    }
    if (cfg && cfg->arch >= 0 && cfg->kind != p->kind)
        return BAD("cfg.json: key \"architecture\": a%s, the file holds a%s",
                   cfg->kind == SAE_KIND_AUTOENCODER ? "n autoencoder" : " transcoder",
                   p->kind == SAE_KIND_AUTOENCODER ? "n autoencoder" : " transcoder");
    if ((p->w_skip != NULL) != (p->kind == SAE_KIND_SKIP_TRANSCODER))
        return BAD("tensor \"W_skip\": %s for a%s", p->w_skip ? "present" : "missing",
                   p->kind == SAE_KIND_SKIP_TRANSCODER ? " skip transcoder" : "n SAE without one");
    if (p->kind == SAE_KIND_AUTOENCODER && p->d_out != p->d_in)
        return BAD("tensor \"W_dec\": [d_sae, %llu] in an autoencoder of d_in %llu (a transcoder "
                   "says so in cfg.json or \"" META_KIND "\")", (unsigned long long)p->d_out,
                   (unsigned long long)p->d_in);
    return SAE_OK;
}

/* The architecture, from libsae's metadata (or, in files without it, from
 * the tensors and cfg.json). */
static int plan_arch(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    size_t arch_len;
    const char *arch_text = sae__st_metadata(h, META_ARCH, &arch_len);
    p->threshold = sae__st_find(h, THRESHOLD_NAME);
    p->log_threshold = sae__st_find(h, LOG_THRESHOLD_NAME);
    if (p->threshold && p->log_threshold)
        return BAD("tensors \"" THRESHOLD_NAME "\" and \"" LOG_THRESHOLD_NAME "\": one or the other");
    if (arch_text) {
        if ((p->arch = sae__arch_by_name(arch_text, arch_len)) < 0)
            return BAD("\"" META_ARCH "\": \"%s\" is not an architecture", arch_text);
        if (p->log_threshold) /* libsae writes the thresholds and their exact logs */
            return BAD("tensor \"" LOG_THRESHOLD_NAME "\" in a file of libsae");
    } else if (saelens_batch_config(cfg)) { /* a SAELens training checkpoint */
        if (!(p->topk_threshold = sae__st_find(h, TOPK_THRESHOLD_NAME)))
            return BAD("tensor \"" TOPK_THRESHOLD_NAME "\" is missing for cfg.json's "
                       "architecture \"%s\"", arch_names[cfg->arch]);
        if (p->threshold || p->log_threshold || p->gated || p->kind != SAE_KIND_AUTOENCODER)
            return BAD("tensor \"%s\" in a BatchTopK training checkpoint",
                       p->threshold ? THRESHOLD_NAME : p->log_threshold ? LOG_THRESHOLD_NAME
                       : p->gated ? "b_gate" : "W_skip");
        if (p->topk_threshold->count != 1 || p->topk_threshold->rank > 1 ||
            !sae__st_is_float(p->topk_threshold->dtype))
            return BAD("tensor \"" TOPK_THRESHOLD_NAME "\": not one float");
        p->arch = cfg->arch;
        p->fold = cfg->rescale;
        return SAE_OK;
    } else if (sae__st_metadata(h, META_K, NULL) || sae__st_metadata(h, META_THRESHOLD, NULL) ||
               sae__st_metadata(h, META_LOG_THRESHOLD, NULL) ||
               sae__st_metadata(h, META_WIDTHS, NULL)) {
        return BAD("libsae metadata without \"" META_ARCH "\"");
    } else if (p->gated) {
        p->arch = SAE_ARCH_GATED;
    } else if (p->threshold || p->log_threshold) { /* as SAELens saves JumpReLU and BatchTopK SAEs */
        p->arch = SAE_ARCH_JUMPRELU;
    } else {
        p->arch = cfg && cfg->arch == SAE_ARCH_TOPK ? SAE_ARCH_TOPK : SAE_ARCH_RELU;
    }
    if (p->gated != (p->arch == SAE_ARCH_GATED))
        return BAD("tensor \"b_gate\": %s for a %s model", p->gated ? "present" : "missing",
                   arch_names[p->arch]);
    if (p->kind != SAE_KIND_AUTOENCODER &&
        (p->arch == SAE_ARCH_GATED || p->arch == SAE_ARCH_MATRYOSHKA))
        return BAD("a %s transcoder: transcoders are relu, topk, batchtopk or jumprelu",
                   arch_names[p->arch]);
    if (cfg && cfg->arch == SAE_ARCH_MATRYOSHKA)
        return BAD("cfg.json's architecture \"matryoshka_batchtopk\" differs from the file's \"%s\"",
                   arch_names[p->arch]);
    p->fold = cfg && cfg->rescale; /* TopK autoencoders (the configuration allows no other) */
    if (cfg && cfg->arch >= 0 && cfg->arch != sae__saelens_arch(p->arch))
        return BAD("cfg.json's architecture \"%s\" differs from the file's \"%s\"",
                   sae__saelens_name(cfg->arch, cfg->kind), sae__saelens_name(p->arch, p->kind));
    return SAE_OK;
}

/* libsae_matryoshka_widths: "w1,...,wM", each a decimal in [1, d_sae]
 * (their order is checked when the model is made). */
static int plan_widths(const char *text, size_t len, model_plan *p)
{
    size_t at = 0;
    p->n_widths = 0;
    while (at <= len) {
        size_t end = at;
        while (end < len && text[end] != ',')
            end++;
        uint64_t w;
        if (p->n_widths == SAE_MAX_LEVELS ||
            !sae__parse_decimal(text + at, end - at, p->d_sae, &w) || w == 0)
            return BAD("\"" META_WIDTHS "\": \"%s\" is not up to %d whole numbers in [1, d_sae "
                       "= %llu], comma-separated", text, SAE_MAX_LEVELS,
                       (unsigned long long)p->d_sae);
        p->widths[p->n_widths++] = (size_t)w;
        at = end + 1;
    }
    return SAE_OK;
}

/* k, the thresholds, the widths and their metadata: present exactly where
 * the architecture has them, and valid. */
static int plan_values(const sae_st_header *h, const sae_saelens_config *cfg, model_plan *p)
{
    size_t k_len, thr_len, log_len, widths_len;
    const char *k_text = sae__st_metadata(h, META_K, &k_len);
    const char *thr_text = sae__st_metadata(h, META_THRESHOLD, &thr_len);
    const char *log_text = sae__st_metadata(h, META_LOG_THRESHOLD, &log_len);
    const char *widths_text = sae__st_metadata(h, META_WIDTHS, &widths_len);
    const int arch = p->arch;
    if (p->topk_threshold) { /* SAELens's checkpoint: k from cfg.json, no libsae metadata */
        if (k_text || thr_text || log_text || widths_text)
            return BAD("libsae metadata in a SAELens BatchTopK training checkpoint");
        if (cfg->k > p->d_sae)
            return BAD("cfg.json's k = %llu is not in [1, d_sae = %llu]",
                       (unsigned long long)cfg->k, (unsigned long long)p->d_sae);
        p->k = cfg->k;
        return SAE_OK;
    }
    const bool with_k = sae__has_k(arch);
    const bool with_threshold = arch == SAE_ARCH_JUMPRELU || sae__batch_selected(arch);
    const bool libsae_file = sae__st_metadata(h, META_ARCH, NULL) != NULL;
    if ((p->threshold != NULL || p->log_threshold != NULL) != with_threshold)
        return BAD("tensor \"" THRESHOLD_NAME "\": %s for a %s model",
                   p->threshold ? "present" : "missing", arch_names[arch]);
    if (libsae_file && (k_text != NULL) != with_k)
        return BAD("\"" META_K "\": %s for a %s model", k_text ? "present" : "missing",
                   arch_names[arch]);
    if ((thr_text != NULL) != sae__batch_selected(arch))
        return BAD("\"" META_THRESHOLD "\": %s for a %s model", thr_text ? "present" : "missing",
                   arch_names[arch]);
    if ((widths_text != NULL) != (arch == SAE_ARCH_MATRYOSHKA))
        return BAD("\"" META_WIDTHS "\": %s for a %s model", widths_text ? "present" : "missing",
                   arch_names[arch]);
    if (log_text && arch != SAE_ARCH_JUMPRELU)
        return BAD("\"" META_LOG_THRESHOLD "\" for a %s model", arch_names[arch]);
    const sae_st_tensor *thr = p->threshold ? p->threshold : p->log_threshold;
    if (thr && (!sae__st_is_float(thr->dtype) || !sae__st_shape_is(thr, 1, p->d_sae, 0)))
        return BAD("tensor \"%s\": not a float [d_sae] = [%llu]", thr->name,
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
    if (widths_text) {
        int rc = plan_widths(widths_text, widths_len, p);
        if (rc != SAE_OK)
            return rc;
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
        rc = plan_kind(h, cfg, p);
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
 * sae_model_set_tensor computes them. SAELens's training checkpoints hold t
 * itself ("log_threshold"), taken as it is (in [logf(1e-30), logf(1e30)]). */
static int read_log_thresholds(const sae_st_source *src, const sae_st_header *h,
                               const model_plan *p, sae_model *m, size_t end)
{
    float *t = sae__log_thr(m);
    const size_t begin = m->shard_begin;
    const bool logs = p->log_threshold != NULL;
    int rc = sae__read_f32_part(src, h, logs ? p->log_threshold : p->threshold, t, false, begin,
                                end);
    if (rc != SAE_OK)
        return rc;
    for (size_t i = 0; i < m->d_sae; i++) {
        if (logs) {
            if (!(t[i] >= logf(1e-30f) && t[i] <= logf(1e30f)))
                return BAD("tensor \"" LOG_THRESHOLD_NAME "\": feature %zu: %g is not in "
                           "[log(1e-30), log(1e30)]", begin + i, (double)t[i]);
            continue;
        }
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

/* The model the plan describes (its parameters still the initialisation's). */
static int make_model(const model_plan *plan, const sae_saelens_config *cfg, size_t begin,
                      size_t end, sae_model **m)
{
    const size_t d_in = (size_t)plan->d_in, d_sae = (size_t)plan->d_sae;
    const double param = plan->arch == SAE_ARCH_JUMPRELU ? 1.0 : (double)plan->k;
    if (end > d_sae) /* a slice this model does not have */
        return sae__fail(SAE_E_INVALID_ARG, "features [%zu, %zu) of a model of d_sae = %zu", begin,
                         end, d_sae);
    int rc;
    if (plan->arch == SAE_ARCH_MATRYOSHKA) {
        const bool own = plan->n_widths > 0; /* libsae's metadata, else SAELens's cfg.json */
        rc = sae__matryoshka_create(m, "sae_model_load", d_in, d_sae, begin, end ? end : d_sae, 0,
                                    (size_t)plan->k, own ? plan->widths : cfg->widths,
                                    own ? plan->n_widths : cfg->n_widths);
        if (rc != SAE_OK && rc != SAE_E_NOMEM) {
            char why[256];
            snprintf(why, sizeof why, "%s", sae_error_detail());
            rc = BAD("%s: %s", own ? "\"" META_WIDTHS "\"" : "cfg.json's \"matryoshka_widths\"",
                     why);
        }
        return rc;
    }
    if (plan->kind != SAE_KIND_AUTOENCODER)
        rc = sae__transcoder_create(m, "sae_model_load", d_in, (size_t)plan->d_out, d_sae, begin,
                                    end ? end : d_sae, 0, plan->kind, plan->arch, param);
    else
        rc = sae__model_create(m, d_in, d_sae, begin, end ? end : d_sae, 0, plan->arch, param);
    if (rc != SAE_OK && rc != SAE_E_NOMEM)
        rc = BAD("a model of [%zu, %zu] cannot be made", d_in, d_sae);
    return rc;
}

/* The parameters of the families beyond W_enc, W_dec, b_enc and b_dec:
 * Gated's b_mag and r_mag (a shard's features [m->shard_begin, end); end 0:
 * all), a skip transcoder's W_skip (whole on every shard). */
static int read_family_tensors(const sae_st_source *src, const sae_st_header *h,
                               const model_plan *p, sae_model *m, size_t end)
{
    int rc = SAE_OK;
    const size_t begin = m->shard_begin;
    if (p->gated &&
        ((rc = sae__read_f32_part(src, h, sae__st_find(h, "b_mag"), sae__b_mag(m), false, begin,
                                  end)) != SAE_OK ||
         (rc = sae__read_f32_part(src, h, sae__st_find(h, "r_mag"), sae__r_mag(m), false, begin,
                                  end)) != SAE_OK))
        return rc;
    if (p->w_skip)
        rc = read_tensor(src, h, p->w_skip, sae__w_skip(m), 0, false);
    return rc;
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
    if ((rc = plan_model(&h, cfg, &plan)) != SAE_OK ||
        (rc = make_model(&plan, cfg, begin, end, &m)) != SAE_OK)
        goto cleanup;
    const size_t d_sae = (size_t)plan.d_sae;
    if (!(scratch = sae__alloc(m->d_sae * sizeof(float)))) {
        rc = sae__fail(SAE_E_NOMEM, "out of memory for %zu floats", m->d_sae);
        goto cleanup;
    }
    if ((rc = check_scales(src, &h, d_sae, begin, end, scratch)) != SAE_OK)
        goto cleanup;
    if (plan.topk_threshold)
        rc = read_topk_threshold(src, &h, &plan, m);
    else if (sae__batch_selected(plan.arch))
        rc = read_batch_threshold(src, &h, &plan, m, scratch, end);
    else if (plan.arch == SAE_ARCH_JUMPRELU)
        rc = read_log_thresholds(src, &h, &plan, m, end);
    if (rc != SAE_OK ||
        (rc = sae__read_f32_part(src, &h, sae__st_find(&h, "W_enc"), sae__w_enc_t(m), true, begin,
                                 end)) != SAE_OK ||
        (rc = sae__read_f32_part(src, &h, sae__st_find(&h, "W_dec"), sae__w_dec(m), false, begin,
                                 end)) != SAE_OK ||
        (rc = sae__read_f32_part(src, &h, sae__st_find(&h, plan.gated ? "b_gate" : "b_enc"),
                                 sae__b_enc(m), false, begin, end)) != SAE_OK ||
        (rc = read_tensor(src, &h, sae__st_find(&h, "b_dec"), sae__b_dec(m), 0, false)) != SAE_OK ||
        (rc = read_family_tensors(src, &h, &plan, m, end)) != SAE_OK)
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
