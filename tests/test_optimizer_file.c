/*
 * The optimizer file: sae_optimizer_save(_buffer) writes the Adam moments,
 * the step count, the activity counters and every option (read back by the
 * independent reader of tests/checkpoint_util.c), per architecture;
 * sae_optimizer_load refuses files that do not match the model or are
 * corrupt; and every allocation failure of every save and load returns
 * SAE_E_NOMEM, leaks nothing and leaves files and handles as they were.
 */
#define _GNU_SOURCE /* unshare, mount, mkdtemp, realpath */
#include "checkpoint_util.h"
#include "nomem.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the optimizer file ----------------------------------------------------- */

/* A trained model and optimizer with every option away from its default. */
static void trained_pair(size_t d_in, size_t d_sae, size_t steps, sae_model **m, sae_optimizer **o)
{
    test_trained_pair(d_in, d_sae, 5, steps, m, o);
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_LR, 3e-3), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_BETA1, 0.8), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_BETA2, 0.99), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_EPS, 1e-7), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_L1_COEFF, 5e-324), SAE_OK); /* subnormal */
    ck_assert_int_eq(sae_optimizer_set(*o, SAE_OPT_GRAD_CLIP, 0.0), SAE_OK);    /* zero */
}

/* sae_optimizer_load_buffer refuses (SAE_E_FORMAT, *out set to NULL) a copy
 * of the file b with the float at `at` bytes into tensor `name`'s data set to
 * value (at < 0: from the end of the data). */
static void expect_value_refused(const sae_model *m, bytes b, const char *name, long at, float value)
{
    bytes e = {malloc(b.len), b.len};
    memcpy(e.p, b.p, b.len);
    size_t len;
    unsigned char *p = (unsigned char *)st_tensor(e, name, "F32", &len);
    put_le_float(p + (at < 0 ? (long)len + at : at), value);
    sae_optimizer *back = (sae_optimizer *)&e;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, e.p, e.len), SAE_E_FORMAT);
    ck_assert_ptr_null(back);
    free(e.p);
}

/* ... and every strict prefix of b. */
static void expect_truncations_refused(const sae_model *m, bytes b)
{
    for (size_t len = 0; len < b.len; len++) {
        sae_optimizer *back = (sae_optimizer *)&b;
        ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, b.p, len), SAE_E_FORMAT);
        ck_assert_ptr_null(back);
    }
}

