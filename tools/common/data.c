/*
 * The .npy / raw float32 reader (memory-mapped) and the .npy header writer.
 *
 * The .npy format (numpy's NEP 1, "A Simple File Format for NumPy Arrays"):
 *   "\x93NUMPY", major and minor version bytes, the header length (uint16 LE
 *   for 1.0, uint32 LE for 2.0 and 3.0), then the header: an ASCII (3.0: UTF-8)
 *   Python dict literal such as
 *       {'descr': '<f4', 'fortran_order': False, 'shape': (1000, 768), }
 *   padded with spaces and ended by '\n', then the raw array data.
 */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

/* ---- the header dict ------------------------------------------------------ */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && isspace((unsigned char)*c->p))
        c->p++;
}

static bool accept(cursor *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes, copied (truncated) into out. */
static bool parse_string(cursor *c, char *out, size_t outlen)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char quote = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != quote && *c->p != '\\' && *c->p != '\n')
        c->p++;
    if (c->p >= c->end || *c->p != quote)
        return false;
    size_t len = (size_t)(c->p - start);
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, start, len);
    out[len] = '\0';
    c->p++;
    return true;
}

static bool parse_bool(cursor *c, bool *out)
{
    skip_space(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
        c->p += 4;
        *out = true;
    } else if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
        c->p += 5;
        *out = false;
    } else {
        return false;
    }
    return true;
}

/* A tuple of non-negative ints: (), (3,), (3, 4) or (3L, 4L) (Python 2). */
static bool parse_shape(cursor *c, size_t *dims, size_t max_dims, size_t *rank)
{
    if (!accept(c, '('))
        return false;
    *rank = 0;
    for (;;) {
        if (accept(c, ')'))
            return true;
        skip_space(c);
        if (c->p >= c->end || !isdigit((unsigned char)*c->p))
            return false;
        size_t v = 0;
        while (c->p < c->end && isdigit((unsigned char)*c->p)) {
            size_t digit = (size_t)(*c->p++ - '0');
            if (v > (SIZE_MAX - digit) / 10)
                return false;
            v = v * 10 + digit;
        }
        if (c->p < c->end && *c->p == 'L')
            c->p++;
        if (*rank == max_dims)
            return false;
        dims[(*rank)++] = v;
        if (!accept(c, ',')) {
            return accept(c, ')');
        }
    }
}

typedef struct npy_header {
    char descr[32];
    bool fortran;
    size_t dims[8], rank;
} npy_header;

static int parse_dict(const char *text, size_t len, npy_header *h, char *err, size_t errlen)
{
    cursor c = {text, text + len};
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    if (!accept(&c, '{'))
        return fail(err, errlen, "malformed .npy header: expected '{'");
    while (!accept(&c, '}')) {
        char key[32];
        if (!parse_string(&c, key, sizeof key) || !accept(&c, ':'))
            return fail(err, errlen, "malformed .npy header: expected 'key': value");
        bool ok;
        if (strcmp(key, "descr") == 0 && !seen_descr) {
            ok = seen_descr = parse_string(&c, h->descr, sizeof h->descr);
        } else if (strcmp(key, "fortran_order") == 0 && !seen_fortran) {
            ok = seen_fortran = parse_bool(&c, &h->fortran);
        } else if (strcmp(key, "shape") == 0 && !seen_shape) {
            ok = seen_shape = parse_shape(&c, h->dims, sizeof h->dims / sizeof h->dims[0], &h->rank);
        } else {
            return fail(err, errlen, "malformed .npy header: unexpected or repeated key '%s'", key);
        }
        if (!ok)
            return fail(err, errlen, "malformed .npy header: bad value for '%s'", key);
        if (!accept(&c, ',')) {
            if (!accept(&c, '}'))
                return fail(err, errlen, "malformed .npy header: expected ',' or '}'");
            break;
        }
    }
    skip_space(&c);
    if (c.p != c.end)
        return fail(err, errlen, "malformed .npy header: text after the closing '}'");
    if (!seen_descr || !seen_fortran || !seen_shape)
        return fail(err, errlen, "malformed .npy header: needs the keys descr, fortran_order and shape");
    return 0;
}

static void format_shape(const npy_header *h, char *out, size_t outlen)
{
    size_t used = (size_t)snprintf(out, outlen, "(");
    for (size_t i = 0; i < h->rank && used < outlen; i++)
        used += (size_t)snprintf(out + used, outlen - used, "%zu%s", h->dims[i],
                                 h->rank == 1 ? "," : i + 1 < h->rank ? ", " : "");
    if (used < outlen)
        snprintf(out + used, outlen - used, ")");
}

/* Validate a whole .npy image (size bytes at p). On success sets the data
 * offset, rows, cols and the version string. */
