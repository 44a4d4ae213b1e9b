/*
 * Checkpoints: models and optimizers to and from safetensors buffers and
 * files, read back by an independent minimal reader and written by an
 * independent minimal writer (both below, ~40 lines, sharing no code with the
 * library); every kind of corrupt file; atomic saves that fail (missing
 * directory, /proc, a file-size limit, a full tmpfs, a crash mid-write);
 * allocation failures at every site; and resuming training in a new process,
 * bit for bit. Each architecture (ReLU, TopK, BatchTopK, JumpReLU) round-trips,
 * is written as SAELens reads it, and has its own corruptions.
 */
#define _GNU_SOURCE /* unshare, mount, mkdtemp, realpath */
#include "../src/internal.h"
#include "nomem.h"
#include "../src/safetensors.h"
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

static char self_exe[PATH_MAX]; /* this program, for the resume child */

/* ---- test-side files and directories -------------------------------------- */

typedef struct bytes {
    unsigned char *p;
    size_t len;
} bytes;

static char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *dir = malloc(strlen(base) + 32);
    sprintf(dir, "%s/sae_ckpt_XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

static char *join(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *child = join(path, e->d_name);
            remove_tree(child);
            free(child);
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* Entries in dir other than . and .., or -1 (no Check calls: children use it). */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static bytes read_file(const char *path)
{
    bytes b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    b.len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b.p = malloc(b.len + 1);
    ck_assert_uint_eq(fread(b.p, 1, b.len, f), b.len);
    fclose(f);
    return b;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static bool same_bytes(bytes a, bytes b)
{
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* An independent safetensors writer: the JSON header as given, unpadded,
 * then the data. */
static bytes st_build(const char *header, const void *data, size_t data_len)
{
    size_t n = strlen(header);
    bytes b = {malloc(8 + n + data_len + 1), 8 + n + data_len};
    for (int k = 0; k < 8; k++)
        b.p[k] = (unsigned char)((uint64_t)n >> (8 * k));
    memcpy(b.p + 8, header, n);
    if (data_len)
        memcpy(b.p + 8 + n, data, data_len);
    return b;
}

/* ... and an independent reader: the header text of b (malloc'ed) and where
 * the data starts. */
static char *st_header(bytes b, size_t *data_start)
{
    ck_assert_uint_ge(b.len, 8);
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--)
        n = n << 8 | b.p[k];
    ck_assert_uint_le(n, b.len - 8);
    char *h = malloc(n + 1);
    memcpy(h, b.p + 8, n);
    h[n] = '\0';
    *data_start = 8 + n;
    return h;
}

/* The data of tensor `name` in a header written by libsae (compact JSON). */
static const unsigned char *st_tensor(bytes b, const char *name, const char *dtype, size_t *len)
{
    size_t start;
    char *h = st_header(b, &start);
    char key[128];
    snprintf(key, sizeof key, "\"%s\":{\"dtype\":\"%s\",", name, dtype);
    char *at = strstr(h, key);
    ck_assert_msg(at != NULL, "no %s %s in %s", dtype, name, h);
    char *off = strstr(at, "\"data_offsets\":[");
    ck_assert_ptr_nonnull(off);
    size_t begin, end;
    ck_assert_int_eq(sscanf(off, "\"data_offsets\":[%zu,%zu]", &begin, &end), 2);
    free(h);
    ck_assert_uint_le(start + end, b.len);
    *len = end - begin;
    return b.p + start + begin;
}

/* A copy of b with the first `from` in its header replaced by `to`. */
static bytes st_edit(bytes b, const char *from, const char *to)
{
    size_t start;
    char *h = st_header(b, &start);
    char *at = strstr(h, from);
    ck_assert_msg(at != NULL, "%s not in header", from);
    size_t n = strlen(h) - strlen(from) + strlen(to);
    char *nh = malloc(n + 1);
    size_t pre = (size_t)(at - h);
    memcpy(nh, h, pre);
    strcpy(nh + pre, to);
    strcat(nh, at + strlen(from));
    bytes out = st_build(nh, b.p + start, b.len - start);
    free(h);
    free(nh);
    return out;
}

static float le_float(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void put_le_float(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(u >> (8 * k));
}

/* A model with distinct, nonzero values in every tensor (biases too). */
static sae_model *trained_model(size_t d_in, size_t d_sae, uint64_t seed)
{
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create(&m, d_in, d_sae, seed), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
    float *x = test_gaussian(16, d_in, 1.0, 0.5, seed);
    for (int s = 0; s < 3; s++)
        ck_assert_int_eq(sae_step(m, o, x, 16, NULL), SAE_OK);
    free(x);
    sae_optimizer_free(o);
    return m;
}

static bytes model_bytes(const sae_model *m)
{
    size_t size, written = 0;
    ck_assert_int_eq(sae_model_save_size(m, &size), SAE_OK);
    bytes b = {malloc(size), size};
    ck_assert_int_eq(sae_model_save_buffer(m, b.p, size, &written), SAE_OK);
    ck_assert_uint_eq(written, size);
    return b;
}

static bytes optimizer_bytes(const sae_optimizer *o)
{
    size_t size, written = 0;
    ck_assert_int_eq(sae_optimizer_save_size(o, &size), SAE_OK);
    bytes b = {malloc(size), size};
    ck_assert_int_eq(sae_optimizer_save_buffer(o, b.p, size, &written), SAE_OK);
    ck_assert_uint_eq(written, size);
    return b;
}

/* Bit-for-bit equality of the architecture and every tensor, JumpReLU's log
 * thresholds included (no Check calls: child processes use it). */
static bool models_equal(const sae_model *a, const sae_model *b)
{
    if (sae_model_d_in(a) != sae_model_d_in(b) || sae_model_d_sae(a) != sae_model_d_sae(b) ||
        sae_model_arch(a) != sae_model_arch(b) || sae_model_k(a) != sae_model_k(b) ||
        a->lay.log_thr_count != b->lay.log_thr_count ||
        memcmp(&a->batch_threshold, &b->batch_threshold, sizeof(float)) != 0 ||
        memcmp(sae__log_thr(a), sae__log_thr(b), a->lay.log_thr_count * sizeof(float)) != 0)
        return false;
    bool same = true;
    for (int which = SAE_W_ENC; which <= SAE_THRESHOLD && same; which++) {
        size_t n = sae_model_tensor_size(a, which);
        if (n == 0)
            continue; /* no thresholds */
        float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
        same = x && y && sae_model_get_tensor(a, which, x, n) == SAE_OK &&
               sae_model_get_tensor(b, which, y, n) == SAE_OK &&
               memcmp(x, y, n * sizeof(float)) == 0;
        free(x);
        free(y);
    }
    return same;
}

/* ---- the model file ----------------------------------------------------------- */

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
    float *x = test_gaussian(4, d_in, 1.0, 0.0, 5);
    float f1[4 * 5], f2[4 * 5];
    ck_assert_int_eq(sae_encode(m, x, 4, f1), SAE_OK);
    ck_assert_int_eq(sae_encode(back, x, 4, f2), SAE_OK);
    ck_assert_mem_eq(f1, f2, sizeof f1);
    free(x);
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
    {"JumpReLU log_threshold", "{" W_ENC "," W_DEC "," B_ENC "," B_DEC "," T("log_threshold", "F32",
                               "[3]", 68, 80) "}", 80},
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

/* ---- architectures --------------------------------------------------------------- */

static const struct arch_case {
    int arch;
    const char *name; /* libsae_architecture */
} arch_cases[] = {
    {SAE_ARCH_RELU, "standard"},
    {SAE_ARCH_TOPK, "topk"},
    {SAE_ARCH_BATCHTOPK, "batchtopk"},
    {SAE_ARCH_JUMPRELU, "jumprelu"},
};
#define N_ARCH_CASES (sizeof arch_cases / sizeof arch_cases[0])

/* A trained model of architecture arch (k = 2; JumpReLU thresholds from 0.5
 * and a wide band, so that they move; BatchTopK's threshold set by training). */
static sae_model *trained_arch_model(int arch, size_t d_in, size_t d_sae, uint64_t seed)
{
    const double param = arch == SAE_ARCH_JUMPRELU ? 0.5 : arch == SAE_ARCH_RELU ? 0.0 : 2.0;
    sae_model *m;
    sae_optimizer *o;
    ck_assert_int_eq(sae_model_create_arch(&m, d_in, d_sae, seed, arch, param), SAE_OK);
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_LR, 1e-2), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_JUMPRELU_BANDWIDTH, 1.0), SAE_OK);
    ck_assert_int_eq(sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, 16), SAE_OK);
    float *x = test_gaussian(16, d_in, 3.0, 0.5, seed);
    for (int s = 0; s < 3; s++)
        ck_assert_int_eq(sae_step(m, o, x, 16, NULL), SAE_OK);
    free(x);
    sae_optimizer_free(o);
    return m;
}

