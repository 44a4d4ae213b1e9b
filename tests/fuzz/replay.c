/*
 * Replays the fuzz seed corpus (tests/fuzz/corpus/, made by make_corpus.py)
 * through the fuzz harness, in every CTest run and under ASan and valgrind,
 * and checks what each file's name promises:
 *   model-ok-*              sae_model_load_buffer succeeds
 *   opt-ok-*                sae_optimizer_load_buffer succeeds (3 x 5 ReLU model)
 *   opt-jumprelu-ok-*       ... for a 3 x 5 JumpReLU model
 *   opt-family-*            a valid optimizer of a family (Gated, skip
 *                           transcoder): SAE_E_INVALID_ARG for the ReLU model
 *   bad-*                   the model loader returns SAE_E_FORMAT, and so does
 *                           the optimizer loader for at least one of the two
 *                           models; for the other it may return
 *                           SAE_E_INVALID_ARG (a file for the other layout,
 *                           whose values are checked only once it fits)
 *   cfg-ok-*, cfg-bad-*     as cfg.json beside valid 3 x 5 standard weights,
 *                           sae_model_load succeeds / returns SAE_E_FORMAT
 *   cfg-<arch>-ok-*, cfg-<arch>-bad-*  the same beside topk, batchtopk or
 *                           jumprelu weights
 *   stats-ok-*, stats-bad-* sae_feature_stats_load_buffer succeeds / returns
 *                           SAE_E_FORMAT (and bad-* files are SAE_E_FORMAT
 *                           for it too)
 * Usage: fuzz_replay CORPUS_DIR [FILE...]  (files: replay only, no checks,
 * e.g. a crash file libFuzzer found).
 */
#define _XOPEN_SOURCE 700 /* scandir */
#include "fuzz_load.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum what { MODEL, OPTIMIZER, BAD, CONFIG, STATS };

