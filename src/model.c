/*
 * The model: creation with the April 2024 initialisation, the parameter block
 * and its views, and tensor get/set in SAELens's layout.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* Round a float count up to the next 64-byte boundary. */
static bool round_up_floats(size_t n, size_t *out)
{
    size_t padded;
    if (!sae__add(n, SAE_ALIGN_FLOATS - 1, &padded))
        return false;
    *out = padded / SAE_ALIGN_FLOATS * SAE_ALIGN_FLOATS;
    return true;
}

/* *total += the padded size of a view of count floats, which starts at *at. */
static bool add_view(size_t *total, size_t count, size_t *at)
{
    size_t padded;
    *at = *total;
    return round_up_floats(count, &padded) && sae__add(*total, padded, total);
}

bool sae__layout_for(sae_layout *lay, const sae_shape *shape)
{
    const size_t d_in = shape->d_in, d_out = shape->d_out, d_sae = shape->d_sae;
    size_t enc, dec, skip, total = 0, bytes;
    if (!sae__mul(d_in, d_sae, &enc) || !sae__mul(d_out, d_sae, &dec) ||
        !sae__mul(d_out, d_in, &skip))
        return false;
    memset(lay, 0, sizeof *lay);
    lay->d_out = d_out;
    lay->log_thr_count = shape->arch == SAE_ARCH_JUMPRELU ? d_sae : 0;
    lay->gated_count = shape->arch == SAE_ARCH_GATED ? d_sae : 0;
    lay->w_skip_count = shape->kind == SAE_KIND_SKIP_TRANSCODER ? skip : 0;
    if (!add_view(&total, enc, &lay->w_enc_t) || !add_view(&total, dec, &lay->w_dec) ||
        !add_view(&total, d_sae, &lay->b_enc) || !add_view(&total, d_out, &lay->b_dec) ||
        !add_view(&total, lay->log_thr_count, &lay->log_thr) ||
        !add_view(&total, lay->gated_count, &lay->r_mag) ||
        !add_view(&total, lay->gated_count, &lay->b_mag) ||
        !add_view(&total, lay->w_skip_count, &lay->w_skip))
        return false;
    if (!sae__mul(total, sizeof(float), &bytes))
        return false;
    /* Leave headroom so several parameter-sized buffers can be summed safely. */
    if (bytes > SIZE_MAX / 8)
        return false;
    lay->total = total;
    return true;
}

bool sae__layout_init(sae_layout *lay, size_t d_in, size_t d_sae, bool with_thresholds)
{
    sae_shape shape = {d_in, d_in, d_sae, with_thresholds ? SAE_ARCH_JUMPRELU : SAE_ARCH_RELU,
                       SAE_KIND_AUTOENCODER};
    return sae__layout_for(lay, &shape);
}

bool sae__all_finite(const float *v, size_t count)
{
    /* x - x is 0 for finite x and NaN otherwise; OR-ing the NaN test over a block
     * keeps the loop branch-free and vectorisable. */
    size_t i = 0;
    while (i < count) {
        size_t end = count - i > 4096 ? i + 4096 : count;
        int bad = 0;
        for (; i < end; i++)
            bad |= (v[i] - v[i]) != 0.0f;
        if (bad)
            return false;
    }
    return true;
}

float sae__absmax(const float *v, size_t count)
{
    float mx = 0.0f;
    for (size_t i = 0; i < count; i++) {
        float a = fabsf(v[i]);
        mx = a > mx ? a : mx;
    }
    return mx;
}

void sae__model_refresh_absmax(sae_model *m)
{
    m->param_absmax = sae__absmax(m->params, m->lay.total);
    m->version++;
}

uint64_t sae__model_new_version(const sae_model *m)
{
    /* the time and the address: a later model at the same address differs */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t v = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return (v ^ (uint64_t)(uintptr_t)m * 0x9e3779b97f4a7c15ull) << 8; /* room to count */
}

void sae__mean_rows(const float *x, size_t n, size_t d, double *mean)
{
    memset(mean, 0, d * sizeof(double));
    for (size_t t = 0; t < n; t++)
        for (size_t j = 0; j < d; j++)
            mean[j] += x[t * d + j];
    for (size_t j = 0; j < d; j++)
        mean[j] /= (double)n;
}

/* Random directions of L2 norm `norm` in the rows (count x width floats), row i
 * from its own stream, stream0 + i: numbered by the feature's index in the
 * whole model (so rows could be drawn in any order or in parallel, and a shard
 * draws exactly its rows). */
