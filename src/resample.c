/*
 * Dead features: listing them, and resampling them as in Towards
 * Monosemanticity (Bricken et al. 2023, "Neuron Resampling"):
 *
 *   1. a feature is dead if it has not fired in the last window_tokens
 *      training tokens (the optimizer's activity counters);
 *   2. every input x_t of the caller's buffer gets the probability
 *      p_t = L_t^2 / sum_u L_u^2, with L_t = ||x_hat_t - x_t||^2 its
 *      reconstruction loss under the current model ("proportional to the
 *      square of the autoencoder's loss on that input");
 *   3. each dead feature i, in ascending order, draws one input t (with
 *      replacement) and gets
 *        W_dec[i,:]  = x_t / ||x_t||                      (unit norm)
 *        W_enc[:,i]  = x_t / ||x_t|| * 0.2 * mean_live ||W_enc[:,k]||
 *        b_enc[i]    = 0
 *      where the mean runs over the features that are not dead;
 *   4. the Adam moments of those parameters and the feature's activity
 *      counter are reset to 0.
 *
 * All computation that can fail (arguments, allocation, the forward pass)
 * comes before the first write, so a failed call changes nothing.
 */
#include "internal.h"
#include "parallel.h"

#include <float.h>
#include <math.h>
#include <string.h>

int sae_optimizer_dead_features(const sae_optimizer *o, uint64_t window_tokens, size_t *idx,
                                size_t capacity, size_t *n_dead)
{
    static const char fn[] = "sae_optimizer_dead_features";
    if (!o || !n_dead)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !o ? "o" : "n_dead");
    if (window_tokens == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: window_tokens is 0", fn);
    int rc = sae__check_capacity(fn, "idx", idx, capacity, "capacity", sizeof(size_t));
    if (rc != SAE_OK)
        return rc;
    size_t dead = 0;
    for (size_t i = 0; i < o->d_sae; i++) {
        if (o->since_fired[i] < window_tokens)
            continue;
        if (dead < capacity)
            idx[dead] = i;
        dead++;
    }
    *n_dead = dead;
    return SAE_OK;
}

/* The RNG stream of resampling (any fixed number; "resample" in ASCII). */
#define RESAMPLE_STREAM 0x726573616d706c65ULL

/* cum[t] = sum over tokens u <= t of their weights: the squared reconstruction
 * loss, squared, for tokens with x_t != 0 (a zero input has no direction).
 * Returns SAE_E_NONFINITE if the model's reconstruction overflows. Feature
 * shards (ps->features) select TopK across shards and sum their partial
 * reconstructions, so every shard gets the same weights. */
static int loss_weights(sae_forward *fw, const float *x, size_t n_tokens, double *cum,
                        sae_par_step *ps)
{
    const sae_model *m = fw->m;
    const size_t d_in = m->d_in;
    const bool shards = ps && ps->features;
    double total = 0.0;
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw->block) {
        size_t rows = sae__block_rows(n_tokens, t0, fw->block);
        const float *xb = x + t0 * d_in;
        sae__forward_encode(fw, xb, rows, fw->f, NULL);
        if (!shards) {
            sae__forward_decode(m, &fw->gemm, NULL, fw->f, rows, fw->x_hat);
        } else {
            int rc = m->arch == SAE_ARCH_TOPK
                         ? sae__par_topk_rows(ps, fw->f, rows, m->d_sae, m->k) : SAE_OK;
            if (rc != SAE_OK)
                return rc;
            sae__forward_decode_onto(m, &fw->gemm, NULL, fw->f, rows,
                                     ps->features->rank == 0 ? sae__b_dec(m) : NULL, fw->x_hat);
            if ((rc = sae__par_reconstruct(ps, fw->x_hat, rows, d_in)) != SAE_OK)
                return rc;
        }
        for (size_t t = 0; t < rows; t++) {
            double loss = 0.0, norm2 = 0.0;
            for (size_t j = 0; j < d_in; j++) {
                double xj = xb[t * d_in + j], e = (double)fw->x_hat[t * d_in + j] - xj;
                loss += e * e;
                norm2 += xj * xj;
            }
            if (!isfinite(loss))
                return SAE_E_NONFINITE;
            /* loss < 2^(2*129) * d_in: its square stays far below DBL_MAX */
            total += norm2 > 0.0 ? loss * loss : 0.0;
            cum[t0 + t] = total;
        }
    }
    return SAE_OK;
}

