/*
 * The model file: sae_model_save(_buffer) writes safetensors in SAELens's
 * layout, read back here by an independent minimal reader
 * (tests/checkpoint_util.c); sae_model_load(_buffer) reads files written by
 * an independent minimal writer, converts f16/bf16/f64, and refuses every
 * kind of corrupt file (each corruption, bad lengths and values, truncation
 * at every byte). Each architecture (ReLU, TopK, BatchTopK, JumpReLU)
 * round-trips bit for bit, is written as SAELens reads it, and has its own
 * corruptions.
 */
#define _GNU_SOURCE /* unshare, mount, mkdtemp, realpath */
#include "../src/safetensors.h"
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

/* ---- the model file ----------------------------------------------------------- */

/* a and b (a model and the same loaded back) compute the same features, bit
 * for bit, on n Gaussian rows (test_gaussian's scale, offset and seed);
 * a's go to f (n x d_sae) unless f is NULL. */
static void expect_same_features(const sae_model *a, const sae_model *b, size_t n, double scale,
                                 double offset, uint64_t seed, float *f)
{
    const size_t count = n * sae_model_d_sae(a);
    float *x = test_gaussian(n, sae_model_d_in(a), scale, offset, seed);
    float *fa = malloc(count * sizeof *fa), *fb = malloc(count * sizeof *fb);
    ck_assert_int_eq(sae_encode(a, x, n, fa), SAE_OK);
    ck_assert_int_eq(sae_encode(b, x, n, fb), SAE_OK);
    ck_assert_mem_eq(fa, fb, count * sizeof *fa);
    if (f)
        memcpy(f, fa, count * sizeof *fa);
    free(fb);
    free(fa);
    free(x);
}

START_TEST(model_file_is_saelens_layout)
{
    const size_t d_in = 3, d_sae = 5;
    sae_model *m = trained_model(d_in, d_sae, 11);
    bytes b = model_bytes(m);
    size_t start;
    char *h = st_header(b, &start);
    ck_assert_uint_eq(start % 8, 0); /* header padded: the data is aligned */
    ck_assert_ptr_nonnull(strstr(h, "\"__metadata__\":{\"libsae_architecture\":\"standard\","
                                    "\"libsae_version\":\"" TEST_VERSION_TEXT "\"}"));
    ck_assert_ptr_nonnull(strstr(h, "\"W_enc\":{\"dtype\":\"F32\",\"shape\":[3,5]"));
    ck_assert_ptr_nonnull(strstr(h, "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[5,3]"));
    ck_assert_ptr_nonnull(strstr(h, "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[5]"));
    ck_assert_ptr_nonnull(strstr(h, "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[3]"));
    free(h);
    /* every tensor, read independently, equals what get_tensor returns */
    const struct { const char *name; int which; } tensors[] = {
        {"W_enc", SAE_W_ENC}, {"W_dec", SAE_W_DEC}, {"b_enc", SAE_B_ENC}, {"b_dec", SAE_B_DEC}};
    for (int k = 0; k < 4; k++) {
        size_t len, count = sae_model_tensor_size(m, tensors[k].which);
        const unsigned char *p = st_tensor(b, tensors[k].name, "F32", &len);
        ck_assert_uint_eq(len, 4 * count);
        float want[15];
        ck_assert_int_eq(sae_model_get_tensor(m, tensors[k].which, want, count), SAE_OK);
        for (size_t i = 0; i < count; i++) {
            ck_assert(want[i] != 0.0f);
            ck_assert(le_float(p + 4 * i) == want[i]);
        }
    }
    /* and it loads back bit for bit */
    sae_model *back = (sae_model *)&b;
    ck_assert_int_eq(sae_model_load_buffer(&back, b.p, b.len), SAE_OK);
    ck_assert(models_equal(m, back));
    /* a loaded model works: encode agrees with the original */
    expect_same_features(m, back, 4, 1.0, 0.0, 5, NULL);
    sae_model_free(back);
    free(b.p);
    sae_model_free(m);
}
END_TEST

START_TEST(save_buffer_arguments)
{
    sae_model *m = trained_model(3, 5, 1);
    size_t size;
    ck_assert_int_eq(sae_model_save_size(NULL, &size), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_save_size(m, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_save_size(m, &size), SAE_OK);
    unsigned char *buf = malloc(size + 16);
    memset(buf, 0xA5, size + 16);
    size_t written = 12345;
    ck_assert_int_eq(sae_model_save_buffer(m, buf, size - 1, &written), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_save_buffer(NULL, buf, size, &written), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_save_buffer(m, NULL, size, &written), SAE_E_INVALID_ARG);
    ck_assert_uint_eq(written, 12345);
    for (size_t k = 0; k < size + 16; k++)
        ck_assert_uint_eq(buf[k], 0xA5); /* untouched */
    ck_assert_int_eq(sae_model_save_buffer(m, buf, size + 16, NULL), SAE_OK);
    ck_assert_uint_eq(buf[size], 0xA5); /* nothing past the encoding */
    sae_model *back = (sae_model *)buf;
    ck_assert_int_eq(sae_model_load_buffer(NULL, buf, size), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_load_buffer(&back, NULL, size), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    back = (sae_model *)buf;
    ck_assert_int_eq(sae_model_load_buffer(&back, buf, 0), SAE_E_FORMAT);
    ck_assert_ptr_null(back);
    ck_assert_int_eq(sae_model_load_buffer(&back, buf, size + 1), SAE_E_FORMAT); /* trailing byte */
    ck_assert_int_eq(sae_model_load_buffer(&back, buf, size), SAE_OK);
    sae_model_free(back);
    free(buf);
    sae_model_free(m);
}
END_TEST

/* The 2 x 3 model written by the independent writer: W_enc [2,3], W_dec [3,2],
 * b_enc [3], b_dec [2]; 17 values in file order. */
#define GOOD_HEADER                                                                 \
    "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"       \
    "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[24,48]},"       \
    "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]},"         \
    "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]}}"

static void good_values(float v[17])
{
    for (int k = 0; k < 17; k++)
        v[k] = (float)k * 0.25f - 2.0f;
}

static bytes good_file(void)
{
    float v[17];
    unsigned char data[68];
    good_values(v);
    for (int k = 0; k < 17; k++)
        put_le_float(data + 4 * k, v[k]);
    return st_build(GOOD_HEADER, data, sizeof data);
}

static void check_good_model(const sae_model *m, const float v[17])
{
    ck_assert_uint_eq(sae_model_d_in(m), 2);
    ck_assert_uint_eq(sae_model_d_sae(m), 3);
    float t[6];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, t, 6), SAE_OK);
    ck_assert_mem_eq(t, v, 6 * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, t, 6), SAE_OK);
    ck_assert_mem_eq(t, v + 6, 6 * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_ENC, t, 3), SAE_OK);
    ck_assert_mem_eq(t, v + 12, 3 * sizeof(float));
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, t, 2), SAE_OK);
    ck_assert_mem_eq(t, v + 15, 2 * sizeof(float));
}

