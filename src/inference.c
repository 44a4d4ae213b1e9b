/*
 * The read-only calls on a model: sae_encode, sae_decode, sae_loss and
 * sae_fvu, for every architecture, over the forward pass of forward.c.
 * Tokens are processed in blocks of at most SAE_BLOCK_TOKENS, so scratch stays
 * O(block x (d_in + d_sae)); all scratch is allocated per call, so these
 * functions may run concurrently on one model.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

/* The arguments of the three maps from one batch to another (encode, decode,
 * output): a whole model, n_tokens rows of `in` (in_width floats each, all
 * finite) and of `out` (out_width floats each). */
typedef struct map_args {
    const char *in_name, *in_width_name, *out_name, *out_width_name;
    size_t in_width, out_width;
} map_args;

static int check_map(const char *fn, const sae_model *m, const map_args *a, const float *in,
                     size_t n_tokens, const float *out)
{
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    int rc = sae__check_whole(fn, m);
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, a->in_name, in, n_tokens, "n_tokens", a->in_width,
                             a->in_width_name, sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, a->out_name, out, n_tokens, "n_tokens", a->out_width,
                             a->out_width_name, sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_finite(fn, a->in_name, in, n_tokens * a->in_width);
    return rc;
}

/* check_map, then the forward pass of a batch of n_tokens (sae_encode,
 * sae_output) with the given buffers. */
static int start_forward(const char *fn, const sae_model *m, const map_args *a, const float *in,
                         size_t n_tokens, const float *out, unsigned buffers, sae_forward *fw)
{
    int rc = check_map(fn, m, a, in, n_tokens, out);
    if (rc == SAE_OK &&
        (rc = sae__forward_init(fw, m, sae__block_size(n_tokens), buffers)) != SAE_OK)
        sae__fail_context(rc, "%s", fn);
    return rc;
}

int sae_encode(const sae_model *m, const float *x, size_t n_tokens, float *f)
{
    static const char fn[] = "sae_encode";
    const map_args a = {"x", "d_in", "f", "d_sae", m ? m->d_in : 0, m ? m->d_sae : 0};
    sae_forward fw;
    int rc = start_forward(fn, m, &a, x, n_tokens, f, 0, &fw);
    if (rc != SAE_OK)
        return rc;
    /* features that would not be finite are refused before f is written */
    if ((rc = sae__forward_check(&fw, fn, x, n_tokens)) == SAE_OK)
        for (size_t t0 = 0; t0 < n_tokens; t0 += fw.block) {
            size_t rows = sae__block_rows(n_tokens, t0, fw.block);
            sae__forward_encode(&fw, x + t0 * m->d_in, rows, f + t0 * m->d_sae, NULL);
        }
    sae__forward_free(&fw);
    return rc;
}

/* Whether every x_hat of f (n_tokens x d_sae) is provably below 2^126 in
 * magnitude: |x_hat_tj| <= max_t ||f_t||_1 max|W_dec| + max|b_dec|. */
static bool decode_bounded(const sae_model *m, const float *f, size_t n_tokens)
{
    double max_l1 = 0.0;
    for (size_t t = 0; t < n_tokens; t++) {
        double s = 0.0;
        for (size_t i = 0; i < m->d_sae; i++)
            s += fabs((double)f[t * m->d_sae + i]);
        max_l1 = s > max_l1 ? s : max_l1;
    }
    const double p = m->param_absmax;
    return max_l1 * p + p < 0x1p126;
}

/* Whether every output of x (n_tokens x d_in) is provably below 2^126 in
 * magnitude without encoding it. With p = max|parameter| (p e^p for Gated's
 * magnitude scales exp(r_mag)), each feature is at most the pre-activation
 * bound B = (max|x| + p) d_in p + p of sae__forward_check, so
 * |out| <= d_sae B p + p + d_in max|x| p (decoder, b_dec, skip term). */
static bool output_bounded(const sae_model *m, const float *x, size_t n_tokens)
{
    const double p = m->param_absmax * (m->arch == SAE_ARCH_GATED ? exp(m->param_absmax) : 1.0);
    const double x_max = sae__absmax(x, n_tokens * m->d_in);
    const double feature = (x_max + p) * (double)m->d_in * p + p;
    return (double)m->d_sae * feature * p + p + (double)m->d_in * x_max * p < 0x1p126;
}

/* For the bounds' rare failures: SAE_OK if decoding is finite, by a dry run
 * into a block of scratch on the products' backend gemm (the one the call
 * then uses, so it sees the same values). With fw (and its f buffer) src is
 * x, encoded first (its features checked) and decoded with the skip term:
 * sae_output's values; without, src is f: sae_decode's. `what` names the
 * result. */
