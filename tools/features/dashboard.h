/*
 * The feature dashboard of a model on a dataset, written from the library's
 * feature statistics: one self-contained HTML page (the template page.html
 * with the data inlined as JSON), the same JSON on its own, and one CSV row
 * per feature.
 *
 * The JSON (features.json, and the page's data):
 *   meta      title, checkpoint, data, labels (paths; labels null without),
 *             libsae (version), rows, d_in, d_sae, arch, k, l0, fvu (null if
 *             undefined), dense_threshold, edges (the histogram's n_bins + 1
 *             bin edges), image ([height, width] or null), top_n, nn_k
 *   features  per feature, arrays indexed by feature: count, mean, std (of
 *             the activation where it fires), max, hist ([first bin, counts
 *             of the bins from there to the last nonzero one...]), top_rows
 *             and top_values (largest first), nn and nn_cos (nearest features
 *             by decoder cosine), and with an image shape decoder (W_dec rows
 *             as base64 int8, scaled by each row's largest magnitude)
 *   rows      the data rows the top lists name: {id, label} with labels,
 *             {id, img} with an image shape (base64 bytes, 0..255 over the
 *             range of the rows shown)
 */
#ifndef SAE_FEATURES_DASHBOARD_H
#define SAE_FEATURES_DASHBOARD_H

#include <libsae/sae.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dashboard {
    const char *title, *checkpoint_path, *data_path, *labels_path; /* labels_path may be NULL */
    const sae_model *m;
    const sae_feature_stats *stats;
    const float *x;            /* rows x d_in: the data the statistics were fed */
    size_t rows, d_in;
    const uint32_t *nn;        /* d_sae x nn_k nearest features (NULL: none) */
    const float *nn_cos;       /* d_sae x nn_k their cosines */
    size_t nn_k;
    double l0, fvu;            /* fvu NaN: undefined on this data */
    double dense_threshold;    /* density at or above which a feature is dense */
    size_t image_h, image_w;   /* 0 x 0: the inputs are not drawn as images */
    /* the labels of the rows the top lists name (dashboard_top_rows order) */
    char *const *labels;       /* NULL without labels */
} dashboard;

/* The row ids the top lists name, ascending, each once: *ids (malloc'ed) and
 * *n. Returns 0, or -1 out of memory. */
int dashboard_top_rows(const sae_feature_stats *s, uint64_t **ids, size_t *n);

/* Write the page, the JSON or the CSV to path (through a temporary file
 * renamed into place). Return 0, or -1 with a one-line reason in err. */
int dashboard_write_html(const dashboard *d, const char *path, char *err, size_t errlen);
int dashboard_write_json(const dashboard *d, const char *path, char *err, size_t errlen);
int dashboard_write_csv(const dashboard *d, const char *path, char *err, size_t errlen);

#endif
