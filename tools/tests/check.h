/*
 * What the tools' C tests share: CHECK, which reports a failed condition
 * with its file, line and a printf-style message and goes on; a scratch
 * directory under $TMPDIR (or /tmp), removed at the end; and the exit.
 */
#ifndef TOOL_TEST_CHECK_H
#define TOOL_TEST_CHECK_H

#include <stdio.h>

extern int check_failures;

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            check_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* Make a fresh scratch directory named after `name`; exits 1 if it cannot. */
void check_scratch_begin(const char *name);

/* The scratch directory, and a path in it (a static buffer, valid until the
 * next call). */
const char *check_scratch_dir(void);
const char *check_path_of(const char *file);

/* Remove the scratch directory and everything in it; print the verdict and
 * return the exit status: 0 when every CHECK passed. */
int check_finish(void);

#endif