static int check_by_dry_run(const char *fn, const char *what, const sae_model *m,
                            const sae_gemm_use *gemm, sae_forward *fw, const float *src,
                            size_t n_tokens)
{
    const size_t block = fw ? fw->block : sae__block_size(n_tokens);
    const size_t src_width = fw ? m->d_in : m->d_sae;
    float *out = sae__alloc(block * m->d_out * sizeof(float));
    if (!out)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for a block of %s", fn, what);
    int rc = SAE_OK;
    for (size_t t0 = 0; t0 < n_tokens && rc == SAE_OK; t0 += block) {
        size_t rows = sae__block_rows(n_tokens, t0, block);
        const float *sb = src + t0 * src_width, *f = sb;
        if (fw) {
            if ((rc = sae__forward_encode(fw, sb, rows, fw->f, NULL)) != SAE_OK ||
                (rc = sae__check_features(fn, fw->f, rows, m->d_sae, t0)) != SAE_OK)
                break;
            f = fw->f;
        }
        sae__forward_decode(m, gemm, NULL, f, rows, out);
        if (fw)
            sae__forward_skip(m, sb, rows, out);
        if (!sae__all_finite(out, rows * m->d_out))
            rc = sae__fail(SAE_E_NONFINITE, "%s: %s of tokens %zu..%zu is not finite (the "
                           "model's weights overflow on this input)", fn, what, t0,
                           t0 + rows - 1);
    }
    sae__free(out);
    return rc;
}

int sae_decode(const sae_model *m, const float *f, size_t n_tokens, float *x_hat)
{
    static const char fn[] = "sae_decode";
    const map_args a = {"f", "d_sae", "x_hat", "d_out", m ? m->d_sae : 0, m ? m->d_out : 0};
    int rc = check_map(fn, m, &a, f, n_tokens, x_hat);
    if (rc != SAE_OK)
        return rc;
    /* the product on the default backend; without memory for its context,
     * on CBLAS (sae_decode needs no memory of its own) */
    sae_gemm_use gemm = {NULL, NULL};
    if (sae__gemm_create(&gemm.g, SAE_GEMM_AUTO) != SAE_OK)
        gemm.g = NULL;
    if (!decode_bounded(m, f, n_tokens))
        rc = check_by_dry_run(fn, "x_hat", m, &gemm, NULL, f, n_tokens);
    for (size_t t0 = 0; rc == SAE_OK && t0 < n_tokens; t0 += SAE_BLOCK_TOKENS) {
        size_t rows = sae__block_rows(n_tokens, t0, SAE_BLOCK_TOKENS);
        sae__forward_decode(m, &gemm, NULL, f + t0 * m->d_sae, rows, x_hat + t0 * m->d_out);
    }
    sae__gemm_free(gemm.g);
    return rc;
}

int sae_output(const sae_model *m, const float *x, size_t n_tokens, float *out)
{
    static const char fn[] = "sae_output";
    const map_args a = {"x", "d_in", "out", "d_out", m ? m->d_in : 0, m ? m->d_out : 0};
    sae_forward fw;
    int rc = start_forward(fn, m, &a, x, n_tokens, out, SAE_FORWARD_F, &fw);
    if (rc != SAE_OK)
        return rc;
    /* an output that would not be finite is refused before out is written */
    if (!output_bounded(m, x, n_tokens))
        rc = check_by_dry_run(fn, "the output", m, &fw.gemm, &fw, x, n_tokens);
    for (size_t t0 = 0; rc == SAE_OK && t0 < n_tokens; t0 += fw.block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw.block);
        const float *xb = x + t0 * m->d_in;
        float *ob = out + t0 * m->d_out;
        sae__forward_encode(&fw, xb, rows, fw.f, NULL);
        sae__forward_decode(m, &fw.gemm, NULL, fw.f, rows, ob);
        sae__forward_skip(m, xb, rows, ob);
    }
    sae__forward_free(&fw);
    return rc;
}

/* sum_k (out[k] - target[k])^2 over count values, in double. */
static double squared_error(const float *out, const float *target, size_t count)
{
    double s = 0.0;
    for (size_t k = 0; k < count; k++) {
        double e = (double)out[k] - target[k];
        s += e * e;
    }
    return s;
}

/* The forward pass over the whole batch x with per-call scratch, summing the
 * losses against the target y (x for an autoencoder): the model's output with
 * its skip term, Gated's auxiliary reconstruction through the decoder, and
 * Matryoshka's inner levels. Shared by sae_loss, sae_fvu and their _target
 * forms. */
static int forward_sums(const char *fn, const sae_model *m, const float *x, const float *y,
                        size_t n_tokens, sae_loss_sums *sums)
{
    const size_t d_in = m->d_in, d_out = m->d_out;
    sae_forward fw;
    int rc = sae__forward_init(&fw, m, sae__block_size(n_tokens), SAE_FORWARD_F | SAE_FORWARD_X_HAT);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    memset(sums, 0, sizeof *sums);
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw.block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw.block);
        const float *xb = x + t0 * d_in, *yb = y + t0 * d_out;
        sae__forward_encode(&fw, xb, rows, fw.f, sums);
        if (m->arch == SAE_ARCH_GATED) { /* the auxiliary path: the gate's values decoded */
            sae__forward_decode(m, &fw.gemm, NULL, fw.gate, rows, fw.x_hat);
            sums->extra += squared_error(fw.x_hat, yb, rows * d_out);
        }
        for (size_t lv = 0; lv + 1 < m->n_levels; lv++) { /* Matryoshka's inner levels */
            sae__forward_decode_prefix(m, fw.f, rows, m->widths[lv], fw.x_hat);
            sums->extra += squared_error(fw.x_hat, yb, rows * d_out);
        }
        sae__forward_decode(m, &fw.gemm, NULL, fw.f, rows, fw.x_hat);
        sae__forward_skip(m, xb, rows, fw.x_hat);
        sums->l2 += squared_error(fw.x_hat, yb, rows * d_out);
    }
    sae__forward_free(&fw);
    return SAE_OK;
}