static void random_rows(float *rows, size_t count, size_t width, uint64_t seed, uint64_t stream0,
                        double norm)
{
    for (size_t i = 0; i < count; i++) {
        float *row = rows + i * width;
        sae_rng rng;
        sae_rng_seed(&rng, seed, stream0 + (uint64_t)i);
        double sum;
        do {
            sum = 0.0;
            for (size_t j = 0; j < width; j++) {
                double z = sae_rng_normal(&rng);
                row[j] = (float)z;
                sum += (double)row[j] * row[j];
            }
        } while (sum == 0.0);
        double scale = norm / sqrt(sum);
        for (size_t j = 0; j < width; j++)
            row[j] = (float)(row[j] * scale);
    }
}

/* A transcoder's encoder columns draw from streams apart from its decoder rows'. */
#define ENCODER_STREAMS ((uint64_t)1 << 40)

void sae__model_init_params(sae_model *m, uint64_t seed, double decoder_init_norm)
{
    const sae_layout *lay = &m->lay;
    const uint64_t first = (uint64_t)m->shard_begin;
    /* every view but the JumpReLU thresholds starts at 0 */
    memset(sae__w_enc_t(m), 0, (lay->log_thr - lay->w_enc_t) * sizeof(float));
    memset(sae__r_mag(m), 0, (lay->total - lay->r_mag) * sizeof(float));
    random_rows(sae__w_dec(m), m->d_sae, m->d_out, seed, first, decoder_init_norm);
    if (m->kind == SAE_KIND_AUTOENCODER) /* W_enc = W_dec^T, stored transposed: a copy */
        memcpy(sae__w_enc_t(m), sae__w_dec(m), m->d_in * m->d_sae * sizeof(float));
    else /* input and output spaces differ: the encoder draws its own directions */
        random_rows(sae__w_enc_t(m), m->d_sae, m->d_in, seed, ENCODER_STREAMS + first,
                    decoder_init_norm);
    m->batch_threshold = -1.0f;
    sae__model_refresh_absmax(m);
}

int sae__check_arch_param(const char *fn, int arch, double param, size_t d_sae, size_t *k)
{
    *k = 0;
    if (!isfinite(param))
        return sae__fail(SAE_E_NONFINITE, "%s: param is %g", fn, param);
    switch (arch) {
    case SAE_ARCH_RELU:
    case SAE_ARCH_GATED:
        if (param != 0.0)
            return sae__fail(SAE_E_INVALID_ARG, "%s: param is %g: %s takes 0", fn, param,
                             arch == SAE_ARCH_RELU ? "ReLU" : "Gated");
        return SAE_OK;
    case SAE_ARCH_TOPK:
    case SAE_ARCH_BATCHTOPK:
    case SAE_ARCH_MATRYOSHKA:
        if (param < 1.0 || param > (double)d_sae || param != floor(param))
            return sae__fail(SAE_E_INVALID_ARG, "%s: k = %g is not a whole number in [1, d_sae = %zu]",
                             fn, param, d_sae);
        *k = (size_t)param;
        return SAE_OK;
    case SAE_ARCH_JUMPRELU:
        /* log(theta) must be a finite float */
        if (!(param >= 1e-30 && param <= 1e30))
            return sae__fail(SAE_E_INVALID_ARG,
                             "%s: the initial threshold %g is outside [1e-30, 1e30]", fn, param);
        return SAE_OK;
    default:
        return sae__fail(SAE_E_INVALID_ARG, "%s: unknown architecture %d", fn, arch);
    }
}

int sae__model_new(sae_model **out, const char *fn, const sae_shape *shape, size_t begin,
                   size_t end, uint64_t seed, double param, double decoder_init_norm)
{
    *out = NULL;
    sae_layout lay;
    sae_shape part = *shape;
    part.d_sae = end - begin;
    /* CBLAS takes dimensions as int. */
    if (shape->d_in == 0 || shape->d_out == 0 || shape->d_sae == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: a dimension is 0 (d_in %zu, d_out %zu, d_sae %zu)",
                         fn, shape->d_in, shape->d_out, shape->d_sae);
    if (begin >= end || end > shape->d_sae)
        return sae__fail(SAE_E_INVALID_ARG, "%s: [%zu, %zu) is not a slice of %zu features", fn,
                         begin, end, shape->d_sae);
    if (shape->d_in > INT_MAX || shape->d_out > INT_MAX || shape->d_sae > INT_MAX ||
        !sae__layout_for(&lay, &part))
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: d_in %zu, d_out %zu, d_sae %zu: a dimension above INT_MAX or a "
                         "parameter block too large",
                         fn, shape->d_in, shape->d_out, shape->d_sae);
    sae_model *m = sae__alloc_zero(sizeof *m);
    if (!m)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the model", fn);
    m->d_in = shape->d_in;
    m->d_out = shape->d_out;
    m->d_sae = end - begin;
    m->shard_begin = begin;
    m->d_sae_total = shape->d_sae;
    m->arch = shape->arch;
    m->kind = shape->kind;
    m->lay = lay;
    m->version = sae__model_new_version(m);
    m->params = sae__alloc_zero(lay.total * sizeof(float));
    if (!m->params) {
        sae__free(m);
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu parameters", fn, lay.total);
    }
    float log_theta = (float)log(param);
    for (size_t i = 0; i < lay.log_thr_count; i++)
        sae__log_thr(m)[i] = log_theta;
    sae__model_init_params(m, seed, decoder_init_norm);
    *out = m;
    return SAE_OK;
}