/* The value of string metadata `key` in header text h (malloc'ed), or NULL.
 * libsae writes its values without escapes. */
static char *meta_value(const char *h, const char *key)
{
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *at = strstr(h, pattern);
    if (!at)
        return NULL;
    at += strlen(pattern);
    const char *end = strchr(at, '"');
    ck_assert_ptr_nonnull(end);
    char *v = malloc((size_t)(end - at) + 1);
    memcpy(v, at, (size_t)(end - at));
    v[end - at] = '\0';
    return v;
}

/* A copy of b without its "__metadata__" (as a file from SAELens). */
static bytes st_drop_metadata(bytes b)
{
    size_t start;
    char *h = st_header(b, &start);
    char *at = strstr(h, "\"__metadata__\":{");
    ck_assert_ptr_nonnull(at);
    char *end = strchr(at, '}');
    memmove(at, end + 2, strlen(end + 2) + 1); /* the object and its comma */
    bytes out = st_build(h, b.p + start, b.len - start);
    free(h);
    return out;
}

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
        float *x = test_gaussian(8, d_in, 3.0, 0.5, 99);
        float f1[8 * 5], f2[8 * 5];
        ck_assert_int_eq(sae_encode(m, x, 8, f1), SAE_OK);
        ck_assert_int_eq(sae_encode(back, x, 8, f2), SAE_OK);
        ck_assert_mem_eq(f1, f2, sizeof f1);
        free(x);
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
    float *x = test_gaussian(64, 3, 1.0, 0.3, 4);
    float f1[64 * 5], f2[64 * 5];
    ck_assert_int_eq(sae_encode(m, x, 64, f1), SAE_OK);
    ck_assert_int_eq(sae_encode(j, x, 64, f2), SAE_OK);
    ck_assert_mem_eq(f1, f2, sizeof f1);
    int active = 0, below = 0;
    for (int i = 0; i < 64 * 5; i++) {
        active += f1[i] > 0.0f;
        below += f1[i] == 0.0f;
    }
    ck_assert(active > 0 && below > 0);
    free(x);
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

static sae_model *edit_base_model(size_t c)
{
    sae_model *m;
    const int arch = arch_cases[c].arch;
    ck_assert_int_eq(sae_model_create_arch(&m, 3, 5, 6, arch,
                                           arch == SAE_ARCH_JUMPRELU ? 0.25
                                           : arch == SAE_ARCH_RELU   ? 0.0
                                                                     : 2.0),
                     SAE_OK);
    const float thr = 0.375f;
    if (arch == SAE_ARCH_BATCHTOPK)
        ck_assert_int_eq(sae_model_set_tensor(m, SAE_THRESHOLD, &thr, 1), SAE_OK);
    return m;
}

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

/* ---- files and directories ----------------------------------------------------- */