static const struct kind {
    const char *prefix;
    enum what what;
    int arch;   /* OPTIMIZER, CONFIG: the model's architecture */
    int expect; /* MODEL, OPTIMIZER, CONFIG */
} kinds[] = {
    {"model-ok-", MODEL, 0, SAE_OK},
    {"opt-ok-", OPTIMIZER, SAE_ARCH_RELU, SAE_OK},
    {"opt-jumprelu-ok-", OPTIMIZER, SAE_ARCH_JUMPRELU, SAE_OK},
    {"opt-family-", OPTIMIZER, SAE_ARCH_RELU, SAE_E_INVALID_ARG},
    {"bad-", BAD, 0, SAE_E_FORMAT},
    {"cfg-ok-", CONFIG, SAE_ARCH_RELU, SAE_OK},
    {"cfg-bad-", CONFIG, SAE_ARCH_RELU, SAE_E_FORMAT},
    {"cfg-topk-ok-", CONFIG, SAE_ARCH_TOPK, SAE_OK},
    {"cfg-topk-bad-", CONFIG, SAE_ARCH_TOPK, SAE_E_FORMAT},
    {"cfg-batchtopk-ok-", CONFIG, SAE_ARCH_BATCHTOPK, SAE_OK},
    {"cfg-batchtopk-bad-", CONFIG, SAE_ARCH_BATCHTOPK, SAE_E_FORMAT},
    {"cfg-jumprelu-ok-", CONFIG, SAE_ARCH_JUMPRELU, SAE_OK},
    {"cfg-jumprelu-bad-", CONFIG, SAE_ARCH_JUMPRELU, SAE_E_FORMAT},
    {"stats-ok-", STATS, 0, SAE_OK},
    {"stats-bad-", STATS, 0, SAE_E_FORMAT},
};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    /* exactly n bytes (at least 1 for malloc), so ASan sees any over-read */
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || n < 0 || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The status the file's name promises, checked; false on a mismatch. */
static bool check(const char *name, const unsigned char *data, size_t size, int counts[N_KINDS])
{
    size_t k = 0;
    while (k < N_KINDS && !starts_with(name, kinds[k].prefix))
        k++;
    if (k == N_KINDS) {
        fprintf(stderr, "%s: the name promises nothing\n", name);
        return false;
    }
    counts[k]++;
    const struct kind *kd = &kinds[k];
    sae_model *m = NULL;
    sae_optimizer *o = NULL, *o2 = NULL;
    sae_feature_stats *st = NULL;
    int rc;
    bool ok;
    switch (kd->what) {
    case MODEL:
        rc = sae_model_load_buffer(&m, data, size);
        ok = rc == kd->expect;
        break;
    case OPTIMIZER:
        rc = sae_optimizer_load_buffer(&o,
                                       kd->arch == SAE_ARCH_JUMPRELU ? fuzz_jumprelu_shape_model()
                                                                     : fuzz_shape_model(),
                                       data, size);
        ok = rc == kd->expect;
        break;
    case BAD: {
        rc = sae_model_load_buffer(&m, data, size);
        int rc2 = sae_optimizer_load_buffer(&o, fuzz_shape_model(), data, size);
        int rc3 = sae_optimizer_load_buffer(&o2, fuzz_jumprelu_shape_model(), data, size);
        int rc4 = sae_feature_stats_load_buffer(&st, data, size);
        ok = rc == SAE_E_FORMAT && rc4 == SAE_E_FORMAT &&
             (rc2 == SAE_E_FORMAT || rc3 == SAE_E_FORMAT) &&
             (rc2 == SAE_E_FORMAT || rc2 == SAE_E_INVALID_ARG) &&
             (rc3 == SAE_E_FORMAT || rc3 == SAE_E_INVALID_ARG);
        if (!ok)
            fprintf(stderr, "%s: model %d, optimizer %d (ReLU), %d (JumpReLU)\n", name, rc, rc2,
                    rc3);
        break;
    }
    case STATS:
        rc = sae_feature_stats_load_buffer(&st, data, size);
        ok = rc == kd->expect;
        break;
    default:
        rc = fuzz_load_with_config(kd->arch, data, size);
        ok = rc == kd->expect;
        break;
    }
    if (!ok)
        fprintf(stderr, "%s: status %d (%s)\n", name, rc, sae_status_string(rc));
    sae_model_free(m);
    sae_optimizer_free(o);
    sae_optimizer_free(o2);
    sae_feature_stats_free(st);
    return ok;
}

static int not_hidden(const struct dirent *e) { return e->d_name[0] != '.'; }

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR [FILE...]\n", argv[0]);
        return 2;
    }
    fuzz_setup();
    int failures = 0;
    for (int k = 2; k < argc; k++) {
        size_t size;
        unsigned char *data = read_all(argv[k], &size);
        if (!data) {
            fprintf(stderr, "cannot read %s\n", argv[k]);
            return 2;
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        printf("replayed %s\n", argv[k]);
    }
    if (argc > 2)
        return 0;
    struct dirent **entries;
    int n = scandir(argv[1], &entries, not_hidden, alphasort);
    if (n < 0) {
        fprintf(stderr, "cannot list %s\n", argv[1]);
        return 2;
    }
    int counts[N_KINDS] = {0};
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], entries[i]->d_name);
        size_t size;
        unsigned char *data = read_all(path, &size);
        if (!data) {
            fprintf(stderr, "cannot read %s\n", path);
            return 2;
        }
        LLVMFuzzerTestOneInput(data, size);
        failures += !check(entries[i]->d_name, data, size, counts);
        free(data);
        free(entries[i]);
    }
    free(entries);
    printf("%d corpus files (", n);
    for (size_t k = 0; k < N_KINDS; k++)
        printf("%s%d %s*", k ? ", " : "", counts[k], kinds[k].prefix);
    printf("); %d not as promised\n", failures);
    for (size_t k = 0; k < N_KINDS; k++)
        if (counts[k] == 0) {
            fprintf(stderr, "no corpus file %s*: is %s the corpus?\n", kinds[k].prefix, argv[1]);
            return 1;
        }
    return failures ? 1 : 0;
}
