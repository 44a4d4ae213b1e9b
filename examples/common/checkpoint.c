#include "checkpoint.h"

#include "opts.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAX_BYTES 65536

/* A path that does not fit on one line is not recorded: FILE must then be
 * given again when resuming. */
static void record_input(ex_run_state *s, const char *path)
{
    if (strlen(path) < sizeof s->input && !strchr(path, '\n'))
        snprintf(s->input, sizeof s->input, "%s", path);
    else
        s->input[0] = '\0';
}

void ex_run_state_init(ex_run_state *s, const ex_config *c, const ex_inputs *in)
{
    memset(s, 0, sizeof *s);
    s->steps = c->steps;
    s->seed = c->seed;
    s->batch = c->batch;
    s->log_every = c->log_every;
    s->dead_window = c->dead_window;
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
        record_input(s, c->input);
    }
}

static char *join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

void ex_checkpoint_prepare(const char *opt, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT)
            ex_usage_error("%s '%s': %s", opt, dir, strerror(errno));
        if (mkdir(dir, 0777) != 0) {
            if (errno == ENOENT)
                ex_usage_error("%s '%s': the parent directory does not exist", opt, dir);
            ex_usage_error("%s '%s': cannot create the directory: %s", opt, dir, strerror(errno));
        }
    } else if (!S_ISDIR(st.st_mode)) {
        ex_usage_error("%s '%s': exists and is not a directory", opt, dir);
    } else if (access(dir, W_OK | X_OK) != 0) {
        ex_usage_error("%s '%s': cannot write in the directory", opt, dir);
    }
}

/* ---- the state file ----------------------------------------------------------- */

int ex_run_state_write(const char *path, const ex_run_state *s)
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
            "# sae-train checkpoint state (libsae %s); see examples/common/checkpoint.h\n"
            "format 1\n"
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
            sae_version_string(), (unsigned long long)s->step, (unsigned long long)s->tokens,
            s->seconds, (unsigned long long)s->steps, (unsigned long long)s->seed, s->batch,
            (unsigned long long)s->log_every, (unsigned long long)s->dead_window, s->data, s->rows,
            s->d_in);
    if (strcmp(s->data, "synthetic") == 0)
        fprintf(f, "synth_features %zu\nsynth_active %.17g\nsynth_tokens %llu\n", s->synth_features,
                s->synth_active, (unsigned long long)s->synth_tokens);
    else if (s->input[0])
        fprintf(f, "input %s\n", s->input);
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
    K_COUNT
};
static const char *const keys[K_COUNT] = {
    "format", "step", "tokens", "seconds", "steps", "seed", "batch", "log_every", "dead_window",
    "data", "rows", "d_in", "synth_features", "synth_active", "synth_tokens", "input", "end",
};

static bool parse_value(ex_run_state *s, int key, const char *v)
{
    uint64_t format;
    switch (key) {
    case K_FORMAT: return parse_u64(v, &format) && format == 1;
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
    }
    return false;
}

static int parse_state(char *text, ex_run_state *s, char *err, size_t errlen)
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
        bool needed = key <= K_D_IN || (synthetic && key <= K_SYNTH_TOKENS);
        if (needed && !seen[key])
            return state_error(err, errlen, "'%s' is missing", keys[key]);
    }
    if (synthetic && (s->synth_tokens != s->rows || s->synth_active > (double)s->synth_features))
        return state_error(err, errlen, "%s", "inconsistent synthetic data settings");
    return 0;
}

