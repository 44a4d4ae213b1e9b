/*
 * sae-idx2npy: convert an IDX file of unsigned bytes (the MNIST / Fashion-MNIST
 * image format, gzip-compressed or not) to a float32 .npy that sae-train reads:
 * one row per image, pixels scaled to [0, 1].
 *
 *   sae-idx2npy /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz train.npy
 *
 * The IDX format: 0x00 0x00, a type byte (0x08 = unsigned byte), the number of
 * dimensions, each dimension as a big-endian uint32, then the data, last index
 * fastest. An N x 28 x 28 file becomes an N x 784 array.
 */
#include "common/data.h"
#include "common/args.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* The output being written, removed if the program exits before it is
 * complete (tool_usage_error exits from anywhere). */
static char *partial;

static void remove_partial(void)
{
    if (partial)
        remove(partial);
}

static void usage(void)
{
    printf("Usage: sae-idx2npy [--limit N] IN OUT.npy\n"
           "Convert the IDX unsigned-byte file IN (e.g. Fashion-MNIST images, .gz or not)\n"
           "to OUT.npy: float32, one row per item (N x 28 x 28 becomes N x 784), values\n"
           "scaled from 0..255 to [0, 1].\n"
           "  --limit N   convert only the first N items\n"
           "  -h, --help  this help\n"
           "Exit status: 0 done, 1 write error, 2 bad command line or input.\n");
}

/* Read exactly n bytes or end with a one-line message naming the problem. */
static void read_exact(gzFile in, const char *path, void *buf, size_t n, const char *what)
{
    unsigned char *p = buf;
    while (n > 0) {
        unsigned chunk = n > (1u << 30) ? 1u << 30 : (unsigned)n;
        int got = gzread(in, p, chunk);
        if (got < 0) {
            int errnum;
            const char *msg = gzerror(in, &errnum);
            tool_usage_error("%s: %s", path, msg);
        }
        if (got == 0)
            tool_usage_error("%s: truncated (end of file in the %s)", path, what);
        p += got;
        n -= (size_t)got;
    }
}

/* The header: 0x00 0x00 0x08 (unsigned bytes), the number of dimensions,
 * each a big-endian uint32. Items are the first dimension; their values are
 * the others, flattened. */
static void read_header(gzFile in, const char *path, size_t *rows, size_t *cols)
{
    unsigned char magic[4];
    read_exact(in, path, magic, 4, "header");
    if (magic[0] != 0 || magic[1] != 0)
        tool_usage_error("%s: not an IDX file (bad magic)", path);
    if (magic[2] != 0x08)
        tool_usage_error("%s: IDX type 0x%02x is not unsigned bytes (0x08)", path, magic[2]);
    if (magic[3] < 2)
        tool_usage_error("%s: %u-D IDX file (labels?): need items x values, e.g. images", path,
                         magic[3]);
    *rows = 0;
    *cols = 1;
    for (unsigned d = 0; d < magic[3]; d++) {
        unsigned char b[4];
        read_exact(in, path, b, 4, "header");
        uint32_t dim = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        if (dim == 0)
            tool_usage_error("%s: dimension %u is 0", path, d);
        if (d == 0)
            *rows = dim;
        else if (*cols > SIZE_MAX / 4 / dim)
            tool_usage_error("%s: item too large", path);
        else
            *cols *= dim;
    }
}

/* Copy the first `keep` of the `rows` items to out as float32 rows in
 * [0, 1], reading (and checking) the rest. Returns 0, or -1 if a write
 * failed. */
static int convert(gzFile in, const char *path, FILE *out, size_t rows, size_t keep, size_t cols)
{
    unsigned char *item = malloc(cols);
    float *row = malloc(cols * sizeof *row);
    if (!item || !row)
        tool_usage_error("out of memory");
    int bad = tool_npy_write_header(out, keep, cols);
    for (size_t r = 0; r < rows; r++) {
        read_exact(in, path, item, cols, "data");
        if (r >= keep)
            continue;
        for (size_t j = 0; j < cols; j++)
            row[j] = (float)item[j] / 255.0f;
        if (!bad && fwrite(row, sizeof *row, cols, out) != cols)
            bad = -1;
    }
    unsigned char extra;
    if (gzread(in, &extra, 1) > 0)
        tool_usage_error("%s: unexpected data after %zu items", path, rows);
    free(row);
    free(item);
    return bad;
}

int main(int argc, char **argv)
{
    tool_set_program(argv[0]);
    static const struct option long_options[] = {
        {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t limit = UINT64_MAX;
    int c;
    while ((c = tool_getopt(argc, argv, long_options)) != -1) {
        if (c == 'h') {
            usage();
            return 0;
        }
        limit = tool_arg_count("--limit", optarg, 1);
    }
    if (argc - optind != 2)
        tool_usage_error("expected IN and OUT.npy (see --help)");
    const char *in_path = argv[optind], *out_path = argv[optind + 1];
    errno = 0;
    gzFile in = gzopen(in_path, "rb"); /* reads uncompressed files too */
    if (!in)
        tool_usage_error("%s: %s", in_path, errno ? strerror(errno) : "cannot open");
    size_t rows, cols;
    read_header(in, in_path, &rows, &cols);
    char *tmp = malloc(strlen(out_path) + 6);
    if (!tmp)
        tool_usage_error("out of memory");
    sprintf(tmp, "%s.part", out_path); /* renamed into place only when complete */
    FILE *out = fopen(tmp, "wb");
    if (!out)
        tool_usage_error("%s: cannot write", tmp);
    partial = tmp;
    atexit(remove_partial);
    const size_t keep = limit < rows ? (size_t)limit : rows;
    int bad = convert(in, in_path, out, rows, keep, cols);
    gzclose(in);
    int status = 0;
    if (fclose(out) != 0 || bad || rename(tmp, out_path) != 0) {
        fprintf(stderr, "%s: %s: write failed\n", tool_program(), out_path);
        status = 1;
    } else {
        partial = NULL;
        printf("%s: %zu x %zu float32 in [0, 1]\n", out_path, keep, cols);
    }
    free(tmp);
    return status;
}
