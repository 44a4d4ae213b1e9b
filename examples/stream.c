/*
 * stream: a host that produces activations as it goes (a model's forward
 * pass, say) and streams them into training batch by batch, never holding
 * more than one batch. Each batch is used once, as when training on a
 * model's activations over a large corpus.
 *
 * The "model" here is a toy: a vocabulary of 256 tokens with random 64-dim
 * embeddings, and the activation at position t is the embedding of token t
 * plus half that of token t-1 (a residual stream that remembers the previous
 * token). Tokens follow a Zipf-like law, so some features are rare. The SAE
 * should find a feature per frequent token.
 *
 *   build/examples/stream
 *
 * Exit status 0 when training ran and explains most of the variance.
 */
#include <libsae/sae.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { VOCAB = 256, D_MODEL = 64, D_SAE = 512, BATCH = 256, STEPS = 1500 };

/* The host: its weights and where it is in its stream of tokens. */
typedef struct host {
    float embed[VOCAB][D_MODEL];
    sae_rng rng; /* the token generator (the library's random numbers) */
    int prev;    /* the previous token */
} host;

static void host_init(host *h, uint64_t seed)
{
    sae_rng_seed(&h->rng, seed, 0);
    for (int v = 0; v < VOCAB; v++)
        for (int j = 0; j < D_MODEL; j++)
            h->embed[v][j] = (float)(sae_rng_uniform(&h->rng) - 0.5);
    h->prev = 0;
}

/* The host's forward pass over the next n tokens: n x D_MODEL floats into x. */
static void produce(host *h, float *x, size_t n)
{
    for (size_t t = 0; t < n; t++) {
        int tok = (int)(VOCAB * pow(sae_rng_uniform(&h->rng), 3.0)); /* low ids are frequent */
        for (int j = 0; j < D_MODEL; j++)
            x[t * D_MODEL + j] = h->embed[tok][j] + 0.5f * h->embed[h->prev][j];
        h->prev = tok;
    }
}

int main(void)
{
    static host h;
    host_init(&h, 11);
    float *batch = malloc(BATCH * D_MODEL * sizeof *batch); /* BATCH x D_MODEL */
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    int rc = batch ? sae_model_create(&m, D_MODEL, D_SAE, /*seed*/ 3) : SAE_E_NOMEM;
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_LR, 1e-3);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_L1_COEFF, 1.0);

    /* Produce a batch, train on it, forget it. */
    for (size_t step = 1; rc == SAE_OK && step <= STEPS; step++) {
        produce(&h, batch, BATCH);
        sae_losses l;
        rc = sae_step(m, o, batch, BATCH, &l);
        size_t dead = 0; /* features silent on the last 100k tokens */
        if (rc == SAE_OK && step % 250 == 0 &&
            (rc = sae_optimizer_dead_count(o, 100000, &dead)) == SAE_OK)
            printf("step %4zu  %7zu tokens  loss %.4f  l2 %.4f  l0 %5.1f  dead %zu of %d\n", step,
                   step * BATCH, l.loss, l.l2, l.l0, dead, D_SAE);
    }

    /* A batch the SAE has not seen: the fraction of variance unexplained. */
    double fvu = NAN;
    if (rc == SAE_OK) {
        produce(&h, batch, BATCH);
        rc = sae_fvu(m, batch, BATCH, &fvu);
    }
    if (rc == SAE_OK)
        printf("held-out batch: fvu %.3f\n", fvu);
    else
        fprintf(stderr, "stream: %s\n", sae_status_string(rc));
    sae_optimizer_free(o);
    sae_model_free(m);
    free(batch);
    return rc == SAE_OK && fvu < 0.5 ? 0 : 1;
}
