/*
 * Command-line helpers shared by the tools: the program's name in messages,
 * option values, and the one-line messages of failures. Any problem with the
 * command line or the input is reported as one line, "<program>: <problem>",
 * on stderr, and the program exits with status 2.
 */
#ifndef TOOL_OPTS_H
#define TOOL_OPTS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOOL_EXIT_USAGE 2     /* bad option, missing or malformed input */
#define TOOL_EXIT_INTERRUPTED 130 /* stopped by Ctrl-C (128 + SIGINT), log kept */

/* The program name used in messages (set once from main). */
void tool_set_program(const char *name);
const char *tool_program(void);

/* Print "<program>: <message>" and exit with TOOL_EXIT_USAGE. */
_Noreturn void tool_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* getopt_long, except that an unknown option or a missing argument ends the
 * program with a one-line message and exit status 2. */
int tool_getopt(int argc, char **argv, const struct option *longopts);

/* A libsae status for people: sae_status_string, and the library's detail
 * of the last failure on this thread (sae_error_detail) in parentheses when
 * there is one: "input/output error (sae_model_save: ...)". Call it right
 * after the failing call. The text is in a static buffer, valid until the
 * next call. */
const char *tool_status(int status);

/* A libsae call failed: print "<program>: <what>: <tool_status>" and return
 * 1 (the exit status of a failed run). */
int tool_library_error(int status, const char *what);

/* A file could not be written: print "<program>: cannot write '<path>'" and
 * return 1. */
int tool_write_error(const char *path);

/* Parse an option's value or exit via tool_usage_error naming the option.
 * Counts accept an optional k, M or G suffix (x1000, x1e6, x1e9). */
uint64_t tool_arg_count(const char *opt, const char *s, uint64_t min);
double tool_arg_double(const char *opt, const char *s, double min, bool min_allowed);
/* A comma-separated list of at most max doubles, each >= 0; returns the count. */
size_t tool_arg_doubles(const char *opt, const char *s, double *out, size_t max);

/* Seconds since an arbitrary fixed point (monotonic clock). */
double tool_now(void);

#endif
