#include "checkpoint.h"

#include "opts.h"
#include "recipe.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAX_BYTES 65536
#define TRAIN_WEIGHTS "train_weights.safetensors"

/* A path that does not fit on one line is not recorded: FILE must then be
 * given again when resuming. */
static void record_input(ex_run_state *s, const char *path)
{
    if (strlen(path) < sizeof s->input && !strchr(path, '\n'))
        snprintf(s->input, sizeof s->input, "%s", path);
    else
        s->input[0] = '\0';
}

void ex_run_state_init(ex_run_state *s, const ex_config *c, const ex_inputs *in, double scale)
{
    memset(s, 0, sizeof *s);
    s->arch = c->arch;
    s->k = ex_arch_is_topk(c->arch) ? c->k : 0;
    s->threshold0 = c->arch == SAE_ARCH_JUMPRELU ? c->threshold0 : 0.0;
    s->normalize = c->normalize;
    s->scale = c->normalize ? scale : 1.0;
    s->b_dec_init = c->b_dec_init;
    s->sample = c->sample;
    s->resample_every = c->resample_every;
    s->resample_window = c->resample_window;
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
            "format 2\n"
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
    if (s->arch >= 0)
        fprintf(f, "arch %s\n", ex_arch_name(s->arch));
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
    K_RESAMPLE_WINDOW, K_HIST_EVERY, K_COUNT
};
static const char *const keys[K_COUNT] = {
    "format", "step", "tokens", "seconds", "steps", "seed", "batch", "log_every", "dead_window",
    "data", "rows", "d_in", "synth_features", "synth_active", "synth_tokens", "input", "end",
    "arch", "k", "threshold0", "scale", "b_dec_init", "sample", "resample_every",
    "resample_window", "hist_every",
};

