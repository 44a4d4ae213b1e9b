/*
 * Input data for the tools: a tokens x d_in matrix of float32, row-major.
 *
 * From a file it is memory-mapped (never copied whole into the heap):
 * - .npy, recognised by its magic: versions 1.0, 2.0 and 3.0 (the ones numpy
 *   writes; 1.1 or 2.1 are refused), dtype '<f4',
 *   fortran_order False, 2-D shape (tokens, d_in), exactly as np.save writes
 *   np.ascontiguousarray(x, dtype=np.float32);
 * - anything else is raw little-endian float32, which needs d_in from the
 *   caller; its size must be a multiple of 4 * d_in bytes.
 * Or it wraps a matrix made in memory (the synthetic data).
 */
#ifndef TOOL_DATA_H
#define TOOL_DATA_H

#include <stddef.h>
#include <stdio.h>

typedef struct tool_data {
    const float *x;     /* rows x cols floats, row-major */
    size_t rows, cols;
    char format[24];    /* "npy v1.0", "raw float32", "synthetic" */
    /* private */
    void *map;
    size_t map_len;
    float *owned;
} tool_data;

/* Map `path`. d_in is the column count of a raw file (0: the file must be a
 * .npy); for a .npy, a nonzero d_in must match its columns. Returns 0, or -1
 * with a one-line description of the problem in err (no file name, no
 * newline) and *d zeroed. */
int tool_data_open(tool_data *d, const char *path, size_t d_in, char *err, size_t errlen);

/* The same, with the option that gives the columns named in messages
 * ("--d-out": "... give --d-out", "a multiple of d-out x 4 ..."). */
int tool_data_open_cols(tool_data *d, const char *path, size_t cols, const char *option, char *err,
                        size_t errlen);

/* Take ownership of buf (rows x cols floats from malloc). */
void tool_data_wrap(tool_data *d, float *buf, size_t rows, size_t cols, const char *format);

/* Unmap or free; zeroes *d. Safe on a zeroed struct. */
void tool_data_close(tool_data *d);

/* Write a version 1.0 .npy header for a rows x cols float32 C-order array,
 * padded so the data that follows starts 64-byte aligned. Returns 0 or -1
 * (write error). */
int tool_npy_write_header(FILE *f, size_t rows, size_t cols);

#endif
