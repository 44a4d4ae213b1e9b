#include "checkpoint.h"

#include "args.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TRAIN_WEIGHTS "train_weights.safetensors"
#define DIR_BYTES 4096               /* a checkpoint directory's path */
#define FILE_BYTES (DIR_BYTES + 64)  /* a file's in it */

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

/* Staging directories of sae-train before checkpoint directories
 * (".saving-XXXXXX" in DIR, left by a crash): removed with their files. */
static void remove_old_staging(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".saving-", 8) != 0 || strlen(e->d_name) != 14)
            continue;
        char *stage = join(dir, e->d_name);
        DIR *sd = stage ? opendir(stage) : NULL;
        struct dirent *f;
        while (sd && (f = readdir(sd)) != NULL) {
            char *file = f->d_name[0] != '.' ? join(stage, f->d_name) : NULL;
            if (file)
                unlink(file);
            free(file);
        }
        if (sd)
            closedir(sd);
        if (stage)
            rmdir(stage);
        free(stage);
    }
    if (d)
        closedir(d);
}

/* The files of a checkpoint into the staging directory stage. */
static int write_files(const char *stage, const sae_model *m, const sae_optimizer *o,
                       const tool_run_state *s, char *err, size_t errlen)
{
    char path[FILE_BYTES];
    int rc = SAE_OK;
    sae_model *export = NULL; /* with --normalize: a copy with the scale folded in */
    if (s->normalize) {
        snprintf(path, sizeof path, "%s/%s", stage, TRAIN_WEIGHTS);
        if ((rc = sae_model_save(m, path)) != SAE_OK)
            return snprintf(err, errlen, "%s: %s", path, tool_status(rc)), rc;
        if ((rc = sae_model_clone(&export, m)) != SAE_OK ||
            (rc = sae_model_fold_input_scale(export, s->scale)) != SAE_OK) {
            snprintf(err, errlen, "%s/sae_weights.safetensors: folding the input scale %g: %s",
                     stage, s->scale, tool_status(rc));
            sae_model_free(export);
            return rc;
        }
    }
    rc = sae_model_save(export ? export : m, stage);
    sae_model_free(export);
    if (rc != SAE_OK)
        return snprintf(err, errlen, "%s/sae_weights.safetensors: %s", stage, tool_status(rc)), rc;
    if ((rc = sae_optimizer_save(o, stage)) != SAE_OK)
        return snprintf(err, errlen, "%s/optimizer.safetensors: %s", stage, tool_status(rc)), rc;
    snprintf(path, sizeof path, "%s/%s", stage, TOOL_STATE_FILE);
    if (tool_run_state_write(path, s) != 0)
        return snprintf(err, errlen, "%s: %s", path, strerror(errno)), SAE_E_IO;
    return SAE_OK;
}

int tool_checkpoint_save(const char *dir, const sae_model *m, const sae_optimizer *o,
                         const tool_run_state *s, char *err, size_t errlen)
{
    remove_old_staging(dir);
    char stage[DIR_BYTES];
    int rc = sae_checkpoint_begin(dir, stage, sizeof stage);
    if (rc != SAE_OK)
        return snprintf(err, errlen, "%s: %s", dir, tool_status(rc)), rc;
    rc = write_files(stage, m, o, s, err, errlen);
    if (rc == SAE_OK && (rc = sae_checkpoint_commit(dir, stage)) != SAE_OK)
        snprintf(err, errlen, "%s: %s", dir, tool_status(rc));
    if (rc != SAE_OK)
        (void)sae_checkpoint_abort(dir, stage);
    return rc;
}

/* What rank 0 tells the others at each stage of a collective save. */
typedef struct stage_news {
    int32_t status;
    char text[DIR_BYTES]; /* the staging directory, or what failed */
} stage_news;

/* Rank 0's news to every rank; a transport failure is SAE_E_COMM. */
static int from_rank0(const sae_comm *comm, stage_news *news)
{
    if (comm->broadcast(comm->ctx, news, sizeof *news, 0) != 0) {
        snprintf(news->text, sizeof news->text, "the communicator failed");
        news->status = SAE_E_COMM;
    }
    return news->status;
}

/* The first failure of any rank of comm (in rank order), given this rank's
 * status: every rank gets the same; SAE_E_COMM if the transport fails. */
