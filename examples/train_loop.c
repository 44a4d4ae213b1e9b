/*
 * train_loop: train a sparse autoencoder on activations a host program
 * already holds in memory, then check what it learned.
 *
 * The host's activations are one buffer of n_tokens x d_in floats, row-major
 * (here made up: each token a sparse positive mix of a few of 128 random
 * directions, as features in superposition would be). The loop hands
 * sae_step one batch of rows at a time, in order, for a few epochs; the
 * model is then evaluated on the same buffer and saved.
 *
 *   build/examples/train_loop [OUT_DIR]
 *
 * Exit status 0 when training ran and explains most of the variance.
 */
#include <libsae/sae.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { D_IN = 64, D_SAE = 256, N_TRUE = 128, N_TOKENS = 8192, BATCH = 256, EPOCHS = 20 };

/* The host's activations: n_tokens x d_in floats (made up with the
 * library's random numbers, the same on every machine). */
static float *host_activations(void)
{
    sae_rng rng;
    sae_rng_seed(&rng, /*seed*/ 7, /*stream*/ 0);
    float *dirs = malloc(N_TRUE * D_IN * sizeof *dirs);
    float *x = calloc(N_TOKENS * D_IN, sizeof *x);
    if (!dirs || !x) {
        free(dirs);
        free(x);
        return NULL;
    }
    for (size_t k = 0; k < N_TRUE * D_IN; k++)
        dirs[k] = (float)(sae_rng_uniform(&rng) - 0.5);
    for (size_t t = 0; t < N_TOKENS; t++)
        for (size_t i = 0; i < N_TRUE; i++)
            if (sae_rng_uniform(&rng) < 3.0 / N_TRUE) { /* about 3 features per token */
                float c = (float)sae_rng_uniform(&rng);
                for (size_t j = 0; j < D_IN; j++)
                    x[t * D_IN + j] += c * dirs[i * D_IN + j];
            }
    free(dirs);
    return x;
}

int main(int argc, char **argv)
{
    const char *out_dir = argc > 1 ? argv[1] : NULL;
    float *x = host_activations();
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    int rc = x ? sae_model_create(&m, D_IN, D_SAE, /*seed*/ 1) : SAE_E_NOMEM;
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_LR, 1e-3);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.3);

    /* The loop: one sae_step per batch of BATCH rows of the host's buffer. */
    const size_t batches = N_TOKENS / BATCH;
    for (size_t step = 0; rc == SAE_OK && step < EPOCHS * batches; step++) {
        const float *batch = x + (step % batches) * BATCH * D_IN;
        sae_losses l;
        rc = sae_step(m, o, batch, BATCH, &l);
        if (rc == SAE_OK && step % 100 == 0)
            printf("step %4zu  loss %.4f  l2 %.4f  l1 %.4f  l0 %.1f\n", step, l.loss, l.l2, l.l1,
                   l.l0);
    }

    /* What it learned: losses and the fraction of variance unexplained. */
    sae_losses l;
    double fvu = NAN;
    if (rc == SAE_OK)
        rc = sae_loss(m, x, N_TOKENS, 0.3, &l);
    if (rc == SAE_OK)
        rc = sae_fvu(m, x, N_TOKENS, &fvu);
    if (rc == SAE_OK)
        printf("after %llu steps: l2 %.4f  l0 %.1f of %d features  fvu %.3f\n",
               (unsigned long long)sae_optimizer_steps(o), l.l2, l.l0, D_SAE, fvu);
    /* An existing directory gets sae_weights.safetensors and cfg.json
     * (SAELens opens it) and optimizer.safetensors (to train on later). */
    if (rc == SAE_OK && out_dir && (rc = sae_model_save(m, out_dir)) == SAE_OK)
        rc = sae_optimizer_save(o, out_dir);
    if (rc != SAE_OK)
        fprintf(stderr, "train_loop: %s\n", sae_status_string(rc));
    sae_optimizer_free(o);
    sae_model_free(m);
    free(x);
    return rc == SAE_OK && fvu < 0.5 ? 0 : 1;
}