START_TEST(optimizer_round_trip)
{
    sae_model *m;
    sae_optimizer *o;
    trained_pair(3, 5, 4, &m, &o);
    bytes b = optimizer_bytes(o);
    size_t start;
    char *h = st_header(b, &start);
    ck_assert_uint_eq(start % 8, 0);
    const char *expect[] = {
        "\"libsae_format\":\"optimizer\"", "\"libsae_format_version\":\"1\"", "\"step\":\"4\"",
        "\"option.1\":\"0x1.89374bc6a7efap-9\"",  /* 3e-3 */
        "\"option.2\":\"0x1.999999999999ap-1\"",  /* 0.8 */
        "\"option.4\":\"0x1.ad7f29abcaf48p-24\"",  /* 1e-7 */
        "\"option.5\":\"0x0.0000000000001p-1022\"", /* 5e-324 */
        "\"option.6\":\"0x0.0p+0\"",
        "\"tokens_since_fired\":{\"dtype\":\"U64\",\"shape\":[5]",
        "\"W_enc.exp_avg\":{\"dtype\":\"F32\",\"shape\":[3,5]",
        "\"W_dec.exp_avg_sq\":{\"dtype\":\"F32\",\"shape\":[5,3]",
        "\"b_enc.exp_avg\":{\"dtype\":\"F32\",\"shape\":[5]",
        "\"b_dec.exp_avg_sq\":{\"dtype\":\"F32\",\"shape\":[3]"};
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++)
        ck_assert_msg(strstr(h, expect[k]) != NULL, "no %s in %s", expect[k], h);
    free(h);
    /* the counters, read independently */
    size_t len;
    const unsigned char *p = st_tensor(b, "tokens_since_fired", "U64", &len);
    uint64_t since[5];
    ck_assert_int_eq(sae_optimizer_tokens_since_fired(o, since, 5), SAE_OK);
    ck_assert_uint_eq(len, 40);
    for (int i = 0; i < 5; i++) {
        uint64_t v = 0;
        for (int k = 7; k >= 0; k--)
            v = v << 8 | p[8 * i + k];
        ck_assert_uint_eq(v, since[i]);
    }
    /* load: options, steps, counters, moments all come back */
    sae_optimizer *back;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, b.p, b.len), SAE_OK);
    optimizer_snapshot snap;
    opt_snapshot_take(&snap, o, 5);
    ck_assert(opt_snapshot_equal(&snap, back));
    opt_snapshot_free(&snap);
    ck_assert(back->m1_absmax == o->m1_absmax && back->m2_max == o->m2_max);
    bytes again = optimizer_bytes(back);
    ck_assert(same_bytes(b, again));
    free(again.p);
    /* and the next step is the same from both */
    sae_model *m2;
    bytes mb = model_bytes(m);
    ck_assert_int_eq(sae_model_load_buffer(&m2, mb.p, mb.len), SAE_OK);
    float *x = test_gaussian(24, 3, 1.0, 0.2, 999);
    ck_assert_int_eq(sae_step(m, o, x, 24, NULL), SAE_OK);
    ck_assert_int_eq(sae_step(m2, back, x, 24, NULL), SAE_OK);
    ck_assert(models_equal(m, m2));
    free(x);
    /* file and directory */
    char *dir = make_tmpdir();
    ck_assert_int_eq(sae_optimizer_save(o, dir), SAE_OK);
    char *file = join(dir, "optimizer.safetensors");
    bytes on_disk = read_file(file);
    bytes enc = optimizer_bytes(o);
    ck_assert(same_bytes(on_disk, enc));
    sae_optimizer *from_dir, *from_file;
    ck_assert_int_eq(sae_optimizer_load(&from_dir, m, dir), SAE_OK);
    ck_assert_int_eq(sae_optimizer_load(&from_file, m, file), SAE_OK);
    bytes e1 = optimizer_bytes(from_dir), e2 = optimizer_bytes(from_file);
    ck_assert(same_bytes(e1, enc) && same_bytes(e2, enc));
    free(e1.p), free(e2.p), free(enc.p), free(on_disk.p);
    sae_optimizer_free(from_dir);
    sae_optimizer_free(from_file);
    free(file);
    remove_tree(dir);
    free(dir);
    free(mb.p);
    sae_model_free(m2);
    sae_optimizer_free(back);
    free(b.p);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

