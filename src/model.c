/*
 * The model: creation with the April 2024 initialisation, the parameter block
 * and its views, and tensor get/set in SAELens's layout.
 */
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* Round a float count up to the next 64-byte boundary. */
static bool round_up_floats(size_t n, size_t *out)
{
    size_t padded;
    if (!sae__add(n, SAE_ALIGN_FLOATS - 1, &padded))
        return false;
    *out = padded / SAE_ALIGN_FLOATS * SAE_ALIGN_FLOATS;
    return true;
}

bool sae__layout_init(sae_layout *lay, size_t d_in, size_t d_sae, bool with_thresholds)
{
    size_t matrix, matrix_padded, b_enc_padded, b_dec_padded, total, bytes;
    if (!sae__mul(d_in, d_sae, &matrix) || !round_up_floats(matrix, &matrix_padded) ||
        !round_up_floats(d_sae, &b_enc_padded) || !round_up_floats(d_in, &b_dec_padded))
        return false;
    lay->w_enc_t = 0;
    lay->w_dec = matrix_padded;
    if (!sae__add(matrix_padded, matrix_padded, &total))
        return false;
    lay->b_enc = total;
    if (!sae__add(total, b_enc_padded, &total))
        return false;
    lay->b_dec = total;
    if (!sae__add(total, b_dec_padded, &total))
        return false;
    lay->log_thr = total;
    lay->log_thr_count = with_thresholds ? d_sae : 0;
    if (with_thresholds && !sae__add(total, b_enc_padded, &total))
        return false;
    if (!sae__mul(total, sizeof(float), &bytes))
        return false;
    /* Leave headroom so several parameter-sized buffers can be summed safely. */
    if (bytes > SIZE_MAX / 8)
        return false;
    lay->total = total;
    return true;
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

/* One random direction of L2 norm 0.1 in each row, from an independent stream
 * per row, numbered by the feature's index in the whole model (so rows could
 * be drawn in any order or in parallel, and a shard draws exactly its rows). */
static void init_decoder_rows(sae_model *m, uint64_t seed)
{
    float *w_dec = sae__w_dec(m);
    for (size_t i = 0; i < m->d_sae; i++) {
        float *row = w_dec + i * m->d_in;
        sae_rng rng;
        sae_rng_seed(&rng, seed, (uint64_t)(m->shard_begin + i));
        double sum;
        do {
            sum = 0.0;
            for (size_t j = 0; j < m->d_in; j++) {
                double z = sae_rng_normal(&rng);
                row[j] = (float)z;
                sum += (double)row[j] * row[j];
            }
        } while (sum == 0.0);
        double scale = 0.1 / sqrt(sum);
        for (size_t j = 0; j < m->d_in; j++)
            row[j] = (float)(row[j] * scale);
    }
}

int sae__model_create(sae_model **out, size_t d_in, size_t d_sae, size_t begin, size_t end,
                      uint64_t seed, int arch, double param)
{
    if (!out)
        return SAE_E_INVALID_ARG;
    *out = NULL;
    sae_layout lay;
    /* CBLAS takes dimensions as int. */
    if (d_in == 0 || d_sae == 0 || d_in > INT_MAX || d_sae > INT_MAX || begin >= end ||
        end > d_sae || !sae__layout_init(&lay, d_in, end - begin, arch == SAE_ARCH_JUMPRELU))
        return SAE_E_INVALID_ARG;
    if (!isfinite(param))
        return SAE_E_NONFINITE;
    size_t k = 0;
    switch (arch) {
    case SAE_ARCH_RELU:
        if (param != 0.0)
            return SAE_E_INVALID_ARG;
        break;
    case SAE_ARCH_TOPK:
    case SAE_ARCH_BATCHTOPK:
        if (param < 1.0 || param > (double)d_sae || param != floor(param))
            return SAE_E_INVALID_ARG;
        k = (size_t)param;
        break;
    case SAE_ARCH_JUMPRELU:
        /* log(theta) must be a finite float */
        if (!(param >= 1e-30 && param <= 1e30))
            return SAE_E_INVALID_ARG;
        break;
    default:
        return SAE_E_INVALID_ARG;
    }
    sae_model *m = sae__alloc_zero(sizeof *m);
    if (!m)
        return SAE_E_NOMEM;
    m->d_in = d_in;
    m->d_sae = end - begin;
    m->shard_begin = begin;
    m->d_sae_total = d_sae;
    m->arch = arch;
    m->k = k;
    m->batch_threshold = -1.0f;
    m->lay = lay;
    m->params = sae__alloc_zero(lay.total * sizeof(float));
    if (!m->params) {
        sae__free(m);
        return SAE_E_NOMEM;
    }
    init_decoder_rows(m, seed);
    /* W_enc = W_dec^T, and the model stores W_enc transposed: a plain copy. */
    memcpy(sae__w_enc_t(m), sae__w_dec(m), d_in * m->d_sae * sizeof(float));
    float log_theta = (float)log(param);
    for (size_t i = 0; i < lay.log_thr_count; i++)
        sae__log_thr(m)[i] = log_theta;
    sae__model_refresh_absmax(m);
    *out = m;
    return SAE_OK;
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
    switch (which) {
    case SAE_W_ENC:
    case SAE_W_DEC: return m->d_in * m->d_sae; /* cannot overflow: checked at create */
    case SAE_B_ENC: return m->d_sae;
    case SAE_B_DEC: return m->d_in;
    case SAE_THRESHOLD:
        return m->arch == SAE_ARCH_JUMPRELU ? m->d_sae : m->arch == SAE_ARCH_BATCHTOPK ? 1 : 0;
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
    static const char *const names[] = {"SAE_W_ENC", "SAE_B_ENC", "SAE_W_DEC", "SAE_B_DEC",
                                        "SAE_THRESHOLD"};
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
        if (m->arch == SAE_ARCH_BATCHTOPK)
            dst[0] = m->batch_threshold;
        else
            for (size_t i = 0; i < size; i++)
                dst[i] = expf(sae__log_thr(m)[i]);
        break;
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
        if (m->arch == SAE_ARCH_BATCHTOPK)
            m->batch_threshold = src[0];
        else
            for (size_t i = 0; i < size; i++)
                sae__log_thr(m)[i] = logf(src[i]);
        break;
    }
    sae__model_refresh_absmax(m);
    return SAE_OK;
}
