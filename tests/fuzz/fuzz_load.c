/*
 * libFuzzer harness for the checkpoint loaders. Each input goes through:
 *   - sae_model_load_buffer, and sae_optimizer_load_buffer for a 3 x 5 ReLU
 *     model and a 3 x 5 JumpReLU model (the shapes of the seed corpus);
 *   - sae_model_load and sae_optimizer_load of the same bytes written to a
 *     file, which must give the same status as the buffer loaders;
 *   - sae_model_load of a directory holding valid 3 x 5 weights of each
 *     architecture with the input as its cfg.json;
 *   - sae_feature_stats_load_buffer and sae_feature_stats_load.
 * Whatever loads must survive a round trip: saved again and reloaded it is
 * bit-identical, and a failed load leaves *out NULL. Loaded statistics must
 * also take more rows and a merge and still save and load. A violated
 * property aborts, which libFuzzer reports as a crash.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined by the `fuzz` target;
 * tests/fuzz/replay.c links the same function into an ordinary program that
 * replays the seed corpus in every CTest run.
 */
#define _XOPEN_SOURCE 700 /* mkdtemp */
#include "fuzz_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { N_ARCHS = 4 };

static char work_dir[80];
static char input_path[128];
static char ckpt_dir[N_ARCHS][128], weights_path[N_ARCHS][160], cfg_path[N_ARCHS][160];
static sae_model *shape_model, *jumprelu_shape_model;

static void cleanup(void)
{
    unlink(input_path);
    for (int a = 0; a < N_ARCHS; a++) {
        unlink(cfg_path[a]);
        unlink(weights_path[a]);
        rmdir(ckpt_dir[a]);
    }
    rmdir(work_dir);
    sae_model_free(shape_model);
    sae_model_free(jumprelu_shape_model);
    shape_model = jumprelu_shape_model = NULL;
}

const char *fuzz_setup(void)
{
    if (shape_model)
        return ckpt_dir[SAE_ARCH_RELU];
    /* A memory file system when there is one: the harness writes several files
     * per input, which on a disk costs 30 times the loading itself. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base || strlen(base) > 40)
        base = "/tmp";
    snprintf(work_dir, sizeof work_dir, "%s/sae_fuzz_XXXXXX", base);
    if (!mkdtemp(work_dir))
        abort();
    snprintf(input_path, sizeof input_path, "%s/input.safetensors", work_dir);
    /* the weights of each architecture: k = 2, JumpReLU thresholds 0.5,
     * BatchTopK's threshold unset */
    static const double param[N_ARCHS] = {[SAE_ARCH_RELU] = 0.0, [SAE_ARCH_TOPK] = 2.0,
                                          [SAE_ARCH_BATCHTOPK] = 2.0, [SAE_ARCH_JUMPRELU] = 0.5};
    for (int a = 0; a < N_ARCHS; a++) {
        snprintf(ckpt_dir[a], sizeof ckpt_dir[a], "%s/ckpt%d", work_dir, a);
        snprintf(weights_path[a], sizeof weights_path[a], "%s/sae_weights.safetensors",
                 ckpt_dir[a]);
        snprintf(cfg_path[a], sizeof cfg_path[a], "%s/cfg.json", ckpt_dir[a]);
        sae_model *m;
        if (mkdir(ckpt_dir[a], 0700) != 0 ||
            sae_model_create_arch(&m, 3, 5, 1, a, param[a]) != SAE_OK ||
            sae_model_save(m, weights_path[a]) != SAE_OK)
            abort();
        if (a == SAE_ARCH_RELU)
            shape_model = m;
        else if (a == SAE_ARCH_JUMPRELU)
            jumprelu_shape_model = m;
        else
            sae_model_free(m);
    }
    atexit(cleanup);
    return ckpt_dir[SAE_ARCH_RELU];
}

const sae_model *fuzz_shape_model(void)
{
    fuzz_setup();
    return shape_model;
}

const sae_model *fuzz_jumprelu_shape_model(void)
{
    fuzz_setup();
    return jumprelu_shape_model;
}

int fuzz_load_with_config(int arch, const uint8_t *data, size_t size)
{
    fuzz_setup();
    if (arch < 0 || arch >= N_ARCHS)
        abort();
    FILE *f = fopen(cfg_path[arch], "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    sae_model *m = (sae_model *)&m;
    int rc = sae_model_load(&m, ckpt_dir[arch]);
    if ((rc == SAE_OK) != (m != NULL) || (m && sae_model_arch(m) != arch))
        abort();
    sae_model_free(m);
    return rc;
}

static unsigned char *model_encoding(const sae_model *m, size_t *size)
{
    size_t written;
    if (sae_model_save_size(m, size) != SAE_OK)
        abort();
    unsigned char *buf = malloc(*size);
    if (!buf || sae_model_save_buffer(m, buf, *size, &written) != SAE_OK || written != *size)
        abort();
    return buf;
}

/* Saved and loaded again, m is the same model, and saves the same bytes. */
static void check_model_round_trip(const sae_model *m)
{
    size_t size, size2;
    unsigned char *buf = model_encoding(m, &size);
    sae_model *again;
    if (sae_model_load_buffer(&again, buf, size) != SAE_OK ||
        sae_model_arch(again) != sae_model_arch(m) || sae_model_k(again) != sae_model_k(m))
        abort();
    static const int which[5] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC, SAE_THRESHOLD};
    for (int k = 0; k < 5; k++) {
        size_t n = sae_model_tensor_size(m, which[k]);
        if (sae_model_tensor_size(again, which[k]) != n)
            abort();
        if (n == 0)
            continue;
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        if (!a || !b || sae_model_get_tensor(m, which[k], a, n) != SAE_OK ||
            sae_model_get_tensor(again, which[k], b, n) != SAE_OK ||
            memcmp(a, b, n * sizeof(float)) != 0)
            abort();
        free(a);
        free(b);
    }
    unsigned char *buf2 = model_encoding(again, &size2);
    if (size != size2 || memcmp(buf, buf2, size) != 0)
        abort();
    free(buf2);
    sae_model_free(again);
    free(buf);
}

