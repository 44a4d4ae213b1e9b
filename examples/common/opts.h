/*
 * Command-line helpers shared by the example programs. Any problem with the
 * command line or the input is reported as one line, "<program>: <problem>",
 * on stderr, and the program exits with status 2.
 */
#ifndef EX_OPTS_H
#define EX_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EX_EXIT_USAGE 2       /* bad option, missing or malformed input */
#define EX_EXIT_INTERRUPTED 130 /* stopped by Ctrl-C (128 + SIGINT), log kept */

/* The program name used in messages (set once from main). */
void ex_set_program(const char *name);
const char *ex_program(void);

/* Print "<program>: <message>" and exit with EX_EXIT_USAGE. */
_Noreturn void ex_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse an option's value or exit via ex_usage_error naming the option.
 * Counts accept an optional k, M or G suffix (x1000, x1e6, x1e9). */
uint64_t ex_arg_count(const char *opt, const char *s, uint64_t min);
double ex_arg_double(const char *opt, const char *s, double min, bool min_allowed);
/* A comma-separated list of at most max doubles, each >= 0; returns the count. */
size_t ex_arg_doubles(const char *opt, const char *s, double *out, size_t max);

/* Seconds since an arbitrary fixed point (monotonic clock). */
double ex_now(void);

#endif
