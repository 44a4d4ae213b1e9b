#include "args.h"

#include <libsae/sae.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *program = "sae";

void tool_set_program(const char *name)
{
    const char *slash = strrchr(name, '/');
    program = slash ? slash + 1 : name;
}

const char *tool_program(void) { return program; }

void tool_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", program);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(TOOL_EXIT_USAGE);
}

int tool_getopt(int argc, char **argv, const struct option *longopts)
{
    opterr = 0; /* we print our own one-line messages */
    int c = getopt_long(argc, argv, ":h", longopts, NULL);
    if (c == '?') {
        if (optopt && optopt < 256)
            tool_usage_error("unknown option '-%c' (see --help)", optopt);
        tool_usage_error("unknown option '%s' (see --help)", argv[optind - 1]);
    }
    if (c == ':')
        tool_usage_error("option '%s' needs a value (see --help)", argv[optind - 1]);
    return c;
}

const char *tool_status(int status)
{
    static char text[1400];
    const char *detail = sae_error_detail();
    if (*detail)
        snprintf(text, sizeof text, "%s (%s)", sae_status_string(status), detail);
    else
        snprintf(text, sizeof text, "%s", sae_status_string(status));
    return text;
}

int tool_library_error(int status, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", program, what, tool_status(status));
    return 1;
}

int tool_write_error(const char *path)
{
    fprintf(stderr, "%s: cannot write '%s'\n", program, path);
    return 1;
}

uint64_t tool_arg_count(const char *opt, const char *s, uint64_t min)
{
    const char *p = s;
    while (*p == ' ')
        p++;
    if (*p < '0' || *p > '9')
        tool_usage_error("%s: expected a whole number, got '%s'", opt, s);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    uint64_t scale = 1;
    if (*end == 'k')
        scale = 1000;
    else if (*end == 'M')
        scale = 1000000;
    else if (*end == 'G')
        scale = 1000000000;
    if (scale != 1)
        end++;
    if (errno == ERANGE || *end != '\0' || v > UINT64_MAX / scale)
        tool_usage_error("%s: expected a whole number, got '%s'", opt, s);
    v *= scale;
    if (v < min)
        tool_usage_error("%s: must be at least %llu, got '%s'", opt, (unsigned long long)min, s);
    return v;
}

double tool_arg_double(const char *opt, const char *s, double min, bool min_allowed)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
        tool_usage_error("%s: expected a finite number, got '%s'", opt, s);
    if (v < min || (v == min && !min_allowed))
        tool_usage_error("%s: must be %s %g, got '%s'", opt, min_allowed ? ">=" : ">", min, s);
    return v;
}

size_t tool_arg_doubles(const char *opt, const char *s, double *out, size_t max)
{
    size_t n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item)
            tool_usage_error("%s: expected numbers separated by commas, got '%s'", opt, s);
        if (n == max)
            tool_usage_error("%s: at most %zu values", opt, max);
        memcpy(item, p, len);
        item[len] = '\0';
        out[n++] = tool_arg_double(opt, item, 0.0, true);
        if (!comma)
            return n;
        p = comma + 1;
    }
}

double tool_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
