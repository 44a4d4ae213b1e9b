/*
 * Input normalisation and b_dec from data:
 * - the input scale against hand-computed values and its defining property;
 * - folding: the folded model on raw x against the trained model on s x,
 *   exactly (bit for bit) for a power-of-two s, and within bounds derived
 *   from float rounding for any s;
 * - b_dec = mean (exact on dyadic data) and geometric median, against a
 *   brute-force minimisation of the sum of distances (coarse-to-fine grid
 *   search) in 2-D and 3-D, collinear points, points on the iterate, data
 *   points that are the median, and against the optimality condition in 16-D;
 * - every bad input (status, nothing changed) and every allocation failure.
 */
#include "nomem.h"
#include "testutil.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double unit_roundoff = FLT_EPSILON / 2; /* 2^-24 */

/* ---- input scale ------------------------------------------------------------ */

START_TEST(input_scale_matches_hand_computed_values)
{
    /* mean squared norm (25 + 0) / 2 = 12.5: s = sqrt(2 / 12.5) = 0.4 */
    const float x[4] = {3, 4, 0, 0};
    double s = 0.0;
    ck_assert_int_eq(sae_estimate_input_scale(x, 2, 2, &s), SAE_OK);
    ck_assert_double_eq_tol(s, 0.4, 1e-16);
    /* one token of norm 1 in d_in = 4: s = 2 */
    const float y[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    ck_assert_int_eq(sae_estimate_input_scale(y, 1, 4, &s), SAE_OK);
    ck_assert_double_eq(s, 2.0);

    /* E ||s x||^2 = d_in on random data */
    const size_t n = 300, d_in = 24;
    float *data = test_gaussian(n, d_in, 7.5, 1.25, 5);
    ck_assert_int_eq(sae_estimate_input_scale(data, n, d_in, &s), SAE_OK);
    double mean = 0.0;
    for (size_t k = 0; k < n * d_in; k++)
        mean += pow(s * data[k], 2);
    mean /= (double)n;
    ck_assert_double_eq_tol(mean, (double)d_in, 1e-12 * d_in);
    free(data);
}
END_TEST

START_TEST(input_scale_rejects_bad_input)
{
    float x[6] = {1, 2, 3, 4, 5, 6};
    const float zeros[6] = {0};
    double s = -7.0;
    ck_assert_int_eq(sae_estimate_input_scale(NULL, 2, 3, &s), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_estimate_input_scale(x, 2, 3, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_estimate_input_scale(x, 0, 3, &s), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_estimate_input_scale(x, 2, 0, &s), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_estimate_input_scale(x, SIZE_MAX / 2, 3, &s), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_estimate_input_scale(x, SIZE_MAX / 4, 2, &s), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_estimate_input_scale(zeros, 2, 3, &s), SAE_E_INVALID_ARG);
    x[5] = NAN;
    ck_assert_int_eq(sae_estimate_input_scale(x, 2, 3, &s), SAE_E_NONFINITE);
    x[5] = INFINITY;
    ck_assert_int_eq(sae_estimate_input_scale(x, 2, 3, &s), SAE_E_NONFINITE);
    ck_assert_double_eq(s, -7.0);
}
END_TEST

/* ---- folding ------------------------------------------------------------------ */

/* A model with every tensor random and biases large enough that some features
 * are active and some are not. */
static sae_model *random_model(size_t d_in, size_t d_sae, uint64_t seed)
{
    static const double sd[4] = {0.3, 0.5, 0.3, 0.5}; /* W_enc, b_enc, W_dec, b_dec */
    return test_random_model(SAE_ARCH_RELU, 0.0, d_in, d_sae, seed, sd);
}

static sae_model *copy_model(const sae_model *src)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_clone(&m, src), SAE_OK);
    return m;
}

static float *tensor(const sae_model *m, int which)
{
    size_t count = sae_model_tensor_size(m, which);
    float *buf = malloc(count * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, which, buf, count), SAE_OK);
    return buf;
}

/* The trained model on s x and the folded one on raw x: the features
 * (n x d_sae) and reconstructions (n x d_in) of each. */
typedef struct fold_runs {
    float *f_t, *f_f, *xh_t, *xh_f;
} fold_runs;