static int first_failure(const sae_comm *comm, int status, int *where)
{
    int32_t mine = status, *all = malloc((size_t)comm->n_ranks * sizeof *all);
    int rc = SAE_E_COMM;
    *where = comm->rank;
    if (all && comm->allgather(comm->ctx, &mine, sizeof mine, all) == 0) {
        rc = SAE_OK;
        for (int r = 0; r < comm->n_ranks && rc == SAE_OK; r++)
            if ((rc = all[r]) != SAE_OK)
                *where = r;
    } else if (!all) {
        rc = SAE_E_NOMEM;
    }
    free(all);
    return rc;
}

int tool_checkpoint_save_collective(const char *dir, const sae_model *m, const sae_optimizer *o,
                                    const tool_run_state *s, const sae_comm *all,
                                    const sae_comm *writers, char *err, size_t errlen)
{
    const bool root = all->rank == 0;
    if (errlen)
        err[0] = '\0';
    stage_news news;
    memset(&news, 0, sizeof news);
    if (root) {
        remove_old_staging(dir);
        news.status = sae_checkpoint_begin(dir, news.text, sizeof news.text);
        if (news.status != SAE_OK)
            snprintf(news.text, sizeof news.text, "%s: %s", dir, tool_status(news.status));
    }
    if (from_rank0(all, &news) != SAE_OK)
        return snprintf(err, errlen, "%s", news.text), news.status;
    char stage[DIR_BYTES], path[FILE_BYTES];
    memcpy(stage, news.text, sizeof stage);
    stage[sizeof stage - 1] = '\0';
    /* with --normalize: the model as trained (train_weights, by the writers),
     * and the files SAELens reads with the scale folded in (every rank folds
     * its part) */
    sae_model *export = NULL;
    int rc = SAE_OK;
    if (s->normalize) {
        snprintf(path, sizeof path, "%s/%s", stage, TRAIN_WEIGHTS);
        if (writers && (rc = sae_model_save_collective(m, writers, path)) != SAE_OK)
            snprintf(err, errlen, "%s: %s", path, tool_status(rc));
        if (rc == SAE_OK && ((rc = sae_model_clone(&export, m)) != SAE_OK ||
                             (rc = sae_model_fold_input_scale(export, s->scale)) != SAE_OK))
            snprintf(err, errlen, "%s/sae_weights.safetensors: folding the input scale %g: %s",
                     stage, s->scale, tool_status(rc));
    }
    /* the ranks agree before the model's and optimizer's files, which the
     * library writes through the optimizer's communicators (on a 2-D grid
     * data group 0's shards write, every rank gets their status) */
    int where;
    int agreed = first_failure(all, rc, &where);
    if (agreed != SAE_OK && rc == SAE_OK)
        snprintf(err, errlen, "%s: rank %d failed: %s", stage, where, sae_status_string(agreed));
    rc = agreed;
    if (rc == SAE_OK && (rc = sae_checkpoint_save_collective(export ? export : m, o, stage)) != SAE_OK)
        snprintf(err, errlen, "%s: %s", stage, tool_status(rc));
    sae_model_free(export);
    /* rank 0: the state, then the commit (or, on any failure, the abort) */
    memset(&news, 0, sizeof news);
    if (root) {
        news.status = rc;
        snprintf(path, sizeof path, "%s/%s", stage, TOOL_STATE_FILE);
        if (rc == SAE_OK && tool_run_state_write(path, s) != 0) {
            news.status = SAE_E_IO;
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        }
        if (news.status == SAE_OK && (news.status = sae_checkpoint_commit(dir, stage)) != SAE_OK)
            snprintf(err, errlen, "%s: %s", dir, tool_status(news.status));
        if (news.status != SAE_OK)
            (void)sae_checkpoint_abort(dir, stage);
        snprintf(news.text, sizeof news.text, "%s", err);
    }
    if (from_rank0(all, &news) != SAE_OK && rc == SAE_OK)
        snprintf(err, errlen, "%s", news.text);
    return news.status;
}

/* The model (n_shards > 0: shard `shard` of n_shards, sae_shard_range) of
 * the checkpoint in path. */
