/*
 * The tools' input reader (common/data.c): every accepted .npy form and raw
 * float32 read back exactly, every malformed file rejected with a message
 * naming the problem, and thousands of corrupted headers handled safely.
 * Files are written to a fresh directory under $TMPDIR (or /tmp) and removed
 * afterwards.
 */
#include "common/data.h"

#include "check.h"

#include <libsae/sae.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static const float values[12] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f,
                                 -0.125f, 8.5f, 9.0f, 10.0f, 11.0f, -12.0f};

/* A .npy with the given version and dict text (padded to a 16-byte multiple
 * unless pad is false), followed by data_bytes bytes of `values`. */
static const char *write_npy(const char *name, int major, const char *dict, bool pad,
                             size_t data_bytes)
{
    const char *path = check_path_of(name);
    FILE *f = fopen(path, "wb");
    size_t pre = major == 1 ? 10 : 12, len = strlen(dict) + 1; /* + '\n' */
    size_t hlen = pad ? (pre + len + 15) / 16 * 16 - pre : len;
    unsigned char head[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0,
                              (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8 & 0xff), 0, 0};
    fwrite(head, 1, pre, f);
    fputs(dict, f);
    for (size_t i = len; i < hlen; i++)
        fputc(' ', f);
    fputc('\n', f);
    fwrite(values, 1, data_bytes, f);
    fclose(f);
    return path;
}

static const char *write_bytes(const char *name, const void *bytes, size_t n)
{
    const char *path = check_path_of(name);
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    return path;
}

static void expect_ok(const char *path, size_t d_in, size_t rows, size_t cols, const char *format)
{
    tool_data d;
    char err[256] = "";
    int rc = tool_data_open(&d, path, d_in, err, sizeof err);
    CHECK(rc == 0, "%s: %s", path, err);
    if (rc != 0)
        return;
    CHECK(d.rows == rows && d.cols == cols, "%s: got %zu x %zu, want %zu x %zu", path, d.rows,
          d.cols, rows, cols);
    CHECK(strcmp(d.format, format) == 0, "%s: format '%s', want '%s'", path, d.format, format);
    CHECK(memcmp(d.x, values, rows * cols * sizeof(float)) == 0, "%s: values differ", path);
    CHECK((uintptr_t)d.x % sizeof(float) == 0, "%s: misaligned data", path);
    tool_data_close(&d);
    CHECK(d.x == NULL && d.map == NULL, "%s: close did not reset", path);
}

static void expect_error(const char *path, size_t d_in, const char *needle)
{
    tool_data d;
    char err[256] = "";
    int rc = tool_data_open(&d, path, d_in, err, sizeof err);
    CHECK(rc == -1, "%s: accepted, want an error containing '%s'", path, needle);
    CHECK(strstr(err, needle) != NULL, "%s: message '%s' lacks '%s'", path, err, needle);
    CHECK(strchr(err, '\n') == NULL, "%s: message has a newline", path);
    CHECK(d.x == NULL && d.map == NULL, "%s: *d not zeroed on error", path);
    if (rc == 0)
        tool_data_close(&d);
}

/* Mutation fuzzing: corrupt a valid .npy (bytes of the header replaced by
 * random or format-significant characters, the file cut short) thousands of
 * times. The reader must never crash or read out of bounds (the ASan build
 * checks), and whatever it accepts must be consistent with the file size. */
static void fuzz(void)
{
    static const char tokens[] = "{}()[],:'\" \n0123456789LTrueFalse<>|f4u8descrshape";
    unsigned char good[256];
    const char *path = check_path_of("fuzz.npy");
    FILE *f = fopen(path, "wb");
    tool_npy_write_header(f, 4, 3);
    fwrite(values, sizeof(float), 12, f);
    fclose(f);
    f = fopen(path, "rb");
    size_t good_len = fread(good, 1, sizeof good, f);
    fclose(f);
    sae_rng rng;
    sae_rng_seed(&rng, 2024, 0);
    size_t accepted = 0;
    for (int iter = 0; iter < 3000; iter++) {
        unsigned char buf[256];
        size_t len = good_len;
        memcpy(buf, good, len);
        int edits = 1 + (int)sae_rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)sae_rng_below(&rng, 80); /* mostly the header */
            if (sae_rng_below(&rng, 2))
                buf[at] = (unsigned char)sae_rng_next(&rng);
            else
                buf[at] = (unsigned char)tokens[sae_rng_below(&rng, sizeof tokens - 1)];
        }
        if (sae_rng_below(&rng, 4) == 0)
            len = (size_t)sae_rng_below(&rng, len + 1);
        f = fopen(path, "wb");
        fwrite(buf, 1, len, f);
        fclose(f);
        tool_data d;
        char err[256];
        if (tool_data_open(&d, path, 0, err, sizeof err) == 0) {
            size_t offset = (size_t)((const unsigned char *)d.x - (const unsigned char *)d.map);
            CHECK(offset + d.rows * d.cols * sizeof(float) == d.map_len && d.rows && d.cols,
                  "fuzz %d: accepted %zu x %zu at offset %zu in %zu bytes", iter, d.rows, d.cols,
                  offset, d.map_len);
            accepted++;
            tool_data_close(&d);
        } else {
            CHECK(err[0] != '\0' && strchr(err, '\n') == NULL, "fuzz %d: bad message '%s'", iter, err);
        }
    }
    printf("fuzz: 3000 corrupted files, %zu still valid\n", accepted);
    remove(path);
}