static int parse_npy(const unsigned char *p, size_t size, size_t *offset, size_t *rows,
                     size_t *cols, char *version, size_t versionlen, char *err, size_t errlen)
{
    if (size < 10)
        return fail(err, errlen, "truncated .npy header (%zu bytes)", size);
    unsigned major = p[6], minor = p[7];
    size_t start, hlen;
    if (minor != 0 || major < 1 || major > 3) /* numpy writes 1.0, 2.0 and 3.0 only */
        return fail(err, errlen, "unsupported .npy version %u.%u (need 1.0, 2.0 or 3.0)", major, minor);
    if (major == 1) {
        start = 10;
        hlen = (size_t)p[8] | (size_t)p[9] << 8;
    } else {
        if (size < 12)
            return fail(err, errlen, "truncated .npy header (%zu bytes)", size);
        start = 12;
        hlen = (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
    }
    snprintf(version, versionlen, "npy v%u.%u", major, minor);
    if (hlen > size - start)
        return fail(err, errlen, "truncated .npy header: it declares %zu bytes, the file has %zu",
                    hlen, size - start);
    npy_header h;
    if (parse_dict((const char *)p + start, hlen, &h, err, errlen) != 0)
        return -1;
    if (strcmp(h.descr, "<f4") != 0)
        return fail(err, errlen,
                    "dtype '%s' is not supported: need little-endian float32 '<f4' "
                    "(save x.astype(np.float32))", h.descr);
    if (h.fortran)
        return fail(err, errlen,
                    "fortran_order is True: need C order (save np.ascontiguousarray(x))");
    char shape[96];
    format_shape(&h, shape, sizeof shape);
    if (h.rank != 2)
        return fail(err, errlen, "shape %s is not 2-D: need (tokens, d_in) (save x.reshape(-1, d_in))",
                    shape);
    if (h.dims[0] == 0 || h.dims[1] == 0)
        return fail(err, errlen, "shape %s holds no data", shape);
    *offset = start + hlen;
    if (*offset % sizeof(float) != 0)
        return fail(err, errlen, "data starts at byte %zu, not on a 4-byte boundary", *offset);
    size_t bytes = size - *offset;
    if (h.dims[1] > SIZE_MAX / sizeof(float) / h.dims[0])
        return fail(err, errlen, "shape %s is too large", shape);
    size_t need = h.dims[0] * h.dims[1] * sizeof(float);
    if (bytes < need)
        return fail(err, errlen, "truncated: shape %s needs %zu bytes of data, the file has %zu",
                    shape, need, bytes);
    if (bytes > need)
        return fail(err, errlen, "%zu unexpected bytes after the %s array", bytes - need, shape);
    *rows = h.dims[0];
    *cols = h.dims[1];
    return 0;
}

/* ---- opening --------------------------------------------------------------- */

int tool_data_open(tool_data *d, const char *path, size_t d_in, char *err, size_t errlen)
{
    return tool_data_open_cols(d, path, d_in, "--d-in", err, errlen);
}

int tool_data_open_cols(tool_data *d, const char *path, size_t d_in, const char *option, char *err,
                        size_t errlen)
{
    memset(d, 0, sizeof *d);
    if (!host_is_little_endian())
        return fail(err, errlen, "this reader supports little-endian hosts only");
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return fail(err, errlen, "%s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail(err, errlen, "%s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, "not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return fail(err, errlen, "empty file");
    }
    if ((uintmax_t)st.st_size > SIZE_MAX) {
        close(fd);
        return fail(err, errlen, "file too large to map");
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file open */
    if (map == MAP_FAILED)
        return fail(err, errlen, "cannot map: %s", strerror(map_errno));

    const unsigned char *p = map;
    size_t offset = 0, rows = 0, cols = 0;
    char format[sizeof d->format];
    int rc = 0;
    if (size >= 6 && memcmp(p, "\x93NUMPY", 6) == 0) {
        rc = parse_npy(p, size, &offset, &rows, &cols, format, sizeof format, err, errlen);
        if (rc == 0 && d_in != 0 && d_in != cols)
            rc = fail(err, errlen, "the array has %zu columns but %s is %zu", cols, option, d_in);
    } else if (d_in == 0) {
        rc = fail(err, errlen, "not a .npy file (no \\x93NUMPY magic); for raw float32 give %s",
                  option);
    } else if (d_in > SIZE_MAX / sizeof(float) || size % (d_in * sizeof(float)) != 0) {
        char name[16]; /* "--d-in" -> "d_in" */
        snprintf(name, sizeof name, "%s", option + 2);
        for (char *c = name; *c; c++)
            *c = *c == '-' ? '_' : *c;
        rc = fail(err, errlen,
                  "size %zu bytes is not a multiple of %s x 4 = %zu x 4 bytes (is %s right?)",
                  size, name, d_in, option);
    } else {
        rows = size / (d_in * sizeof(float));
        cols = d_in;
        snprintf(format, sizeof format, "raw float32");
    }
    if (rc != 0) {
        munmap(map, size);
        return -1;
    }
    d->x = (const float *)(p + offset);
    d->rows = rows;
    d->cols = cols;
    memcpy(d->format, format, sizeof format);
    d->map = map;
    d->map_len = size;
    return 0;
}

void tool_data_wrap(tool_data *d, float *buf, size_t rows, size_t cols, const char *format)
{
    memset(d, 0, sizeof *d);
    d->x = d->owned = buf;
    d->rows = rows;
    d->cols = cols;
    snprintf(d->format, sizeof d->format, "%s", format);
}

void tool_data_close(tool_data *d)
{
    if (d->map)
        munmap(d->map, d->map_len);
    free(d->owned);
    memset(d, 0, sizeof *d);
}

int tool_npy_write_header(FILE *f, size_t rows, size_t cols)
{
    char dict[128];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }",
                       rows, cols);
    if (len < 0 || (size_t)len >= sizeof dict)
        return -1;
    /* magic (6) + version (2) + length (2) + dict + spaces + '\n' = multiple of 64 */
    size_t total = (10 + (size_t)len + 1 + 63) / 64 * 64;
    size_t hlen = total - 10;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    if (fwrite(pre, 1, sizeof pre, f) != sizeof pre || fputs(dict, f) == EOF)
        return -1;
    for (size_t i = 10 + (size_t)len; i + 1 < total; i++)
        if (fputc(' ', f) == EOF)
            return -1;
    return fputc('\n', f) == EOF ? -1 : 0;
}
