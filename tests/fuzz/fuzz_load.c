/*
 * libFuzzer harness for the checkpoint loaders. Each input goes through:
 *   - sae_model_load_buffer and sae_optimizer_load_buffer (for a 3 x 5 model,
 *     the shape of the seed corpus);
 *   - sae_model_load and sae_optimizer_load of the same bytes written to a
 *     file, which must give the same status as the buffer loaders;
 *   - sae_model_load of a directory holding valid 3 x 5 weights with the input
 *     as its cfg.json.
 * Whatever loads must survive a round trip: saved again and reloaded it is
 * bit-identical, and a failed load leaves *out NULL. A violated property
 * aborts, which libFuzzer reports as a crash.
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

static char work_dir[80];
static char input_path[128], ckpt_dir[128], weights_path[160], cfg_path[160];
static sae_model *shape_model;

static void cleanup(void)
{
    unlink(input_path);
    unlink(cfg_path);
    unlink(weights_path);
    rmdir(ckpt_dir);
    rmdir(work_dir);
    sae_model_free(shape_model);
    shape_model = NULL;
}

const char *fuzz_setup(void)
{
    if (shape_model)
        return ckpt_dir;
    /* A memory file system when there is one: the harness writes two files
     * per input, which on a disk costs 30 times the loading itself. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!base || strlen(base) > 40)
        base = "/tmp";
    snprintf(work_dir, sizeof work_dir, "%s/sae_fuzz_XXXXXX", base);
    if (!mkdtemp(work_dir))
        abort();
    snprintf(input_path, sizeof input_path, "%s/input.safetensors", work_dir);
    snprintf(ckpt_dir, sizeof ckpt_dir, "%s/ckpt", work_dir);
    snprintf(weights_path, sizeof weights_path, "%s/sae_weights.safetensors", ckpt_dir);
    snprintf(cfg_path, sizeof cfg_path, "%s/cfg.json", ckpt_dir);
    if (mkdir(ckpt_dir, 0700) != 0 || sae_model_create(&shape_model, 3, 5, 1) != SAE_OK ||
        sae_model_save(shape_model, weights_path) != SAE_OK)
        abort();
    atexit(cleanup);
    return ckpt_dir;
}

const sae_model *fuzz_shape_model(void)
{
    fuzz_setup();
    return shape_model;
}

int fuzz_load_with_config(const uint8_t *data, size_t size)
{
    fuzz_setup();
    FILE *f = fopen(cfg_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    sae_model *m = (sae_model *)&m;
    int rc = sae_model_load(&m, ckpt_dir);
    if ((rc == SAE_OK) != (m != NULL))
        abort();
    sae_model_free(m);
    return rc;
}

static void check_model_round_trip(const sae_model *m)
{
    size_t size, written;
    if (sae_model_save_size(m, &size) != SAE_OK)
        abort();
    unsigned char *buf = malloc(size);
    if (!buf || sae_model_save_buffer(m, buf, size, &written) != SAE_OK || written != size)
        abort();
    sae_model *again;
    if (sae_model_load_buffer(&again, buf, size) != SAE_OK)
        abort();
    static const int which[4] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC};
    for (int k = 0; k < 4; k++) {
        size_t n = sae_model_tensor_size(m, which[k]);
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
        if (!a || !b || sae_model_tensor_size(again, which[k]) != n ||
            sae_model_get_tensor(m, which[k], a, n) != SAE_OK ||
            sae_model_get_tensor(again, which[k], b, n) != SAE_OK ||
            memcmp(a, b, n * sizeof(float)) != 0)
            abort();
        free(a);
        free(b);
    }
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

static void check_optimizer_round_trip(const sae_optimizer *o)
{
    size_t size, size2;
    unsigned char *buf = optimizer_encoding(o, &size);
    sae_optimizer *again;
    if (sae_optimizer_load_buffer(&again, shape_model, buf, size) != SAE_OK)
        abort();
    unsigned char *buf2 = optimizer_encoding(again, &size2);
    if (size != size2 || memcmp(buf, buf2, size) != 0)
        abort();
    free(buf2);
    free(buf);
    sae_optimizer_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup();
    /* buffers */
    sae_model *m = (sae_model *)&m;
    int model_rc = sae_model_load_buffer(&m, data, size);
    if ((model_rc == SAE_OK) != (m != NULL))
        abort();
    if (m)
        check_model_round_trip(m);
    sae_model_free(m);
    sae_optimizer *o = (sae_optimizer *)&o;
    int opt_rc = sae_optimizer_load_buffer(&o, shape_model, data, size);
    if ((opt_rc == SAE_OK) != (o != NULL))
        abort();
    if (o)
        check_optimizer_round_trip(o);
    sae_optimizer_free(o);

    /* the same bytes as a file */
    FILE *f = fopen(input_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        abort();
    m = (sae_model *)&m;
    if (sae_model_load(&m, input_path) != model_rc || (model_rc == SAE_OK) != (m != NULL))
        abort();
    sae_model_free(m);
    o = (sae_optimizer *)&o;
    if (sae_optimizer_load(&o, shape_model, input_path) != opt_rc ||
        (opt_rc == SAE_OK) != (o != NULL))
        abort();
    sae_optimizer_free(o);

    /* as cfg.json */
    fuzz_load_with_config(data, size);
    return 0;
}
