/*
 * The browser test's case: a small model, data and labels, and what the
 * dashboard must show, computed here from sae_encode's dense features (not
 * from the feature statistics the dashboard is made from).
 *
 *   make_case DIR D_IN D_SAE ROWS TOP
 *
 * writes DIR/ckpt/ (sae_model_save), DIR/data.npy (ROWS x D_IN float32),
 * DIR/labels.txt (one line per row, "row T<TAB>wT<TAB>..."), and
 * DIR/expected.json:
 *   {"d_sae": D_SAE, "counts": [rows each feature fires on],
 *    "card": a feature that fired at least TOP times,
 *    "top_rows": its TOP rows with the largest values (ties: lower row first)}
 */
#include "common/data.h" /* tool_npy_write_header */

#include <libsae/sae.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void fail(const char *what, int rc)
{
    fprintf(stderr, "make_case: %s: %s (%s)\n", what, sae_status_string(rc), sae_error_detail());
    exit(1);
}

/* A model whose features fire at different rates: random encoder and
 * decoder, biases spread from -1.5 to 0.5. */
static sae_model *make_model(size_t d_in, size_t d_sae)
{
    sae_model *m;
    int rc = sae_model_create(&m, d_in, d_sae, 7);
    if (rc != SAE_OK)
        fail("sae_model_create", rc);
    sae_rng r;
    sae_rng_seed(&r, 11, 0);
    float *w = malloc(d_in * d_sae * sizeof(float)), *b = malloc(d_sae * sizeof(float));
    for (size_t k = 0; k < d_in * d_sae; k++)
        w[k] = (float)(sae_rng_normal(&r) / 2.0);
    for (size_t i = 0; i < d_sae; i++)
        b[i] = (float)(-1.5 + 2.0 * sae_rng_uniform(&r));
    if ((rc = sae_model_set_tensor(m, SAE_W_ENC, w, d_in * d_sae)) != SAE_OK ||
        (rc = sae_model_set_tensor(m, SAE_W_DEC, w, d_in * d_sae)) != SAE_OK ||
        (rc = sae_model_set_tensor(m, SAE_B_ENC, b, d_sae)) != SAE_OK)
        fail("sae_model_set_tensor", rc);
    free(b);
    free(w);
    return m;
}

static void write_npy(const char *path, const float *x, size_t rows, size_t cols)
{
    FILE *f = fopen(path, "wb");
    if (!f || tool_npy_write_header(f, rows, cols) != 0 ||
        fwrite(x, sizeof(float), rows * cols, f) != rows * cols || fclose(f) != 0) {
        fprintf(stderr, "make_case: cannot write %s\n", path);
        exit(1);
    }
}

typedef struct entry { float value; size_t row; } entry;

static int by_value_then_row(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    if (a->value != b->value)
        return a->value > b->value ? -1 : 1;
    return (a->row > b->row) - (a->row < b->row);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: make_case DIR D_IN D_SAE ROWS TOP\n");
        return 2;
    }
    const char *dir = argv[1];
    const size_t d_in = strtoul(argv[2], NULL, 10), d_sae = strtoul(argv[3], NULL, 10);
    const size_t rows = strtoul(argv[4], NULL, 10), top = strtoul(argv[5], NULL, 10);
    char path[4096];
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/ckpt", dir);
    mkdir(path, 0777);
    sae_model *m = make_model(d_in, d_sae);
    int rc = sae_model_save(m, path);
    if (rc != SAE_OK)
        fail("sae_model_save", rc);

    sae_rng r;
    sae_rng_seed(&r, 12, 0);
    float *x = malloc(rows * d_in * sizeof(float)), *f = malloc(rows * d_sae * sizeof(float));
    for (size_t k = 0; k < rows * d_in; k++) /* quantised: equal values (ties) happen */
        x[k] = (float)((int)(sae_rng_normal(&r) * 4.0) / 4.0);
    snprintf(path, sizeof path, "%s/data.npy", dir);
    write_npy(path, x, rows, d_in);
    snprintf(path, sizeof path, "%s/labels.txt", dir);
    FILE *lf = fopen(path, "w");
    for (size_t t = 0; t < rows; t++)
        fprintf(lf, "row %zu <context>\tw%zu\t& after\n", t, t);
    fclose(lf);

    if ((rc = sae_encode(m, x, rows, f)) != SAE_OK)
        fail("sae_encode", rc);
    entry *e = malloc(rows * sizeof(entry));
    size_t card = d_sae, best = 0;
    snprintf(path, sizeof path, "%s/expected.json", dir);
    FILE *out = fopen(path, "w");
    fprintf(out, "{\"d_sae\": %zu, \"counts\": [", d_sae);
    for (size_t i = 0; i < d_sae; i++) {
        size_t c = 0;
        for (size_t t = 0; t < rows; t++)
            c += f[t * d_sae + i] > 0.0f;
        fprintf(out, i ? ", %zu" : "%zu", c);
        /* the card: the feature firing on the most rows below the median-ish
         * half, so it is not the densest one the sort test looks at */
        if (c >= top && c < rows / 2 && c > best) {
            best = c;
            card = i;
        }
    }
    if (card == d_sae) {
        fprintf(stderr, "make_case: no feature fires on %zu to %zu rows\n", top, rows / 2);
        return 1;
    }
    size_t n = 0;
    for (size_t t = 0; t < rows; t++)
        if (f[t * d_sae + card] > 0.0f)
            e[n++] = (entry){f[t * d_sae + card], t};
    qsort(e, n, sizeof *e, by_value_then_row);
    fprintf(out, "], \"card\": %zu, \"top_rows\": [", card);
    for (size_t k = 0; k < top; k++)
        fprintf(out, k ? ", %zu" : "%zu", e[k].row);
    fprintf(out, "]}\n");
    if (fclose(out) != 0)
        return 1;
    free(e);
    free(f);
    free(x);
    sae_model_free(m);
    return 0;
}
