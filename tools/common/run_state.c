/*
 * train_state.txt: what resuming a run needs beyond the model and the
 * optimizer (see run_state.h for the format).
 */
#include "run_state.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAX_BYTES 65536

/* path into dst (size bytes) if it fits on one line, else "". */
static void set_path(char *dst, size_t size, const char *path)
{
    if (strlen(path) < size && !strchr(path, '\n'))
        snprintf(dst, size, "%s", path);
    else
        dst[0] = '\0';
}

void tool_run_state_set_target(tool_run_state *s, const char *path)
{
    set_path(s->target, sizeof s->target, path);
}

/* A path that does not fit on one line is not recorded: FILE must then be
 * given again when resuming. */
void tool_run_state_set_input(tool_run_state *s, const char *path)
{
    set_path(s->input, sizeof s->input, path);
}

void tool_run_state_settings(tool_run_state *s, const tool_config *c)
{
    s->steps = c->steps;
    s->batch = c->batch;
    s->log_every = c->log_every;
    s->dead_window = c->dead_window;
    s->sample = c->sample;
    s->resample_every = c->resample_every;
    s->resample_window = c->resample_window;
}

void tool_run_state_init(tool_run_state *s, const tool_config *c, const tool_inputs *in, double scale)
{
    memset(s, 0, sizeof *s);
    s->arch = c->arch;
    s->k = tool_arch_is_topk(c->arch) ? c->k : 0;
    s->threshold0 = c->arch == SAE_ARCH_JUMPRELU ? c->threshold0 : 0.0;
    s->normalize = c->normalize;
    s->scale = c->normalize ? scale : 1.0;
    s->b_dec_init = c->b_dec_init;
    s->seed = c->seed;
    tool_run_state_settings(s, c);
    s->rows = in->train.rows;
    s->d_in = in->train.cols;
    if (in->synthetic) {
        snprintf(s->data, sizeof s->data, "synthetic");
        s->synth_features = c->synth_features;
        s->synth_active = c->synth_active;
        s->synth_tokens = c->synth_tokens;
    } else {
        snprintf(s->data, sizeof s->data, "%s",
                 strncmp(in->train.format, "npy", 3) == 0 ? "npy" : "raw");
        tool_run_state_set_input(s, c->input);
    }
    s->d_out = in->target.x ? in->target.cols : 0;
    if (c->target_path)
        tool_run_state_set_target(s, c->target_path);
}

int tool_run_state_write(const char *path, const tool_run_state *s)
{
    /* atomically, as the library writes its files: a temporary file in the
     * same directory, flushed, fsync'ed and renamed over path */
    char *tmp = malloc(strlen(path) + 8);
    if (!tmp)
        return -1;
    sprintf(tmp, "%s.XXXXXX", path);
    int fd = mkstemp(tmp);
    mode_t mask = umask(0); /* mkstemp makes it 0600: give it the usual mode */
    umask(mask);
    if (fd >= 0)
        (void)fchmod(fd, 0666 & ~mask);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return -1;
    }
    fprintf(f,
            "# sae-train checkpoint state (libsae %s); see tools/training-runs.md\n"
            "format %d\n"
            "step %llu\n"
            "tokens %llu\n"
            "seconds %.3f\n"
            "steps %llu\n"
            "seed %llu\n"
            "batch %zu\n"
            "log_every %llu\n"
            "dead_window %llu\n"
            "data %s\n"
            "rows %zu\n"
            "d_in %zu\n",
            sae_version_string(), TOOL_STATE_FORMAT, (unsigned long long)s->step,
            (unsigned long long)s->tokens, s->seconds, (unsigned long long)s->steps, (unsigned long long)s->seed, s->batch,
            (unsigned long long)s->log_every, (unsigned long long)s->dead_window, s->data, s->rows,
            s->d_in);
    if (strcmp(s->data, "synthetic") == 0)
        fprintf(f, "synth_features %zu\nsynth_active %.17g\nsynth_tokens %llu\n", s->synth_features,
                s->synth_active, (unsigned long long)s->synth_tokens);
    else if (s->input[0])
        fprintf(f, "input %s\n", s->input);
    if (s->target[0])
        fprintf(f, "target %s\n", s->target);
    if (s->d_out)
        fprintf(f, "d_out %zu\n", s->d_out);
    if (s->arch >= 0)
        fprintf(f, "arch %s\n", tool_arch_name(s->arch));
    if (s->k)
        fprintf(f, "k %zu\n", s->k);
    if (s->threshold0 > 0.0)
        fprintf(f, "threshold0 %.17g\n", s->threshold0);
    if (s->normalize)
        fprintf(f, "scale %.17g\n", s->scale);
    fprintf(f, "b_dec_init %s\n", s->b_dec_init == SAE_B_DEC_MEAN ? "mean"
                                  : s->b_dec_init == SAE_B_DEC_GEOMETRIC_MEDIAN ? "median"
                                                                                : "none");
    if (s->sample)
        fprintf(f, "sample %zu\n", s->sample);
    fprintf(f, "resample_every %llu\nresample_window %llu\nhist_every %llu\n",
            (unsigned long long)s->resample_every, (unsigned long long)s->resample_window,
            (unsigned long long)s->hist_every);
    fprintf(f, "end\n");
    bool ok = fflush(f) == 0 && fsync(fd) == 0;
    ok = fclose(f) == 0 && ok;
    ok = ok && rename(tmp, path) == 0;
    if (!ok)
        unlink(tmp);
    free(tmp);
    return ok ? 0 : -1;
}