int ex_run_state_read(const char *path, ex_run_state *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
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

/* ---- saving and loading ------------------------------------------------------- */

/* The files of a checkpoint, in the order they are renamed into place. */
static const char *const checkpoint_files[] = {
    "optimizer.safetensors", "sae_weights.safetensors", "cfg.json", EX_STATE_FILE,
};
enum { N_FILES = sizeof checkpoint_files / sizeof *checkpoint_files };

int ex_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                       const ex_run_state *s, bool fresh, char *err, size_t errlen)
{
    /* Everything is written into a new directory inside dir first (the
     * library writes each file atomically and fsyncs it); only when all are
     * there are they renamed into dir, so a failed write leaves the previous
     * checkpoint whole. */
    char *stage = join(dir, ".saving-XXXXXX");
    if (!stage || !mkdtemp(stage)) {
        snprintf(err, errlen, "%s: cannot create a directory for the new files: %s", dir,
                 stage ? strerror(errno) : "out of memory");
        free(stage);
        return SAE_E_IO;
    }
    char *from[N_FILES] = {NULL}, *to[N_FILES] = {NULL};
    int rc = SAE_OK;
    for (int i = 0; i < N_FILES; i++) {
        from[i] = join(stage, checkpoint_files[i]);
        to[i] = join(dir, checkpoint_files[i]);
        if (!from[i] || !to[i])
            rc = SAE_E_NOMEM;
    }
    if (rc != SAE_OK)
        snprintf(err, errlen, "%s", sae_status_string(rc));
    if (rc == SAE_OK && (rc = sae_model_save(m, stage)) != SAE_OK)
        snprintf(err, errlen, "%s/sae_weights.safetensors: %s", dir, sae_status_string(rc));
    if (rc == SAE_OK && (rc = sae_optimizer_save(o, stage)) != SAE_OK)
        snprintf(err, errlen, "%s/optimizer.safetensors: %s", dir, sae_status_string(rc));
    if (rc == SAE_OK && ex_run_state_write(from[N_FILES - 1], s) != 0) {
        snprintf(err, errlen, "%s/%s: %s", dir, EX_STATE_FILE, strerror(errno));
        rc = SAE_E_IO;
    }
    /* A crash between the renames leaves files of two steps, which
     * ex_checkpoint_load refuses: the optimizer's step is not the state's.
     * A state file of another run could match by chance: remove it first. */
    if (rc == SAE_OK && fresh && unlink(to[N_FILES - 1]) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "%s: cannot remove the old state: %s", to[N_FILES - 1], strerror(errno));
        rc = SAE_E_IO;
    }
    for (int i = 0; i < N_FILES && rc == SAE_OK; i++) {
        if (rename(from[i], to[i]) != 0) {
            snprintf(err, errlen, "%s: %s", to[i], strerror(errno));
            rc = SAE_E_IO;
        }
    }
    if (rc == SAE_OK) { /* make the renames durable */
        int fd = open(dir, O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            (void)fsync(fd);
            close(fd);
        }
    }
    for (int i = 0; i < N_FILES; i++) {
        if (from[i])
            unlink(from[i]); /* what a failed save left */
        free(from[i]);
        free(to[i]);
    }
    rmdir(stage);
    free(stage);
    return rc;
}

void ex_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, ex_run_state *s)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        ex_usage_error("--resume '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        ex_usage_error("--resume '%s': not a directory", dir);
    char err[256];
    char *state_path = join(dir, EX_STATE_FILE);
    if (!state_path)
        ex_usage_error("out of memory");
    if (ex_run_state_read(state_path, s, err, sizeof err) != 0)
        ex_usage_error("--resume: %s: %s", state_path, err);
    free(state_path);
    int rc = sae_model_load(m, dir);
    if (rc != SAE_OK)
        ex_usage_error("--resume: %s/sae_weights.safetensors: %s", dir, sae_status_string(rc));
    rc = sae_optimizer_load(o, *m, dir);
    if (rc != SAE_OK) {
        sae_model_free(*m);
        if (rc == SAE_E_INVALID_ARG) /* a valid optimizer file for another shape */
            ex_usage_error("--resume: %s/optimizer.safetensors: made for another model shape than "
                           "sae_weights.safetensors", dir);
        ex_usage_error("--resume: %s/optimizer.safetensors: %s", dir, sae_status_string(rc));
    }
    uint64_t steps = sae_optimizer_steps(*o);
    size_t d_in = sae_model_d_in(*m);
    if (steps != s->step || d_in != s->d_in) {
        sae_optimizer_free(*o);
        sae_model_free(*m);
        if (steps != s->step)
            ex_usage_error("--resume: %s: the optimizer is at step %llu but %s at step %llu "
                           "(a save was cut short?)", dir, (unsigned long long)steps,
                           EX_STATE_FILE, (unsigned long long)s->step);
        ex_usage_error("--resume: %s: the model has d_in %zu but %s says %zu", dir, d_in,
                       EX_STATE_FILE, s->d_in);
    }
}

/* ---- resuming ------------------------------------------------------------------ */

/* An option given on the command line must agree with the checkpoint. */
static void agree(const ex_config *c, int code, const char *opt, uint64_t given, uint64_t saved,
                  const char *dir)
{
    if (ex_config_given(c, code) && given != saved)
        ex_usage_error("%s %llu: the checkpoint in '%s' has %llu", opt, (unsigned long long)given,
                       dir, (unsigned long long)saved);
}