static fold_runs run_both(const sae_model *trained, const sae_model *folded, const float *x,
                          size_t n, double s)
{
    const size_t d_in = sae_model_d_in(trained), d_sae = sae_model_d_sae(trained);
    float *sx = malloc(n * d_in * sizeof(float));
    for (size_t k = 0; k < n * d_in; k++)
        sx[k] = (float)(s * x[k]);
    fold_runs r = {malloc(n * d_sae * sizeof(float)), malloc(n * d_sae * sizeof(float)),
                   malloc(n * d_in * sizeof(float)), malloc(n * d_in * sizeof(float))};
    ck_assert_int_eq(sae_encode(trained, sx, n, r.f_t), SAE_OK);
    ck_assert_int_eq(sae_encode(folded, x, n, r.f_f), SAE_OK);
    ck_assert_int_eq(sae_decode(trained, r.f_t, n, r.xh_t), SAE_OK);
    ck_assert_int_eq(sae_decode(folded, r.f_f, n, r.xh_f), SAE_OK);
    free(sx);
    return r;
}

static void fold_runs_free(fold_runs *r)
{
    free(r->f_t);
    free(r->f_f);
    free(r->xh_t);
    free(r->xh_f);
}

/* The trained model on s x and the folded one on raw x, for a power of two:
 * scaling by 2^k commutes with every float rounding, so the features are the
 * same bits and the folded reconstruction times s is the trained one. */
START_TEST(fold_is_exact_for_a_power_of_two)
{
    const size_t d_in = 10, d_sae = 24, n = 40;
    const double s = 4.0;
    sae_model *trained = random_model(d_in, d_sae, 100);
    sae_model *folded = copy_model(trained);
    ck_assert_int_eq(sae_model_fold_input_scale(folded, s), SAE_OK);
    float *x = test_gaussian(n, d_in, 1.0, 0.1, 7);
    fold_runs runs = run_both(trained, folded, x, n, s);
    const float *f_t = runs.f_t, *f_f = runs.f_f, *xh_t = runs.xh_t, *xh_f = runs.xh_f;
    ck_assert_mem_eq(f_t, f_f, n * d_sae * sizeof(float));
    size_t active = 0;
    for (size_t k = 0; k < n * d_sae; k++)
        active += f_t[k] > 0.0f;
    ck_assert_uint_gt(active, n * d_sae / 8); /* not a vacuous comparison */
    ck_assert_uint_lt(active, n * d_sae);
    for (size_t k = 0; k < n * d_in; k++)
        ck_assert_msg(xh_f[k] * (float)s == xh_t[k], "x_hat %zu: %a * 4 != %a", k, xh_f[k],
                      xh_t[k]);
    /* the weights themselves: W_enc * 4, b_enc as it was, W_dec / 4, b_dec / 4 */
    float *a[4], *b[4];
    for (int w = 0; w < 4; w++) {
        a[w] = tensor(trained, w);
        b[w] = tensor(folded, w);
    }
    for (size_t k = 0; k < d_in * d_sae; k++) {
        ck_assert(b[SAE_W_ENC][k] == a[SAE_W_ENC][k] * 4.0f);
        ck_assert(b[SAE_W_DEC][k] == a[SAE_W_DEC][k] / 4.0f);
    }
    ck_assert_mem_eq(b[SAE_B_ENC], a[SAE_B_ENC], d_sae * sizeof(float));
    for (size_t j = 0; j < d_in; j++)
        ck_assert(b[SAE_B_DEC][j] == a[SAE_B_DEC][j] / 4.0f);
    /* a scale of 1 changes nothing */
    model_snapshot snap;
    snapshot_take(&snap, trained);
    ck_assert_int_eq(sae_model_fold_input_scale(trained, 1.0), SAE_OK);
    ck_assert(snapshot_equal(&snap, trained));
    snapshot_free(&snap);
    for (int w = 0; w < 4; w++) {
        free(a[w]);
        free(b[w]);
    }
    fold_runs_free(&runs);
    free(x);
    sae_model_free(trained);
    sae_model_free(folded);
}
END_TEST