START_TEST(loads_an_independently_written_file)
{
    float v[17];
    good_values(v);
    bytes b = good_file();
    sae_model *m;
    ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_OK);
    check_good_model(m, v);
    /* its parameters' maximum is known to the step's overflow guard */
    ck_assert(m->param_absmax == 2.0f);
    sae_model_free(m);
    /* keys in any order, padding, escapes in names, extra tensors ignored
     * (any dtype, rank 0, empty), metadata */
    const char *header =
        "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\\u00e9\"},"
        "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[60,68]},"
        "\"extra.empty\":{\"dtype\":\"I64\",\"shape\":[0,4],\"data_offsets\":[68,68]},"
        "\"W_\\u0065nc\":{\"data_offsets\":[0,24],\"shape\":[2,3],\"dtype\":\"F32\"},"
        "\"extra.scalar\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[68,69]},"
        "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]},"
        "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[24,48]}}     ";
    unsigned char data[69];
    memcpy(data, b.p + b.len - 68, 68);
    data[68] = 7;
    bytes b2 = st_build(header, data, sizeof data);
    ck_assert_int_eq(sae_model_load_buffer(&m, b2.p, b2.len), SAE_OK);
    check_good_model(m, v);
    sae_model_free(m);
    free(b2.p);
    free(b.p);
}
END_TEST

/* F16, BF16 and F64 tensors convert exactly (each value below is exactly
 * representable in its dtype). */
START_TEST(converts_f16_bf16_f64)
{
    /* half: 1, -2, 0.5, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest
     * normal), -0, 1.5, 0.333251953125, 1023 * 2^-24 (largest subnormal) */
    const uint16_t half[10] = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001,
                               0x0400, 0x8000, 0x3E00, 0x3555, 0x03FF};
    const float half_val[10] = {1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f, 0x1p-14f, -0.0f, 1.5f,
                                0.333251953125f, 1023 * 0x1p-24f};
    /* bfloat16: the top half of a float */
    const uint16_t bf[7] = {0x3F80, 0xC000, 0x4049, 0x7F7F, 0x0001, 0xBE80, 0x0000};
    const float bf_val[7] = {1.0f, -2.0f, 3.140625f, 0x1.fep127f, 0x1p-133f, -0.25f, 0.0f};
    /* W_enc [2,3] F16 (6 halves), W_dec [3,2] BF16 (6), b_enc [3] F64, b_dec [2] F16 */
    const char *header = "{\"W_enc\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                         "\"W_dec\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[12,24]},"
                         "\"b_enc\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[24,48]},"
                         "\"b_dec\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[48,52]}}";
    const double dbl[3] = {0.1, -1e30, 3.4028234663852886e38};
    unsigned char data[52];
    for (int k = 0; k < 6; k++) {
        data[2 * k] = (unsigned char)(half[k]);
        data[2 * k + 1] = (unsigned char)(half[k] >> 8);
        data[12 + 2 * k] = (unsigned char)(bf[k]);
        data[12 + 2 * k + 1] = (unsigned char)(bf[k] >> 8);
    }
    for (int k = 0; k < 3; k++) {
        uint64_t u;
        memcpy(&u, &dbl[k], 8);
        for (int j = 0; j < 8; j++)
            data[24 + 8 * k + j] = (unsigned char)(u >> (8 * j));
    }
    for (int k = 0; k < 2; k++) {
        data[48 + 2 * k] = (unsigned char)(half[6 + k + 2 * (k == 1)]);
        data[48 + 2 * k + 1] = (unsigned char)(half[6 + k + 2 * (k == 1)] >> 8);
    }
    bytes b = st_build(header, data, sizeof data);
    sae_model *m;
    ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_OK);
    float t[6];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_ENC, t, 6), SAE_OK);
    for (int k = 0; k < 6; k++)
        ck_assert_msg(t[k] == half_val[k] && signbit(t[k]) == signbit(half_val[k]),
                      "half %d: %a", k, (double)t[k]);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_W_DEC, t, 6), SAE_OK);
    for (int k = 0; k < 6; k++)
        ck_assert_msg(t[k] == bf_val[k], "bf16 %d: %a", k, (double)t[k]);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_ENC, t, 3), SAE_OK);
    for (int k = 0; k < 3; k++)
        ck_assert(t[k] == (float)dbl[k]);
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_B_DEC, t, 2), SAE_OK);
    ck_assert(t[0] == -0.0f && signbit(t[0]));
    ck_assert(t[1] == 1023 * 0x1p-24f);
    sae_model_free(m);
    free(b.p);
}
END_TEST

/* Each case: a header (with the 68 data bytes of the good file, or data_len
 * of them) that must be refused. */
