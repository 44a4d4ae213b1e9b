/*
 * Checkpoints: the public save and load functions of models and optimizers,
 * over caller buffers, files and directories (sae.h, "Checkpoints"). One body
 * serves both kinds of object; what a file holds is model_file.c's and
 * optimizer_file.c's, SAELens's cfg.json saelens_config.c's, the container
 * safetensors.c's and atomic replacement fileio.c's.
 *
 * Loading validates everything it can before allocating the model or
 * optimizer, then streams the tensors straight into it, converting and
 * checking each value; any failure frees what was made, leaves *out NULL and
 * says in sae_error_detail which file, tensor or key was wrong.
 */
#include "checkpoint.h"
#include "fileio.h"

#include <string.h>

#define WEIGHTS_FILE SAE_WEIGHTS_FILE
#define OPTIMIZER_FILE SAE_OPTIMIZER_FILE

/* ---- saving ---------------------------------------------------------------------- */

/* SAE_E_STATE for a shard or its optimizer: its file would not be the
 * model's (the collective saves write a shard's part). */
static int check_model_whole(const char *fn, const void *obj)
{
    return sae__check_whole(fn, obj);
}

static int check_optimizer_whole(const char *fn, const void *obj)
{
    const sae_optimizer *o = obj;
    if (o->d_sae_total > o->d_sae)
        return sae__fail(SAE_E_STATE, "%s: the optimizer is a shard's (features [%zu, %zu) of "
                         "%zu): save it collectively", fn, o->shard_begin,
                         o->shard_begin + o->d_sae, o->d_sae_total);
    return SAE_OK;
}

static int encode_model(const void *obj, const sae_st_sink *sink, size_t *size)
{
    return sae__model_file_encode(obj, sink, size);
}

static int encode_config(const void *obj, const sae_st_sink *sink, size_t *size)
{
    (void)size; /* never measured */
    return sae__config_write(obj, sink);
}

static int encode_optimizer(const void *obj, const sae_st_sink *sink, size_t *size)
{
    return sae__optimizer_file_encode(obj, sink, size);
}

/* What a save writes: the object's own file, and for a model saved into a
 * directory its cfg.json. */
typedef struct save_kind {
    const char *object;      /* the argument's name, for messages */
    int (*check_whole)(const char *fn, const void *obj); /* SAE_E_STATE for a shard's */
    sae_st_encode_fn encode;
    const char *file_in_dir; /* its file in a directory */
    sae_st_encode_fn encode_extra;  /* NULL, or the directory's second file */
    const char *extra_file;
} save_kind;

static const save_kind model_kind = {"m", check_model_whole, encode_model, WEIGHTS_FILE,
                                     encode_config, SAE_CONFIG_FILE};
static const save_kind optimizer_kind = {"o", check_optimizer_whole, encode_optimizer,
                                         OPTIMIZER_FILE, NULL, NULL};

static int save_size(const char *fn, const save_kind *kind, const void *obj, size_t *size)
{
    if (!obj || !size)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !obj ? kind->object : "size");
    int rc = kind->check_whole(fn, obj);
    if (rc != SAE_OK)
        return rc;
    rc = kind->encode(obj, NULL, size);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s", fn);
}

static int save_buffer(const char *fn, const save_kind *kind, const void *obj, void *buf,
                       size_t capacity, size_t *written)
{
    size_t size;
    if (!buf)
        return sae__fail(SAE_E_INVALID_ARG, "%s: buf is NULL", fn);
    int rc = save_size(fn, kind, obj, &size);
    return rc == SAE_OK ? sae__st_save_buffer(fn, kind->encode, obj, size, buf, capacity, written)
                        : rc;
}

/* Write one temporary file, finished (flushed, fsync'ed, closed) but not yet
 * renamed into place. */
static int prepare_file(sae_tmpfile *t, const char *path, sae_st_encode_fn encode,
                        const void *obj)
{
    int rc = sae__tmpfile_open(t, path);
    if (rc != SAE_OK)
        return rc;
    const sae_st_sink sink = {sae__tmpfile_write, t};
    if ((rc = encode(obj, &sink, NULL)) != SAE_OK) {
        sae__tmpfile_abort(t);
        return rc;
    }
    return sae__tmpfile_finish(t);
}

/* Save one or two files: all are written before any replaces its destination. */
static int save_files(const char *path1, sae_st_encode_fn encode1, const char *path2,
                      sae_st_encode_fn encode2, const void *obj)
{
    sae_tmpfile t1, t2;
    memset(&t2, 0, sizeof t2);
    int rc = prepare_file(&t1, path1, encode1, obj);
    if (rc != SAE_OK)
        return rc;
    if (path2 && (rc = prepare_file(&t2, path2, encode2, obj)) != SAE_OK) {
        sae__tmpfile_abort(&t1);
        return rc;
    }
    if ((rc = sae__tmpfile_commit(&t1)) != SAE_OK) {
        sae__tmpfile_abort(&t2);
        return rc;
    }
    return path2 ? sae__tmpfile_commit(&t2) : SAE_OK;
}

static int save(const char *fn, const save_kind *kind, const void *obj, const char *path)
{
    if (!obj || !path)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !obj ? kind->object : "path");
    int rc = kind->check_whole(fn, obj);
    if (rc != SAE_OK)
        return rc;
    char *file = NULL, *extra = NULL;
    if (!sae__is_directory(path)) {
        rc = save_files(path, kind->encode, NULL, NULL, obj);
    } else if (!(file = sae__path_join(path, kind->file_in_dir)) ||
               (kind->encode_extra && !(extra = sae__path_join(path, kind->extra_file)))) {
        rc = sae__fail(SAE_E_NOMEM, "out of memory for a path");
    } else {
        rc = save_files(file, kind->encode, extra, kind->encode_extra, obj);
    }
    sae__free(extra);
    sae__free(file);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s", fn);
}