START_TEST(optimizer_file_per_architecture)
{
    /* JumpReLU: the log thresholds' moments too, in torch.optim.Adam's names */
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, 3, 5, 4, SAE_ARCH_JUMPRELU, 0.5), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    const struct { int option; double value; const char *text; } opts[] = {
        {SAE_OPT_AUXK_COEFF, 0.125, "0x1.0000000000000p-3"},
        {SAE_OPT_AUXK_K, 3, "0x1.8000000000000p+1"},
        {SAE_OPT_DEAD_WINDOW, 40, "0x1.4000000000000p+5"},
        {SAE_OPT_JUMPRELU_BANDWIDTH, 1.0, "0x1.0000000000000p+0"},
        {SAE_OPT_THRESHOLD_BETA, 0.75, "0x1.8000000000000p-1"},
    };
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
        ck_assert_int_eq(sae_optimizer_set(o, opts[k].option, opts[k].value), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
    float *x = test_gaussian(16, 3, 3.0, 0.5, 8);
    for (int s = 0; s < 3; s++)
        ck_assert_int_eq(sae_step(m, o, x, 16, NULL), SAE_OK);
    bytes b = optimizer_bytes(o);
    size_t start;
    char *h = st_header(b, &start);
    ck_assert_ptr_nonnull(strstr(h, "\"log_threshold.exp_avg\":{\"dtype\":\"F32\",\"shape\":[5]"));
    ck_assert_ptr_nonnull(strstr(h, "\"log_threshold.exp_avg_sq\":{\"dtype\":\"F32\",\"shape\":[5]"));
    /* the architecture options, like every option */
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        char key[32];
        snprintf(key, sizeof key, "option.%d", opts[k].option);
        char *v = meta_value(h, key);
        ck_assert_msg(v && strcmp(v, opts[k].text) == 0, "%s: %s", key, v ? v : "missing");
        free(v);
    }
    free(h);
    /* the moments, read independently */
    for (int sq = 0; sq < 2; sq++) {
        size_t len;
        const unsigned char *p = st_tensor(b, sq ? "log_threshold.exp_avg_sq" : "log_threshold.exp_avg",
                                           "F32", &len);
        ck_assert_uint_eq(len, 20);
        const float *want = (sq ? o->m2 : o->m1) + o->lay.log_thr;
        int nonzero = 0;
        for (int i = 0; i < 5; i++) {
            ck_assert(le_float(p + 4 * i) == want[i]);
            nonzero += want[i] != 0.0f;
        }
        ck_assert_int_gt(nonzero, 0);
    }
    /* back: the same bytes, and the next step is the same from both */
    sae_optimizer *back;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, b.p, b.len), SAE_OK);
    bytes again = optimizer_bytes(back);
    ck_assert(same_bytes(b, again));
    free(again.p);
    bytes mb = model_bytes(m);
    sae_model *m2;
    ck_assert_int_eq(sae_model_load_buffer(&m2, mb.p, mb.len), SAE_OK);
    ck_assert_int_eq(sae_step(m, o, x, 16, NULL), SAE_OK);
    ck_assert_int_eq(sae_step(m2, back, x, 16, NULL), SAE_OK);
    ck_assert(models_equal(m, m2));
    free(mb.p);
    sae_model_free(m2);
    sae_optimizer_free(back);
    /* a JumpReLU file does not fit a ReLU model of the same shape, nor the
     * reverse; TopK's optimizer is ReLU's (the file holds no architecture) */
    sae_model *relu, *topk;
    ck_assert_int_eq(sae_model_create(&relu, 3, 5, 1), SAE_OK);
    ck_assert_int_eq(sae_model_create_arch(&topk, 3, 5, 1, SAE_ARCH_TOPK, 2), SAE_OK);
    back = o;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, relu, b.p, b.len), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    sae_optimizer *ro;
    ck_assert_int_eq(sae_optimizer_create(&ro, topk), SAE_OK);
    bytes rb = optimizer_bytes(ro);
    back = o;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, rb.p, rb.len), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, relu, rb.p, rb.len), SAE_OK);
    sae_optimizer_free(back);
    /* corruptions of the new tensors */
    const struct { const char *from, *to; int expect; } edits[] = {
        {"\"log_threshold.exp_avg_sq\"", "\"log_threshold.exp_avg_sqr\"", SAE_E_FORMAT},
        {"\"log_threshold.exp_avg\"", "\"log_threshold.exp_av\"", SAE_E_FORMAT},
        {"\"log_threshold.exp_avg\":{\"dtype\":\"F32\",\"shape\":[5]",
         "\"log_threshold.exp_avg\":{\"dtype\":\"F32\",\"shape\":[1,5]", SAE_E_FORMAT},
        {"\"log_threshold.exp_avg_sq\":{\"dtype\":\"F32\"", "\"log_threshold.exp_avg_sq\":{\"dtype\":\"I32\"",
         SAE_E_FORMAT},
    };
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        bytes e = st_edit(b, edits[k].from, edits[k].to);
        back = o;
        ck_assert_msg(sae_optimizer_load_buffer(&back, m, e.p, e.len) == edits[k].expect, "edit %zu", k);
        ck_assert_ptr_null(back);
        free(e.p);
    }
    /* values: a negative second moment, a NaN first moment */
    expect_value_refused(m, b, "log_threshold.exp_avg_sq", 8, -1e-9f);
    expect_value_refused(m, b, "log_threshold.exp_avg", 8, NAN);
    expect_truncations_refused(m, b);
    free(rb.p);
    sae_optimizer_free(ro);
    sae_model_free(topk);
    sae_model_free(relu);
    free(x);
    free(b.p);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

