/*
 * check_same_model A B [TOL]: whether the models saved in A and B (files or
 * checkpoint directories, sae_model_load) have the same architecture and
 * shapes and every tensor within TOL (default 1e-4) relative to B's largest
 * magnitude. Prints each tensor's relative difference; exit 0 if all agree,
 * 1 if not, 2 if a model does not load. mpi.sh compares sae-train-mpi's
 * checkpoints with sae-train's with it.
 */
#include <libsae/sae.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static sae_model *load(const char *path)
{
    sae_model *m = NULL;
    int rc = sae_model_load(&m, path);
    if (rc != SAE_OK)
        fprintf(stderr, "check_same_model: %s: %s (%s)\n", path, sae_status_string(rc),
                sae_error_detail());
    return m;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: check_same_model A B [TOL]\n");
        return 2;
    }
    const double tol = argc == 4 ? atof(argv[3]) : 1e-4;
    sae_model *a = load(argv[1]), *b = load(argv[2]);
    int status = a && b ? 0 : 2;
    if (status == 0 && (sae_model_arch(a) != sae_model_arch(b) || sae_model_k(a) != sae_model_k(b) ||
                        sae_model_d_in(a) != sae_model_d_in(b) ||
                        sae_model_d_sae(a) != sae_model_d_sae(b) ||
                        sae_model_kind(a) != sae_model_kind(b) ||
                        sae_model_d_out(a) != sae_model_d_out(b))) {
        printf("different models: arch, kind, k or shape\n");
        status = 1;
    }
    static const int tensors[] = {SAE_W_ENC,     SAE_W_DEC,  SAE_B_ENC, SAE_B_DEC,
                                  SAE_THRESHOLD, SAE_W_SKIP, SAE_B_MAG, SAE_R_MAG};
    static const char *const names[] = {"W_enc",     "W_dec",  "b_enc", "b_dec",
                                        "threshold", "W_skip", "b_mag", "r_mag"};
    for (size_t k = 0; status == 0 && k < sizeof tensors / sizeof tensors[0]; k++) {
        size_t n = sae_model_tensor_size(a, tensors[k]);
        if (n == 0)
            continue;
        float *va = malloc(n * sizeof *va), *vb = malloc(n * sizeof *vb);
        if (!va || !vb || sae_model_get_tensor(a, tensors[k], va, n) != SAE_OK ||
            sae_model_get_tensor(b, tensors[k], vb, n) != SAE_OK) {
            status = 2;
        } else {
            double diff = 0.0, scale = 1e-30;
            for (size_t i = 0; i < n; i++) {
                diff = fmax(diff, fabs((double)va[i] - vb[i]));
                scale = fmax(scale, fabs((double)vb[i]));
            }
            printf("%-9s %zu values, max difference %.3g relative\n", names[k], n, diff / scale);
            if (!(diff / scale <= tol))
                status = 1;
        }
        free(va);
        free(vb);
    }
    sae_model_free(a);
    sae_model_free(b);
    return status;
}