static int state_error(char *err, size_t errlen, const char *fmt, const char *arg)
{
    snprintf(err, errlen, fmt, arg);
    return -1;
}

/* A whole number of decimal digits only. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_size(const char *s, size_t *out, size_t min)
{
    uint64_t v;
    if (!parse_u64(s, &v) || v < min || v > 0x7fffffff)
        return false;
    *out = (size_t)v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v) || v < 0.0)
        return false;
    *out = v;
    return true;
}

/* The keys of the state file; each required one must appear exactly once. */
enum {
    K_FORMAT, K_STEP, K_TOKENS, K_SECONDS, K_STEPS, K_SEED, K_BATCH, K_LOG_EVERY, K_DEAD_WINDOW,
    K_DATA, K_ROWS, K_D_IN, K_SYNTH_FEATURES, K_SYNTH_ACTIVE, K_SYNTH_TOKENS, K_INPUT, K_END,
    K_ARCH, K_K, K_THRESHOLD0, K_SCALE, K_B_DEC_INIT, K_SAMPLE, K_RESAMPLE_EVERY,
    K_RESAMPLE_WINDOW, K_HIST_EVERY, K_TARGET, K_D_OUT, K_COUNT
};
static const char *const keys[K_COUNT] = {
    "format", "step", "tokens", "seconds", "steps", "seed", "batch", "log_every", "dead_window",
    "data", "rows", "d_in", "synth_features", "synth_active", "synth_tokens", "input", "end",
    "arch", "k", "threshold0", "scale", "b_dec_init", "sample", "resample_every",
    "resample_window", "hist_every", "target", "d_out",
};