START_TEST(optimizer_load_errors)
{
    sae_model *m;
    sae_optimizer *o;
    trained_pair(3, 5, 2, &m, &o);
    bytes b = optimizer_bytes(o);
    sae_optimizer *back = o;
    /* arguments */
    ck_assert_int_eq(sae_optimizer_load_buffer(NULL, m, b.p, b.len), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, NULL, b.p, b.len), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    back = o;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, NULL, b.len), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    size_t size;
    ck_assert_int_eq(sae_optimizer_save_size(NULL, &size), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_save_size(o, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_save_buffer(NULL, b.p, b.len, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_save_buffer(o, NULL, b.len, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_save_buffer(o, b.p, b.len - 1, NULL), SAE_E_INVALID_ARG);
    /* a good file for another shape */
    sae_model *other;
    ck_assert_int_eq(sae_model_create(&other, 5, 3, 1), SAE_OK);
    back = o;
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, other, b.p, b.len), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    sae_model_free(other);
    /* a model file is not an optimizer file, nor the reverse */
    bytes mb = model_bytes(m);
    ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, mb.p, mb.len), SAE_E_FORMAT);
    sae_model *mback;
    ck_assert_int_eq(sae_model_load_buffer(&mback, b.p, b.len), SAE_E_FORMAT);
    free(mb.p);
    /* metadata and tensor edits */
    const struct { const char *from, *to; int expect; } edits[] = {
        {"\"libsae_format\":\"optimizer\"", "\"libsae_format\":\"model\"", SAE_E_FORMAT},
        {"\"libsae_format\":\"optimizer\",", "", SAE_E_FORMAT},
        {"\"libsae_format_version\":\"1\"", "\"libsae_format_version\":\"2\"", SAE_E_FORMAT},
        {"\"step\":\"2\"", "\"step\":\"02\"", SAE_E_FORMAT},
        {"\"step\":\"2\"", "\"step\":\"-2\"", SAE_E_FORMAT},
        {"\"step\":\"2\"", "\"step\":\"two\"", SAE_E_FORMAT},
        {"\"step\":\"2\"", "\"step\":\"18446744073709551616\"", SAE_E_FORMAT},
        {"\"step\":\"2\"", "\"step\":\"18446744073709551615\"", SAE_OK},
        {"\"step\":\"2\",", "", SAE_E_FORMAT},
        {"\"option.1\":", "\"option.999\":", SAE_E_FORMAT},  /* unknown option */
        {"\"option.1\":", "\"option.0\":", SAE_E_FORMAT},
        {"\"option.1\":", "\"option.01\":", SAE_E_FORMAT},
        {"\"option.1\":", "\"option.\":", SAE_E_FORMAT},
        {"\"option.1\":", "\"option.x\":", SAE_E_FORMAT},
        {"\"option.1\":", "\"option.-1\":", SAE_E_FORMAT},
        {"\"option.1\":", "\"option.99999999999\":", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"-0x1.89374bc6a7efap-9\"",
         SAE_E_FORMAT}, /* lr < 0 */
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0.003\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374BC6A7EFAp-9\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374bc6a7efp-9\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374bc6a7efap-1023\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374bc6a7efap+1024\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374bc6a7efap-09\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374bc6a7efap9\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x1.89374bc6a7efap-9 \"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"0x2.89374bc6a7efap-9\"", SAE_E_FORMAT},
        {"\"option.1\":\"0x1.89374bc6a7efap-9\"", "\"option.1\":\"inf\"", SAE_E_FORMAT},
        {"\"option.5\":\"0x0.0000000000001p-1022\"", "\"option.5\":\"0x0.0000000000001p-1021\"",
         SAE_E_FORMAT},
        {"\"option.5\":\"0x0.0000000000001p-1022\"", "\"option.5\":\"0x0.0000000000000p-1022\"",
         SAE_E_FORMAT},
        {"\"option.5\":\"0x0.0000000000001p-1022\"", "\"option.5\":\"-0x0.0000000000001p-1022\"",
         SAE_E_FORMAT}, /* lambda < 0 */
        {"\"option.6\":\"0x0.0p+0\"", "\"option.6\":\"0x0.0p-0\"", SAE_E_FORMAT},
        {"\"option.6\":\"0x0.0p+0\"", "\"option.6\":\"0x0p+0\"", SAE_E_FORMAT},
        {"\"option.2\":\"0x1.999999999999ap-1\"", "\"option.2\":\"0x1.0000000000000p+0\"",
         SAE_E_FORMAT}, /* beta1 = 1 */
        {"\"option.6\":\"0x0.0p+0\"", "\"option.6\":\"-0x0.0p+0\"", SAE_OK}, /* -0 >= 0 */
        {"\"option.6\":\"0x0.0p+0\"", "\"option.6\":\"0x1.6666666666666p-1\"", SAE_OK},
        {",\"option.6\":\"0x0.0p+0\"", "", SAE_OK}, /* absent: default */
        {"\"libsae_version\":\"" TEST_VERSION_TEXT "\",", "\"libsae_version\":\"99.0.0\",\"future\":\"x\",", SAE_OK},
        {"\"tokens_since_fired\":{\"dtype\":\"U64\"", "\"tokens_since_fired\":{\"dtype\":\"I64\"",
         SAE_E_FORMAT},
        {"\"tokens_since_fired\"", "\"tokens_since_fire\"", SAE_E_FORMAT},
        {"\"W_enc.exp_avg\":{\"dtype\":\"F32\",\"shape\":[3,5]",
         "\"W_enc.exp_avg\":{\"dtype\":\"F32\",\"shape\":[5,3]", SAE_E_FORMAT},
        {"\"b_dec.exp_avg\":{\"dtype\":\"F32\",\"shape\":[3]",
         "\"b_dec.exp_avg\":{\"dtype\":\"F32\",\"shape\":[1,3]", SAE_E_FORMAT},
        {"\"b_enc.exp_avg_sq\":{\"dtype\":\"F32\"", "\"b_enc.exp_avg_sq\":{\"dtype\":\"I32\"",
         SAE_E_FORMAT},
        {"\"b_enc.exp_avg_sq\"", "\"b_enc.unknown\"", SAE_E_FORMAT},
        {"\"__metadata__\":{", "\"__metadata__\":{\"a\":\"b\",", SAE_OK},
        {"\"__metadata__\":{", "\"extra\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                               "\"__metadata__\":{", SAE_E_FORMAT}, /* unknown tensor */
    };
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        bytes e = st_edit(b, edits[k].from, edits[k].to);
        size_t live = sae__test_bytes_live;
        back = o;
        int rc = sae_optimizer_load_buffer(&back, m, e.p, e.len);
        ck_assert_msg(rc == edits[k].expect, "edit %zu (%s): %d", k, edits[k].to, rc);
        if (rc == SAE_OK)
            sae_optimizer_free(back);
        else
            ck_assert_ptr_null(back);
        ck_assert_uint_eq(sae__test_bytes_live, live);
        free(e.p);
    }
    /* values: NaN and Inf moments, a negative second moment */
    const char *names[] = {"W_enc.exp_avg", "W_dec.exp_avg_sq", "b_enc.exp_avg", "b_dec.exp_avg_sq"};
    const float values[] = {NAN, INFINITY, -1.0f};
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < 3; v++) {
            if (v == 2 && k % 2 == 0)
                continue; /* first moments may be negative */
            expect_value_refused(m, b, names[k], -4, values[v]);
        }
    /* truncation at every byte */
    expect_truncations_refused(m, b);
    free(b.p);
    sae_optimizer_free(o);
    sae_model_free(m);
}
END_TEST