static int load_model_part(sae_model **m, const char *path, int n_shards, int shard)
{
    if (n_shards == 0)
        return sae_model_load(m, path);
    /* d_sae from a one-feature slice (d_in floats), then this shard's */
    size_t begin, end, d_sae;
    int rc = sae_model_load_shard(m, path, 0, 1);
    if (rc != SAE_OK)
        return rc;
    sae_model_shard(*m, NULL, NULL, &d_sae);
    sae_model_free(*m);
    *m = NULL;
    if ((rc = sae_shard_range(d_sae, n_shards, shard, &begin, &end)) != SAE_OK)
        return rc;
    return sae_model_load_shard(m, path, begin, end);
}

/* The model and optimizer of the checkpoint in path (its current
 * generation), checked against the state s. Exits 2 on a problem. */
static void load_generation(const char *path, int n_shards, int shard, sae_model **m,
                            sae_optimizer **o, const tool_run_state *s)
{
    char file[FILE_BYTES];
    /* a --normalize run trains on s x: its own model is the unfolded one */
    snprintf(file, sizeof file, "%s/%s", path, s->normalize ? TRAIN_WEIGHTS : "sae_weights.safetensors");
    int rc = load_model_part(m, s->normalize ? file : path, n_shards, shard);
    if (rc != SAE_OK)
        tool_usage_error("--resume: %s: %s", file, tool_status(rc));
    if (s->arch >= 0 && (sae_model_arch(*m) != s->arch || sae_model_k(*m) != s->k)) {
        int arch = sae_model_arch(*m);
        size_t k = sae_model_k(*m);
        sae_model_free(*m);
        tool_usage_error("--resume: %s: the model loads as %s%s%.0zu but %s says %s%s%.0zu", path,
                         tool_arch_name(arch), k ? " k " : "", k, TOOL_STATE_FILE,
                         tool_arch_name(s->arch), s->k ? " k " : "", s->k);
    }
    snprintf(file, sizeof file, "%s/optimizer.safetensors", path);
    rc = sae_optimizer_load(o, *m, path);
    if (rc != SAE_OK) {
        sae_model_free(*m);
        if (rc == SAE_E_INVALID_ARG) /* a valid optimizer file for another shape */
            tool_usage_error("--resume: %s: made for another model shape than "
                             "sae_weights.safetensors", file);
        tool_usage_error("--resume: %s: %s", file, tool_status(rc));
    }
}

void tool_checkpoint_load(const char *dir, sae_model **m, sae_optimizer **o, tool_run_state *s)
{
    tool_checkpoint_load_shard(dir, 0, 0, m, o, s);
}

void tool_checkpoint_load_shard(const char *dir, int n_shards, int shard, sae_model **m,
                                sae_optimizer **o, tool_run_state *s)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        tool_usage_error("--resume '%s': %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        tool_usage_error("--resume '%s': not a directory", dir);
    char path[DIR_BYTES], file[FILE_BYTES], err[256];
    int rc = sae_checkpoint_current(dir, path, sizeof path);
    if (rc != SAE_OK)
        tool_usage_error("--resume '%s': %s", dir, tool_status(rc));
    snprintf(file, sizeof file, "%s/%s", path, TOOL_STATE_FILE);
    if (tool_run_state_read(file, s, err, sizeof err) != 0)
        tool_usage_error("--resume: %s: %s", file, err);
    if (s->format < TOOL_STATE_FORMAT)
        fprintf(stderr, "%s: note: %s was written by an earlier sae-train, whose batches, sample "
                        "and synthetic data came from another random number generator: the run "
                        "goes on, but not with the batches it would have drawn\n", tool_program(), file);
    load_generation(path, n_shards, shard, m, o, s);
    uint64_t steps = sae_optimizer_steps(*o);
    size_t d_in = sae_model_d_in(*m);
    if (steps != s->step || d_in != s->d_in) {
        sae_optimizer_free(*o);
        sae_model_free(*m);
        if (steps != s->step)
            tool_usage_error("--resume: %s: the optimizer is at step %llu but %s at step %llu "
                             "(files of two checkpoints?)", path, (unsigned long long)steps,
                             TOOL_STATE_FILE, (unsigned long long)s->step);
        tool_usage_error("--resume: %s: the model has d_in %zu but %s says %zu", path, d_in,
                         TOOL_STATE_FILE, s->d_in);
    }
}
