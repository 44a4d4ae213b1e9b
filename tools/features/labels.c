/* Labels of data rows (see labels.h). */
#include "labels.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void labels_free(char **labels, size_t n)
{
    for (size_t k = 0; labels && k < n; k++)
        free(labels[k]);
    free(labels);
}

/* A copy of line[0..len) without its line end, cut to LABEL_MAX_BYTES. */
static char *keep(const char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    int cut = len > LABEL_MAX_BYTES;
    if (cut) {
        len = LABEL_MAX_BYTES;
        while (len > 0 && ((unsigned char)line[len] & 0xC0) == 0x80)
            len--; /* not inside a UTF-8 sequence */
    }
    char *s = malloc(len + 4);
    if (s) {
        memcpy(s, line, len);
        strcpy(s + len, cut ? "..." : "");
    }
    return s;
}

/* The number of lines of f (a last line without "\n" counts). */
static uint64_t count_lines(FILE *f)
{
    char buf[1 << 16];
    uint64_t lines = 0;
    size_t n;
    int last = '\n';
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t k = 0; k < n; k++)
            lines += buf[k] == '\n';
        last = buf[n - 1];
    }
    return lines + (last != '\n');
}

static int wrong_count(const char *path, uint64_t lines, uint64_t n_rows, char *err,
                       size_t errlen)
{
    set_err(err, errlen, "'%s' has %llu lines, the data %llu rows: one line per row", path,
            (unsigned long long)lines, (unsigned long long)n_rows);
    return -1;
}

int labels_check(const char *path, uint64_t n_rows, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    uint64_t lines = count_lines(f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        set_err(err, errlen, "cannot read '%s'", path);
        return -1;
    }
    return lines == n_rows ? 0 : wrong_count(path, lines, n_rows, err, errlen);
}

int labels_read(const char *path, uint64_t n_rows, const uint64_t *ids, size_t n_ids,
                char ***out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    char **labels = calloc(n_ids ? n_ids : 1, sizeof *labels);
    char *line = NULL;
    size_t cap = 0, next = 0;
    uint64_t row = 0;
    ssize_t len;
    int rc = labels ? 0 : -1;
    if (rc != 0)
        set_err(err, errlen, "out of memory");
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        if (next < n_ids && ids[next] == row) {
            if (!(labels[next] = keep(line, (size_t)len))) {
                set_err(err, errlen, "out of memory");
                rc = -1;
            }
            next++;
        }
        row++;
    }
    if (rc == 0 && ferror(f)) {
        set_err(err, errlen, "cannot read '%s'", path);
        rc = -1;
    }
    if (rc == 0 && row != n_rows)
        rc = wrong_count(path, row, n_rows, err, errlen);
    free(line);
    fclose(f);
    if (rc != 0) {
        labels_free(labels, n_ids);
        return -1;
    }
    *out = labels;
    return 0;
}