/* numpy's standard header of a 4 x 3 float32 array */
static const char std_dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), }";

/* Accepted: numpy's own header, versions 1/2/3, other key orders and
 * spacing, double quotes, no trailing comma, Python 2 long ints; our own
 * writer's header; raw float32 with --d-in. */
static void test_accepted(void)
{
    const char *std = std_dict;
    expect_ok(write_npy("v1.npy", 1, std, true, 48), 0, 4, 3, "npy v1.0");
    expect_ok(write_npy("v2.npy", 2, std, true, 48), 0, 4, 3, "npy v2.0");
    expect_ok(write_npy("v3.npy", 3, std, true, 48), 0, 4, 3, "npy v3.0");
    expect_ok(write_npy("order.npy", 1, "{\"shape\":(6,2),\"fortran_order\":False,\"descr\":\"<f4\"}",
                        true, 48), 0, 6, 2, "npy v1.0");
    expect_ok(write_npy("long.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 6L)}",
                        true, 48), 6, 2, 6, "npy v1.0");
    expect_ok(write_npy("row.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 12), }",
                        true, 48), 0, 1, 12, "npy v1.0");
    /* Our own writer (used by sae-idx2npy) produces what we read. */
    {
        const char *path = check_path_of("written.npy");
        FILE *f = fopen(path, "wb");
        CHECK(tool_npy_write_header(f, 3, 4) == 0, "write header");
        long header_end = ftell(f);
        CHECK(header_end % 64 == 0, "header length %ld not 64-aligned", header_end);
        fwrite(values, sizeof(float), 12, f);
        fclose(f);
        expect_ok(path, 0, 3, 4, "npy v1.0");
    }
    /* Raw float32 with --d-in. */
    expect_ok(write_bytes("raw.f32", values, 48), 4, 3, 4, "raw float32");
    expect_ok(check_path_of("raw.f32"), 12, 1, 12, "raw float32");
}

/* Rejected, each naming its problem. */
static void test_rejected(void)
{
    const char *std = std_dict;
    expect_error(check_path_of("missing.npy"), 0, "No such file");
    expect_error(write_bytes("empty.npy", "", 0), 0, "empty");
    expect_error(write_npy("trunc.npy", 1, std, true, 40), 0, "truncated");
    expect_error(write_bytes("trunchead.npy", "\x93NUMPY\x01\x00", 8), 0, "truncated");
    expect_error(write_bytes("trunchead2.npy", "\x93NUMPY\x01\x00\x76\x00{'descr'", 17), 0,
                 "truncated");
    expect_error(write_npy("extra.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 5), }",
                           true, 48), 0, "8 unexpected bytes");
    expect_error(write_npy("f8.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3), }",
                           true, 48), 0, "dtype '<f8'");
    expect_error(write_npy("be.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4, 3), }",
                           true, 48), 0, "dtype '>f4'");
    expect_error(write_npy("u1.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 3), }",
                           true, 48), 0, "dtype '|u1'");
    expect_error(write_npy("fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 3), }",
                           true, 48), 0, "fortran_order");
    expect_error(write_npy("rank1.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (12,), }",
                           true, 48), 0, "shape (12,) is not 2-D");
    expect_error(write_npy("rank3.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 3), }",
                           true, 48), 0, "shape (2, 2, 3) is not 2-D");
    expect_error(write_npy("rank0.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                           true, 48), 0, "not 2-D");
    expect_error(write_npy("zero.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }",
                           true, 0), 0, "no data");
    expect_error(write_npy("version.npy", 4, std, true, 48), 0, "version 4.0");
    /* only the versions numpy writes: x.0 (a minor version is not a variant
     * numpy reads either) */
    static const unsigned char versions[][2] = {{1, 1}, {1, 255}, {2, 1}, {3, 1}, {0, 0}, {255, 0}};
    for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
        char want[80];
        const char *path = write_npy("minor.npy", versions[i][0], std, true, 48);
        FILE *f = fopen(path, "r+b"); /* the minor version byte */
        fseek(f, 7, SEEK_SET);
        fputc(versions[i][1], f);
        fclose(f);
        snprintf(want, sizeof want, "unsupported .npy version %u.%u (need 1.0, 2.0 or 3.0)",
                 versions[i][0], versions[i][1]);
        expect_error(path, 0, want);
    }
    expect_error(write_npy("nokey.npy", 1, "{'descr': '<f4', 'shape': (4, 3), }", true, 48), 0,
                 "fortran_order");
    expect_error(write_npy("badkey.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), 'x': 1}",
                           true, 48), 0, "'x'");
    expect_error(write_npy("garbage.npy", 1, "not a dict", true, 48), 0, "malformed");
    expect_error(write_npy("huge.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3), }",
                           true, 48), 0, "shape");
    expect_error(write_npy("unaligned.npy", 1, std, false, 48), 0, "4-byte");
    expect_error(write_npy("cols.npy", 1, std, true, 48), 5, "--d-in is 5");
    expect_error(check_path_of("raw.f32"), 0, "--d-in");
    expect_error(check_path_of("raw.f32"), 5, "not a multiple");
    expect_error(write_bytes("raw10.f32", values, 10), 1, "not a multiple");
    expect_error(check_scratch_dir(), 0, "not a regular file");
}

int main(void)
{
    check_scratch_begin("sae-test-data");
    test_accepted();
    test_rejected();
    fuzz();

    return check_finish();
}
