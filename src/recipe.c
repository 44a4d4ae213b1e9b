/*
 * Data-dependent pieces of the training recipe: the input scale of SAELens's
 * "expected_average_only_in" normalisation and its folding into the weights,
 * and b_dec initialised to the mean or the geometric median of a sample.
 * Everything is computed in double and rounded to float once, when written.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Checks shared by the functions that read a sample x of n_tokens x d_in. */
static int check_sample(const char *fn, const float *x, size_t n_tokens, size_t d_in)
{
    if (d_in == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: d_in is 0", fn);
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", d_in, "d_in", sizeof(float));
    return rc == SAE_OK ? sae__check_finite(fn, "x", x, n_tokens * d_in) : rc;
}

/* ---- input normalisation ------------------------------------------------- */

int sae_estimate_input_scale(const float *x, size_t n_tokens, size_t d_in, double *scale)
{
    static const char fn[] = "sae_estimate_input_scale";
    if (!scale)
        return sae__fail(SAE_E_INVALID_ARG, "%s: scale is NULL", fn);
    int rc = check_sample(fn, x, n_tokens, d_in);
    if (rc != SAE_OK)
        return rc;
    /* Squares of finite floats are below 2^256 and a double holds the sum of
     * any number of them: no overflow. */
    double sumsq = 0.0;
    for (size_t t = 0; t < n_tokens; t++) {
        const float *row = x + t * d_in;
        double s = 0.0;
        for (size_t j = 0; j < d_in; j++)
            s += (double)row[j] * row[j];
        sumsq += s;
    }
    if (!(sumsq > 0.0)) /* no scale makes E||s x||^2 = d_in */
        return sae__fail(SAE_E_INVALID_ARG, "%s: every token of x is zero", fn);
    double mean = sumsq / (double)n_tokens;
    *scale = sqrt((double)d_in / mean);
    return SAE_OK;
}

/* Each folded value, or false if one of them would not be a finite float. */
static bool fold_values(sae_model *m, double scale, bool write)
{
    /* W_enc's columns read x (d_in), W_dec's rows and b_dec write the output
     * (d_out; a skip transcoder's W_skip maps scaled x to scaled y: unchanged) */
    const size_t enc = m->d_in * m->d_sae, dec = m->d_out * m->d_sae;
    float *w_enc_t = sae__w_enc_t(m), *w_dec = sae__w_dec(m), *b_dec = sae__b_dec(m);
    int bad = 0;
    for (size_t k = 0; k < enc; k++) {
        float e = (float)((double)w_enc_t[k] * scale);
        bad |= e - e != 0.0f;
        if (write)
            w_enc_t[k] = e;
    }
    for (size_t k = 0; k < dec; k++) {
        float d = (float)((double)w_dec[k] / scale);
        bad |= d - d != 0.0f;
        if (write)
            w_dec[k] = d;
    }
    for (size_t j = 0; j < m->d_out; j++) {
        float b = (float)((double)b_dec[j] / scale);
        bad |= b - b != 0.0f;
        if (write)
            b_dec[j] = b;
    }
    return !bad;
}

int sae_model_fold_input_scale(sae_model *m, double scale)
{
    static const char fn[] = "sae_model_fold_input_scale";
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    if (!isfinite(scale))
        return sae__fail(SAE_E_NONFINITE, "%s: scale is %g", fn, scale);
    if (!(scale > 0.0))
        return sae__fail(SAE_E_INVALID_ARG, "%s: scale = %g is not positive", fn, scale);
    /* a dry run first, so an overflow leaves the model as it was */
    if (!fold_values(m, scale, false))
        return sae__fail(SAE_E_NONFINITE, "%s: a weight folded with scale %g would overflow "
                         "float", fn, scale);
    fold_values(m, scale, true);
    sae__model_refresh_absmax(m);
    return SAE_OK;
}

/* ---- b_dec from data ------------------------------------------------------- */

static double distance(const float *xt, const double *y, size_t d_in)
{
    double s = 0.0;
    for (size_t j = 0; j < d_in; j++) {
        double diff = (double)xt[j] - y[j];
        s += diff * diff;
    }
    return sqrt(s);
}

/* The limits of the geometric median's iterations (documented in the header). */
#define GEOMEDIAN_MAX_ITER 1000
#define GEOMEDIAN_REL_TOL 1e-10

/* Around y: r = sum of the unit vectors (x_t - y) / d_t from y to the points
 * x_t != y (d_t = ||x_t - y||), *at = the number of points equal to y, and
 * *w = sum of 1 / d_t over the others. r: d_in doubles. */
static void unit_vector_sum(const float *x, size_t n_tokens, size_t d_in, const double *y,
                            double *r, double *at, double *w)
{
    *at = 0.0;
    *w = 0.0;
    memset(r, 0, d_in * sizeof(double));
    for (size_t t = 0; t < n_tokens; t++) {
        const float *xt = x + t * d_in;
        double d = distance(xt, y, d_in);
        if (d == 0.0) {
            *at += 1.0;
            continue;
        }
        double inv = 1.0 / d;
        *w += inv;
        for (size_t j = 0; j < d_in; j++)
            r[j] += ((double)xt[j] - y[j]) * inv;
    }
}

static double norm2(const double *v, size_t n)
{
    double s = 0.0;
    for (size_t j = 0; j < n; j++)
        s += v[j] * v[j];
    return sqrt(s);
}

/* One Weiszfeld step with the Vardi-Zhang modification, from y. With
 * d_t = ||x_t - y||, the eta points where d_t = 0 left out of the sums,
 *   W = sum_t 1 / d_t,  R = sum_t (x_t - y) / d_t,  T(y) = y + R / W,
 * the plain step is y' = T(y) (eta = 0). At a data point (eta > 0), y is
 * optimal if ||R|| <= eta (0 is then a subgradient of the objective);
 * otherwise y' = y + (1 - eta / ||R||) R / W moves off the point, which is
 * what the unmodified iteration (undefined there) cannot do.
 * Writes R into r (d_in doubles), moves y, and returns the length of the
 * move (0 when y is optimal). */
static double weiszfeld_step(const float *x, size_t n_tokens, size_t d_in, double *y, double *r)
{
    double eta, w;
    unit_vector_sum(x, n_tokens, d_in, y, r, &eta, &w);
    if (w == 0.0)
        return 0.0; /* every point is at y */
    double r_norm = norm2(r, d_in);
    if (r_norm <= eta)
        return 0.0;
    double move = (1.0 - eta / r_norm) / w;
    for (size_t j = 0; j < d_in; j++)
        y[j] += move * r[j];
    return move * r_norm;
}

/* Whether data point xk is a geometric median: ||sum over the points x_t != xk
 * of (x_t - xk) / ||x_t - xk||| <= the number of points equal to xk. */
static bool data_point_optimal(const float *x, size_t n_tokens, size_t d_in, const double *xk,
                               double *r)
{
    double eta, w;
    unit_vector_sum(x, n_tokens, d_in, xk, r, &eta, &w);
    return norm2(r, d_in) <= eta;
}

/* The geometric median of the n_tokens rows of x into y (d_in doubles), with
 * scratch of 2 d_in doubles. */
static void geometric_median(const float *x, size_t n_tokens, size_t d_in, double *y,
                             double *scratch)
{
    double *r = scratch, *point = scratch + d_in;
    sae__mean_rows(x, n_tokens, d_in, y);
    /* the scale of the data: mean distance of the points from their mean */
    double spread = 0.0;
    for (size_t t = 0; t < n_tokens; t++)
        spread += distance(x + t * d_in, y, d_in);
    spread /= (double)n_tokens;
    if (spread == 0.0)
        return; /* all points are equal */
    const double tol = GEOMEDIAN_REL_TOL * spread;
    for (int it = 0; it < GEOMEDIAN_MAX_ITER; it++)
        if (weiszfeld_step(x, n_tokens, d_in, y, r) <= tol)
            break;
    /* Weiszfeld approaches a median that is a data point only in the limit:
     * if the point nearest the result is optimal, take it exactly. */
    size_t nearest = 0;
    double best = INFINITY;
    for (size_t t = 0; t < n_tokens; t++) {
        double d = distance(x + t * d_in, y, d_in);
        if (d < best) {
            best = d;
            nearest = t;
        }
    }
    for (size_t j = 0; j < d_in; j++)
        point[j] = x[nearest * d_in + j];
    if (data_point_optimal(x, n_tokens, d_in, point, r))
        memcpy(y, point, d_in * sizeof(double));
}

int sae_model_init_b_dec(sae_model *m, const float *x, size_t n_tokens, int method)
{
    static const char fn[] = "sae_model_init_b_dec";
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    if (method != SAE_B_DEC_MEAN && method != SAE_B_DEC_GEOMETRIC_MEDIAN)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %d is not a method", fn, method);
    /* a transcoder's b_dec lives in its target's space, not x's */
    int rc = sae__family_check(fn, m, SAE_FAMILY_GATED | SAE_FAMILY_MATRYOSHKA);
    if (rc != SAE_OK)
        return rc;
    rc = check_sample(fn, x, n_tokens, m->d_in);
    if (rc != SAE_OK)
        return rc;
    const size_t d_in = m->d_in;
    /* d_in * 3 doubles: d_in * d_sae floats were checked at model creation */
    double *y = sae__alloc(3 * d_in * sizeof(double));
    if (!y)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for %zu doubles", fn, 3 * d_in);
    if (method == SAE_B_DEC_MEAN)
        sae__mean_rows(x, n_tokens, d_in, y);
    else
        geometric_median(x, n_tokens, d_in, y, y + d_in);
    /* a mean or median of finite floats lies within their range: finite */
    float *b_dec = sae__b_dec(m);
    for (size_t j = 0; j < d_in; j++)
        b_dec[j] = (float)y[j];
    sae__free(y);
    sae__model_refresh_absmax(m);
    return SAE_OK;
}