/* ---- allocation failures --------------------------------------------------------- */

typedef struct nomem_fx {
    sae_model *m;
    sae_optimizer *o;
    bytes model_enc, opt_enc;
    char *dir, *file, *ckpt, *opt_file;
    bytes file_before;
    sae_model *made_m;
    sae_optimizer *made_o;
} nomem_fx;

static int nm_model_load_buffer(void *p)
{
    nomem_fx *fx = p;
    fx->made_m = (sae_model *)fx;
    int rc = sae_model_load_buffer(&fx->made_m, fx->model_enc.p, fx->model_enc.len);
    ck_assert(rc == SAE_OK || fx->made_m == NULL);
    return rc;
}

static int nm_model_load_dir(void *p)
{
    nomem_fx *fx = p;
    fx->made_m = (sae_model *)fx;
    int rc = sae_model_load(&fx->made_m, fx->ckpt);
    ck_assert(rc == SAE_OK || fx->made_m == NULL);
    return rc;
}

static int nm_opt_load_buffer(void *p)
{
    nomem_fx *fx = p;
    fx->made_o = (sae_optimizer *)fx;
    int rc = sae_optimizer_load_buffer(&fx->made_o, fx->m, fx->opt_enc.p, fx->opt_enc.len);
    ck_assert(rc == SAE_OK || fx->made_o == NULL);
    return rc;
}