/* Uniform weights over the nonzero inputs, for a model that reconstructs
 * every input exactly (all losses 0). Returns the total weight. */
static double uniform_weights(const float *x, size_t n_tokens, size_t d_in, double *cum)
{
    double total = 0.0;
    for (size_t t = 0; t < n_tokens; t++) {
        int nonzero = 0;
        for (size_t j = 0; j < d_in; j++)
            nonzero |= x[t * d_in + j] != 0.0f;
        total += nonzero;
        cum[t] = total;
    }
    return total;
}

/* The token whose interval [cum[t-1], cum[t]) holds u in [0, total): the
 * first t with cum[t] > u. Tokens of weight 0 have empty intervals. */
static size_t pick_token(const double *cum, size_t n_tokens, double u)
{
    size_t lo = 0, hi = n_tokens; /* answer in [lo, hi) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == n_tokens) {
        /* u rounded up to the total: the last token with a positive weight */
        lo = n_tokens - 1;
        while (lo > 0 && cum[lo] == cum[lo - 1])
            lo--;
    }
    return lo;
}

/* Feature i gets the direction of x_t: the writes of step 3 and 4 above. */
static void reinit_feature(sae_model *m, sae_optimizer *o, size_t i, const float *xt,
                           double enc_norm)
{
    const size_t d_in = m->d_in;
    double norm2 = 0.0;
    for (size_t j = 0; j < d_in; j++)
        norm2 += (double)xt[j] * xt[j];
    const double inv = 1.0 / sqrt(norm2);
    float *enc = sae__w_enc_t(m) + i * d_in, *dec = sae__w_dec(m) + i * d_in;
    for (size_t j = 0; j < d_in; j++) {
        double unit = (double)xt[j] * inv;
        dec[j] = (float)unit;
        enc[j] = (float)(unit * enc_norm);
    }
    sae__b_enc(m)[i] = 0.0f;
    /* Zeroing moments only lowers max|m1| and max m2, so o->m1_absmax and
     * o->m2_max stay valid upper bounds for the next step's overflow check. */
    const size_t offsets[2] = {o->lay.w_enc_t + i * d_in, o->lay.w_dec + i * d_in};
    for (int k = 0; k < 2; k++) {
        memset(o->m1 + offsets[k], 0, d_in * sizeof(float));
        memset(o->m2 + offsets[k], 0, d_in * sizeof(float));
    }
    o->m1[o->lay.b_enc + i] = 0.0f;
    o->m2[o->lay.b_enc + i] = 0.0f;
    o->since_fired[i] = 0;
}

