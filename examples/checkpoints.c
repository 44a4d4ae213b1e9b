/*
 * checkpoints: a training loop that survives being killed. Every 100 steps
 * it saves the model and the optimizer into a checkpoint directory, which
 * changes in one atomic step (sae_checkpoint_begin / _commit); started
 * again, it resumes from the current checkpoint (sae_checkpoint_current)
 * and goes on exactly as if it had never stopped, since its batches depend
 * only on the step number.
 *
 *   build/examples/checkpoints run 1000    # kill it at any moment, run it again
 *
 * DIR then opens in SAELens as it is: SAE.load_from_disk("run").
 */
#include <libsae/sae.h>

#include <stdio.h>
#include <stdlib.h>

enum { D_IN = 32, D_SAE = 128, BATCH = 128, EVERY = 100 };

/* The batch of step `step` (1-based): BATCH x D_IN floats made from the
 * library's generator, stream `step`, so a resumed run gets the same ones. */
static void batch_of(uint64_t step, float *x)
{
    sae_rng rng;
    sae_rng_seed(&rng, /*seed*/ 5, step);
    for (size_t k = 0; k < BATCH * D_IN; k++)
        x[k] = sae_rng_uniform(&rng) < 0.1 ? (float)sae_rng_uniform(&rng) : 0.0f;
}

/* The current checkpoint of dir, or a new model and optimizer. */
static int start(const char *dir, sae_model **m, sae_optimizer **o)
{
    char ckpt[4096];
    *m = NULL;
    *o = NULL;
    int rc = sae_checkpoint_current(dir, ckpt, sizeof ckpt);
    if (rc == SAE_OK) {
        if ((rc = sae_model_load(m, ckpt)) == SAE_OK)
            rc = sae_optimizer_load(o, *m, ckpt);
        if (rc == SAE_OK)
            printf("resuming %s at step %llu\n", ckpt, (unsigned long long)sae_optimizer_steps(*o));
        return rc;
    }
    if (rc != SAE_E_IO) /* SAE_E_IO: no checkpoint yet */
        return rc;
    if ((rc = sae_model_create(m, D_IN, D_SAE, /*seed*/ 1)) == SAE_OK &&
        (rc = sae_optimizer_create(o, *m)) == SAE_OK)
        rc = sae_optimizer_set(*o, SAE_OPT_L1_COEFF, 0.1);
    return rc;
}

/* A new generation of dir holding m and o, made current in one step. */
static int save(const char *dir, const sae_model *m, const sae_optimizer *o)
{
    char stage[4096];
    int rc = sae_checkpoint_begin(dir, stage, sizeof stage);
    if (rc != SAE_OK)
        return rc;
    if ((rc = sae_model_save(m, stage)) == SAE_OK && (rc = sae_optimizer_save(o, stage)) == SAE_OK)
        rc = sae_checkpoint_commit(dir, stage);
    if (rc != SAE_OK)
        sae_checkpoint_abort(dir, stage); /* dir is as it was */
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: checkpoints DIR STEPS\n");
        return 2;
    }
    const char *dir = argv[1];
    const uint64_t steps = strtoull(argv[2], NULL, 10);
    float x[BATCH * D_IN];
    sae_model *m;
    sae_optimizer *o;
    int rc = start(dir, &m, &o);
    for (uint64_t step = rc == SAE_OK ? sae_optimizer_steps(o) + 1 : 1; rc == SAE_OK && step <= steps;
         step++) {
        sae_losses l;
        batch_of(step, x);
        if ((rc = sae_step(m, o, x, BATCH, &l)) == SAE_OK && (step % EVERY == 0 || step == steps)) {
            rc = save(dir, m, o);
            printf("step %llu  loss %.5f  l0 %.1f  checkpoint %s\n", (unsigned long long)step,
                   l.loss, l.l0, rc == SAE_OK ? "saved" : "failed");
        }
    }
    if (rc != SAE_OK)
        fprintf(stderr, "checkpoints: %s (%s)\n", sae_status_string(rc), sae_error_detail());
    sae_optimizer_free(o);
    sae_model_free(m);
    return rc == SAE_OK ? 0 : 1;
}