/* sae_loss and sae_loss_target: y is the target (x for sae_loss). */
static int loss(const char *fn, const sae_model *m, const float *x, const float *y,
                size_t n_tokens, double lambda, sae_losses *out)
{
    if (!m || !out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "out");
    int rc = sae__check_whole(fn, m);
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK && y != x)
        rc = sae__check_rows(fn, "y", y, n_tokens, "n_tokens", m->d_out, "d_out", sizeof(float));
    if (rc != SAE_OK)
        return rc;
    if (!isfinite(lambda))
        return sae__fail(SAE_E_NONFINITE, "%s: lambda is %g", fn, lambda);
    if (lambda < 0.0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: lambda = %g is negative", fn, lambda);
    if ((rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in)) != SAE_OK ||
        (y != x && (rc = sae__check_finite(fn, "y", y, n_tokens * m->d_out)) != SAE_OK))
        return rc;
    sae_loss_sums sums;
    if ((rc = forward_sums(fn, m, x, y, n_tokens, &sums)) != SAE_OK)
        return rc;
    sae_losses l;
    sae__losses_from_sums(&sums, n_tokens, m->arch, lambda, 0.0, &l);
    if ((rc = sae__check_losses(fn, &l)) == SAE_OK)
        *out = l;
    return rc;
}

/* Refuse a transcoder in the functions without a target. */
static int needs_autoencoder(const char *fn, const sae_model *m, const char *instead)
{
    if (m && m->kind != SAE_KIND_AUTOENCODER)
        return sae__fail(SAE_E_INVALID_ARG, "%s: a transcoder's output is compared with a "
                                            "target y: use %s", fn, instead);
    return SAE_OK;
}

int sae_loss(const sae_model *m, const float *x, size_t n_tokens, double lambda, sae_losses *out)
{
    int rc = needs_autoencoder("sae_loss", m, "sae_loss_target");
    return rc != SAE_OK ? rc : loss("sae_loss", m, x, x, n_tokens, lambda, out);
}

int sae_loss_target(const sae_model *m, const float *x, const float *y, size_t n_tokens,
                    double lambda, sae_losses *out)
{
    return loss("sae_loss_target", m, x, y, n_tokens, lambda, out);
}

/* sae_fvu and sae_fvu_target: y is the target (x for sae_fvu). */
static int fvu(const char *fn, const sae_model *m, const float *x, const float *y,
               size_t n_tokens, double *out)
{
    if (!m || !out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "out");
    int rc = sae__check_whole(fn, m);
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK && y != x)
        rc = sae__check_rows(fn, "y", y, n_tokens, "n_tokens", m->d_out, "d_out", sizeof(float));
    if (rc != SAE_OK)
        return rc;
    if (n_tokens < 2)
        return sae__fail(SAE_E_INVALID_ARG, "%s: n_tokens is 1: the variance needs 2", fn);
    if ((rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in)) != SAE_OK ||
        (y != x && (rc = sae__check_finite(fn, "y", y, n_tokens * m->d_out)) != SAE_OK))
        return rc;
    /* Total variance of the target around its batch mean, two-pass in double. */
    const size_t d_out = m->d_out;
    double *mean = sae__alloc(d_out * sizeof(double));
    if (!mean)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for the mean", fn);
    double total = sae__sum_squared_deviations(y, n_tokens, d_out, mean);
    sae__free(mean);
    if (!(total > 0.0))
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s has no variance", fn, y == x ? "x" : "y");
    sae_loss_sums sums;
    if ((rc = forward_sums(fn, m, x, y, n_tokens, &sums)) != SAE_OK)
        return rc;
    double fvu = sums.l2 / total;
    if (!isfinite(fvu))
        return sae__fail(SAE_E_NONFINITE, "%s: the reconstruction error is not finite (the "
                         "model's weights overflow on this batch)", fn);
    *out = fvu;
    return SAE_OK;
}

int sae_fvu(const sae_model *m, const float *x, size_t n_tokens, double *out)
{
    int rc = needs_autoencoder("sae_fvu", m, "sae_fvu_target");
    return rc != SAE_OK ? rc : fvu("sae_fvu", m, x, x, n_tokens, out);
}

int sae_fvu_target(const sae_model *m, const float *x, const float *y, size_t n_tokens,
                   double *out)
{
    return fvu("sae_fvu_target", m, x, y, n_tokens, out);
}
