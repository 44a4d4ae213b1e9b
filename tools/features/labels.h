/*
 * Labels of data rows for the dashboard: a text file with one line per row
 * of the data (e.g. the token and its context, as the host wrote it), read
 * in one pass, keeping only the lines of the rows the dashboard shows.
 */
#ifndef SAE_FEATURES_LABELS_H
#define SAE_FEATURES_LABELS_H

#include <stddef.h>
#include <stdint.h>

/* Longest label kept, in bytes (cut at a character boundary, with "..."). */
#define LABEL_MAX_BYTES 2000

/* *out = n_ids malloc'ed strings: the lines of rows ids[0..n_ids) (ascending,
 * 0-based), without their line ends ("\n" or "\r\n"). The file must have
 * exactly n_rows lines (the last may lack its "\n"). Returns 0, or -1 with a
 * one-line reason in err. */
int labels_read(const char *path, uint64_t n_rows, const uint64_t *ids, size_t n_ids,
                char ***out, char *err, size_t errlen);

/* 0 if the file has exactly n_rows lines (a quick first pass, so that a
 * wrong file is refused before the work), else -1 with a reason in err. */
int labels_check(const char *path, uint64_t n_rows, char *err, size_t errlen);

void labels_free(char **labels, size_t n);

#endif
