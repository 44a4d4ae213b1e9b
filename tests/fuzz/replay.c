/*
 * Replays the fuzz seed corpus (tests/fuzz/corpus/, made by make_corpus.py)
 * through the fuzz harness, in every CTest run and under ASan and valgrind,
 * and checks what each file's name promises:
 *   model-ok-*  sae_model_load_buffer succeeds
 *   opt-ok-*    sae_optimizer_load_buffer succeeds (3 x 5 model)
 *   bad-*       both buffer loaders return SAE_E_FORMAT
 *   cfg-ok-*    as cfg.json beside valid weights, sae_model_load succeeds
 *   cfg-bad-*   ... and returns SAE_E_FORMAT
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
static bool check(const char *name, const unsigned char *data, size_t size, int counts[5])
{
    sae_model *m = NULL;
    sae_optimizer *o = NULL;
    int rc, rc2;
    bool ok;
    if (starts_with(name, "model-ok-")) {
        rc = sae_model_load_buffer(&m, data, size);
        ok = rc == SAE_OK;
        counts[0]++;
    } else if (starts_with(name, "opt-ok-")) {
        rc = sae_optimizer_load_buffer(&o, fuzz_shape_model(), data, size);
        ok = rc == SAE_OK;
        counts[1]++;
    } else if (starts_with(name, "bad-")) {
        rc = sae_model_load_buffer(&m, data, size);
        rc2 = sae_optimizer_load_buffer(&o, fuzz_shape_model(), data, size);
        ok = rc == SAE_E_FORMAT && rc2 == SAE_E_FORMAT;
        if (!ok)
            fprintf(stderr, "%s: model %d, optimizer %d\n", name, rc, rc2);
        counts[2]++;
    } else if (starts_with(name, "cfg-ok-")) {
        rc = fuzz_load_with_config(data, size);
        ok = rc == SAE_OK;
        counts[3]++;
    } else if (starts_with(name, "cfg-bad-")) {
        rc = fuzz_load_with_config(data, size);
        ok = rc == SAE_E_FORMAT;
        counts[4]++;
    } else {
        fprintf(stderr, "%s: the name promises nothing\n", name);
        return false;
    }
    if (!ok)
        fprintf(stderr, "%s: status %d (%s)\n", name, rc, sae_status_string(rc));
    sae_model_free(m);
    sae_optimizer_free(o);
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
    int counts[5] = {0};
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
    printf("%d corpus files: %d valid models, %d valid optimizers, %d corrupt files, "
           "%d accepted and %d refused cfg.json; %d not as promised\n",
           n, counts[0], counts[1], counts[2], counts[3], counts[4], failures);
    for (int c = 0; c < 5; c++)
        if (counts[c] == 0) {
            fprintf(stderr, "no corpus file of kind %d: is %s the corpus?\n", c, argv[1]);
            return 1;
        }
    return failures ? 1 : 0;
}