static const struct corrupt_case {
    const char *what;
    const char *header;
    size_t data_len;
} corrupt_cases[] = {
#define T(name, dtype, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"
#define W_ENC T("W_enc", "F32", "[2,3]", 0, 24)
#define W_DEC T("W_dec", "F32", "[3,2]", 24, 48)
#define B_ENC T("b_enc", "F32", "[3]", 48, 60)
#define B_DEC T("b_dec", "F32", "[2]", 60, 68)
    {"data one byte short", GOOD_HEADER, 67},
    {"data one byte long", GOOD_HEADER, 69},
    {"not JSON", "hello world", 68},
    {"not an object", "[" W_ENC "]", 68},
    {"leading space", " {" W_ENC "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"trailing garbage", GOOD_HEADER "x", 68},
    {"trailing text", GOOD_HEADER "\\u0000", 68},
    {"missing b_dec", "{" W_ENC "," W_DEC "," B_ENC "}", 60},
    {"missing W_enc", "{" W_DEC "," B_ENC "," B_DEC "}", 68},
    {"duplicate W_enc", "{" W_ENC "," W_ENC "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"duplicate via escape", "{" W_ENC ",\"W_\\u0065nc\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                             "\"data_offsets\":[0,24]}," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"integer dtype", "{" T("W_enc", "I32", "[2,3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"unknown dtype", "{" T("W_enc", "F31", "[2,3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"lower-case dtype", "{" T("W_enc", "f32", "[2,3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"W_enc transposed", "{" T("W_enc", "F32", "[3,2]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"W_enc flat", "{" T("W_enc", "F32", "[6]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"W_enc rank 3", "{" T("W_enc", "F32", "[1,2,3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"W_dec disagrees", "{" W_ENC "," T("W_dec", "F32", "[2,3]", 24, 48) "," B_ENC "," B_DEC "}", 68},
    {"b_enc disagrees", "{" W_ENC "," W_DEC "," T("b_enc", "F32", "[2]", 48, 56) ","
                        T("b_dec", "F32", "[3]", 56, 68) "}", 68},
    {"b_dec rank 2", "{" W_ENC "," W_DEC "," B_ENC "," T("b_dec", "F32", "[1,2]", 60, 68) "}", 68},
    {"zero dimension", "{" T("W_enc", "F32", "[0,3]", 0, 0) "," T("W_dec", "F32", "[3,0]", 0, 0) ","
                       T("b_enc", "F32", "[3]", 0, 12) "," T("b_dec", "F32", "[0]", 12, 12) "}", 12},
    {"size disagrees with shape", "{" T("W_enc", "F32", "[2,3]", 0, 28) "," T("W_dec", "F32", "[3,2]", 28, 48)
                                  "," B_ENC "," B_DEC "}", 68},
    {"end before begin", "{" T("W_enc", "F32", "[2,3]", 24, 0) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"overlap", "{" W_ENC "," T("W_dec", "F32", "[3,2]", 20, 44) "," T("b_enc", "F32", "[3]", 44, 56)
                "," T("b_dec", "F32", "[2]", 56, 64) "}", 68},
    {"gap", "{" W_ENC "," T("W_dec", "F32", "[3,2]", 28, 52) "," T("b_enc", "F32", "[3]", 52, 64)
            "," T("b_dec", "F32", "[2]", 64, 72) "}", 72},
    {"not starting at 0", "{" T("W_enc", "F32", "[2,3]", 4, 28) "," T("W_dec", "F32", "[3,2]", 28, 52)
                          "," T("b_enc", "F32", "[3]", 52, 64) "," T("b_dec", "F32", "[2]", 64, 72) "}", 72},
    {"beyond the file", "{" W_ENC "," W_DEC "," B_ENC "," T("b_dec", "F32", "[2]", 60, 68) ","
                        T("extra", "F32", "[1]", 68, 72) "}", 68},
    {"huge offsets", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("x", "U8", "[1]",
                     18446744073709551614, 18446744073709551615) "}", 68},
    {"offset overflows u64", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("x", "U8", "[1]",
                             68, 18446744073709551616) "}", 68},
    {"shape product overflows", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("x", "U8",
                                "[4294967296,4294967296]", 68, 68) "}", 68},
    {"bytes overflow", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("x", "U64",
                       "[2305843009213693952,4]", 68, 68) "}", 68},
    {"rank 9", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("x", "U8",
               "[1,1,1,1,1,1,1,1,1]", 68, 69) "}", 69},
    {"negative offset", "{" T("W_enc", "F32", "[2,3]", -0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"fractional shape", "{" T("W_enc", "F32", "[2.0,3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"exponent offset", "{" T("W_enc", "F32", "[2,3]", 0, 2.4e1) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"leading zero", "{" T("W_enc", "F32", "[02,3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"string shape", "{" T("W_enc", "F32", "\"[2,3]\"", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"three offsets", "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24,24]},"
                      W_DEC "," B_ENC "," B_DEC "}", 68},
    {"missing shape", "{\"W_enc\":{\"dtype\":\"F32\",\"data_offsets\":[0,24]}," W_DEC "," B_ENC
                      "," B_DEC "}", 68},
    {"unknown field", "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],"
                      "\"x\":1}," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"duplicate field", "{\"W_enc\":{\"dtype\":\"F32\",\"shape\":[2,3],\"shape\":[2,3],"
                        "\"data_offsets\":[0,24]}," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"tensor is a string", "{\"W_enc\":\"F32\"," W_DEC "," B_ENC "," B_DEC "}", 44},
    {"metadata not strings", "{\"__metadata__\":{\"a\":1}," W_ENC "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"metadata not an object", "{\"__metadata__\":\"pt\"," W_ENC "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"two metadata", "{\"__metadata__\":{},\"__metadata__\":{}," W_ENC "," W_DEC "," B_ENC "," B_DEC
                     "}", 68},
    {"too deep", "{" T("W_enc", "F32", "[[2],3]", 0, 24) "," W_DEC "," B_ENC "," B_DEC "}", 68},
    {"nested metadata", "{\"__metadata__\":{\"a\":{\"b\":\"c\"}}," W_ENC "," W_DEC "," B_ENC "," B_DEC
                        "}", 68},
    /* (the 12 data bytes after the good file's are zeros) */
    {"JumpReLU threshold of 0", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("threshold", "F32",
                                "[3]", 68, 80) "}", 80},
    {"JumpReLU threshold of another shape", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC ","
                                            T("threshold", "F32", "[2]", 68, 76) "}", 76},
    /* (a [d_sae] log_threshold is SAELens's JumpReLU training checkpoint: it loads) */
    {"JumpReLU log_threshold of another shape", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC ","
                                                T("log_threshold", "F32", "[2]", 68, 76) "}", 76},
    {"BatchTopK training state", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("topk_threshold",
                                 "F64", "[]", 68, 76) "}", 76},
    {"gated b_gate", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("b_gate", "F32", "[3]", 68, 80) "}", 80},
    {"scaling factor not ones", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("scaling_factor", "F32",
                                "[3]", 0, 12) "}", 68},
    {"scaling factor wrong shape", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("scaling_factor", "F32",
                                   "[2]", 68, 76) "}", 76},
    {"invalid UTF-8 name", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("\xff", "U8", "[0]", 68, 68)
                           "}", 68},
    {"control character in name", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("a\tb", "U8", "[0]", 68,
                                  68) "}", 68},
};

START_TEST(refuses_each_corruption)
{
    unsigned char data[80];
    float v[17];
    good_values(v);
    for (int k = 0; k < 17; k++)
        put_le_float(data + 4 * k, v[k]);
    for (int k = 68; k < 80; k++)
        data[k] = 0;
    for (size_t c = 0; c < sizeof corrupt_cases / sizeof corrupt_cases[0]; c++) {
        const struct corrupt_case *cc = &corrupt_cases[c];
        bytes b = st_build(cc->header, data, cc->data_len);
        size_t live = sae__test_bytes_live;
        sae_model *m = (sae_model *)&b;
        int rc = sae_model_load_buffer(&m, b.p, b.len);
        ck_assert_msg(rc == SAE_E_FORMAT, "%s: status %d", cc->what, rc);
        ck_assert_ptr_null(m);
        ck_assert_uint_eq(sae__test_bytes_live, live);
        free(b.p);
    }
}
END_TEST

START_TEST(refuses_bad_lengths_and_values)
{
    bytes good = good_file();
    sae_model *m;
    /* the header length field */
    const uint64_t lengths[] = {0, 1, good.len - 8 + 1, UINT64_MAX, (uint64_t)1 << 63,
                                100000001};
    for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
        bytes b = {malloc(good.len), good.len};
        memcpy(b.p, good.p, good.len);
        for (int j = 0; j < 8; j++)
            b.p[j] = (unsigned char)(lengths[k] >> (8 * j));
        ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_E_FORMAT);
        ck_assert_ptr_null(m);
        free(b.p);
    }
    /* "{}" is a valid empty file, but has no model */
    bytes empty = st_build("{}", NULL, 0);
    ck_assert_int_eq(sae_model_load_buffer(&m, empty.p, empty.len), SAE_E_FORMAT);
    free(empty.p);
    /* NaN, Inf in each dtype */
    size_t start;
    char *h = st_header(good, &start);
    free(h);
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++)
        for (size_t pos = start; pos < good.len; pos += 4 * 5) {
            bytes b = {malloc(good.len), good.len};
            memcpy(b.p, good.p, good.len);
            put_le_float(b.p + pos, bad[k]);
            ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_E_FORMAT);
            ck_assert_ptr_null(m);
            free(b.p);
        }
    const char *h16 = "{\"W_enc\":{\"dtype\":\"%s\",\"shape\":[2,3],\"data_offsets\":[0,%d]},"
                      "\"W_dec\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[%d,%d]},"
                      "\"b_enc\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[%d,%d]},"
                      "\"b_dec\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%d,%d]}}";
    const struct { const char *dtype; int size; uint64_t bits; } nonfinite[] = {
        {"F16", 2, 0x7C00}, {"F16", 2, 0xFC00}, {"F16", 2, 0x7E00}, {"BF16", 2, 0x7F80},
        {"BF16", 2, 0xFFC0}, {"F64", 8, 0x7FF0000000000000ULL}, {"F64", 8, 0x7FF8000000000000ULL},
        {"F64", 8, 0x47F0000000000000ULL} /* 2^128: beyond float */,
    };
    for (size_t k = 0; k < sizeof nonfinite / sizeof nonfinite[0]; k++) {
        int w = 6 * nonfinite[k].size;
        char header[512];
        snprintf(header, sizeof header, h16, nonfinite[k].dtype, w, w, w + 24, w + 24, w + 36,
                 w + 36, w + 44);
        unsigned char data[48 + 44];
        memset(data, 0, sizeof data);
        for (int j = 0; j < nonfinite[k].size; j++)
            data[3 * nonfinite[k].size + j] = (unsigned char)(nonfinite[k].bits >> (8 * j));
        bytes b = st_build(header, data, (size_t)w + 44);
        ck_assert_msg(sae_model_load_buffer(&m, b.p, b.len) == SAE_E_FORMAT, "%s %llx",
                      nonfinite[k].dtype, (unsigned long long)nonfinite[k].bits);
        /* the same file with a finite value there loads */
        memset(b.p + b.len - w - 44, 0, (size_t)w);
        ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_OK);
        sae_model_free(m);
        free(b.p);
    }
    free(good.p);
}
END_TEST

START_TEST(survives_truncation_at_every_byte)
{
    sae_model *src = trained_model(3, 5, 4);
    bytes b = model_bytes(src);
    char *dir = make_tmpdir();
    char *path = join(dir, "cut.safetensors");
    for (size_t len = 0; len < b.len; len++) {
        sae_model *m = src;
        ck_assert_int_eq(sae_model_load_buffer(&m, b.p, len), SAE_E_FORMAT);
        ck_assert_ptr_null(m);
        if (len % 7 == 0 || len < 16) { /* the file loader too, on a sample */
            write_file(path, b.p, len);
            m = src;
            ck_assert_int_eq(sae_model_load(&m, path), SAE_E_FORMAT);
            ck_assert_ptr_null(m);
        }
    }
    free(path);
    remove_tree(dir);
    free(dir);
    free(b.p);
    sae_model_free(src);
}
END_TEST

START_TEST(each_architecture_round_trips)
{
    const size_t d_in = 3, d_sae = 5;
    for (size_t c = 0; c < N_ARCH_CASES; c++) {
        const int arch = arch_cases[c].arch;
        sae_model *m = trained_arch_model(arch, d_in, d_sae, 7 + c);
        bytes b = model_bytes(m);
        size_t start;
        char *h = st_header(b, &start);
        char *name = meta_value(h, "libsae_architecture");
        ck_assert_str_eq(name, arch_cases[c].name);
        free(name);
        char *k = meta_value(h, "libsae_k");
        if (arch == SAE_ARCH_TOPK || arch == SAE_ARCH_BATCHTOPK)
            ck_assert_str_eq(k, "2");
        else
            ck_assert_ptr_null(k);
        free(k);
        /* the threshold tensor SAELens reads: theta for JumpReLU, BatchTopK's
         * threshold in every feature */
        float theta[5];
        if (arch == SAE_ARCH_JUMPRELU || arch == SAE_ARCH_BATCHTOPK) {
            size_t len, n = sae_model_tensor_size(m, SAE_THRESHOLD);
            ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, theta, n), SAE_OK);
            const unsigned char *p = st_tensor(b, "threshold", "F32", &len);
            ck_assert_uint_eq(len, 4 * d_sae);
            for (size_t i = 0; i < d_sae; i++) {
                float want = theta[arch == SAE_ARCH_JUMPRELU ? i : 0];
                ck_assert(want > 0.0f);
                ck_assert(le_float(p + 4 * i) == want);
            }
            ck_assert_ptr_nonnull(strstr(h, "\"threshold\":{\"dtype\":\"F32\",\"shape\":[5]"));
        } else {
            ck_assert_ptr_null(strstr(h, "threshold"));
        }
        char *raw = meta_value(h, "libsae_threshold");
        if (arch == SAE_ARCH_BATCHTOPK) {
            ck_assert_ptr_nonnull(raw);
            char *end;
            ck_assert(strtod(raw, &end) == (double)theta[0] && *end == '\0'); /* C99 hex float */
        } else {
            ck_assert_ptr_null(raw);
        }
        free(raw);
        /* JumpReLU: the log thresholds themselves, as float bit patterns */
        char *hex = meta_value(h, "libsae_log_threshold");
        if (arch == SAE_ARCH_JUMPRELU) {
            ck_assert_ptr_nonnull(hex);
            ck_assert_uint_eq(strlen(hex), 8 * d_sae);
            for (size_t i = 0; i < d_sae; i++) {
                char digits[9];
                memcpy(digits, hex + 8 * i, 8);
                digits[8] = '\0';
                uint32_t bits = (uint32_t)strtoul(digits, NULL, 16), want;
                memcpy(&want, &sae__log_thr(m)[i], 4);
                ck_assert_uint_eq(bits, want);
                ck_assert(sae__log_thr(m)[i] != logf(0.5f)); /* trained */
            }
        } else {
            ck_assert_ptr_null(hex);
        }
        free(hex);
        free(h);
        /* back, bit for bit, and the same bytes again */
        sae_model *back;
        ck_assert_int_eq(sae_model_load_buffer(&back, b.p, b.len), SAE_OK);
        ck_assert_int_eq(sae_model_arch(back), arch);
        ck_assert(models_equal(m, back));
        bytes again = model_bytes(back);
        ck_assert(same_bytes(b, again));
        expect_same_features(m, back, 8, 3.0, 0.5, 99, NULL);
        free(again.p);
        sae_model_free(back);
        free(b.p);
        sae_model_free(m);
    }
}
END_TEST

START_TEST(jumprelu_log_thresholds_are_exact)
{
    /* log(exp(t)) is not t in float for |t| < 1 (thresholds in (0.37, 2.7)):
     * the file keeps t itself */
    const size_t d_sae = 64;
    sae_model *m;
    ck_assert_int_eq(sae_model_create_arch(&m, 3, d_sae, 1, SAE_ARCH_JUMPRELU, 1.0), SAE_OK);
    float *t = sae__log_thr(m);
    int lossy = 0;
    for (size_t i = 0; i < d_sae; i++) {
        t[i] = -0.9f + 0.028f * (float)i;
        lossy += logf(expf(t[i])) != t[i];
    }
    sae__model_refresh_absmax(m);
    ck_assert_int_gt(lossy, 10); /* the case this guards against */
    bytes b = model_bytes(m);
    sae_model *back;
    ck_assert_int_eq(sae_model_load_buffer(&back, b.p, b.len), SAE_OK);
    ck_assert(models_equal(m, back));
    sae_model_free(back);
    /* without them (a file from SAELens) the thresholds load as
     * sae_model_set_tensor(SAE_THRESHOLD) sets them: t = logf(theta) */
    bytes e = st_edit(b, "\"libsae_log_threshold\":", "\"other_log_threshold\":");
    ck_assert_int_eq(sae_model_load_buffer(&back, e.p, e.len), SAE_OK);
    float theta[64];
    ck_assert_int_eq(sae_model_get_tensor(m, SAE_THRESHOLD, theta, d_sae), SAE_OK);
    sae_model *set;
    ck_assert_int_eq(sae_model_create_arch(&set, 3, d_sae, 1, SAE_ARCH_JUMPRELU, 1.0), SAE_OK);
    ck_assert_int_eq(sae_model_set_tensor(set, SAE_THRESHOLD, theta, d_sae), SAE_OK);
    ck_assert_mem_eq(sae__log_thr(back), sae__log_thr(set), d_sae * sizeof(float));
    ck_assert(!models_equal(m, back));
    sae_model_free(set);
    sae_model_free(back);
    /* ... as does the same file with no metadata at all: SAELens's own */
    bytes plain = st_drop_metadata(b);
    ck_assert_int_eq(sae_model_load_buffer(&back, plain.p, plain.len), SAE_OK);
    ck_assert_int_eq(sae_model_arch(back), SAE_ARCH_JUMPRELU);
    float theta2[64];
    ck_assert_int_eq(sae_model_get_tensor(back, SAE_THRESHOLD, theta2, d_sae), SAE_OK);
    for (size_t i = 0; i < d_sae; i++)
        ck_assert(fabsf(theta2[i] - theta[i]) <= 1e-6f * theta[i]);
    sae_model_free(back);
    free(plain.p);
    free(e.p);
    free(b.p);
    sae_model_free(m);
}
END_TEST

START_TEST(batchtopk_threshold_round_trips)
{
    sae_model *m;
    ck_assert_int_eq(sae_model_create_arch(&m, 3, 5, 2, SAE_ARCH_BATCHTOPK, 2.0), SAE_OK);
    /* unset (negative: ReLU until the first step): SAELens gets 0, which is
     * ReLU too; libsae gets the value back */
    const float values[] = {-1.0f, -0.0f, 0.0f, 0.375f, 0x1.fffffep127f, 0x1p-149f};
    const float tensor[] = {0.0f, 0.0f, 0.0f, 0.375f, 0x1.fffffep127f, 0x1p-149f};
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
        if (v > 0)
            ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, &values[v], 1), SAE_OK);
        bytes b = model_bytes(m);
        size_t len;
        const unsigned char *p = st_tensor(b, "threshold", "F32", &len);
        for (size_t i = 0; i < 5; i++)
            ck_assert(le_float(p + 4 * i) == tensor[v] && !signbit(le_float(p + 4 * i)));
        sae_model *back;
        ck_assert_int_eq(sae_model_load_buffer(&back, b.p, b.len), SAE_OK);
        ck_assert(models_equal(m, back)); /* the threshold's bits, sign included */
        sae_model_free(back);
        free(b.p);
    }
    /* the file SAELens reads (no libsae metadata) is a JumpReLU SAE... */
    const float thr = 0.125f;
    ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
    bytes b = model_bytes(m);
    bytes plain = st_drop_metadata(b);
    sae_model *j;
    ck_assert_int_eq(sae_model_load_buffer(&j, plain.p, plain.len), SAE_OK);
    ck_assert_int_eq(sae_model_arch(j), SAE_ARCH_JUMPRELU);
    float theta[5];
    ck_assert_int_eq(sae_model_get_tensor(j, SAE_THRESHOLD, theta, 5), SAE_OK);
    for (int i = 0; i < 5; i++)
        ck_assert(theta[i] == thr);
    /* ... that computes the same features */
    float f1[64 * 5];
    expect_same_features(m, j, 64, 1.0, 0.3, 4, f1);
    int active = 0, below = 0;
    for (int i = 0; i < 64 * 5; i++) {
        active += f1[i] > 0.0f;
        below += f1[i] == 0.0f;
    }
    ck_assert(active > 0 && below > 0);
    sae_model_free(j);
    free(plain.p);
    free(b.p);
    sae_model_free(m);
}
END_TEST

/* Pieces of the edits below: ARCH "topk\"" is "libsae_architecture":"topk". */
#define ARCH "\"libsae_architecture\":\""
#define K "\"libsae_k\":\""
#define THR "\"libsae_threshold\":\""
#define LOGT "\"libsae_log_threshold\":\""
#define THETA(dtype, shape) "\"threshold\":{\"dtype\":\"" dtype "\",\"shape\":" shape

/* An edit of a valid file of arch_cases[c] (3 x 5, k = 2; BatchTopK threshold
 * 0.375; JumpReLU thresholds 0.25), and the status it must give. */
static const struct arch_edit {
    size_t c;
    const char *from, *to;
    int expect;
} arch_edits[] = {
    /* standard */
    {0, ARCH "standard\",", "", SAE_OK}, /* a plain SAELens file */
    {0, ARCH "standard\"", ARCH "standard\"," K "2\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "standard\"," THR "0x0.0p+0\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "relu\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "Standard\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "standard \"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "gated\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "topk\"", SAE_E_FORMAT},
    {0, ARCH "standard\"", ARCH "jumprelu\"", SAE_E_FORMAT},
    /* TopK */
    {1, K "2\"", K "5\"", SAE_OK},
    {1, K "2\"", K "1\"", SAE_OK},
    {1, K "2\"", K "6\"", SAE_E_FORMAT}, /* > d_sae */
    {1, K "2\"", K "0\"", SAE_E_FORMAT},
    {1, K "2\"", K "02\"", SAE_E_FORMAT},
    {1, K "2\"", K "-2\"", SAE_E_FORMAT},
    {1, K "2\"", K "+2\"", SAE_E_FORMAT},
    {1, K "2\"", K "2.0\"", SAE_E_FORMAT},
    {1, K "2\"", K " 2\"", SAE_E_FORMAT},
    {1, K "2\"", K "\"", SAE_E_FORMAT},
    {1, K "2\"", K "18446744073709551618\"", SAE_E_FORMAT},
    {1, K "2\",", "", SAE_E_FORMAT},       /* k missing */
    {1, ARCH "topk\",", "", SAE_E_FORMAT}, /* k without an architecture */
    {1, ARCH "topk\"", ARCH "standard\"", SAE_E_FORMAT},
    {1, ARCH "topk\"", ARCH "batchtopk\"", SAE_E_FORMAT},
    {1, ARCH "topk\"", ARCH "TopK\"", SAE_E_FORMAT},
    {1, K "2\"", K "2\"," LOGT "\"", SAE_E_FORMAT},
    {1, "\"libsae_version\":\"" TEST_VERSION_TEXT "\"", "\"libsae_version\":\"99.1.0\",\"libsae_x\":\"y\"", SAE_OK},
    /* BatchTopK */
    {2, THR "0x1.8000000000000p-2\"", THR "-0x1.8000000000000p-2\"", SAE_E_FORMAT}, /* tensor: 0.375 */
    {2, THR "0x1.8000000000000p-2\"", THR "0x1.8000000000000p-1\"", SAE_E_FORMAT},
    {2, THR "0x1.8000000000000p-2\"", THR "0x1.8000000000001p-2\"", SAE_E_FORMAT}, /* not a float */
    {2, THR "0x1.8000000000000p-2\"", THR "0x1.0000000000000p+200\"", SAE_E_FORMAT}, /* beyond it */
    {2, THR "0x1.8000000000000p-2\"", THR "0.375\"", SAE_E_FORMAT},
    {2, THR "0x1.8000000000000p-2\"", THR "nan\"", SAE_E_FORMAT},
    {2, THR "0x1.8000000000000p-2\"", THR "\"", SAE_E_FORMAT},
    {2, THR "0x1.8000000000000p-2\",", "", SAE_E_FORMAT},
    {2, K "2\",", "", SAE_E_FORMAT},
    {2, K "2\"", K "6\"", SAE_E_FORMAT},
    {2, ARCH "batchtopk\"", ARCH "jumprelu\"", SAE_E_FORMAT},
    {2, ARCH "batchtopk\"", ARCH "topk\"", SAE_E_FORMAT},
    {2, ARCH "batchtopk\",", "", SAE_E_FORMAT},
    {2, THETA("F32", "[5]"), THETA("I32", "[5]"), SAE_E_FORMAT},
    {2, THETA("F32", "[5]"), THETA("F32", "[1,5]"), SAE_E_FORMAT},
    {2, "\"threshold\":{", "\"thresholds\":{", SAE_E_FORMAT}, /* missing */
    /* JumpReLU */
    {3, ARCH "jumprelu\",", "", SAE_E_FORMAT}, /* log thresholds without it */
    {3, LOGT, "\"x\":\"", SAE_OK},              /* thresholds from the tensor */
    {3, ARCH "jumprelu\"", ARCH "standard\"", SAE_E_FORMAT},
    {3, ARCH "jumprelu\"", ARCH "batchtopk\"", SAE_E_FORMAT},
    {3, ARCH "jumprelu\"", ARCH "jumprelu\"," K "2\"", SAE_E_FORMAT},
    {3, LOGT, LOGT "0", SAE_E_FORMAT},      /* too long */
    {3, LOGT "bf", LOGT "b", SAE_E_FORMAT}, /* too short */
    {3, LOGT "bf", LOGT "BF", SAE_E_FORMAT},
    {3, LOGT "bf", LOGT "bg", SAE_E_FORMAT},
    {3, LOGT "bf", LOGT " f", SAE_E_FORMAT},
    {3, LOGT "bfb17218", LOGT "7fc00000", SAE_E_FORMAT}, /* NaN */
    {3, LOGT "bfb17218", LOGT "ff800000", SAE_E_FORMAT}, /* -inf */
    {3, LOGT "bfb17218", LOGT "bfb17228", SAE_E_FORMAT}, /* exp(t) is not theta */
    {3, LOGT "bfb17218", LOGT "bfb17219", SAE_OK},       /* 1 ulp: another libm's */
    {3, THETA("F32", "[5]"), THETA("F32", "[1,5]"), SAE_E_FORMAT},
    {3, THETA("F32", "[5]"), THETA("U32", "[5]"), SAE_E_FORMAT},
    {3, "\"threshold\":{", "\"threshol\":{", SAE_E_FORMAT},
    {3, "\"threshold\":{", "\"log_threshold\":{", SAE_E_FORMAT}, /* a training state */
    {3, "\"threshold\":{", "\"topk_threshold\":{", SAE_E_FORMAT},
};

START_TEST(refuses_each_architecture_corruption)
{
    bytes base[N_ARCH_CASES];
    for (size_t c = 0; c < N_ARCH_CASES; c++) {
        sae_model *m = edit_base_model(c);
        base[c] = model_bytes(m);
        sae_model_free(m);
    }
    for (size_t k = 0; k < sizeof arch_edits / sizeof arch_edits[0]; k++) {
        const struct arch_edit *ed = &arch_edits[k];
        bytes e = st_edit(base[ed->c], ed->from, ed->to);
        size_t live = sae__test_bytes_live;
        sae_model *m = (sae_model *)&e;
        int rc = sae_model_load_buffer(&m, e.p, e.len);
        ck_assert_msg(rc == ed->expect, "edit %zu (%s -> %s): %d", k, ed->from, ed->to, rc);
        if (rc == SAE_OK)
            sae_model_free(m);
        else
            ck_assert_ptr_null(m);
        ck_assert_uint_eq(sae__test_bytes_live, live);
        free(e.p);
    }
    /* values of the threshold tensor */
    const struct { size_t c, i; float v; int expect; } values[] = {
        {2, 0, 0.375f, SAE_OK},       {2, 4, 0.5f, SAE_E_FORMAT}, /* not all equal */
        {2, 2, 0.0f, SAE_E_FORMAT},   {2, 1, -0.375f, SAE_E_FORMAT},
        {2, 3, NAN, SAE_E_FORMAT},    {3, 0, 0.0f, SAE_E_FORMAT}, /* theta must be > 0 */
        {3, 1, -0.25f, SAE_E_FORMAT}, {3, 2, INFINITY, SAE_E_FORMAT},
        {3, 3, 1e-31f, SAE_E_FORMAT}, {3, 4, 0.2501f, SAE_E_FORMAT}, /* != exp(t) */
        {3, 4, 0.25f, SAE_OK},
    };
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        bytes e = {malloc(base[values[k].c].len), base[values[k].c].len};
        memcpy(e.p, base[values[k].c].p, e.len);
        size_t len;
        unsigned char *p = (unsigned char *)st_tensor(e, "threshold", "F32", &len);
        put_le_float(p + 4 * values[k].i, values[k].v);
        size_t live = sae__test_bytes_live;
        sae_model *m = (sae_model *)&e;
        int rc = sae_model_load_buffer(&m, e.p, e.len);
        ck_assert_msg(rc == values[k].expect, "value %zu: %d", k, rc);
        sae_model_free(m);
        ck_assert_uint_eq(sae__test_bytes_live, live);
        free(e.p);
    }
    /* a threshold of 0 without libsae's metadata (SAELens's JumpReLU): libsae's
     * JumpReLU thresholds are logarithms, so 0 cannot be one */
    bytes plain = st_drop_metadata(base[2]);
    size_t len;
    unsigned char *p = (unsigned char *)st_tensor(plain, "threshold", "F32", &len);
    sae_model *m;
    ck_assert_int_eq(sae_model_load_buffer(&m, plain.p, plain.len), SAE_OK);
    sae_model_free(m);
    put_le_float(p, 0.0f);
    ck_assert_int_eq(sae_model_load_buffer(&m, plain.p, plain.len), SAE_E_FORMAT);
    free(plain.p);
    /* SAELens's JumpReLU thresholds: in [1e-30, 1e30], where exp(log(theta))
     * is finite (sae_model_create_arch's range) */
    plain = st_drop_metadata(base[3]);
    p = (unsigned char *)st_tensor(plain, "threshold", "F32", &len);
    const struct { float v; int expect; } range[] = {
        {1e30f, SAE_OK}, {1e-30f, SAE_OK}, {0x1.fffffep127f, SAE_E_FORMAT}, {1.1e30f, SAE_E_FORMAT},
        {0.9e-30f, SAE_E_FORMAT}, {0x1p-149f, SAE_E_FORMAT}, {-1.0f, SAE_E_FORMAT}};
    for (size_t k = 0; k < sizeof range / sizeof range[0]; k++) {
        put_le_float(p + 8, range[k].v);
        m = (sae_model *)&plain;
        ck_assert_msg(sae_model_load_buffer(&m, plain.p, plain.len) == range[k].expect, "%a",
                      (double)range[k].v);
        sae_model_free(m);
    }
    free(plain.p);
    for (size_t c = 0; c < N_ARCH_CASES; c++)
        free(base[c].p);
}
END_TEST

START_TEST(header_never_exceeds_the_readers_limit)
{
    /* A JumpReLU model with more than 12.5 million features would need a
     * header beyond the 100 MB every reader refuses: it is not written. */
    static float one;
    sae_st_kv kv = {"libsae_log_threshold", NULL, &one, 12500000};
    sae_st_out t = {"b", SAE_ST_F32, 1, {1, 0}, &one, false, SAE_ST_AS_IS};
    size_t size;
    ck_assert(!sae__st_size(&kv, 1, &t, 1, &size));
    const sae_st_sink sink = {NULL, NULL}; /* never called */
    ck_assert_int_eq(sae__st_write(&sink, &kv, 1, &t, 1), SAE_E_INVALID_ARG);
    kv.hex_count = 12400000;
    ck_assert(sae__st_size(&kv, 1, &t, 1, &size));
    ck_assert_uint_gt(size, 99200000);
}
END_TEST

START_TEST(scaling_factor_of_ones_is_accepted)
{
    float v[17];
    good_values(v);
    unsigned char data[80];
    for (int k = 0; k < 17; k++)
        put_le_float(data + 4 * k, v[k]);
    for (int k = 0; k < 3; k++)
        put_le_float(data + 68 + 4 * k, 1.0f);
    bytes b = st_build("{" W_ENC "," W_DEC "," B_ENC "," B_DEC ",\"scaling_factor\":{\"dtype\":"
                       "\"F32\",\"shape\":[3],\"data_offsets\":[68,80]}}", data, 80);
    sae_model *m;
    ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_OK);
    check_good_model(m, v); /* b_enc is the file's, not the scale's */
    sae_model_free(m);
    put_le_float(b.p + b.len - 4, 1.5f);
    ck_assert_int_eq(sae_model_load_buffer(&m, b.p, b.len), SAE_E_FORMAT);
    free(b.p);
}
END_TEST

static Suite *model_file_suite(void)
{
    Suite *s = suite_create("model_file");
    TCase *model = tcase_create("model");
    tcase_add_test(model, model_file_is_saelens_layout);
    tcase_add_test(model, save_buffer_arguments);
    tcase_add_test(model, loads_an_independently_written_file);
    tcase_add_test(model, converts_f16_bf16_f64);
    tcase_add_test(model, refuses_each_corruption);
    tcase_add_test(model, refuses_bad_lengths_and_values);
    tcase_add_test(model, survives_truncation_at_every_byte);
    tcase_add_test(model, scaling_factor_of_ones_is_accepted);
    suite_add_tcase(s, model);
    TCase *arch = tcase_create("architectures");
    tcase_add_test(arch, each_architecture_round_trips);
    tcase_add_test(arch, jumprelu_log_thresholds_are_exact);
    tcase_add_test(arch, batchtopk_threshold_round_trips);
    tcase_add_test(arch, refuses_each_architecture_corruption);
    tcase_add_test(arch, header_never_exceeds_the_readers_limit);
    suite_add_tcase(s, arch);
    return s;
}

TEST_MAIN(model_file_suite)