static int nm_opt_load_dir(void *p)
{
    nomem_fx *fx = p;
    fx->made_o = (sae_optimizer *)fx;
    int rc = sae_optimizer_load(&fx->made_o, fx->m, fx->ckpt);
    ck_assert(rc == SAE_OK || fx->made_o == NULL);
    return rc;
}

static int nm_model_save_file(void *p)
{
    nomem_fx *fx = p;
    return sae_model_save(fx->m, fx->file);
}

static int nm_model_save_dir(void *p)
{
    nomem_fx *fx = p;
    return sae_model_save(fx->m, fx->ckpt);
}

static int nm_opt_save_dir(void *p)
{
    nomem_fx *fx = p;
    return sae_optimizer_save(fx->o, fx->ckpt);
}

static int nm_opt_save_buffer(void *p)
{
    nomem_fx *fx = p;
    size_t size;
    int rc = sae_optimizer_save_size(fx->o, &size);
    if (rc != SAE_OK)
        return rc;
    unsigned char *buf = malloc(size);
    rc = sae_optimizer_save_buffer(fx->o, buf, size, NULL);
    if (rc == SAE_OK)
        ck_assert_mem_eq(buf, fx->opt_enc.p, size);
    free(buf);
    return rc;
}

/* After a failed save: the old file is there, unchanged, and nothing else. */
static void nm_file_unchanged(void *p)
{
    nomem_fx *fx = p;
    bytes now = read_file(fx->file);
    ck_assert(same_bytes(now, fx->file_before));
    free(now.p);
    ck_assert_int_eq(count_entries(fx->dir), 2); /* the file and ckpt/ */
}

static void nm_ckpt_unchanged(void *p)
{
    nomem_fx *fx = p;
    ck_assert_int_eq(count_entries(fx->ckpt), 3);
}

START_TEST(every_allocation_failure_is_clean)
{
    nomem_fx fx;
    memset(&fx, 0, sizeof fx);
    trained_pair(3, 5, 2, &fx.m, &fx.o);
    fx.model_enc = model_bytes(fx.m);
    fx.opt_enc = optimizer_bytes(fx.o);
    fx.dir = make_tmpdir();
    fx.file = join(fx.dir, "model.safetensors");
    fx.ckpt = join(fx.dir, "ckpt");
    ck_assert_int_eq(mkdir(fx.ckpt, 0755), 0);
    sae_model *old = trained_model(3, 5, 77);
    ck_assert_int_eq(sae_model_save(old, fx.file), SAE_OK);
    ck_assert_int_eq(sae_model_save(old, fx.ckpt), SAE_OK);
    ck_assert_int_eq(sae_optimizer_save(fx.o, fx.ckpt), SAE_OK);
    sae_model_free(old);
    fx.file_before = read_file(fx.file);

    /* buffer loads: the header text, the JSON nodes and strings, the tensor
     * table, the model or optimizer */
    ck_assert_int_ge(nomem_fail_each_allocation(nm_model_load_buffer, &fx, NULL), 6);
    ck_assert(models_equal(fx.m, fx.made_m));
    sae_model_free(fx.made_m);
    ck_assert_int_ge(nomem_fail_each_allocation(nm_opt_load_buffer, &fx, NULL), 8);
    sae_optimizer_free(fx.made_o);
    /* file loads add paths and cfg.json */
    ck_assert_int_ge(nomem_fail_each_allocation(nm_model_load_dir, &fx, NULL), 10);
    sae_model_free(fx.made_m);
    ck_assert_int_ge(nomem_fail_each_allocation(nm_opt_load_dir, &fx, NULL), 9);
    sae_optimizer_free(fx.made_o);
    /* saves: a failed one leaves everything as it was */
    ck_assert_int_ge(nomem_fail_each_allocation(nm_model_save_file, &fx, nm_file_unchanged), 2);
    ck_assert_int_ge(nomem_fail_each_allocation(nm_model_save_dir, &fx, nm_ckpt_unchanged), 6);
    ck_assert_int_ge(nomem_fail_each_allocation(nm_opt_save_dir, &fx, nm_ckpt_unchanged), 3);
    ck_assert_int_ge(nomem_fail_each_allocation(nm_opt_save_buffer, &fx, NULL), 1);
    /* a model save into a buffer allocates nothing */
    size_t calls = sae__test_alloc_calls;
    bytes again = model_bytes(fx.m);
    ck_assert_uint_eq(sae__test_alloc_calls, calls);
    free(again.p);

    free(fx.file_before.p);
    free(fx.model_enc.p);
    free(fx.opt_enc.p);
    remove_tree(fx.dir);
    free(fx.dir);
    free(fx.file);
    free(fx.ckpt);
    sae_optimizer_free(fx.o);
    sae_model_free(fx.m);
}
END_TEST