int sae__model_create(sae_model **out, size_t d_in, size_t d_sae, size_t begin, size_t end,
                      uint64_t seed, int arch, double param)
{
    static const char fn[] = "sae_model_create_arch";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (arch == SAE_ARCH_MATRYOSHKA)
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: a Matryoshka SAE needs its level widths: use "
                         "sae_model_create_matryoshka", fn);
    size_t k;
    int rc = sae__check_arch_param(fn, arch, param, d_sae, &k);
    if (rc != SAE_OK)
        return rc;
    sae_shape shape = {d_in, d_in, d_sae, arch, SAE_KIND_AUTOENCODER};
    rc = sae__model_new(out, fn, &shape, begin, end, seed, param, SAE_DECODER_INIT_NORM);
    if (rc == SAE_OK)
        (*out)->k = k;
    return rc;
}

int sae_model_create_arch(sae_model **out, size_t d_in, size_t d_sae, uint64_t seed, int arch,
                          double param)
{
    return sae__model_create(out, d_in, d_sae, 0, d_sae, seed, arch, param);
}

int sae_model_create(sae_model **out, size_t d_in, size_t d_sae, uint64_t seed)
{
    return sae_model_create_arch(out, d_in, d_sae, seed, SAE_ARCH_RELU, 0.0);
}

int sae_model_arch(const sae_model *m) { return m ? m->arch : -1; }

size_t sae_model_k(const sae_model *m) { return m ? m->k : 0; }

void sae_model_free(sae_model *m)
{
    if (!m)
        return;
    sae__free(m->params);
    sae__free(m);
}

int sae_model_clone(sae_model **out, const sae_model *m)
{
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "sae_model_clone: out is NULL");
    *out = NULL;
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "sae_model_clone: m is NULL");
    sae_model *copy = sae__alloc(sizeof *copy);
    if (!copy)
        return sae__fail(SAE_E_NOMEM, "sae_model_clone: out of memory for the model");
    *copy = *m;
    copy->version = sae__model_new_version(copy);
    /* the whole block, padding included: a copy bit for bit */
    copy->params = sae__alloc(m->lay.total * sizeof(float));
    if (!copy->params) {
        sae__free(copy);
        return sae__fail(SAE_E_NOMEM, "sae_model_clone: out of memory for %zu parameters",
                         m->lay.total);
    }
    memcpy(copy->params, m->params, m->lay.total * sizeof(float));
    *out = copy;
    return SAE_OK;
}

size_t sae_model_d_in(const sae_model *m) { return m ? m->d_in : 0; }
size_t sae_model_d_sae(const sae_model *m) { return m ? m->d_sae : 0; }

size_t sae_model_tensor_size(const sae_model *m, int which)
{
    if (!m)
        return 0;
    switch (which) { /* no product overflows: the layout was checked at creation */
    case SAE_W_ENC: return m->d_in * m->d_sae;
    case SAE_W_DEC: return m->d_sae * m->d_out;
    case SAE_B_ENC: return m->d_sae;
    case SAE_B_DEC: return m->d_out;
    case SAE_THRESHOLD:
        return m->arch == SAE_ARCH_JUMPRELU ? m->d_sae : sae__batch_selected(m->arch) ? 1 : 0;
    case SAE_W_SKIP: return m->lay.w_skip_count;
    case SAE_B_MAG:
    case SAE_R_MAG: return m->lay.gated_count;
    default: return 0;
    }
}