/* Any scale (here the estimate of a sample): the two computations differ only
 * by float rounding. Both pre-activations approximate the exact
 *     P_ti = sum_j (s x_tj - b_dec_j) W_enc_ji + b_enc_i
 * within (d_in + 4) u M_ti, M_ti = sum_j (|s x_tj| + |b_dec_j|) |W_enc_ji| +
 * |b_enc_i| (u = 2^-24: the d_in-term dot product plus the rounding of s x,
 * of x - b_dec / s, of b_dec / s and of s W_enc), so the features differ by at
 * most 2 (d_in + 5) u M_ti (ReLU is 1-Lipschitz; one extra u of slack for
 * second-order terms). The reconstructions of x differ by the rounding of the
 * two decoders, (d_sae + 3) u (sum_i |f_ti W_dec_ij| + |b_dec_j|) / s each,
 * plus the feature differences carried through W_dec / s. */
START_TEST(fold_matches_the_trained_model_within_rounding)
{
    const size_t d_in = 16, d_sae = 40, n = 60;
    const double u = unit_roundoff;
    float *x = test_gaussian(n, d_in, 3.7, 0.2, 9);
    double s;
    ck_assert_int_eq(sae_estimate_input_scale(x, n, d_in, &s), SAE_OK);
    ck_assert_double_ne(s, exp2(round(log2(s)))); /* not a power of two */
    sae_model *trained = random_model(d_in, d_sae, 200);
    sae_model *folded = copy_model(trained);
    ck_assert_int_eq(sae_model_fold_input_scale(folded, s), SAE_OK);
    fold_runs runs = run_both(trained, folded, x, n, s);
    const float *f_t = runs.f_t, *f_f = runs.f_f, *xh_t = runs.xh_t, *xh_f = runs.xh_f;
    float *w_enc = tensor(trained, SAE_W_ENC), *b_enc = tensor(trained, SAE_B_ENC);
    float *w_dec = tensor(trained, SAE_W_DEC), *b_dec = tensor(trained, SAE_B_DEC);
    double *tol_f = malloc(d_sae * sizeof(double));
    double worst_f = 0.0, worst_x = 0.0, max_tol = 0.0, max_x = 0.0;
    size_t active = 0;
    for (size_t t = 0; t < n; t++) {
        for (size_t i = 0; i < d_sae; i++) {
            double mag = fabs(b_enc[i]);
            for (size_t j = 0; j < d_in; j++)
                mag += (fabs(s * x[t * d_in + j]) + fabs(b_dec[j])) * fabs(w_enc[j * d_sae + i]);
            tol_f[i] = 2.0 * (double)(d_in + 5) * u * mag;
            double diff = fabs((double)f_t[t * d_sae + i] - f_f[t * d_sae + i]);
            worst_f = fmax(worst_f, diff / tol_f[i]);
            active += f_t[t * d_sae + i] > 0.0f;
        }
        for (size_t j = 0; j < d_in; j++) {
            double mag = fabs(b_dec[j]), carried = 0.0;
            for (size_t i = 0; i < d_sae; i++) {
                double fmag = fmax(fabs(f_t[t * d_sae + i]), fabs(f_f[t * d_sae + i]));
                mag += fmag * fabs(w_dec[i * d_in + j]);
                carried += tol_f[i] * fabs(w_dec[i * d_in + j]);
            }
            double want = xh_t[t * d_in + j] / s;
            double tol = (2.0 * (double)(d_sae + 3) * u * mag + carried) / s + u * fabs(want);
            worst_x = fmax(worst_x, fabs(want - xh_f[t * d_in + j]) / tol);
            max_tol = fmax(max_tol, tol);
            max_x = fmax(max_x, fabs(want));
        }
    }
    printf("fold with s = %.6f: worst feature error %.3f of its bound, worst reconstruction "
           "error %.3f of its bound (bounds up to %.1e of max |x_hat|)\n",
           s, worst_f, worst_x, max_tol / max_x);
    ck_assert_double_le(worst_f, 1.0);
    ck_assert_double_le(worst_x, 1.0);
    ck_assert_double_lt(max_tol, 1e-4 * max_x); /* tight enough to mean something */
    ck_assert_uint_gt(active, n * d_sae / 8);

    /* folding back with 1 / s restores the weights up to two roundings */
    ck_assert_int_eq(sae_model_fold_input_scale(folded, 1.0 / s), SAE_OK);
    for (int w = 0; w < 4; w++) {
        float *a = tensor(trained, w), *b = tensor(folded, w);
        for (size_t k = 0; k < sae_model_tensor_size(trained, w); k++)
            ck_assert_double_le(fabs((double)a[k] - b[k]), 2.5 * u * fabs(a[k]));
        free(a);
        free(b);
    }
    free(tol_f);
    free(w_enc);
    free(b_enc);
    free(w_dec);
    free(b_dec);
    fold_runs_free(&runs);
    free(x);
    sae_model_free(trained);
    sae_model_free(folded);
}
END_TEST

