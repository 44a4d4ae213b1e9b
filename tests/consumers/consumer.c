/* A program outside the libsae tree, built against the INSTALLED library
 * (tests/consumers/run.sh builds it with pkg-config, statically, and against
 * the frozen header of the ABI baseline).
 *
 * It checks that the library it runs with is the one its header describes,
 * then trains a small SAE on fixed data and prints the losses with all their
 * digits. The other consumers (C++ through find_package, Python through ctypes,
 * the static and the old-header builds) must print the same lines. */
#include <libsae/sae.h>

#include <stdio.h>
#include <string.h>

enum { D_IN = 8, D_SAE = 32, N_TOKENS = 64, N_STEPS = 5 };
static const uint64_t SEED = 20240501u;

/* x[t][j] = (((7t + 3j) mod 41) - 20) / 16: exact in float32, so every language
 * builds the same bits. */
static void make_data(float *x)
{
    for (int t = 0; t < N_TOKENS; t++)
        for (int j = 0; j < D_IN; j++)
            x[t * D_IN + j] = (float)(((7 * t + 3 * j) % 41) - 20) / 16.0f;
}

static void print_losses(const char *what, int i, const sae_losses *l)
{
    printf("%s %d loss %.17g l2 %.17g l1 %.17g l0 %.17g\n", what, i, l->loss, l->l2, l->l1, l->l0);
}

static int check_version(void)
{
    unsigned lib = sae_version_number();
    char header[32];
    snprintf(header, sizeof header, "%d.%d.%d", SAE_VERSION_MAJOR, SAE_VERSION_MINOR,
             SAE_VERSION_PATCH);
    printf("# header %s (%d), library %s (%u)\n", header, SAE_VERSION_NUMBER,
           sae_version_string(), lib);
#ifdef SAE_CONSUMER_OLDER_HEADER
    /* Built against an older release's header: any later library of the same
     * SONAME (major version) must do. */
    if (lib / 10000 != SAE_VERSION_MAJOR || lib < (unsigned)SAE_VERSION_NUMBER) {
        fprintf(stderr, "library %u cannot serve a program built against %d\n", lib,
                SAE_VERSION_NUMBER);
        return 1;
    }
#else
    if (lib != (unsigned)SAE_VERSION_NUMBER || strcmp(sae_version_string(), header) != 0) {
        fprintf(stderr, "header says %s (%d) but the library is %s (%u)\n", header,
                SAE_VERSION_NUMBER, sae_version_string(), lib);
        return 1;
    }
#endif
    return 0;
}

int main(void)
{
    static float x[N_TOKENS * D_IN];
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    sae_losses l;
    int rc;

    if (check_version() != 0)
        return 1;
    make_data(x);
    rc = sae_model_create(&m, D_IN, D_SAE, SEED);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_LR, 1e-2);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(o, SAE_OPT_L1_COEFF, 0.5);
    for (int s = 0; s < N_STEPS && rc == SAE_OK; s++) {
        rc = sae_step(m, o, x, N_TOKENS, &l);
        if (rc == SAE_OK)
            print_losses("step", s, &l);
    }
    if (rc == SAE_OK)
        rc = sae_loss(m, x, N_TOKENS, 0.5, &l);
    if (rc == SAE_OK)
        print_losses("final", N_STEPS, &l);
    if (rc == SAE_OK && sae_optimizer_steps(o) != N_STEPS)
        rc = SAE_E_STATE;
    if (rc != SAE_OK)
        fprintf(stderr, "libsae: %s\n", sae_status_string(rc));
    sae_optimizer_free(o);
    sae_model_free(m);
    return rc == SAE_OK ? 0 : 1;
}