/* Every architecture's loads: the same allocations, each failure clean. */
START_TEST(every_allocation_failure_is_clean_per_architecture)
{
    for (size_t c = 0; c < N_ARCH_CASES; c++) {
        nomem_fx fx;
        memset(&fx, 0, sizeof fx);
        fx.m = trained_arch_model(arch_cases[c].arch, 3, 5, 30 + c);
        ck_assert_int_eq(sae_optimizer_create(&fx.o, fx.m), SAE_OK);
        float *x = test_gaussian(16, 3, 3.0, 0.5, 31);
        ck_assert_int_eq(sae_step(fx.m, fx.o, x, 16, NULL), SAE_OK);
        free(x);
        fx.model_enc = model_bytes(fx.m);
        fx.opt_enc = optimizer_bytes(fx.o);
        fx.dir = make_tmpdir();
        fx.ckpt = join(fx.dir, "ckpt");
        ck_assert_int_eq(mkdir(fx.ckpt, 0755), 0);
        ck_assert_int_eq(sae_model_save(fx.m, fx.ckpt), SAE_OK);
        ck_assert_int_eq(sae_optimizer_save(fx.o, fx.ckpt), SAE_OK);
        ck_assert_int_ge(nomem_fail_each_allocation(nm_model_load_buffer, &fx, NULL), 6);
        ck_assert(models_equal(fx.m, fx.made_m));
        sae_model_free(fx.made_m);
        ck_assert_int_ge(nomem_fail_each_allocation(nm_model_load_dir, &fx, NULL), 10);
        ck_assert(models_equal(fx.m, fx.made_m));
        sae_model_free(fx.made_m);
        ck_assert_int_ge(nomem_fail_each_allocation(nm_opt_load_buffer, &fx, NULL), 8);
        sae_optimizer_free(fx.made_o);
        ck_assert_int_ge(nomem_fail_each_allocation(nm_model_save_dir, &fx, nm_ckpt_unchanged), 6);
        /* a model save into a buffer allocates nothing */
        size_t calls = sae__test_alloc_calls;
        bytes again = model_bytes(fx.m);
        ck_assert_uint_eq(sae__test_alloc_calls, calls);
        ck_assert(same_bytes(again, fx.model_enc));
        free(again.p);
        free(fx.model_enc.p);
        free(fx.opt_enc.p);
        remove_tree(fx.dir);
        free(fx.dir);
        free(fx.ckpt);
        sae_optimizer_free(fx.o);
        sae_model_free(fx.m);
    }
}
END_TEST

static Suite *optimizer_file_suite(void)
{
    Suite *s = suite_create("optimizer_file");
    TCase *opt = tcase_create("optimizer");
    tcase_set_timeout(opt, 120);
    tcase_add_test(opt, optimizer_round_trip);
    tcase_add_test(opt, optimizer_load_errors);
    tcase_add_test(opt, optimizer_file_per_architecture);
    tcase_add_test(opt, every_allocation_failure_is_clean);
    tcase_add_test(opt, every_allocation_failure_is_clean_per_architecture);
    suite_add_tcase(s, opt);
    return s;
}

TEST_MAIN(optimizer_file_suite)
