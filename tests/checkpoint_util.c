/*
 * The checkpoint tests' side of the files (test_model_file.c, test_files.c,
 * test_optimizer_file.c, test_resume.c): an independent minimal safetensors
 * reader and writer (~40 lines, sharing no code with the library), files and
 * directories, trained models and their bytes, and child processes.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "checkpoint_util.h"
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- test-side files and directories -------------------------------------- */

char self_exe[PATH_MAX];

char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *dir = malloc(strlen(base) + 32);
    sprintf(dir, "%s/sae_ckpt_XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

char *join(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

void remove_tree(const char *path)
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
int count_entries(const char *dir)
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

bytes read_file(const char *path)
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

void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

bool same_bytes(bytes a, bytes b)
{
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* An independent safetensors writer: the JSON header as given, unpadded,
 * then the data. */
bytes st_build(const char *header, const void *data, size_t data_len)
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
char *st_header(bytes b, size_t *data_start)
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
const unsigned char *st_tensor(bytes b, const char *name, const char *dtype, size_t *len)
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
bytes st_edit(bytes b, const char *from, const char *to)
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

float le_float(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void put_le_float(unsigned char *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    for (int k = 0; k < 4; k++)
        p[k] = (unsigned char)(u >> (8 * k));
}

/* A model with distinct, nonzero values in every tensor (biases too). */
sae_model *trained_model(size_t d_in, size_t d_sae, uint64_t seed)
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

bytes model_bytes(const sae_model *m)
{
    size_t size, written = 0;
    ck_assert_int_eq(sae_model_save_size(m, &size), SAE_OK);
    bytes b = {malloc(size), size};
    ck_assert_int_eq(sae_model_save_buffer(m, b.p, size, &written), SAE_OK);
    ck_assert_uint_eq(written, size);
    return b;
}

bytes optimizer_bytes(const sae_optimizer *o)
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
bool models_equal(const sae_model *a, const sae_model *b)
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

/* ---- architectures --------------------------------------------------------------- */

const struct arch_case arch_cases[N_ARCH_CASES] = {
    {SAE_ARCH_RELU, "standard"},
    {SAE_ARCH_TOPK, "topk"},
    {SAE_ARCH_BATCHTOPK, "batchtopk"},
    {SAE_ARCH_JUMPRELU, "jumprelu"},
};

/* A trained model of architecture arch (k = 2; JumpReLU thresholds from 0.5
 * and a wide band, so that they move; BatchTopK's threshold set by training). */
sae_model *trained_arch_model(int arch, size_t d_in, size_t d_sae, uint64_t seed)
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
char *meta_value(const char *h, const char *key)
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
bytes st_drop_metadata(bytes b)
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

/* Run this test program again as a new process (natively, even when this one
 * runs under valgrind) with the given arguments; returns its wait status.
 * Child modes are dispatched in main(). */
int run_self(const char *mode, const char *a1, const char *a2, const char *a3)
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

void expect_exit0(int status)
{
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %x", status);
}

/* A model of arch_cases[c] with fixed parameters (BatchTopK's threshold
 * set to 0.375), the base of the per-architecture file edits. */
sae_model *edit_base_model(size_t c)
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