START_TEST(fold_rejects_bad_input_and_changes_nothing)
{
    sae_model *m = random_model(4, 6, 300);
    model_snapshot snap;
    snapshot_take(&snap, m);
    ck_assert_int_eq(sae_model_fold_input_scale(NULL, 2.0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_fold_input_scale(m, 0.0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_fold_input_scale(m, -2.0), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_fold_input_scale(m, NAN), SAE_E_NONFINITE);
    ck_assert_int_eq(sae_model_fold_input_scale(m, INFINITY), SAE_E_NONFINITE);
    /* W_enc * 1e38 overflows for entries above 3.4 (one is set to 4); W_dec /
     * 1e-44 overflows for any entry above 3.4e-6 */
    float w_enc[24];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, w_enc, 24), SAE_OK);
    w_enc[23] = 4.0f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_W_ENC, w_enc, 24), SAE_OK);
    snapshot_free(&snap);
    snapshot_take(&snap, m);
    ck_assert_int_eq(sae_model_fold_input_scale(m, 1e38), SAE_E_NONFINITE);
    ck_assert(snapshot_equal(&snap, m));
    ck_assert_int_eq(sae_model_fold_input_scale(m, 1e-44), SAE_E_NONFINITE);
    ck_assert(snapshot_equal(&snap, m));
    snapshot_free(&snap);
    sae_model_free(m);
}
END_TEST

/* ---- b_dec from data --------------------------------------------------------------- */

static double objective(const float *x, size_t n, size_t d, const double *y)
{
    double sum = 0.0;
    for (size_t t = 0; t < n; t++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++)
            s += pow((double)x[t * d + j] - y[j], 2);
        sum += sqrt(s);
    }
    return sum;
}

/* Direct minimisation of the (convex) sum of distances, d <= 3: a grid of
 * 2G+1 points per dimension over the bounding box, then again on a grid four
 * times finer centred on the best point, until the grid spacing is below
 * 1e-12 of the box. */
static void brute_force_median(const float *x, size_t n, size_t d, double *best)
{
    const int G = d == 3 ? 10 : 25;
    double lo[3], hi[3], center[3], half = 0.0;
    for (size_t j = 0; j < d; j++) {
        lo[j] = INFINITY;
        hi[j] = -INFINITY;
        for (size_t t = 0; t < n; t++) {
            lo[j] = fmin(lo[j], x[t * d + j]);
            hi[j] = fmax(hi[j], x[t * d + j]);
        }
        center[j] = (lo[j] + hi[j]) / 2;
        half = fmax(half, (hi[j] - lo[j]) / 2);
    }
    const double box = half;
    while (half > 1e-12 * box) {
        int k[3] = {-G, -G, -G};
        double y[3], new_center[3];
        memcpy(new_center, center, sizeof center);
        double best_val = objective(x, n, d, center);
        for (;;) {
            for (size_t j = 0; j < d; j++)
                y[j] = center[j] + half * k[j] / G;
            double v = objective(x, n, d, y);
            if (v < best_val) {
                best_val = v;
                memcpy(new_center, y, sizeof y);
            }
            size_t j = 0;
            while (j < d && ++k[j] > G)
                k[j++] = -G;
            if (j == d)
                break;
        }
        memcpy(center, new_center, sizeof center);
        half /= 4;
    }
    memcpy(best, center, d * sizeof(double));
}

static void lib_b_dec(const float *x, size_t n, size_t d, int method, double *y)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create(&m, d, 3, 1), SAE_OK);
    model_snapshot before;
    snapshot_take(&before, m);
    ck_assert_int_eq(sae_model_init_b_dec(m, x, n, method), SAE_OK);
    float b[16];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, b, d), SAE_OK);
    for (size_t j = 0; j < d; j++)
        y[j] = b[j];
    /* only b_dec changed */
    for (int w = 0; w < 3; w++) {
        float *now = tensor(m, w);
        ck_assert_mem_eq(now, before.tensors[w], sae_model_tensor_size(m, w) * sizeof(float));
        free(now);
    }
    snapshot_free(&before);
    sae_model_free(m);
}

