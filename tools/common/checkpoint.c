#include "checkpoint.h"

#include "args.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TRAIN_WEIGHTS "train_weights.safetensors"

static char *join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

void tool_checkpoint_prepare(const char *opt, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT)
            tool_usage_error("%s '%s': %s", opt, dir, strerror(errno));
        if (mkdir(dir, 0777) != 0) {
            if (errno == ENOENT)
                tool_usage_error("%s '%s': the parent directory does not exist", opt, dir);
            tool_usage_error("%s '%s': cannot create the directory: %s", opt, dir, strerror(errno));
        }
    } else if (!S_ISDIR(st.st_mode)) {
        tool_usage_error("%s '%s': exists and is not a directory", opt, dir);
    } else if (access(dir, W_OK | X_OK) != 0) {
        tool_usage_error("%s '%s': cannot write in the directory", opt, dir);
    }
}

/* A new model with m's architecture and k, and its tensors (exactly, but for
 * JumpReLU's thresholds, which go through the public API as exp(log theta):
 * up to a float rounding). For an exported copy, not for training on. Returns
 * a libsae status; *out is NULL on failure. */
static int model_copy(const sae_model *m, sae_model **out)
{
    const int arch = sae_model_arch(m);
    double param = arch == SAE_ARCH_JUMPRELU ? 1.0 : (double)sae_model_k(m);
    int rc = sae_model_create_arch(out, sae_model_d_in(m), sae_model_d_sae(m), 0, arch, param);
    static const int tensors[] = {SAE_W_ENC, SAE_B_ENC, SAE_W_DEC, SAE_B_DEC, SAE_THRESHOLD};
    for (size_t i = 0; i < sizeof tensors / sizeof *tensors && rc == SAE_OK; i++) {
        size_t n = sae_model_tensor_size(m, tensors[i]);
        if (n == 0)
            continue;
        float *buf = malloc(n * sizeof *buf);
        rc = buf ? sae_model_get_tensor(m, tensors[i], buf, n) : SAE_E_NOMEM;
        if (rc == SAE_OK)
            rc = sae_model_set_tensor(*out, tensors[i], buf, n);
        free(buf);
    }
    if (rc != SAE_OK && *out) {
        sae_model_free(*out);
        *out = NULL;
    }
    return rc;
}

/* The files of a checkpoint, in the order they are renamed into place (the
 * second only with --normalize). */
static const char *const checkpoint_files[] = {
    "optimizer.safetensors", TRAIN_WEIGHTS, "sae_weights.safetensors", "cfg.json", TOOL_STATE_FILE,
};
enum { N_FILES = sizeof checkpoint_files / sizeof *checkpoint_files, F_TRAIN_WEIGHTS = 1 };

int tool_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                         const tool_run_state *s, bool fresh, char *err, size_t errlen)
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
        rc = model_copy(m, &export);
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
    if (rc == SAE_OK && tool_run_state_write(from[N_FILES - 1], s) != 0) {
        snprintf(err, errlen, "%s/%s: %s", dir, TOOL_STATE_FILE, strerror(errno));
        rc = SAE_E_IO;
    }
    /* A crash between the renames leaves files of two steps, which
     * tool_checkpoint_load refuses: the optimizer's step is not the state's.
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

void tool_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, tool_run_state *s)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        tool_usage_error("--resume '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        tool_usage_error("--resume '%s': not a directory", dir);
    char err[256];
    char *state_path = join(dir, TOOL_STATE_FILE);
    if (!state_path)
        tool_usage_error("out of memory");
    if (tool_run_state_read(state_path, s, err, sizeof err) != 0)
        tool_usage_error("--resume: %s: %s", state_path, err);
    free(state_path);
    /* a --normalize run trains on s x: its own model is the unfolded one */
    char *model_path = s->normalize ? join(dir, TRAIN_WEIGHTS) : NULL;
    if (s->normalize && !model_path)
        tool_usage_error("out of memory");
    int rc = sae_model_load(m, model_path ? model_path : dir);
    if (rc != SAE_OK)
        tool_usage_error("--resume: %s/%s: %s", dir, model_path ? TRAIN_WEIGHTS : "sae_weights.safetensors",
                         sae_status_string(rc));
    free(model_path);
    if (s->arch >= 0 && (sae_model_arch(*m) != s->arch || sae_model_k(*m) != s->k)) {
        int arch = sae_model_arch(*m);
        size_t k = sae_model_k(*m);
        sae_model_free(*m);
        tool_usage_error("--resume: %s: the model loads as %s%s%.0zu but %s says %s%s%.0zu (does "
                         "this libsae save %s checkpoints?)", dir, tool_arch_name(arch),
                         k ? " k " : "", k, TOOL_STATE_FILE, tool_arch_name(s->arch), s->k ? " k " : "",
                         s->k, tool_arch_name(s->arch));
    }
    rc = sae_optimizer_load(o, *m, dir);
    if (rc != SAE_OK) {
        sae_model_free(*m);
        if (rc == SAE_E_INVALID_ARG) /* a valid optimizer file for another shape */
            tool_usage_error("--resume: %s/optimizer.safetensors: made for another model shape than "
                             "sae_weights.safetensors", dir);
        tool_usage_error("--resume: %s/optimizer.safetensors: %s", dir, sae_status_string(rc));
    }
    uint64_t steps = sae_optimizer_steps(*o);
    size_t d_in = sae_model_d_in(*m);
    if (steps != s->step || d_in != s->d_in) {
        sae_optimizer_free(*o);
        sae_model_free(*m);
        if (steps != s->step)
            tool_usage_error("--resume: %s: the optimizer is at step %llu but %s at step %llu "
                             "(a save was cut short?)", dir, (unsigned long long)steps,
                             TOOL_STATE_FILE, (unsigned long long)s->step);
        tool_usage_error("--resume: %s: the model has d_in %zu but %s says %zu", dir, d_in,
                         TOOL_STATE_FILE, s->d_in);
    }
}