static unsigned char *optimizer_encoding(const sae_optimizer *o, size_t *size)
{
    if (sae_optimizer_save_size(o, size) != SAE_OK)
        abort();
    unsigned char *buf = malloc(*size);
    if (!buf || sae_optimizer_save_buffer(o, buf, *size, NULL) != SAE_OK)
        abort();
    return buf;
}

static void check_optimizer_round_trip(const sae_optimizer *o, const sae_model *shape)
{
    size_t size, size2;
    unsigned char *buf = optimizer_encoding(o, &size);
    sae_optimizer *again;
    if (sae_optimizer_load_buffer(&again, shape, buf, size) != SAE_OK)
        abort();
    unsigned char *buf2 = optimizer_encoding(again, &size2);
    if (size != size2 || memcmp(buf, buf2, size) != 0)
        abort();
    free(buf2);
    free(buf);
    sae_optimizer_free(again);
}

static unsigned char *stats_encoding(const sae_feature_stats *s, size_t *size)
{
    if (sae_feature_stats_save_size(s, size) != SAE_OK)
        abort();
    unsigned char *buf = malloc(*size);
    if (!buf || sae_feature_stats_save_buffer(s, buf, *size, NULL) != SAE_OK)
        abort();
    return buf;
}

/* Loaded statistics: saved and reloaded they are the same; merged with their
 * copy (refused unless the rows could be disjoint) and fed a row with the
 * largest float, they still save and load. */
static void check_stats(sae_feature_stats *s)
{
    size_t size, size2;
    unsigned char *buf = stats_encoding(s, &size);
    sae_feature_stats *again;
    if (sae_feature_stats_load_buffer(&again, buf, size) != SAE_OK)
        abort();
    unsigned char *buf2 = stats_encoding(again, &size2);
    if (size != size2 || memcmp(buf, buf2, size) != 0)
        abort();
    free(buf2);
    free(buf);
    int rc = sae_feature_stats_merge(s, again);
    if (rc != SAE_OK && rc != SAE_E_INVALID_ARG)
        abort();
    sae_feature_stats_free(again);
    const size_t offsets[2] = {0, 1};
    const uint32_t feature = 0;
    const float value = 3.4028234663852886e38f;
    rc = sae_feature_stats_add_sparse(s, 1, offsets, &feature, &value);
    if (rc != SAE_OK && !(rc == SAE_E_INVALID_ARG && sae_feature_stats_next_row(s) == UINT64_MAX))
        abort();
    buf = stats_encoding(s, &size);
    if (sae_feature_stats_load_buffer(&again, buf, size) != SAE_OK)
        abort();
    sae_feature_stats_free(again);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup();
    const sae_model *shapes[2] = {shape_model, jumprelu_shape_model};
    /* buffers */
    sae_model *m = (sae_model *)&m;
    int model_rc = sae_model_load_buffer(&m, data, size);
    if ((model_rc == SAE_OK) != (m != NULL))
        abort();
    if (m)
        check_model_round_trip(m);
    sae_model_free(m);
    int opt_rc[2];
    for (int s = 0; s < 2; s++) {
        sae_optimizer *o = (sae_optimizer *)&o;
        opt_rc[s] = sae_optimizer_load_buffer(&o, shapes[s], data, size);
        if ((opt_rc[s] == SAE_OK) != (o != NULL))
            abort();
        if (o)
            check_optimizer_round_trip(o, shapes[s]);
        sae_optimizer_free(o);
    }
    /* a file fits at most one of the two layouts */
    if (opt_rc[0] == SAE_OK && opt_rc[1] == SAE_OK)
        abort();
    sae_feature_stats *st = (sae_feature_stats *)&st;
    int stats_rc = sae_feature_stats_load_buffer(&st, data, size);
    if ((stats_rc == SAE_OK) != (st != NULL) ||
        (stats_rc == SAE_OK && (model_rc == SAE_OK || opt_rc[0] == SAE_OK || opt_rc[1] == SAE_OK)))
        abort();
    if (st)
        check_stats(st);
    sae_feature_stats_free(st);

    /* the same bytes as a file */
    FILE *f = fopen(input_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        abort();
    m = (sae_model *)&m;
    if (sae_model_load(&m, input_path) != model_rc || (model_rc == SAE_OK) != (m != NULL))
        abort();
    sae_model_free(m);
    for (int s = 0; s < 2; s++) {
        sae_optimizer *o = (sae_optimizer *)&o;
        if (sae_optimizer_load(&o, shapes[s], input_path) != opt_rc[s] ||
            (opt_rc[s] == SAE_OK) != (o != NULL))
            abort();
        sae_optimizer_free(o);
    }
    st = (sae_feature_stats *)&st;
    if (sae_feature_stats_load(&st, input_path) != stats_rc || (stats_rc == SAE_OK) != (st != NULL))
        abort();
    sae_feature_stats_free(st);

    /* as cfg.json beside each architecture's weights */
    for (int a = 0; a < N_ARCHS; a++)
        fuzz_load_with_config(a, data, size);
    return 0;
}