/* The library's median against the brute-force one: the objective at the
 * library's (float) result is no worse, up to the float rounding of the
 * result; with unique_point, the points agree too. */
static void check_against_brute_force(const char *name, const float *x, size_t n, size_t d,
                                      bool unique_point)
{
    double lib[3], brute[3];
    lib_b_dec(x, n, d, SAE_B_DEC_GEOMETRIC_MEDIAN, lib);
    brute_force_median(x, n, d, brute);
    double f_lib = objective(x, n, d, lib), f_brute = objective(x, n, d, brute);
    double dist = 0.0, scale = 0.0;
    for (size_t j = 0; j < d; j++) {
        dist += pow(lib[j] - brute[j], 2);
        scale = fmax(scale, fabs(brute[j]));
    }
    dist = sqrt(dist);
    printf("%s: library %.9g, brute force %.9g, distance %.2g\n", name, f_lib, f_brute, dist);
    ck_assert_double_le(f_lib, f_brute + 1e-6 * f_brute);
    if (unique_point)
        ck_assert_double_le(dist, 1e-5 * (1.0 + scale));
}

START_TEST(geometric_median_matches_brute_force_2d_3d)
{
    /* 2-D: seven scattered points */
    float *a = test_gaussian(7, 2, 1.0, 0.0, 21);
    check_against_brute_force("2-D, 7 points", a, 7, 2, true);
    free(a);
    /* 2-D: a cluster and an outlier far away (the mean would be dragged off) */
    float b[2 * 21];
    float *cluster = test_gaussian(20, 2, 0.5, 1.0, 22);
    memcpy(b, cluster, sizeof(float) * 40);
    b[40] = 1000.0f;
    b[41] = 1000.0f;
    free(cluster);
    check_against_brute_force("2-D, cluster + outlier", b, 21, 2, true);
    double med[2], mean[2];
    lib_b_dec(b, 21, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, med);
    lib_b_dec(b, 21, 2, SAE_B_DEC_MEAN, mean);
    ck_assert_double_lt(fabs(med[0] - 1.0), 1.0);
    ck_assert_double_gt(mean[0], 40.0);
    /* 3-D: nine points, and an even number of them */
    float *c = test_gaussian(9, 3, 2.0, -1.0, 23);
    check_against_brute_force("3-D, 9 points", c, 9, 3, true);
    check_against_brute_force("3-D, 8 points", c, 8, 3, true);
    free(c);
    /* 3-D: four points of a regular tetrahedron plus its centre */
    const float tet[15] = {1, 1, 1, 1, -1, -1, -1, 1, -1, -1, -1, 1, 0.25f, 0.25f, 0.25f};
    check_against_brute_force("3-D, tetrahedron", tet, 4, 3, true);
    check_against_brute_force("3-D, tetrahedron + inner point", tet, 5, 3, true);
}
END_TEST