START_TEST(file_and_directory_round_trip)
{
    char *dir = make_tmpdir();
    sae_model *m = trained_model(4, 6, 21);
    bytes enc = model_bytes(m);
    char *file = join(dir, "model.safetensors");
    ck_assert_int_eq(sae_model_save(m, file), SAE_OK);
    bytes on_disk = read_file(file);
    ck_assert(same_bytes(on_disk, enc)); /* the file is the buffer encoding */
    free(on_disk.p);
    ck_assert_int_eq(count_entries(dir), 1); /* no temporary left */
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0666 & ~(unsigned)umask(022)); /* like fopen */
    sae_model *back;
    ck_assert_int_eq(sae_model_load(&back, file), SAE_OK);
    ck_assert(models_equal(m, back));
    sae_model_free(back);
    /* saving again replaces the file */
    sae_model *other = trained_model(4, 6, 22);
    ck_assert_int_eq(sae_model_save(other, file), SAE_OK);
    ck_assert_int_eq(sae_model_load(&back, file), SAE_OK);
    ck_assert(models_equal(other, back));
    sae_model_free(back);
    sae_model_free(other);
    /* a directory gets sae_weights.safetensors and cfg.json */
    char *ckpt = join(dir, "ckpt");
    ck_assert_int_eq(mkdir(ckpt, 0755), 0);
    ck_assert_int_eq(sae_model_save(m, ckpt), SAE_OK);
    ck_assert_int_eq(count_entries(ckpt), 2);
    char *weights = join(ckpt, "sae_weights.safetensors");
    on_disk = read_file(weights);
    ck_assert(same_bytes(on_disk, enc));
    free(on_disk.p);
    char *cfg = join(ckpt, "cfg.json");
    bytes c = read_file(cfg);
    c.p[c.len] = '\0';
    const char *expect[] = {"\"architecture\": \"standard\"", "\"d_in\": 4,", "\"d_sae\": 6,",
                            "\"dtype\": \"float32\"", "\"apply_b_dec_to_input\": true",
                            "\"normalize_activations\": \"none\"",
                            "\"metadata\": {\"producer\": \"libsae\", \"libsae_version\": \"" TEST_VERSION_TEXT "\"}"};
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++)
        ck_assert_msg(strstr((char *)c.p, expect[k]) != NULL, "cfg.json lacks %s", expect[k]);
    free(c.p);
    ck_assert_int_eq(sae_model_load(&back, ckpt), SAE_OK);
    ck_assert(models_equal(m, back));
    sae_model_free(back);
    /* a trailing slash names the same directory */
    char *slash = join(ckpt, "");
    ck_assert_int_eq(sae_model_load(&back, slash), SAE_OK);
    sae_model_free(back);
    ck_assert_int_eq(sae_model_save(m, slash), SAE_OK);
    ck_assert_int_eq(count_entries(ckpt), 2);
    free(slash);
    /* a relative path without a directory part */
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    ck_assert_int_eq(sae_model_save(m, "relative.safetensors"), SAE_OK);
    ck_assert_int_eq(sae_model_load(&back, "relative.safetensors"), SAE_OK);
    sae_model_free(back);
    ck_assert_int_eq(chdir(cwd), 0);
    free(cfg);
    free(weights);
    free(ckpt);
    free(file);
    free(enc.p);
    sae_model_free(m);
    remove_tree(dir);
    free(dir);
}
END_TEST

START_TEST(checks_saelens_config)
{
    char *dir = make_tmpdir();
    sae_model *m = trained_model(4, 6, 3);
    ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
    char *cfg = join(dir, "cfg.json");
    struct { const char *json; int expect; } cases[] = {
        /* as SAELens 6 writes it: nested metadata, floats, nulls */
        {"{\"d_in\": 4, \"d_sae\": 6, \"dtype\": \"float32\", \"device\": \"cpu\", "
         "\"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\", "
         "\"reshape_activations\": \"none\", \"metadata\": {\"sae_lens_version\": \"6.5.1\", "
         "\"hook_name\": \"blocks.8.hook_resid_pre\", \"context_size\": 128, "
         "\"seqpos_slice\": [null]}, \"architecture\": \"standard\", \"l1_coefficient\": 5.0e0, "
         "\"lr\": 5e-05, \"decoder_init_norm\": 0.1}", SAE_OK},
        {"{}", SAE_OK},
        {"{\"normalize_activations\": null, \"activation_fn_str\": \"relu\"}", SAE_OK},
        {"{\"normalize_activations\": false}", SAE_OK},
        {"{\"architecture\": \"jumprelu\"}", SAE_E_FORMAT},
        {"{\"architecture\": \"topk\"}", SAE_E_FORMAT},
        {"{\"architecture\": \"standard\", \"activation_fn_str\": \"topk\", "
         "\"activation_fn_kwargs\": {\"k\": 32}}", SAE_E_FORMAT},
        {"{\"activation_fn\": \"topk\"}", SAE_E_FORMAT},
        {"{\"apply_b_dec_to_input\": false}", SAE_E_FORMAT},
        {"{\"apply_b_dec_to_input\": \"true\"}", SAE_E_FORMAT},
        {"{\"normalize_activations\": \"expected_average_only_in\"}", SAE_E_FORMAT},
        {"{\"normalize_activations\": true}", SAE_E_FORMAT},
        {"{\"d_in\": 5}", SAE_E_FORMAT},
        {"{\"d_sae\": 7}", SAE_E_FORMAT},
        {"{\"d_in\": \"4\"}", SAE_E_FORMAT},
        {"{\"d_in\": 4.0}", SAE_E_FORMAT},
        {"{\"d_in\": 4, \"d_in\": 4}", SAE_E_FORMAT},
        {"[]", SAE_E_FORMAT},
        {"", SAE_E_FORMAT},
        {"{\"architecture\": \"standard\",}", SAE_E_FORMAT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_file(cfg, cases[k].json, strlen(cases[k].json));
        sae_model *back = m;
        int rc = sae_model_load(&back, dir);
        ck_assert_msg(rc == cases[k].expect, "case %zu: %d", k, rc);
        if (rc == SAE_OK) {
            ck_assert(models_equal(m, back));
            sae_model_free(back);
        } else {
            ck_assert_ptr_null(back);
        }
    }
    /* larger than 1 MB: refused without reading it all */
    char *big = malloc((1 << 20) + 2);
    memset(big, ' ', (1 << 20) + 2);
    big[0] = '{';
    big[(1 << 20) + 1] = '}';
    write_file(cfg, big, (1 << 20) + 2);
    free(big);
    sae_model *back;
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_FORMAT);
    /* no cfg.json at all is fine */
    unlink(cfg);
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    sae_model_free(back);
    /* cfg.json that is a directory cannot be read */
    ck_assert_int_eq(mkdir(cfg, 0755), 0);
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_IO);
    free(cfg);
    sae_model_free(m);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* cfg.json as written for each architecture, and what it must agree with. */