static bool parse_value(ex_run_state *s, int key, const char *v)
{
    uint64_t format;
    switch (key) {
    case K_FORMAT: return parse_u64(v, &format) && (format == 1 || format == 2);
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
    case K_ARCH: return (s->arch = ex_arch_parse(v)) >= 0;
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
        bool needed = key <= K_D_IN || (synthetic && key >= K_SYNTH_FEATURES && key <= K_SYNTH_TOKENS);
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

/* ---- saving and loading ------------------------------------------------------- */

/* The files of a checkpoint, in the order they are renamed into place (the
 * second only with --normalize). */
static const char *const checkpoint_files[] = {
    "optimizer.safetensors", TRAIN_WEIGHTS, "sae_weights.safetensors", "cfg.json", EX_STATE_FILE,
};
enum { N_FILES = sizeof checkpoint_files / sizeof *checkpoint_files, F_TRAIN_WEIGHTS = 1 };

/* Save m and o to buffers and load them back. */
static int roundtrip(const sae_model *m, const sae_optimizer *o, sae_model **m2, sae_optimizer **o2)
{
    *m2 = NULL;
    *o2 = NULL;
    size_t msize, osize;
    int rc = sae_model_save_size(m, &msize);
    if (rc == SAE_OK)
        rc = sae_optimizer_save_size(o, &osize);
    void *buf = rc == SAE_OK ? malloc(msize > osize ? msize : osize) : NULL;
    if (rc == SAE_OK && !buf)
        rc = SAE_E_NOMEM;
    if (rc == SAE_OK)
        rc = sae_model_save_buffer(m, buf, msize, NULL);
    if (rc == SAE_OK)
        rc = sae_model_load_buffer(m2, buf, msize);
    if (rc == SAE_OK)
        rc = sae_optimizer_save_buffer(o, buf, osize, NULL);
    if (rc == SAE_OK)
        rc = sae_optimizer_load_buffer(o2, *m2, buf, osize);
    free(buf);
    return rc;
}

/* Whether tensor `which` of a and b agree: bit for bit, or within a relative
 * 1e-6 (thresholds stored as logarithms). */
static bool same_tensor(const sae_model *a, const sae_model *b, int which, bool exact)
{
    size_t n = sae_model_tensor_size(a, which);
    if (n != sae_model_tensor_size(b, which))
        return false;
    if (n == 0)
        return true;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    bool same = x && y && sae_model_get_tensor(a, which, x, n) == SAE_OK &&
                sae_model_get_tensor(b, which, y, n) == SAE_OK;
    for (size_t i = 0; i < n && same; i++)
        same = exact ? memcmp(&x[i], &y[i], sizeof x[i]) == 0
                     : fabsf(x[i] - y[i]) <= 1e-6f * fabsf(x[i]);
    free(x);
    free(y);
    return same;
}

int ex_checkpoint_check(int arch_id, char *err, size_t errlen)
{
    /* a tiny model after a step (so that moments, counters and BatchTopK's
     * threshold are set), k 2 of 5 features */
    static const float x[4 * 3] = {1, 0.5f, -0.25f, 0.75f, -1, 2, 0, 0.125f, 1.5f, -0.5f, 1, 1};
    const double param = ex_arch_is_topk(arch_id) ? 2.0 : arch_id == SAE_ARCH_JUMPRELU ? 0.05 : 0.0;
    sae_model *m = NULL, *m2 = NULL;
    sae_optimizer *o = NULL, *o2 = NULL;
    const char *arch = ex_arch_name(arch_id);
    int rc = sae_model_create_arch(&m, 3, 5, 7, arch_id, param);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(&o, m);
    if (rc == SAE_OK)
        rc = sae_step(m, o, x, 4, NULL);
    if (rc == SAE_OK)
        rc = roundtrip(m, o, &m2, &o2);
    if (rc != SAE_OK) {
        snprintf(err, errlen, "libsae %s cannot save and load a %s model and its optimizer: %s",
                 sae_version_string(), arch, sae_status_string(rc));
    } else if (sae_model_arch(m2) != sae_model_arch(m) || sae_model_k(m2) != sae_model_k(m)) {
        snprintf(err, errlen, "libsae %s does not save %s checkpoints yet (the model loads back "
                 "as %s)", sae_version_string(), arch, ex_arch_name(sae_model_arch(m2)));
        rc = SAE_E_FORMAT;
    } else if (!same_tensor(m, m2, SAE_W_ENC, true) || !same_tensor(m, m2, SAE_B_ENC, true) ||
               !same_tensor(m, m2, SAE_W_DEC, true) || !same_tensor(m, m2, SAE_B_DEC, true) ||
               !same_tensor(m, m2, SAE_THRESHOLD, sae_model_arch(m) != SAE_ARCH_JUMPRELU)) {
        snprintf(err, errlen, "libsae %s does not save every tensor of a %s model (it loads "
                 "back different)", sae_version_string(), arch);
        rc = SAE_E_FORMAT;
    }
    sae_optimizer_free(o2);
    sae_model_free(m2);
    sae_optimizer_free(o);
    sae_model_free(m);
    return rc;
}

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
    /* with --normalize: the exported model is a copy with the scale folded in */
    sae_model *export = NULL;
    if (rc == SAE_OK && s->normalize) {
        rc = ex_model_copy(m, &export);
        if (rc == SAE_OK)
            rc = sae_model_fold_input_scale(export, s->scale);
        if (rc != SAE_OK)
            snprintf(err, errlen, "%s/sae_weights.safetensors: folding the input scale %g: %s",
                     dir, s->scale, sae_status_string(rc));
        else if ((rc = sae_model_save(m, from[F_TRAIN_WEIGHTS])) != SAE_OK)
            snprintf(err, errlen, "%s/%s: %s", dir, TRAIN_WEIGHTS, sae_status_string(rc));
    }
    if (rc == SAE_OK && (rc = sae_model_save(export ? export : m, stage)) != SAE_OK)
        snprintf(err, errlen, "%s/sae_weights.safetensors: %s", dir, sae_status_string(rc));
    sae_model_free(export);
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
        if (i == F_TRAIN_WEIGHTS && !s->normalize)
            continue;
        if (rename(from[i], to[i]) != 0) {
            snprintf(err, errlen, "%s: %s", to[i], strerror(errno));
            rc = SAE_E_IO;
        }
    }
    /* another run's training weights would only mislead */
    if (rc == SAE_OK && fresh && !s->normalize)
        (void)unlink(to[F_TRAIN_WEIGHTS]);
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
    /* a --normalize run trains on s x: its own model is the unfolded one */
    char *model_path = s->normalize ? join(dir, TRAIN_WEIGHTS) : NULL;
    if (s->normalize && !model_path)
        ex_usage_error("out of memory");
    int rc = sae_model_load(m, model_path ? model_path : dir);
    if (rc != SAE_OK)
        ex_usage_error("--resume: %s/%s: %s", dir, model_path ? TRAIN_WEIGHTS : "sae_weights.safetensors",
                       sae_status_string(rc));
    free(model_path);
    if (s->arch >= 0 && (sae_model_arch(*m) != s->arch || sae_model_k(*m) != s->k)) {
        int arch = sae_model_arch(*m);
        size_t k = sae_model_k(*m);
        sae_model_free(*m);
        ex_usage_error("--resume: %s: the model loads as %s%s%.0zu but %s says %s%s%.0zu (does "
                       "this libsae save %s checkpoints?)", dir, ex_arch_name(arch),
                       k ? " k " : "", k, EX_STATE_FILE, ex_arch_name(s->arch), s->k ? " k " : "",
                       s->k, ex_arch_name(s->arch));
    }
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

static void hyper_u64(const ex_config *c, int code, int option, uint64_t *value, sae_optimizer *o)
{
    double v = (double)*value;
    hyper(c, code, option, &v, o);
    *value = (uint64_t)v;
}

/* A setting fixed at the start of a run, given again: it must agree. */
static void fixed(const ex_config *c, int code, const char *opt, bool agrees, const char *dir,
                  const char *saved)
{
    if (ex_config_given(c, code) && !agrees)
        ex_usage_error("%s: the checkpoint in '%s' has %s", opt, dir, saved);
}

static const char *b_dec_name(int method)
{
    return method == SAE_B_DEC_MEAN ? "mean" : method == SAE_B_DEC_GEOMETRIC_MEDIAN ? "median" : "none";
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
    /* the architecture (the model's) and what was fixed at the start */
    const int arch = sae_model_arch(m);
    char saved[64];
    if (c->n_archs > 1)
        ex_usage_error("--arch: one architecture (the checkpoint's %s)", ex_arch_name(arch));
    snprintf(saved, sizeof saved, "%s", ex_arch_name(arch));
    fixed(c, EX_OPT_ARCH, "--arch", c->arch == arch, dir, saved);
    snprintf(saved, sizeof saved, "%s k %zu", ex_arch_name(arch), sae_model_k(m));
    fixed(c, EX_OPT_K, "--k", !ex_arch_is_topk(arch) || c->k == sae_model_k(m), dir, saved);
    snprintf(saved, sizeof saved, "%g", s->threshold0);
    fixed(c, EX_OPT_THRESHOLD, "--threshold", arch != SAE_ARCH_JUMPRELU || s->threshold0 == 0.0 ||
          c->threshold0 == s->threshold0, dir, saved);
    fixed(c, EX_OPT_NORMALIZE, "--normalize", s->normalize, dir, "none (it trained on raw x)");
    fixed(c, EX_OPT_B_DEC_INIT, "--b-dec-init", c->b_dec_init == s->b_dec_init, dir,
          b_dec_name(s->b_dec_init));
    c->arch = c->archs[0] = arch;
    c->n_archs = 1;
    if (ex_arch_is_topk(arch))
        c->k = sae_model_k(m);
    if (s->threshold0 > 0.0)
        c->threshold0 = s->threshold0;
    c->normalize = s->normalize;
    c->b_dec_init = s->b_dec_init;
    ex_config_check(c);

    if (!ex_config_given(c, EX_OPT_BATCH))
        c->batch = s->batch;
    if (!ex_config_given(c, EX_OPT_LOG_EVERY))
        c->log_every = s->log_every;
    if (!ex_config_given(c, EX_OPT_DEAD_WINDOW))
        c->dead_window = s->dead_window;
    if (!ex_config_given(c, EX_OPT_SAMPLE) && s->sample)
        c->sample = s->sample;
    if (!ex_config_given(c, EX_OPT_RESAMPLE_EVERY))
        c->resample_every = s->resample_every;
    if (!ex_config_given(c, EX_OPT_RESAMPLE_WINDOW))
        c->resample_window = s->resample_window;
    hyper(c, EX_OPT_LR, SAE_OPT_LR, &c->lr, o);
    hyper(c, EX_OPT_LAMBDA, SAE_OPT_L1_COEFF, &c->lambda, o);
    hyper(c, EX_OPT_CLIP, SAE_OPT_GRAD_CLIP, &c->clip, o);
    hyper(c, EX_OPT_BANDWIDTH, SAE_OPT_JUMPRELU_BANDWIDTH, &c->bandwidth, o);
    hyper(c, EX_OPT_AUXK_COEFF, SAE_OPT_AUXK_COEFF, &c->auxk_coeff, o);
    hyper_u64(c, EX_OPT_AUXK_K, SAE_OPT_AUXK_K, &c->auxk_k, o);
    hyper(c, EX_OPT_THRESHOLD_BETA, SAE_OPT_THRESHOLD_BETA, &c->threshold_beta, o);
    hyper(c, EX_OPT_LR_DECAY, SAE_OPT_LR_DECAY_FRACTION, &c->lr_decay, o);
    hyper(c, EX_OPT_L1_WARMUP, SAE_OPT_L1_WARMUP_FRACTION, &c->l1_warmup, o);
    hyper_u64(c, EX_OPT_LR_WARMUP, SAE_OPT_LR_WARMUP_STEPS, &c->lr_warmup, o);
    uint64_t schedule = (uint64_t)c->lr_schedule;
    hyper_u64(c, EX_OPT_LR_SCHEDULE, SAE_OPT_LR_SCHEDULE, &schedule, o);
    c->lr_schedule = (int)schedule;
    /* the one window of the reports, AuxK and resampling */
    double window = (double)c->dead_window;
    if (sae_optimizer_set(o, SAE_OPT_DEAD_WINDOW, window) != SAE_OK)
        ex_usage_error("--dead-window %llu: refused by libsae", (unsigned long long)c->dead_window);

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

    /* the schedules run over the new total */
    ex_config_check_schedule(c);
    double lr;
    int rc = sae_optimizer_set(o, SAE_OPT_TOTAL_STEPS, (double)c->steps);
    if (rc == SAE_OK)
        rc = sae_optimizer_lr_at(o, 1, &lr);
    if (rc != SAE_OK)
        ex_usage_error("--resume '%s': the schedules do not fit in %llu steps: %s", dir,
                       (unsigned long long)c->steps, sae_status_string(rc));

    /* what the next checkpoint records */
    s->sample = c->sample;
    s->resample_every = c->resample_every;
    s->resample_window = c->resample_window;
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