START_TEST(geometric_median_of_collinear_and_degenerate_sets)
{
    double y[3];
    /* an odd number of points on a line in 3-D, unevenly spaced: the middle
     * one (t = 0.5), exactly */
    const double ts[5] = {-3, 10, 0.5, -1, 2};
    float line[15];
    for (int k = 0; k < 5; k++)
        for (int j = 0; j < 3; j++)
            line[k * 3 + j] = (float)((j == 0 ? 1.0 : j == 1 ? 2.0 : -2.0) / 3.0 * ts[k] + j);
    lib_b_dec(line, 5, 3, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    for (int j = 0; j < 3; j++)
        ck_assert_msg(y[j] == line[2 * 3 + j], "coordinate %d: %a, want %a", j, y[j],
                      line[2 * 3 + j]);
    check_against_brute_force("3-D, 5 collinear points", line, 5, 3, true);
    /* an even number on a line: every point between the middle two is a
     * median; the objective must still be the minimum */
    check_against_brute_force("3-D, 4 collinear points", line, 4, 3, false);
    const float even[8] = {0, 0, 1, 0, 2, 0, 10, 0};
    lib_b_dec(even, 4, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    ck_assert_double_ge(y[0], 1.0 - 1e-6);
    ck_assert_double_le(y[0], 2.0 + 1e-6);
    ck_assert_double_eq_tol(y[1], 0.0, 1e-6);
    ck_assert_double_eq_tol(objective(even, 4, 2, y), 11.0, 1e-5);

    /* the first iterate (the mean) is a data point and the median: Weiszfeld's
     * plain step would divide 0 by 0 there */
    const float sym[6] = {-1, 0, 0, 0, 1, 0};
    lib_b_dec(sym, 3, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    ck_assert(y[0] == 0.0 && y[1] == 0.0);
    /* the mean is a data point but not the median (five points at (-1, 0)
     * outweigh it): the Vardi-Zhang step must move off it */
    const float off[14] = {0, 0, -1, 0, -1, 0, -1, 0, -1, 0, -1, 0, 5, 0};
    lib_b_dec(off, 7, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    ck_assert(y[0] == -1.0 && y[1] == 0.0);
    /* repeated points that form the median */
    const float dup[10] = {0, 0, 0, 0, 0, 0, 1, 0, 0, 1};
    lib_b_dec(dup, 5, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    ck_assert(y[0] == 0.0 && y[1] == 0.0);
    /* all points equal, and a single point */
    const float same[6] = {2.5f, -1, 2.5f, -1, 2.5f, -1};
    lib_b_dec(same, 3, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    ck_assert(y[0] == 2.5 && y[1] == -1.0);
    lib_b_dec(same, 1, 2, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    ck_assert(y[0] == 2.5 && y[1] == -1.0);
}
END_TEST

/* In 16-D the median is characterised by its optimality condition: the sum
 * of the unit vectors from it to the points vanishes (none is a data point
 * here). Its size is bounded by the float rounding of the result. */
START_TEST(geometric_median_is_optimal_in_16d)
{
    const size_t n = 200, d = 16;
    float *x = test_gaussian(n, d, 1.0, 0.5, 31);
    for (size_t t = 0; t < 10; t++) /* a few wild points */
        for (size_t j = 0; j < d; j++)
            x[t * d + j] *= 50.0f;
    double y[16], grad[16] = {0}, min_dist = INFINITY;
    lib_b_dec(x, n, d, SAE_B_DEC_GEOMETRIC_MEDIAN, y);
    for (size_t t = 0; t < n; t++) {
        double dist = 0.0;
        for (size_t j = 0; j < d; j++)
            dist += pow(y[j] - x[t * d + j], 2);
        dist = sqrt(dist);
        min_dist = fmin(min_dist, dist);
        for (size_t j = 0; j < d; j++)
            grad[j] += (y[j] - x[t * d + j]) / dist;
    }
    double g = 0.0, ymax = 0.0;
    for (size_t j = 0; j < d; j++) {
        g += grad[j] * grad[j];
        ymax = fmax(ymax, fabs(y[j]));
    }
    g = sqrt(g);
    /* moving y by its rounding (|dy| <= u |y| per coordinate) changes each
     * unit vector by at most 2 |dy| / dist */
    double bound = (double)n * 2.0 * sqrt((double)d) * unit_roundoff * ymax / min_dist * 4.0;
    printf("16-D median: |sum of unit vectors| %.3g (bound %.3g, n = %zu)\n", g, bound, n);
    ck_assert_double_le(g, bound);
    ck_assert_double_lt(bound, 0.01 * (double)n);
    free(x);
}
END_TEST

START_TEST(mean_is_exact)
{
    /* dyadic values: the double sums and the division by 4 are exact */
    const float x[12] = {1.5f, -2, 0.25f, 3, 8, -0.5f, -1, 4.75f, 1, 0.5f, 0, 2};
    double y[3];
    lib_b_dec(x, 4, 3, SAE_B_DEC_MEAN, y);
    ck_assert(y[0] == (1.5 + 3 - 1 + 0.5) / 4);
    ck_assert(y[1] == (-2 + 8 + 4.75 + 0) / 4);
    ck_assert(y[2] == (0.25 - 0.5 + 1 + 2) / 4);
    /* random data: the double mean rounded once */
    const size_t n = 333, d = 5;
    float *r = test_gaussian(n, d, 2.0, 1.0, 41);
    double z[5];
    lib_b_dec(r, n, d, SAE_B_DEC_MEAN, z);
    for (size_t j = 0; j < d; j++) {
        double want = 0.0;
        for (size_t t = 0; t < n; t++)
            want += r[t * d + j];
        want /= (double)n;
        ck_assert(z[j] == (double)(float)want);
    }
    free(r);
}
END_TEST

START_TEST(init_b_dec_rejects_bad_input_and_changes_nothing)
{
    sae_model *m = random_model(3, 4, 400);
    float x[6] = {1, 2, 3, 4, 5, 6};
    model_snapshot snap;
    snapshot_take(&snap, m);
    for (int method = 0; method < 2; method++) {
        ck_assert_int_eq(sae_model_init_b_dec(NULL, x, 2, method), SAE_E_INVALID_ARG);
        ck_assert_int_eq(sae_model_init_b_dec(m, NULL, 2, method), SAE_E_INVALID_ARG);
        ck_assert_int_eq(sae_model_init_b_dec(m, x, 0, method), SAE_E_INVALID_ARG);
        ck_assert_int_eq(sae_model_init_b_dec(m, x, SIZE_MAX / 2, method), SAE_E_INVALID_ARG);
        x[4] = NAN;
        ck_assert_int_eq(sae_model_init_b_dec(m, x, 2, method), SAE_E_NONFINITE);
        x[4] = -INFINITY;
        ck_assert_int_eq(sae_model_init_b_dec(m, x, 2, method), SAE_E_NONFINITE);
        x[4] = 5;
    }
    ck_assert_int_eq(sae_model_init_b_dec(m, x, 2, 2), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_init_b_dec(m, x, 2, -1), SAE_E_INVALID_ARG);
    ck_assert(snapshot_equal(&snap, m));
    snapshot_free(&snap);
    sae_model_free(m);
}
END_TEST

typedef struct nomem_ctx {
    sae_model *m;
    const float *x;
    size_t n;
    int method;
    model_snapshot snap;
} nomem_ctx;

static int call_init_b_dec(void *p)
{
    nomem_ctx *c = p;
    return sae_model_init_b_dec(c->m, c->x, c->n, c->method);
}

static void unchanged(void *p)
{
    nomem_ctx *c = p;
    ck_assert(snapshot_equal(&c->snap, c->m));
}

START_TEST(init_b_dec_fails_cleanly_at_every_allocation)
{
    nomem_ctx c;
    c.x = test_gaussian(20, 3, 1.0, 0.0, 5);
    c.n = 20;
    for (c.method = 0; c.method < 2; c.method++) {
        c.m = random_model(3, 4, 500);
        snapshot_take(&c.snap, c.m);
        ck_assert_int_eq(nomem_fail_each_allocation(call_init_b_dec, &c, unchanged), 1);
        snapshot_free(&c.snap);
        sae_model_free(c.m);
    }
    free((float *)c.x);
}
END_TEST

static Suite *recipe_suite(void)
{
    Suite *s = suite_create("recipe");
    TCase *norm = tcase_create("normalisation");
    tcase_set_timeout(norm, 120);
    tcase_add_test(norm, input_scale_matches_hand_computed_values);
    tcase_add_test(norm, input_scale_rejects_bad_input);
    tcase_add_test(norm, fold_is_exact_for_a_power_of_two);
    tcase_add_test(norm, fold_matches_the_trained_model_within_rounding);
    tcase_add_test(norm, fold_rejects_bad_input_and_changes_nothing);
    suite_add_tcase(s, norm);
    TCase *bdec = tcase_create("b_dec");
    tcase_set_timeout(bdec, 120);
    tcase_add_test(bdec, geometric_median_matches_brute_force_2d_3d);
    tcase_add_test(bdec, geometric_median_of_collinear_and_degenerate_sets);
    tcase_add_test(bdec, geometric_median_is_optimal_in_16d);
    tcase_add_test(bdec, mean_is_exact);
    tcase_add_test(bdec, init_b_dec_rejects_bad_input_and_changes_nothing);
    tcase_add_test(bdec, init_b_dec_fails_cleanly_at_every_allocation);
    suite_add_tcase(s, bdec);
    return s;
}

TEST_MAIN(recipe_suite)