START_TEST(saelens_config_per_architecture)
{
    char *dir = make_tmpdir();
    char *cfg = join(dir, "cfg.json");
    static const struct {
        size_t c;
        const char *expect_keys[6];
    } written[] = {
        {0, {"\"architecture\": \"standard\"", "\"activation_fn_str\": \"relu\"",
             "\"activation_fn_kwargs\": {}"}},
        {1, {"\"architecture\": \"topk\"", "\"k\": 2,", "\"activation_fn_str\": \"topk\"",
             "\"activation_fn_kwargs\": {\"k\": 2}", "\"rescale_acts_by_decoder_norm\": false"}},
        {2, {"\"architecture\": \"jumprelu\"", "\"activation_fn_str\": \"relu\"",
             "\"activation_fn_kwargs\": {}"}},
        {3, {"\"architecture\": \"jumprelu\"", "\"activation_fn_str\": \"relu\"",
             "\"activation_fn_kwargs\": {}"}},
    };
    for (size_t w = 0; w < 4; w++) {
        sae_model *m = edit_base_model(written[w].c), *back;
        ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
        bytes c = read_file(cfg);
        c.p[c.len] = '\0';
        for (size_t k = 0; k < 6 && written[w].expect_keys[k]; k++)
            ck_assert_msg(strstr((char *)c.p, written[w].expect_keys[k]) != NULL, "%s: no %s",
                          arch_cases[written[w].c].name, written[w].expect_keys[k]);
        if (written[w].c != 1)
            ck_assert_ptr_null(strstr((char *)c.p, "\"k\""));
        free(c.p);
        ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
        ck_assert(models_equal(m, back));
        sae_model_free(back);
        sae_model_free(m);
    }
    /* other configurations beside each architecture's weights */
    static const struct { size_t c; const char *json; int expect; } cases[] = {
        {1, "{\"architecture\": \"topk\", \"k\": 2}", SAE_OK},
        {1, "{\"architecture\": \"topk\", \"activation_fn_kwargs\": {\"k\": 2}}", SAE_OK},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_kwargs\": {}, "
            "\"rescale_acts_by_decoder_norm\": false, \"activation_fn\": \"topk\"}", SAE_OK},
        {1, "{\"architecture\": \"topk\"}", SAE_E_FORMAT}, /* no k */
        {1, "{\"architecture\": \"topk\", \"k\": 3}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_kwargs\": {\"k\": 3}}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"activation_fn_kwargs\": {\"k\": 3}}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 0}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2.0}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": \"2\"}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_kwargs\": [2]}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_str\": \"relu\"}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"apply_b_dec_to_input\": false}", SAE_E_FORMAT},
        /* before SAELens 6 TopK was also "standard" with a topk activation;
         * 6.x reads that as ReLU: ambiguous */
        {1, "{\"architecture\": \"standard\", \"activation_fn_str\": \"topk\", "
            "\"activation_fn_kwargs\": {\"k\": 2}}", SAE_E_FORMAT},
        {1, "{}", SAE_E_FORMAT}, /* "standard" by default */
        {1, "{\"architecture\": \"jumprelu\"}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"batchtopk\", \"k\": 2}", SAE_E_FORMAT},
        {1, "{\"architecture\": [\"topk\"], \"k\": 2}", SAE_E_FORMAT},
        {2, "{\"architecture\": \"jumprelu\"}", SAE_OK},
        {2, "{\"architecture\": \"jumprelu\", \"k\": 7, \"activation_fn\": \"relu\"}", SAE_OK},
        {2, "{\"architecture\": \"topk\", \"k\": 2}", SAE_E_FORMAT},
        {2, "{\"architecture\": \"batchtopk\", \"k\": 2}", SAE_E_FORMAT},
        {2, "{\"architecture\": \"standard\"}", SAE_E_FORMAT},
        {3, "{\"architecture\": \"jumprelu\", \"d_sae\": 5}", SAE_OK},
        {3, "{\"architecture\": \"jumprelu\", \"activation_fn_str\": \"topk\"}", SAE_E_FORMAT},
        {3, "{\"architecture\": \"jumprelu\", \"rescale_acts_by_decoder_norm\": 1}", SAE_E_FORMAT},
        {3, "{\"architecture\": \"gated\"}", SAE_E_FORMAT},
        {3, "{}", SAE_E_FORMAT},
        {0, "{\"architecture\": \"standard\", \"rescale_acts_by_decoder_norm\": false}", SAE_OK},
        {0, "{\"architecture\": \"topk\", \"k\": 2}", SAE_E_FORMAT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        sae_model *m = edit_base_model(cases[k].c), *back = m;
        ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
        write_file(cfg, cases[k].json, strlen(cases[k].json));
        int rc = sae_model_load(&back, dir);
        ck_assert_msg(rc == cases[k].expect, "case %zu (%s): %d", k, cases[k].json, rc);
        if (rc == SAE_OK) {
            ck_assert(models_equal(m, back));
            sae_model_free(back);
        } else {
            ck_assert_ptr_null(back);
        }
        sae_model_free(m);
    }
    /* SAELens's own TopK directory has no libsae metadata: cfg.json gives k,
     * and the weights alone are a ReLU SAE */
    sae_model *topk = edit_base_model(1), *back;
    bytes b = model_bytes(topk);
    bytes plain = st_drop_metadata(b);
    char *weights = join(dir, "sae_weights.safetensors");
    write_file(weights, plain.p, plain.len);
    const char *saelens = "{\"architecture\": \"topk\", \"d_in\": 3, \"d_sae\": 5, \"k\": 2, "
                          "\"dtype\": \"float32\", \"device\": \"cpu\", \"apply_b_dec_to_input\": true, "
                          "\"normalize_activations\": \"none\", \"reshape_activations\": \"none\", "
                          "\"rescale_acts_by_decoder_norm\": false, "
                          "\"metadata\": {\"sae_lens_version\": \"6.12.1\"}}";
    write_file(cfg, saelens, strlen(saelens));
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    ck_assert(models_equal(topk, back));
    sae_model_free(back);
    /* trained with rescale_acts_by_decoder_norm (SAELens's default since
     * 6.14): folded at load as SAELens's _fold_norm_topk, n_i = ||W_dec[i,:]||:
     * unit decoder rows, W_enc's columns and b_enc times n_i
     * (tests/python/test_saelens_files.py checks the forward) */
    const char *rescaled = "{\"architecture\": \"topk\", \"k\": 2, "
                           "\"rescale_acts_by_decoder_norm\": true}";
    write_file(cfg, rescaled, strlen(rescaled));
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    {
        float w0[15], w1[15], e0[15], e1[15], b0[5], b1[5];
        ck_assert_int_eq(sae_model_get_tensor(topk, SAE_W_DEC, w0, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(back, SAE_W_DEC, w1, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(topk, SAE_W_ENC, e0, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(back, SAE_W_ENC, e1, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(topk, SAE_B_ENC, b0, 5), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(back, SAE_B_ENC, b1, 5), SAE_OK);
        for (size_t i = 0; i < 5; i++) {
            double n = sqrt(pow(w0[i * 3], 2) + pow(w0[i * 3 + 1], 2) + pow(w0[i * 3 + 2], 2));
            ck_assert_double_gt(fabs(n - 1.0), 1e-3); /* the fold is not the identity */
            ck_assert_double_eq_tol(b1[i], b0[i] * n, 1e-6 * (1 + fabs(b0[i] * n)));
            for (size_t j = 0; j < 3; j++) {
                ck_assert_double_eq_tol(w1[i * 3 + j], w0[i * 3 + j] / n, 1e-6);
                ck_assert_double_eq_tol(e1[j * 5 + i], e0[j * 5 + i] * n,
                                        1e-6 * (1 + fabs(e0[j * 5 + i] * n)));
            }
        }
    }
    sae_model_free(back);
    const char *too_big = "{\"architecture\": \"topk\", \"k\": 6}";
    write_file(cfg, too_big, strlen(too_big));
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_FORMAT); /* k > d_sae */
    ck_assert_int_eq(sae_model_load(&back, weights), SAE_OK);
    ck_assert_int_eq(sae_model_arch(back), SAE_ARCH_RELU);
    sae_model_free(back);
    free(weights);
    free(plain.p);
    free(b.p);
    sae_model_free(topk);
    free(cfg);
    remove_tree(dir);
    free(dir);
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

START_TEST(io_errors)
{
    char *dir = make_tmpdir();
    sae_model *m = trained_model(3, 5, 8);
    sae_optimizer *o;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    sae_model *back = m;
    sae_optimizer *oback = o;
    /* NULL arguments */
    ck_assert_int_eq(sae_model_save(NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_save(m, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_load(NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_load(&back, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    ck_assert_int_eq(sae_optimizer_save(NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_save(o, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_load(NULL, m, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_load(&oback, NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(oback);
    oback = o;
    ck_assert_int_eq(sae_optimizer_load(&oback, m, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(oback);
    /* a directory that does not exist, /proc (not writable even for root) */
    char *missing = join(dir, "no/such/dir/model.safetensors");
    ck_assert_int_eq(sae_model_save(m, missing), SAE_E_IO);
    ck_assert_int_eq(sae_optimizer_save(o, missing), SAE_E_IO);
    ck_assert_int_eq(sae_model_save(m, "/proc/libsae-test.safetensors"), SAE_E_IO);
    ck_assert_int_eq(sae_model_save(m, ""), SAE_E_IO);
    back = m;
    ck_assert_int_eq(sae_model_load(&back, missing), SAE_E_IO);
    ck_assert_ptr_null(back);
    oback = o;
    ck_assert_int_eq(sae_optimizer_load(&oback, m, missing), SAE_E_IO);
    ck_assert_ptr_null(oback);
    ck_assert_int_eq(sae_model_load(&back, ""), SAE_E_IO);
    /* an empty directory has no weights; its optimizer.safetensors is missing */
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_IO);
    ck_assert_int_eq(sae_optimizer_load(&oback, m, dir), SAE_E_IO);
    ck_assert_int_eq(count_entries(dir), 0);
    /* a FIFO is neither read (without blocking) nor replaced */
    char *fifo = join(dir, "fifo");
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    ck_assert_int_eq(sae_model_load(&back, fifo), SAE_E_IO);
    ck_assert_int_eq(sae_model_save(m, fifo), SAE_E_IO);
    struct stat st;
    ck_assert_int_eq(lstat(fifo, &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
    ck_assert_int_eq(count_entries(dir), 1);
    /* /dev/null is a device: not a checkpoint */
    ck_assert_int_eq(sae_model_load(&back, "/dev/null"), SAE_E_IO);
    /* the weights file is in the way as a directory: nothing is changed,
     * cfg.json included */
    char *ckpt = join(dir, "ckpt");
    ck_assert_int_eq(mkdir(ckpt, 0755), 0);
    char *blocker = join(ckpt, "sae_weights.safetensors");
    ck_assert_int_eq(mkdir(blocker, 0755), 0);
    char *cfg = join(ckpt, "cfg.json");
    write_file(cfg, "{}", 2);
    ck_assert_int_eq(sae_model_save(m, ckpt), SAE_E_IO);
    bytes c = read_file(cfg);
    ck_assert_uint_eq(c.len, 2);
    free(c.p);
    ck_assert_int_eq(count_entries(ckpt), 2);
    free(cfg);
    free(blocker);
    free(ckpt);
    free(fifo);
    free(missing);
    sae_optimizer_free(o);
    sae_model_free(m);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* Run this test program again as a new process (natively, even when this one
 * runs under valgrind) with the given arguments; returns its wait status.
 * Child modes are dispatched in main(). */
static int run_self(const char *mode, const char *a1, const char *a2, const char *a3)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl(self_exe, self_exe, mode, a1, a2, a3, (char *)NULL);
        _exit(127);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* Child: save a 64 x 128 model (or its optimizer) to path under a 4 kB file
 * size limit. With SIGXFSZ ignored the write fails with EFBIG (exit 0 if the
 * save returned SAE_E_IO); with its default action the process is killed
 * mid-write, like a crash. */
static int child_save_limited(const char *path, const char *what, const char *sig)
{
    sae_model *m;
    sae_optimizer *o;
    if (sae_model_create(&m, 64, 128, 2) != SAE_OK || sae_optimizer_create(&o, m) != SAE_OK)
        return 91;
    if (strcmp(sig, "ignore") == 0)
        signal(SIGXFSZ, SIG_IGN);
    struct rlimit no_core = {0, 0}, limit = {4096, 4096};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0 || setrlimit(RLIMIT_FSIZE, &limit) != 0)
        return 90;
    int rc = strcmp(what, "optimizer") == 0 ? sae_optimizer_save(o, path) : sae_model_save(m, path);
    sae_optimizer_free(o);
    sae_model_free(m);
    return rc == SAE_E_IO ? 0 : 80 - rc;
}

static void expect_exit0(int status)
{
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %x", status);
}

START_TEST(failed_save_keeps_the_previous_file)
{
    char *dir = make_tmpdir();
    char *path = join(dir, "model.safetensors");
    sae_model *small = trained_model(2, 4, 1);
    ck_assert_int_eq(sae_model_save(small, path), SAE_OK);
    bytes before = read_file(path);
    /* the file-size limit makes a write fail (EFBIG) part-way */
    expect_exit0(run_self("--save-limited", path, "model", "ignore"));
    bytes after = read_file(path);
    ck_assert(same_bytes(before, after));
    free(after.p);
    ck_assert_int_eq(count_entries(dir), 1); /* the temporary file was removed */
    expect_exit0(run_self("--save-limited", path, "optimizer", "ignore"));
    after = read_file(path);
    ck_assert(same_bytes(before, after));
    free(after.p);
    ck_assert_int_eq(count_entries(dir), 1);
    /* into a directory: neither file changes */
    char *ckpt = join(dir, "ckpt");
    ck_assert_int_eq(mkdir(ckpt, 0755), 0);
    ck_assert_int_eq(sae_model_save(small, ckpt), SAE_OK);
    char *w = join(ckpt, "sae_weights.safetensors"), *cf = join(ckpt, "cfg.json");
    bytes w0 = read_file(w), c0 = read_file(cf);
    expect_exit0(run_self("--save-limited", ckpt, "model", "ignore"));
    bytes w1 = read_file(w), c1 = read_file(cf);
    ck_assert(same_bytes(w0, w1) && same_bytes(c0, c1));
    ck_assert_int_eq(count_entries(ckpt), 2);
    /* a crash mid-write (SIGXFSZ kills the process inside fwrite): the old
     * checkpoint is intact and loads; only a temporary file is left over */
    int status = run_self("--save-limited", path, "model", "default");
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ, "status %x", status);
    after = read_file(path);
    ck_assert(same_bytes(before, after));
    sae_model *back;
    ck_assert_int_eq(sae_model_load(&back, path), SAE_OK);
    ck_assert(models_equal(small, back));
    sae_model_free(back);
    ck_assert_int_eq(count_entries(dir), 3); /* model, ckpt/, the crash's temporary */
    free(after.p);
    free(w0.p), free(w1.p), free(c0.p), free(c1.p);
    free(w), free(cf), free(ckpt);
    free(before.p);
    free(path);
    sae_model_free(small);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* Child: in a private mount namespace, a 64 kB tmpfs on mnt; a small model
 * fits, a 64 x 256 one (128 kB) does not: ENOSPC. Exit 77 if mounting is not
 * allowed here. */
static int child_full_disk(const char *mnt)
{
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=64k") != 0)
        return 77;
    sae_model *small, *big, *back;
    if (sae_model_create(&small, 4, 8, 1) != SAE_OK || sae_model_create(&big, 64, 256, 2) != SAE_OK)
        return 91;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors", mnt);
    if (sae_model_save(small, path) != SAE_OK)
        return 92;
    if (sae_model_save(big, path) != SAE_E_IO)
        return 93;
    if (sae_model_load(&back, path) != SAE_OK || !models_equal(small, back))
        return 94;
    if (count_entries(mnt) != 1) /* no temporary file left */
        return 95;
    sae_model_free(back);
    sae_model_free(small);
    sae_model_free(big);
    return 0;
}

START_TEST(full_disk_keeps_the_previous_file)
{
    char *dir = make_tmpdir();
    int status = run_self("--full-disk", dir, NULL, NULL);
    ck_assert(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        printf("full_disk_keeps_the_previous_file: cannot mount a tmpfs here "
               "(not root?); the RLIMIT_FSIZE test covers write failures\n");
    else
        ck_assert_msg(WEXITSTATUS(status) == 0, "child exit %d", WEXITSTATUS(status));
    remove_tree(dir);
    free(dir);
}
END_TEST

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
    {
        size_t len;
        bytes e = {malloc(b.len), b.len};
        memcpy(e.p, b.p, b.len);
        const unsigned char *p = st_tensor(e, "log_threshold.exp_avg_sq", "F32", &len);
        put_le_float((unsigned char *)p + 8, -1e-9f); /* negative second moment */
        back = o;
        ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, e.p, e.len), SAE_E_FORMAT);
        p = st_tensor(e, "log_threshold.exp_avg", "F32", &len);
        put_le_float((unsigned char *)p + 8, NAN);
        ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, e.p, e.len), SAE_E_FORMAT);
        ck_assert_ptr_null(back);
        free(e.p);
    }
    for (size_t len = 0; len < b.len; len++) {
        back = o;
        ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, b.p, len), SAE_E_FORMAT);
        ck_assert_ptr_null(back);
    }
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
            bytes e = {malloc(b.len), b.len};
            memcpy(e.p, b.p, b.len);
            size_t len;
            const unsigned char *p = st_tensor(e, names[k], "F32", &len);
            put_le_float((unsigned char *)p + len - 4, values[v]);
            ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, e.p, e.len), SAE_E_FORMAT);
            ck_assert_ptr_null(back);
            free(e.p);
        }
    /* truncation at every byte */
    for (size_t len = 0; len < b.len; len++) {
        back = o;
        ck_assert_int_eq(sae_optimizer_load_buffer(&back, m, b.p, len), SAE_E_FORMAT);
        ck_assert_ptr_null(back);
    }
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

/* ---- resuming in a new process ------------------------------------------------ */

enum { RESUME_D_IN = 8, RESUME_D_SAE = 16, RESUME_TOKENS = 32, RESUME_STEPS = 6 };

/* The runs of the resume test, by architecture. TopK and BatchTopK keep few
 * features per token and count a feature dead after 8 silent tokens, so
 * that AuxK is on and the activity counters matter; JumpReLU starts with
 * thresholds near 1, whose logarithms do not survive logf(expf(t)), on data
 * large enough to cross them, with a wide band so that they train. */
static const struct resume_arch {
    const char *name;
    int arch;
    double param;
    double scale; /* of the data */
} resume_archs[] = {
    {"standard", SAE_ARCH_RELU, 0.0, 1.0},
    {"topk", SAE_ARCH_TOPK, 2.0, 1.0},
    {"batchtopk", SAE_ARCH_BATCHTOPK, 2.0, 1.0},
    {"jumprelu", SAE_ARCH_JUMPRELU, 0.9, 8.0},
};
#define RESUME_DEAD_WINDOW 8 /* tokens: a quarter of a batch */

static const struct resume_arch *resume_arch_named(const char *name)
{
    for (size_t k = 0; k < sizeof resume_archs / sizeof resume_archs[0]; k++)
        if (strcmp(resume_archs[k].name, name) == 0)
            return &resume_archs[k];
    return NULL;
}

/* Steps first..first+count-1, batch s drawn from seed 5000 + s (no Check
 * calls: the child process runs this outside a test). */
static int train_steps(sae_model *m, sae_optimizer *o, const struct resume_arch *ra, size_t first,
                       size_t count)
{
    float x[RESUME_TOKENS * RESUME_D_IN];
    for (size_t s = first; s < first + count; s++) {
        test_rng r = {5000 + s};
        for (size_t k = 0; k < RESUME_TOKENS * RESUME_D_IN; k++)
            x[k] = (float)((test_normal(&r) + 0.3) * ra->scale);
        int rc = sae_step(m, o, x, RESUME_TOKENS, NULL);
        if (rc != SAE_OK)
            return rc;
    }
    return SAE_OK;
}

/* Every option away from its default (the architecture options too, which
 * the others ignore). */
static int configure(sae_optimizer *o)
{
    const struct { int option; double value; } opts[] = {
        {SAE_OPT_LR, 2e-3}, {SAE_OPT_BETA1, 0.85}, {SAE_OPT_BETA2, 0.995},
        {SAE_OPT_EPS, 1e-6}, {SAE_OPT_L1_COEFF, 0.3}, {SAE_OPT_GRAD_CLIP, 0.5},
        {SAE_OPT_AUXK_COEFF, 0.25}, {SAE_OPT_AUXK_K, 3}, {SAE_OPT_DEAD_WINDOW, RESUME_DEAD_WINDOW},
        {SAE_OPT_JUMPRELU_BANDWIDTH, 0.5}, {SAE_OPT_THRESHOLD_BETA, 0.75}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
        if (sae_optimizer_set(o, opts[k].option, opts[k].value) != SAE_OK)
            return 1;
    return 0;
}

/* Children of the resume test, each a new process (arch: a resume_archs name):
 *   --reference dir arch  2N uninterrupted steps, saved as dir/reference{,.opt}
 *   --first dir arch      N steps, saved as a checkpoint directory dir/ckpt
 *   --resume dir arch     load dir/ckpt, N more steps, saved as dir/resumed{,.opt}
 *   --fresh dir arch      load the model of dir/ckpt but a new optimizer (its
 *                         moments, step count, counters and options lost), N
 *                         more steps, saved as dir/fresh */
static int child_resume(const char *mode, const char *dir, const char *arch)
{
    const struct resume_arch *ra = resume_arch_named(arch);
    if (!ra)
        return 1;
    char path[PATH_MAX], opt_path[PATH_MAX], ckpt[PATH_MAX];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    sae_model *m;
    sae_optimizer *o;
    size_t first = 0, steps = RESUME_STEPS;
    const char *out = NULL;
    if (strcmp(mode, "--reference") == 0 || strcmp(mode, "--first") == 0) {
        if (sae_model_create_arch(&m, RESUME_D_IN, RESUME_D_SAE, 9, ra->arch, ra->param) != SAE_OK ||
            sae_optimizer_create(&o, m) != SAE_OK || configure(o) != 0)
            return 2;
        if (strcmp(mode, "--reference") == 0) {
            steps = 2 * RESUME_STEPS;
            out = "reference";
        } else {
            if (mkdir(ckpt, 0755) != 0)
                return 3;
            out = "ckpt";
        }
    } else {
        if (sae_model_load(&m, ckpt) != SAE_OK)
            return 4;
        int rc = strcmp(mode, "--resume") == 0 ? sae_optimizer_load(&o, m, ckpt)
                                               : sae_optimizer_create(&o, m);
        if (rc != SAE_OK || (strcmp(mode, "--fresh") == 0 && configure(o) != 0))
            return 5;
        first = RESUME_STEPS;
        out = strcmp(mode, "--resume") == 0 ? "resumed" : "fresh";
    }
    if (train_steps(m, o, ra, first, steps) != SAE_OK)
        return 6;
    snprintf(path, sizeof path, "%s/%s", dir, out);
    snprintf(opt_path, sizeof opt_path, "%s/%s%s", dir, out, strcmp(out, "ckpt") ? ".opt" : "");
    if (sae_model_save(m, path) != SAE_OK || sae_optimizer_save(o, opt_path) != SAE_OK)
        return 7;
    sae_optimizer_free(o);
    sae_model_free(m);
    return 0;
}

START_TEST(resume_in_a_new_process_is_bit_identical)
{
    /* Every training run is its own process started the same way, so all use
     * the same BLAS kernels (under valgrind this process would not). */
    char *top = make_tmpdir();
    for (size_t a = 0; a < sizeof resume_archs / sizeof resume_archs[0]; a++) {
        const struct resume_arch *ra = &resume_archs[a];
        char *dir = join(top, ra->name);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        expect_exit0(run_self("--reference", dir, ra->name, NULL));
        expect_exit0(run_self("--first", dir, ra->name, NULL));
        expect_exit0(run_self("--resume", dir, ra->name, NULL));
        expect_exit0(run_self("--fresh", dir, ra->name, NULL));
        char *ref_path = join(dir, "reference"), *ref_opt = join(dir, "reference.opt");
        char *res_path = join(dir, "resumed"), *res_opt = join(dir, "resumed.opt");
        char *fresh_path = join(dir, "fresh"), *ckpt = join(dir, "ckpt");
        sae_model *ref, *resumed, *fresh, *mid;
        ck_assert_int_eq(sae_model_load(&ref, ref_path), SAE_OK);
        ck_assert_int_eq(sae_model_load(&resumed, res_path), SAE_OK);
        ck_assert_int_eq(sae_model_load(&fresh, fresh_path), SAE_OK);
        ck_assert_int_eq(sae_model_arch(ref), ra->arch);
        /* N + N steps across two processes == 2N steps in one, bit for bit */
        ck_assert_msg(models_equal(ref, resumed), "%s", ra->name);
        bytes a1 = read_file(ref_opt), b1 = read_file(res_opt);
        ck_assert_msg(same_bytes(a1, b1), "%s", ra->name); /* moments, steps, counters, options */
        free(a1.p), free(b1.p);
        sae_optimizer *o;
        ck_assert_int_eq(sae_optimizer_load(&o, resumed, res_opt), SAE_OK);
        ck_assert_uint_eq(sae_optimizer_steps(o), 2 * RESUME_STEPS);
        sae_optimizer_free(o);
        /* what the checkpoint had to carry */
        ck_assert_int_eq(sae_model_load(&mid, ckpt), SAE_OK);
        ck_assert_int_eq(sae_optimizer_load(&o, mid, ckpt), SAE_OK);
        size_t dead;
        ck_assert_int_eq(sae_optimizer_dead_count(o, RESUME_DEAD_WINDOW, &dead), SAE_OK);
        if (ra->arch == SAE_ARCH_TOPK || ra->arch == SAE_ARCH_BATCHTOPK)
            ck_assert_msg(dead > 0, "%s: AuxK has no dead features", ra->name); /* AuxK on */
        if (ra->arch == SAE_ARCH_BATCHTOPK) {
            float thr[2];
            ck_assert_int_eq(sae_model_get_tensor(mid, SAE_THRESHOLD, thr, 1), SAE_OK);
            ck_assert_int_eq(sae_model_get_tensor(ref, SAE_THRESHOLD, thr + 1, 1), SAE_OK);
            ck_assert(thr[0] > 0.0f && thr[1] > 0.0f && thr[0] != thr[1]); /* set, and moving */
        }
        if (ra->arch == SAE_ARCH_JUMPRELU) {
            int lossy = 0, moved = 0;
            for (size_t i = 0; i < RESUME_D_SAE; i++) {
                float t = sae__log_thr(mid)[i];
                lossy += logf(expf(t)) != t;
                moved += t != (float)log(0.9);
            }
            ck_assert_int_gt(lossy, 0);
            ck_assert_int_gt(moved, 0);
        }
        sae_optimizer_free(o);
        sae_model_free(mid);
        /* The comparison can fail: without the optimizer's state the same data
         * gives different parameters. */
        ck_assert_msg(!models_equal(ref, fresh), "%s", ra->name);
        free(ref_path), free(ref_opt), free(res_path), free(res_opt), free(fresh_path), free(ckpt);
        sae_model_free(ref);
        sae_model_free(resumed);
        sae_model_free(fresh);
        free(dir);
    }
    remove_tree(top);
    free(top);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
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
    TCase *files = tcase_create("files");
    tcase_set_timeout(files, 120);
    tcase_add_test(files, file_and_directory_round_trip);
    tcase_add_test(files, checks_saelens_config);
    tcase_add_test(files, saelens_config_per_architecture);
    tcase_add_test(files, io_errors);
    tcase_add_test(files, failed_save_keeps_the_previous_file);
    tcase_add_test(files, full_disk_keeps_the_previous_file);
    suite_add_tcase(s, files);
    TCase *opt = tcase_create("optimizer");
    tcase_set_timeout(opt, 120);
    tcase_add_test(opt, optimizer_round_trip);
    tcase_add_test(opt, optimizer_load_errors);
    tcase_add_test(opt, optimizer_file_per_architecture);
    tcase_add_test(opt, every_allocation_failure_is_clean);
    tcase_add_test(opt, every_allocation_failure_is_clean_per_architecture);
    tcase_add_test(opt, resume_in_a_new_process_is_bit_identical);
    suite_add_tcase(s, opt);
    return s;
}

int main(int argc, char **argv)
{
    if (!realpath(argv[0], self_exe))
        return 99;
    if (argc == 5 && strcmp(argv[1], "--save-limited") == 0)
        return child_save_limited(argv[2], argv[3], argv[4]);
    if (argc == 3 && strcmp(argv[1], "--full-disk") == 0)
        return child_full_disk(argv[2]);
    if (argc == 4)
        return child_resume(argv[1], argv[2], argv[3]);
    return test_run_suite(checkpoint_suite());
}