static bool parse_value(tool_run_state *s, int key, const char *v)
{
    uint64_t format;
    switch (key) {
    case K_FORMAT:
        if (!parse_u64(v, &format) || format < 1 || format > 3)
            return false;
        s->format = (int)format;
        return true;
    case K_STEP: return parse_u64(v, &s->step);
    case K_TOKENS: return parse_u64(v, &s->tokens);
    case K_SECONDS: return parse_double(v, &s->seconds);
    case K_STEPS: return parse_u64(v, &s->steps) && s->steps > 0;
    case K_SEED: return parse_u64(v, &s->seed);
    case K_BATCH: return parse_size(v, &s->batch, 1);
    case K_LOG_EVERY: return parse_u64(v, &s->log_every) && s->log_every > 0;
    case K_DEAD_WINDOW: return parse_u64(v, &s->dead_window) && s->dead_window > 0;
    case K_DATA:
        if (strcmp(v, "synthetic") && strcmp(v, "npy") && strcmp(v, "raw"))
            return false;
        snprintf(s->data, sizeof s->data, "%s", v);
        return true;
    case K_ROWS: return parse_size(v, &s->rows, 1);
    case K_D_IN: return parse_size(v, &s->d_in, 1);
    case K_SYNTH_FEATURES: return parse_size(v, &s->synth_features, 1);
    case K_SYNTH_ACTIVE: return parse_double(v, &s->synth_active) && s->synth_active > 0.0;
    case K_SYNTH_TOKENS: return parse_u64(v, &s->synth_tokens) && s->synth_tokens >= 2;
    case K_INPUT:
        if (strlen(v) >= sizeof s->input)
            return false;
        snprintf(s->input, sizeof s->input, "%s", v);
        return true;
    case K_END: return *v == '\0';
    case K_ARCH: return (s->arch = tool_arch_parse(v)) >= 0;
    case K_K: return parse_size(v, &s->k, 1);
    case K_THRESHOLD0: return parse_double(v, &s->threshold0) && s->threshold0 > 0.0;
    case K_SCALE: return (s->normalize = parse_double(v, &s->scale) && s->scale > 0.0);
    case K_B_DEC_INIT:
        s->b_dec_init = strcmp(v, "mean") == 0     ? SAE_B_DEC_MEAN
                        : strcmp(v, "median") == 0 ? SAE_B_DEC_GEOMETRIC_MEDIAN
                                                   : -1;
        return s->b_dec_init >= 0 || strcmp(v, "none") == 0;
    case K_SAMPLE: return parse_size(v, &s->sample, 1);
    case K_RESAMPLE_EVERY: return parse_u64(v, &s->resample_every);
    case K_RESAMPLE_WINDOW: return parse_u64(v, &s->resample_window);
    case K_HIST_EVERY: return parse_u64(v, &s->hist_every);
    case K_TARGET:
        if (strlen(v) >= sizeof s->target)
            return false;
        snprintf(s->target, sizeof s->target, "%s", v);
        return true;
    case K_D_OUT: return parse_size(v, &s->d_out, 1);
    }
    return false;
}

static int parse_state(char *text, tool_run_state *s, char *err, size_t errlen)
{
    bool seen[K_COUNT] = {false};
    char *line = text;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (!nl)
            return state_error(err, errlen, "%s", "truncated (no end line)");
        *nl = '\0';
        if (seen[K_END])
            return state_error(err, errlen, "%s", "text after the end line");
        if (*line != '#' && *line != '\0') {
            char *space = strchr(line, ' ');
            const char *value = space ? space + 1 : "";
            if (space)
                *space = '\0';
            int key = 0;
            while (key < K_COUNT && strcmp(keys[key], line) != 0)
                key++;
            if (key < K_COUNT) {
                if (seen[key])
                    return state_error(err, errlen, "'%s' appears twice", keys[key]);
                if (!parse_value(s, key, value))
                    return state_error(err, errlen, "bad value for '%s'", keys[key]);
                seen[key] = true;
            }
        }
        line = nl + 1;
    }
    if (!seen[K_END])
        return state_error(err, errlen, "%s", "truncated (no end line)");
    bool synthetic = strcmp(s->data, "synthetic") == 0;
    for (int key = 0; key < K_COUNT; key++) {
        bool needed = key <= K_D_IN || (synthetic && key >= K_SYNTH_FEATURES && key <= K_SYNTH_TOKENS);
        if (needed && !seen[key])
            return state_error(err, errlen, "'%s' is missing", keys[key]);
    }
    if (synthetic && (s->synth_tokens != s->rows || s->synth_active > (double)s->synth_features))
        return state_error(err, errlen, "%s", "inconsistent synthetic data settings");
    return 0;
}

int tool_run_state_read(const char *path, tool_run_state *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->arch = -1; /* the defaults of the keys format 1 lacks */
    s->scale = 1.0;
    s->b_dec_init = -1;
    FILE *f = fopen(path, "rb");
    if (!f)
        return state_error(err, errlen, "%s", strerror(errno));
    char *text = malloc(STATE_MAX_BYTES + 1);
    size_t n = text ? fread(text, 1, STATE_MAX_BYTES + 1, f) : 0;
    bool read_error = ferror(f);
    fclose(f);
    int rc;
    if (!text)
        rc = state_error(err, errlen, "%s", "out of memory");
    else if (read_error)
        rc = state_error(err, errlen, "%s", "read error");
    else if (n > STATE_MAX_BYTES)
        rc = state_error(err, errlen, "%s", "too large to be a state file");
    else if (memchr(text, '\0', n))
        rc = state_error(err, errlen, "%s", "not a text file");
    else {
        text[n] = '\0';
        rc = parse_state(text, s, err, errlen);
    }
    free(text);
    return rc;
}