/* dst (cols x rows) = src (rows x cols) transposed, in cache-sized tiles. */
static void transpose(const float *src, size_t rows, size_t cols, float *dst)
{
    enum { TILE = 32 };
    for (size_t r0 = 0; r0 < rows; r0 += TILE) {
        size_t r1 = r0 + TILE < rows ? r0 + TILE : rows;
        for (size_t c0 = 0; c0 < cols; c0 += TILE) {
            size_t c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (size_t r = r0; r < r1; r++)
                for (size_t c = c0; c < c1; c++)
                    dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/* Checks of get/set: the model, the buffer, the tensor and its size. */
static int check_tensor_arg(const char *fn, const sae_model *m, int which, const void *buf,
                            const char *buf_name, size_t count)
{
    if (!m || !buf)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : buf_name);
    static const char *const names[] = {"SAE_W_ENC", "SAE_B_ENC", "SAE_W_DEC",  "SAE_B_DEC",
                                        "SAE_THRESHOLD", "SAE_W_SKIP", "SAE_B_MAG", "SAE_R_MAG"};
    size_t size = sae_model_tensor_size(m, which);
    if (size == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %d is not a tensor of this model", fn, which);
    if (count != size)
        return sae__fail(SAE_E_INVALID_ARG, "%s: count %zu: %s holds %zu floats", fn, count,
                         names[which], size);
    return SAE_OK;
}

int sae_model_get_tensor(const sae_model *m, int which, float *dst, size_t count)
{
    int rc = check_tensor_arg("sae_model_get_tensor", m, which, dst, "dst", count);
    if (rc != SAE_OK)
        return rc;
    const size_t size = count;
    switch (which) {
    case SAE_W_ENC: transpose(sae__w_enc_t(m), m->d_sae, m->d_in, dst); break;
    case SAE_W_DEC: memcpy(dst, sae__w_dec(m), size * sizeof(float)); break;
    case SAE_B_ENC: memcpy(dst, sae__b_enc(m), size * sizeof(float)); break;
    case SAE_B_DEC: memcpy(dst, sae__b_dec(m), size * sizeof(float)); break;
    case SAE_THRESHOLD:
        if (sae__batch_selected(m->arch))
            dst[0] = m->batch_threshold;
        else
            for (size_t i = 0; i < size; i++)
                dst[i] = expf(sae__log_thr(m)[i]);
        break;
    case SAE_W_SKIP: memcpy(dst, sae__w_skip(m), size * sizeof(float)); break;
    case SAE_B_MAG: memcpy(dst, sae__b_mag(m), size * sizeof(float)); break;
    case SAE_R_MAG: memcpy(dst, sae__r_mag(m), size * sizeof(float)); break;
    }
    return SAE_OK;
}

int sae_model_set_tensor(sae_model *m, int which, const float *src, size_t count)
{
    static const char fn[] = "sae_model_set_tensor";
    int rc = check_tensor_arg(fn, m, which, src, "src", count);
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, "src", src, count);
    if (rc != SAE_OK)
        return rc;
    const size_t size = count;
    if (which == SAE_THRESHOLD && m->arch == SAE_ARCH_JUMPRELU) {
        /* thresholds are trained as logarithms: [1e-30, 1e30], as at creation,
         * keeps exp(log theta) finite and the model savable */
        for (size_t i = 0; i < size; i++)
            if (!(src[i] >= 1e-30f && src[i] <= 1e30f))
                return sae__fail(SAE_E_INVALID_ARG, "%s: threshold src[%zu] = %g is not in "
                                 "[1e-30, 1e30]", fn, i, (double)src[i]);
    }
    switch (which) {
    case SAE_W_ENC: transpose(src, m->d_in, m->d_sae, sae__w_enc_t(m)); break;
    case SAE_W_DEC: memcpy(sae__w_dec(m), src, size * sizeof(float)); break;
    case SAE_B_ENC: memcpy(sae__b_enc(m), src, size * sizeof(float)); break;
    case SAE_B_DEC: memcpy(sae__b_dec(m), src, size * sizeof(float)); break;
    case SAE_THRESHOLD:
        if (sae__batch_selected(m->arch))
            m->batch_threshold = src[0];
        else
            for (size_t i = 0; i < size; i++)
                sae__log_thr(m)[i] = logf(src[i]);
        break;
    case SAE_W_SKIP: memcpy(sae__w_skip(m), src, size * sizeof(float)); break;
    case SAE_B_MAG: memcpy(sae__b_mag(m), src, size * sizeof(float)); break;
    case SAE_R_MAG: memcpy(sae__r_mag(m), src, size * sizeof(float)); break;
    }
    sae__model_refresh_absmax(m);
    return SAE_OK;
}