int sae_resample_dead(sae_model *m, sae_optimizer *o, const float *x, size_t n_tokens,
                      uint64_t window_tokens, uint64_t seed, size_t *n_resampled)
{
    static const char fn[] = "sae_resample_dead";
    if (!m || !o)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "o");
    /* With communicators attached (a collective call), failures are returned
     * after the first exchange, by every rank. x: n_tokens x d_in floats, and
     * n_tokens doubles of weights. */
    int rc = sae__check_rows(fn, "x", x, n_tokens, "n_tokens", m->d_in, "d_in", sizeof(float));
    if (rc == SAE_OK)
        rc = sae__check_rows(fn, "weights", x, n_tokens, "n_tokens", 1, "1", sizeof(double));
    if (rc == SAE_OK && window_tokens == 0)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: window_tokens is 0", fn);
    else if (rc == SAE_OK &&
             (m->d_in != o->d_in || m->d_sae != o->d_sae || m->shard_begin != o->shard_begin))
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: the optimizer was made for [%zu, %zu], the "
                       "model is [%zu, %zu]", fn, o->d_in, o->d_sae, m->d_in, m->d_sae);
    else if (rc == SAE_OK)
        rc = sae__check_finite(fn, "x", x, n_tokens * m->d_in);
    if (rc == SAE_OK && sae__is_shard(m) && !(o->par && o->par->features.struct_size))
        rc = sae__check_whole("sae_resample_dead (without a feature-sharded communicator)", m);
    /* Gated's magnitude path and a transcoder's output space need their own rule */
    if (rc == SAE_OK)
        rc = sae__family_check("sae_resample_dead", m, SAE_FAMILY_MATRYOSHKA);
    if (rc != SAE_OK && !o->par)
        return rc;
    const size_t d_in = m->d_in, d_sae = m->d_sae;

    size_t n_dead = 0, n_live = 0, dead_before = 0;
    double live_norm_sum = 0.0;
    const float *w_enc_t = sae__w_enc_t(m);
    for (size_t i = 0; rc == SAE_OK && i < d_sae; i++) {
        if (o->since_fired[i] >= window_tokens) {
            n_dead++;
            continue;
        }
        double s = 0.0;
        for (size_t j = 0; j < d_in; j++)
            s += (double)w_enc_t[i * d_in + j] * w_enc_t[i * d_in + j];
        live_norm_sum += sqrt(s);
        n_live++;
    }
    /* the scratch of the forward pass, before the ranks compare notes */
    sae_forward fw;
    memset(&fw, 0, sizeof fw);
    double *cum = NULL;
    bool need_forward = o->par || n_dead > 0;
    if (rc == SAE_OK && need_forward &&
        (sae__forward_init(&fw, m, sae__block_size(n_tokens),
                           SAE_FORWARD_F | SAE_FORWARD_X_HAT) != SAE_OK ||
         !(cum = sae__alloc(n_tokens * sizeof(double)))))
        rc = SAE_E_NOMEM;
    sae_par_step ps, *par = NULL;
    if (o->par) {
        rc = sae__par_resample_begin(o, m, x, n_tokens, rc, &n_dead, &n_live, &live_norm_sum,
                                     &dead_before, &ps);
        par = ps.features ? &ps : NULL;
    }
    if (rc == SAE_OK && n_dead == 0) {
        if (n_resampled)
            *n_resampled = 0;
    } else if (rc == SAE_OK && n_live == 0) {
        rc = SAE_E_STATE; /* no live encoder row to take the scale from */
    } else if (rc == SAE_OK) {
        const double enc_norm = 0.2 * live_norm_sum / (double)n_live;
        rc = loss_weights(&fw, x, n_tokens, cum, par);
        rc = sae__par_resample_weights(par, cum, n_tokens, rc); /* (a 2-D grid's groups) */
        double total = rc == SAE_OK ? cum[n_tokens - 1] : 0.0;
        if (rc == SAE_OK && total == 0.0) {
            total = uniform_weights(x, n_tokens, d_in, cum);
            if (total == 0.0)
                rc = SAE_E_INVALID_ARG; /* every input is zero: no direction to copy */
        }
        /* new encoder rows have norm enc_norm (every rank computes the same) */
        if (rc == SAE_OK && !(enc_norm <= FLT_MAX))
            rc = sae__fail(SAE_E_NONFINITE, "%s: the new encoder rows' norm (0.2 x the live "
                           "rows' mean, %g) is not finite in float", fn, enc_norm);
        if (rc == SAE_OK) {
            /* one stream for the whole model's dead features in ascending
             * order: a shard first skips the draws of the shards before it */
            sae_rng rng;
            sae_rng_seed(&rng, seed, RESAMPLE_STREAM);
            for (size_t k = 0; k < dead_before; k++)
                (void)sae_rng_uniform(&rng);
            for (size_t i = 0; i < d_sae; i++) {
                if (o->since_fired[i] < window_tokens)
                    continue;
                size_t t = pick_token(cum, n_tokens, sae_rng_uniform(&rng) * total);
                reinit_feature(m, o, i, x + t * d_in, enc_norm);
            }
            sae__model_refresh_absmax(m);
            if (n_resampled)
                *n_resampled = n_dead;
        }
    }
    sae__free(cum);
    sae__forward_free(&fw);
    return rc;
}