int sae_model_save_size(const sae_model *m, size_t *size)
{
    return save_size("sae_model_save_size", &model_kind, m, size);
}

int sae_model_save_buffer(const sae_model *m, void *buf, size_t capacity, size_t *written)
{
    return save_buffer("sae_model_save_buffer", &model_kind, m, buf, capacity, written);
}

int sae_model_save(const sae_model *m, const char *path)
{
    return save("sae_model_save", &model_kind, m, path);
}

int sae_optimizer_save_size(const sae_optimizer *o, size_t *size)
{
    return save_size("sae_optimizer_save_size", &optimizer_kind, o, size);
}

int sae_optimizer_save_buffer(const sae_optimizer *o, void *buf, size_t capacity, size_t *written)
{
    return save_buffer("sae_optimizer_save_buffer", &optimizer_kind, o, buf, capacity, written);
}

int sae_optimizer_save(const sae_optimizer *o, const char *path)
{
    return save("sae_optimizer_save", &optimizer_kind, o, path);
}

/* ---- loading ----------------------------------------------------------------------- */

/* A loader of one kind: arg is the cfg.json (models) or the model (optimizers). */
typedef int (*load_fn)(const sae_st_source *src, const void *arg, void **out);

/* A model's features [begin, end) (end 0: the whole model) and what its
 * cfg.json said. */
typedef struct model_part {
    const sae_saelens_config *cfg;
    size_t begin, end;
} model_part;

static int load_model(const sae_st_source *src, const void *arg, void **out)
{
    const model_part *part = arg;
    sae_model *m = NULL;
    int rc = part ? sae__model_file_load(src, part->cfg, part->begin, part->end, &m)
                  : sae__model_file_load(src, NULL, 0, 0, &m);
    *out = m;
    return rc;
}

static int load_optimizer(const sae_st_source *src, const void *m, void **out)
{
    sae_optimizer *o = NULL;
    int rc = sae__optimizer_file_load(src, m, &o);
    *out = o;
    return rc;
}

static int load_buffer(const char *fn, load_fn load, const void *arg, const void *buf,
                       size_t size, void **out)
{
    if (!buf)
        return sae__fail(SAE_E_INVALID_ARG, "%s: buf is NULL", fn);
    sae_st_buffer_source b;
    sae__st_buffer_source_init(&b, buf, size);
    int rc = load(&b.src, arg, out);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s", fn);
}

static int load_file(const char *fn, load_fn load, const void *arg, const char *file,
                     void **out)
{
    sae_file_source fs;
    int rc = sae__file_source_open(&fs, file, NULL);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    rc = load(&fs.src, arg, out);
    sae__file_source_close(&fs);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s: %s", fn, file);
}

int sae_model_load_buffer(sae_model **out, const void *buf, size_t size)
{
    static const char fn[] = "sae_model_load_buffer";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    return load_buffer(fn, load_model, NULL, buf, size, (void **)out);
}

int sae_optimizer_load_buffer(sae_optimizer **out, const sae_model *m, const void *buf,
                              size_t size)
{
    static const char fn[] = "sae_optimizer_load_buffer";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!m)
        return sae__fail(SAE_E_INVALID_ARG, "%s: m is NULL", fn);
    return load_buffer(fn, load_optimizer, m, buf, size, (void **)out);
}

/* sae_model_load, or (end > 0) sae_model_load_shard. */
static int load_model_path(const char *fn, sae_model **out, const char *path, size_t begin,
                           size_t end)
{
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path)
        return sae__fail(SAE_E_INVALID_ARG, "%s: path is NULL", fn);
    sae_saelens_config cfg = {.arch = -1};
    const model_part part = {&cfg, begin, end};
    if (!sae__is_directory(path))
        return load_file(fn, load_model, &part, path, (void **)out);
    int rc = sae__config_read(path, &cfg);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    char *weights = sae__path_join(path, WEIGHTS_FILE);
    if (!weights)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for a path", fn);
    rc = load_file(fn, load_model, &part, weights, (void **)out);
    sae__free(weights);
    return rc;
}

int sae_model_load(sae_model **out, const char *path)
{
    return load_model_path("sae_model_load", out, path, 0, 0);
}

int sae_model_load_shard(sae_model **out, const char *path, size_t begin, size_t end)
{
    static const char fn[] = "sae_model_load_shard";
    if (out && begin >= end) {
        *out = NULL;
        return sae__fail(SAE_E_INVALID_ARG, "%s: [%zu, %zu) is empty", fn, begin, end);
    }
    return load_model_path(fn, out, path, begin, end);
}

int sae_optimizer_load(sae_optimizer **out, const sae_model *m, const char *path)
{
    static const char fn[] = "sae_optimizer_load";
    if (!out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!m || !path)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : "path");
    if (!sae__is_directory(path))
        return load_file(fn, load_optimizer, m, path, (void **)out);
    char *file = sae__path_join(path, OPTIMIZER_FILE);
    if (!file)
        return sae__fail(SAE_E_NOMEM, "%s: out of memory for a path", fn);
    int rc = load_file(fn, load_optimizer, m, file, (void **)out);
    sae__free(file);
    return rc;
}