/* Take a hyperparameter from the optimizer, or set the command line's value. */
static void hyper(const ex_config *c, int code, int option, double *value, sae_optimizer *o)
{
    if (ex_config_given(c, code)) {
        int rc = sae_optimizer_set(o, option, *value);
        if (rc != SAE_OK)
            ex_usage_error("cannot set option %d to %g: %s", option, *value, sae_status_string(rc));
    } else {
        sae_optimizer_get(o, option, value);
    }
}

void ex_config_resume(ex_config *c, const char *dir, ex_run_state *s, const sae_model *m,
                      sae_optimizer *o)
{
    const size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    agree(c, EX_OPT_D_SAE, "--d-sae", c->d_sae, d_sae, dir);
    agree(c, EX_OPT_D_IN, "--d-in", c->d_in, d_in, dir);
    agree(c, EX_OPT_SEED, "--seed", c->seed, s->seed, dir);
    c->d_sae = d_sae;
    c->seed = s->seed;
    if (strcmp(s->data, "synthetic") == 0) {
        if (c->input)
            ex_usage_error("--resume '%s': the checkpoint was trained on synthetic data, not on "
                           "'%s'", dir, c->input);
        agree(c, EX_OPT_SYNTH_FEATURES, "--synth-features", c->synth_features, s->synth_features,
              dir);
        if (ex_config_given(c, EX_OPT_SYNTH_ACTIVE) && c->synth_active != s->synth_active)
            ex_usage_error("--synth-active %g: the checkpoint in '%s' has %g", c->synth_active, dir,
                           s->synth_active);
        agree(c, EX_OPT_SYNTH_TOKENS, "--synth-tokens", c->synth_tokens, s->synth_tokens, dir);
        c->d_in = d_in;
        c->synth_features = s->synth_features;
        c->synth_active = s->synth_active;
        c->synth_tokens = s->synth_tokens;
    } else {
        if (!c->input && !s->input[0])
            ex_usage_error("--resume '%s': give the training FILE (%zu x %zu floats)", dir,
                           s->rows, s->d_in);
        if (!c->input)
            c->input = s->input;
        if (strcmp(s->data, "raw") == 0)
            c->d_in = d_in; /* a .npy states its own shape, checked after loading */
    }
    if (!ex_config_given(c, EX_OPT_BATCH))
        c->batch = s->batch;
    if (!ex_config_given(c, EX_OPT_LOG_EVERY))
        c->log_every = s->log_every;
    if (!ex_config_given(c, EX_OPT_DEAD_WINDOW))
        c->dead_window = s->dead_window;
    hyper(c, EX_OPT_LR, SAE_OPT_LR, &c->lr, o);
    hyper(c, EX_OPT_LAMBDA, SAE_OPT_L1_COEFF, &c->lambda, o);
    hyper(c, EX_OPT_CLIP, SAE_OPT_GRAD_CLIP, &c->clip, o);

    /* the total number of steps */
    if (c->tokens) {
        if (c->tokens < s->tokens)
            ex_usage_error("--tokens %llu: the checkpoint in '%s' has already trained on %llu",
                           (unsigned long long)c->tokens, dir, (unsigned long long)s->tokens);
        uint64_t left = c->tokens - s->tokens;
        c->steps = s->step + left / c->batch + (left % c->batch != 0);
    } else if (!ex_config_given(c, EX_OPT_STEPS)) {
        c->steps = s->steps > s->step ? s->steps : s->step;
    } else if (c->steps < s->step) {
        ex_usage_error("--steps %llu: the checkpoint in '%s' is already at step %llu (--steps is "
                       "the total)", (unsigned long long)c->steps, dir, (unsigned long long)s->step);
    }

    /* what the next checkpoint records */
    s->steps = c->steps;
    s->batch = c->batch;
    s->log_every = c->log_every;
    s->dead_window = c->dead_window;
    if (c->input && c->input != s->input)
        record_input(s, c->input);
}

void ex_inputs_check_resume(const ex_inputs *in, const ex_config *c, const char *dir,
                            ex_run_state *s)
{
    if (in->train.rows != s->rows || in->train.cols != s->d_in)
        ex_usage_error("--resume '%s': %s has %zu x %zu floats, the checkpoint was trained on "
                       "%zu x %zu", dir, c->input ? c->input : "the synthetic data", in->train.rows,
                       in->train.cols, s->rows, s->d_in);
    if (!in->synthetic)
        snprintf(s->data, sizeof s->data, "%s",
                 strncmp(in->train.format, "npy", 3) == 0 ? "npy" : "raw");
}
