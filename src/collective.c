/*
 * Collective checkpoints: the ranks of a communicator save one model or
 * optimizer together, into the single-process files (checkpoint.c), without
 * any rank holding more than its own part.
 *
 * The layout of a file (its header, every tensor's offset) depends only on
 * the whole model's shapes and metadata, so every rank computes it. Rank 0
 * creates the temporary files of the save (fileio.c), writes their headers
 * (and cfg.json whole) and tells the others their names; every rank then
 * writes its parts at their offsets with positioned writes and fsyncs; when
 * all have succeeded rank 0 renames the files into place. Parts of a shard
 * holding features [b, b + w) of d_sae:
 *
 *   W_dec [d_sae, d_out]   rows b .. b + w - 1: one run
 *   W_enc [d_in, d_sae]    columns b .. b + w - 1: d_in runs of w values
 *   b_dec [d_out], W_skip [d_out, d_in]   rank 0 (every rank holds the same)
 *   b_enc (Gated: b_gate, b_mag, r_mag), threshold, log_threshold,
 *   tokens_since_fired [d_sae]: one run
 *   libsae_log_threshold   JumpReLU: its 8 w hex digits in the header
 *
 * and the same for each tensor's Adam moments ("W_enc.exp_avg", ...).
 */
#define _XOPEN_SOURCE 700 /* pwrite, fsync */
#include "checkpoint.h"
#include "fileio.h"
#include "parallel.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---- positioned writes ------------------------------------------------------- */

/* A sink writing at offset in runs of `run` bytes, `stride` bytes apart. */
typedef struct pos_sink {
    int fd;
    uint64_t offset;
    uint64_t run, stride, in_run;
} pos_sink;

static int pos_write(void *ctx, const void *data, size_t len)
{
    pos_sink *p = ctx;
    const char *d = data;
    while (len > 0) {
        size_t n = p->run - p->in_run < len ? (size_t)(p->run - p->in_run) : len;
        ssize_t w = pwrite(p->fd, d, n, (off_t)p->offset);
        if (w <= 0)
            return SAE_E_IO;
        d += w;
        len -= (size_t)w;
        p->offset += (uint64_t)w;
        p->in_run += (uint64_t)w;
        if (p->in_run == p->run) {
            p->offset += p->stride - p->run;
            p->in_run = 0;
        }
    }
    return SAE_OK;
}

static int discard(void *ctx, const void *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return SAE_OK;
}

/* The bytes of one element of a tensor to write (F32 or U64). */
static size_t elem_size(const sae_st_out *t) { return t->dtype == SAE_ST_U64 ? 8 : 4; }

static size_t tensor_bytes(const sae_st_out *t)
{
    return t->shape[0] * (t->rank == 2 ? t->shape[1] : 1) * elem_size(t);
}

/* Which of the whole model's tensors a shard writes a part of, by name. */
enum part_kind { PART_ROWS, PART_COLUMNS, PART_REPLICATED };

static enum part_kind part_kind(const char *name)
{
    if (strncmp(name, "W_enc", 5) == 0)
        return PART_COLUMNS;
    if (strncmp(name, "b_dec", 5) == 0 || strncmp(name, "W_skip", 6) == 0)
        return PART_REPLICATED;
    return PART_ROWS; /* W_dec, and every [d_sae] tensor */
}

/* This rank's part of tensor t (whose data are this shard's values), placed
 * at base, the tensor's offset in the file. */
static int write_part(int fd, uint64_t base, const sae_st_out *t, size_t begin, size_t width,
                      bool rank0)
{
    sae_st_out part = *t;
    const size_t es = elem_size(t);
    pos_sink ps = {fd, base, 0, 0, 0};
    switch (part_kind(t->name)) {
    case PART_REPLICATED:
        if (!rank0)
            return SAE_OK;
        ps.run = ps.stride = tensor_bytes(t);
        break;
    case PART_COLUMNS: { /* [d_in, d_sae] from the shard's w x d_in */
        const size_t total = t->shape[1];
        part.shape[1] = width;
        ps.offset = base + (uint64_t)begin * es;
        ps.run = (uint64_t)width * es;
        ps.stride = (uint64_t)total * es;
        break;
    }
    default: { /* rows [begin, begin + width) of the first axis */
        const size_t row = t->rank == 2 ? t->shape[1] : 1;
        part.shape[0] = width;
        ps.offset = base + (uint64_t)begin * row * es;
        ps.run = ps.stride = tensor_bytes(&part);
        break;
    }
    }
    if (ps.run == 0)
        return SAE_OK;
    const sae_st_sink sink = {pos_write, &ps};
    return sae__st_write_data(&sink, &part);
}

/* ---- a collective save ---------------------------------------------------------- */

/* One file of a save. */
typedef struct part_file {
    char *path;                 /* the destination (owned) */
    const sae_st_kv *meta;      /* a safetensors file... */
    size_t n_meta;
    const sae_st_out *t;
    size_t n_t;
    const float *hex_local;     /* this shard's floats of the one hex entry, or NULL */
    int (*encode)(const void *obj, const sae_st_sink *sink); /* ...or a file rank 0 writes */
    const void *obj;
    sae_tmpfile tmp;            /* rank 0's */
    char *tmp_path;             /* every rank's name of the temporary file (owned) */
    size_t data_start, hex_at;
} part_file;

enum { MAX_FILES = 2, SUFFIX = 16 };

/* What rank 0 tells the others once it has made the temporary files. */
typedef struct made_record {
    int32_t status, pad;
    char suffix[MAX_FILES][SUFFIX];
} made_record;

static int fail_io(const char *fn, const char *what, const char *path)
{
    return sae__fail(SAE_E_IO, "%s: %s '%s'", fn, what, path);
}

/* Rank 0: the temporary files, with their headers (or whole, cfg.json). */
static int make_files(const char *fn, part_file *files, size_t n_files, made_record *made)
{
    for (size_t i = 0; i < n_files; i++) {
        part_file *f = &files[i];
        int rc = sae__tmpfile_open(&f->tmp, f->path);
        if (rc != SAE_OK)
            return rc == SAE_E_IO ? fail_io(fn, "cannot create a file beside", f->path) : rc;
        const sae_st_sink sink = {sae__tmpfile_write, &f->tmp};
        if (f->encode)
            rc = f->encode(f->obj, &sink);
        else
            rc = sae__st_write_header(&sink, f->meta, f->n_meta, f->t, f->n_t, &f->data_start,
                                      &f->hex_at);
        if (rc == SAE_OK && (f->tmp.rc != SAE_OK || fflush(f->tmp.f) != 0))
            rc = SAE_E_IO;
        if (rc != SAE_OK)
            return rc == SAE_E_IO ? fail_io(fn, "cannot write", f->tmp.tmp_path) : rc;
        size_t len = strlen(f->path);
        memcpy(made->suffix[i], f->tmp.tmp_path + len + 5, SUFFIX); /* after ".tmp-" */
    }
    return SAE_OK;
}

/* Every rank: its parts of each safetensors file. */
static int write_parts(const char *fn, part_file *files, size_t n_files, bool rank0,
                       size_t begin, size_t width)
{
    for (size_t i = 0; i < n_files; i++) {
        part_file *f = &files[i];
        if (f->encode)
            continue;
        if (!rank0) { /* the layout, as rank 0 wrote it */
            const sae_st_sink none = {discard, NULL};
            int rc = sae__st_write_header(&none, f->meta, f->n_meta, f->t, f->n_t,
                                          &f->data_start, &f->hex_at);
            if (rc != SAE_OK)
                return rc;
        }
        int fd = rank0 ? fileno(f->tmp.f) : open(f->tmp_path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return fail_io(fn, "cannot open the file rank 0 made:", f->tmp_path);
        int rc = SAE_OK;
        uint64_t base = f->data_start;
        for (size_t k = 0; k < f->n_t && rc == SAE_OK; k++) {
            rc = write_part(fd, base, &f->t[k], begin, width, rank0);
            base += tensor_bytes(&f->t[k]);
        }
        if (rc == SAE_OK && f->hex_local) { /* this shard's digits in the header */
            pos_sink ps = {fd, f->hex_at + 8 * (uint64_t)begin, 8 * (uint64_t)width,
                           8 * (uint64_t)width, 0};
            const sae_st_sink sink = {pos_write, &ps};
            rc = sae__st_write_hex(&sink, f->hex_local, width);
        }
        if (rc == SAE_OK && !rank0 && fsync(fd) != 0)
            rc = SAE_E_IO;
        if (!rank0 && close(fd) != 0 && rc == SAE_OK)
            rc = SAE_E_IO;
        if (rc != SAE_OK)
            return rc == SAE_E_IO ? fail_io(fn, "cannot write", f->tmp_path) : rc;
    }
    return SAE_OK;
}

/* Rank 0, once everyone has written: fsync, close and rename every file
 * (none is renamed unless all are complete); on failure remove them. */
static int finish_files(const char *fn, part_file *files, size_t n_files, int status)
{
    int rc = status;
    for (size_t i = 0; i < n_files && rc == SAE_OK; i++)
        if ((rc = sae__tmpfile_finish(&files[i].tmp)) != SAE_OK)
            rc = fail_io(fn, "cannot write", files[i].path);
    for (size_t i = 0; i < n_files && rc == SAE_OK; i++)
        if ((rc = sae__tmpfile_commit(&files[i].tmp)) != SAE_OK)
            rc = fail_io(fn, "cannot rename into", files[i].path);
    for (size_t i = 0; i < n_files; i++)
        sae__tmpfile_abort(&files[i].tmp);
    return rc;
}

/* Records of the ranks' statuses and parts, sized before the first exchange. */
typedef struct part_record {
    int32_t status, pad;
    uint64_t begin, end, total, shape; /* shape: a digest of d_in, architecture and k */
} part_record;

/* The save itself, once the ranks agree they hold shards that tile the model.
 * records: n_ranks of scratch. */
static int save_parts(const char *fn, const sae_comm *c, part_file *files, size_t n_files,
                      size_t begin, size_t width, part_record *records)
{
    const bool rank0 = c->rank == 0;
    made_record made;
    memset(&made, 0, sizeof made);
    if (rank0)
        made.status = make_files(fn, files, n_files, &made);
    int rc = sae__comm_broadcast(c, &made, sizeof made, 0);
    if (rc == SAE_OK && made.status != SAE_OK)
        rc = made.status;
    if (rc != SAE_OK) {
        if (rank0) /* remove what it made */
            finish_files(fn, files, n_files, rc);
        if (rc == SAE_E_COMM)
            return sae__fail(rc, "%s: the communicator failed", fn);
        return rank0 ? rc : sae__fail(rc, "%s: rank 0 failed: %s", fn, sae_status_string(rc));
    }
    int status = SAE_OK;
    for (size_t i = 0; i < n_files && status == SAE_OK; i++) {
        size_t len = strlen(files[i].path);
        files[i].tmp_path = sae__alloc(len + 5 + SUFFIX + 1);
        if (!files[i].tmp_path) {
            status = sae__fail(SAE_E_NOMEM, "%s: out of memory", fn);
            break;
        }
        memcpy(files[i].tmp_path, files[i].path, len);
        memcpy(files[i].tmp_path + len, ".tmp-", 5);
        memcpy(files[i].tmp_path + len + 5, made.suffix[i], SUFFIX);
        files[i].tmp_path[len + 5 + SUFFIX] = '\0';
    }
    if (status == SAE_OK)
        status = write_parts(fn, files, n_files, rank0, begin, width);
    /* all written (and fsync'ed by the other ranks)? */
    part_record mine = {status, 0, 0, 0, 0, 0};
    int agreed;
    rc = sae__comm_exchange(c, &mine, sizeof mine, records, &agreed);
    if (rc != SAE_OK)
        agreed = rc;
    int32_t final = agreed;
    if (rank0)
        final = finish_files(fn, files, n_files, agreed);
    rc = sae__comm_broadcast(c, &final, sizeof final, 0);
    if (rc != SAE_OK)
        return sae__fail(rc, "%s: the communicator failed", fn);
    if (final != SAE_OK && final != status)
        return sae__fail(final, "%s: another rank failed: %s", fn, sae_status_string(final));
    return final;
}

/* ---- what the ranks hold ---------------------------------------------------------- */

/* The first exchange: statuses and parts. *whole: every rank holds the
 * whole model (rank 0 saves alone); else the parts must tile [0, total). */
static int agree_on_parts(const char *fn, const sae_comm *c, int status, size_t begin,
                          size_t end, size_t total, uint64_t shape, part_record *all,
                          bool *whole)
{
    part_record mine = {status, 0, begin, end, total, shape};
    int agreed;
    int rc = sae__comm_exchange(c, &mine, sizeof mine, all, &agreed);
    if (rc == SAE_OK && agreed != SAE_OK)
        rc = agreed == status ? status
                              : sae__fail(agreed, "%s: another rank failed: %s", fn,
                                          sae_status_string(agreed));
    bool every_whole = true;
    size_t next = 0;
    for (int r = 0; rc == SAE_OK && r < c->n_ranks; r++) {
        every_whole &= all[r].begin == 0 && all[r].end == all[r].total;
        if (all[r].total != total || all[r].shape != shape)
            rc = sae__fail(SAE_E_INVALID_ARG, "%s: rank %d and rank %d hold models of other "
                           "shapes", fn, r, c->rank);
        else if (all[r].begin != next)
            next = SIZE_MAX;
        else
            next = all[r].end;
    }
    if (rc == SAE_OK && !every_whole && next != total)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: the ranks hold neither the whole model each nor "
                       "shards covering [0, %zu) in rank order", fn, total);
    *whole = every_whole;
    return rc;
}

/* Scratch for the records of a save: allocated, or on the stack for a few
 * ranks (so that even an allocation failure can be told to them). */
enum { STACK_RANKS = 16 };

static part_record *records_for(const sae_comm *c, part_record *stack, int *status)
{
    part_record *r = sae__alloc((size_t)c->n_ranks * sizeof *r);
    if (r)
        return r;
    if (*status == SAE_OK)
        *status = SAE_E_NOMEM;
    return c->n_ranks <= STACK_RANKS ? stack : NULL;
}

/* Rank 0 saves alone (the ranks hold the same whole model); every rank
 * returns its status. */
static int save_by_rank0(const char *fn, const sae_comm *c, int status)
{
    int32_t final = status;
    int rc = sae__comm_broadcast(c, &final, sizeof final, 0);
    if (rc != SAE_OK)
        return sae__fail(rc, "%s: the communicator failed", fn);
    if (c->rank != 0 && final != SAE_OK)
        return sae__fail(final, "%s: rank 0 failed: %s", fn, sae_status_string(final));
    return final;
}

/* path's files: itself, or each of names in the directory path. */
static int destinations(const char *path, const char *const names[], size_t n, char *out[],
                        size_t *count)
{
    if (sae__is_directory(path)) {
        for (size_t i = 0; i < n; i++)
            if (!(out[i] = sae__path_join(path, names[i])))
                return SAE_E_NOMEM;
        *count = n;
        return SAE_OK;
    }
    size_t len = strlen(path);
    if (!(out[0] = sae__alloc(len + 1)))
        return SAE_E_NOMEM;
    memcpy(out[0], path, len + 1);
    *count = 1;
    return SAE_OK;
}

static int cfg_fn(const void *obj, const sae_st_sink *sink)
{
    return sae__config_write(obj, sink);
}

static uint64_t shape_digest(size_t d_in, size_t d_out, int arch, int kind, size_t k)
{
    return ((uint64_t)d_in * 1000003u + (uint64_t)arch * 131u + (uint64_t)k) * 0x100000001b3ull +
           (uint64_t)d_out * 7u + (uint64_t)kind;
}

/* A save of part files by the ranks of c (see the top of this file), or by
 * rank 0 alone (save_whole) when every rank holds the whole model. */
typedef struct collective_save {
    const char *fn;
    sae_comm c;
    int status;            /* this rank's, before the first exchange */
    size_t begin, width, total;
    uint64_t shape;
    part_file *files;
    size_t n_files;
    int (*save_whole)(const void *obj, const char *path);
    const void *obj;
    const char *path;
} collective_save;

static int run_save(collective_save *s)
{
    part_record stack[STACK_RANKS];
    part_record *records = records_for(&s->c, stack, &s->status);
    if (!records) /* the others cannot be told */
        return sae__fail(SAE_E_NOMEM, "%s: out of memory", s->fn);
    bool whole;
    int rc = agree_on_parts(s->fn, &s->c, s->status, s->begin, s->begin + s->width, s->total,
                            s->shape, records, &whole);
    if (rc == SAE_OK && whole)
        rc = save_by_rank0(s->fn, &s->c,
                           s->c.rank == 0 ? s->save_whole(s->obj, s->path) : SAE_OK);
    else if (rc == SAE_OK)
        rc = save_parts(s->fn, &s->c, s->files, s->n_files, s->begin, s->width, records);
    if (records != stack)
        sae__free(records);
    return rc;
}

static int save_model_fn(const void *obj, const char *path) { return sae_model_save(obj, path); }

static int save_optimizer_fn(const void *obj, const char *path)
{
    return sae_optimizer_save(obj, path);
}

/* The saves of m and o by the ranks of comm, status: this rank's so far
 * (told to the others at the first exchange). */
static int model_save(const char *fn, const sae_model *m, const sae_comm *comm, const char *path,
                      int status)
{
    collective_save s = {.fn = fn, .begin = m->shard_begin, .width = m->d_sae,
                         .total = sae__total_features(m),
                         .shape = shape_digest(m->d_in, m->d_out, m->arch, m->kind, m->k),
                         .save_whole = save_model_fn, .obj = m, .path = path};
    if (sae__comm_copy(&s.c, comm) != SAE_OK)
        return sae__fail(SAE_E_INVALID_ARG, "%s: comm is not a valid communicator", fn);
    static const char *const names[] = {SAE_WEIGHTS_FILE, SAE_CONFIG_FILE};
    char *paths[2] = {NULL, NULL};
    size_t n = 0;
    s.status = status == SAE_OK ? destinations(path, names, 2, paths, &n) : status;
    sae_model_contents contents;
    memset(&contents, 0, sizeof contents);
    if (s.status == SAE_OK)
        sae__model_contents(m, &contents);
    part_file files[2];
    memset(files, 0, sizeof files);
    files[0] = (part_file){.path = paths[0], .meta = contents.meta, .n_meta = contents.n_meta,
                           .t = contents.t, .n_t = contents.n_t};
    if (m->arch == SAE_ARCH_JUMPRELU) /* the exact log thresholds' digits */
        files[0].hex_local = sae__log_thr(m);
    files[1] = (part_file){.path = paths[1], .encode = cfg_fn, .obj = m};
    s.files = files;
    s.n_files = n;
    int rc = run_save(&s);
    for (int i = 0; i < 2; i++) {
        sae__free(files[i].tmp_path);
        sae__free(paths[i]);
    }
    return rc;
}

static int optimizer_save(const char *fn, const sae_optimizer *o, const sae_comm *comm,
                          const char *path, int status)
{
    collective_save s = {.fn = fn, .begin = o->shard_begin, .width = o->d_sae,
                         .total = o->d_sae_total,
                         .shape = shape_digest(o->d_in, o->lay.d_out, o->arch, o->kind,
                                               o->steps),
                         .save_whole = save_optimizer_fn, .obj = o, .path = path};
    if (sae__comm_copy(&s.c, comm) != SAE_OK)
        return sae__fail(SAE_E_INVALID_ARG, "%s: comm is not a valid communicator", fn);
    static const char *const names[] = {SAE_OPTIMIZER_FILE};
    char *file = NULL;
    size_t n = 0;
    sae_st_kv *meta = NULL;
    size_t n_meta = 0;
    void *block = NULL;
    char step[24];
    s.status = status == SAE_OK ? destinations(path, names, 1, &file, &n) : status;
    if (s.status == SAE_OK)
        s.status = sae__optimizer_metadata(o, &meta, &n_meta, &block, step);
    sae_st_out t[SAE_OPT_MAX_TENSORS];
    part_file f = {.path = file, .meta = meta, .n_meta = n_meta, .t = t,
                   .n_t = sae__optimizer_tensors(o, t)};
    s.files = &f;
    s.n_files = n;
    int rc = run_save(&s);
    sae__free(f.tmp_path);
    sae__free(file);
    sae__free(block);
    return rc;
}

int sae_model_save_collective(const sae_model *m, const sae_comm *comm, const char *path)
{
    static const char fn[] = "sae_model_save_collective";
    if (!m || !comm || !path)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn,
                         !m ? "m" : !comm ? "comm" : "path");
    return model_save(fn, m, comm, path, SAE_OK);
}

int sae_optimizer_save_collective(const sae_optimizer *o, const sae_comm *comm, const char *path)
{
    static const char fn[] = "sae_optimizer_save_collective";
    if (!o || !comm || !path)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn,
                         !o ? "o" : !comm ? "comm" : "path");
    return optimizer_save(fn, o, comm, path, SAE_OK);
}

/* ---- a run's checkpoint through the optimizer's communicators -------------------- */

int sae_checkpoint_save_collective(const sae_model *m, const sae_optimizer *o, const char *dir)
{
    static const char fn[] = "sae_checkpoint_save_collective";
    if (!m || !o || !dir)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !m ? "m" : !o ? "o" : "dir");
    const sae_par *p = o->par;
    if (!p)
        return sae__fail(SAE_E_STATE, "%s: o has no communicator attached "
                         "(sae_optimizer_set_comm): a single process saves with sae_model_save "
                         "and sae_optimizer_save", fn);
    const sae_comm *data = p->data.struct_size ? &p->data : NULL;
    const sae_comm *features = p->features.struct_size ? &p->features : NULL;
    /* the ranks that write: all of one mode's, a grid's first data group */
    const sae_comm *writers = features ? features : data;
    int rc = SAE_OK;
    if (!sae__is_directory(dir))
        rc = sae__fail(SAE_E_IO, "%s: dir \"%s\" is not a directory", fn, dir);
    else if (m->d_in != o->d_in || m->d_sae != o->d_sae || m->shard_begin != o->shard_begin ||
             sae__total_features(m) != o->d_sae_total)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: o was made for another model (or shard) than m",
                       fn);
    if (!data || !features || data->rank == 0) {
        rc = model_save(fn, m, writers, dir, rc);
        if (rc == SAE_OK) /* (every writer has the same status) */
            rc = optimizer_save(fn, o, writers, dir, SAE_OK);
    }
    if (!data || !features)
        return rc;
    /* a grid: the other groups hold replicas of group 0's shards; each
     * learns group 0's status from its shard's rank there */
    int32_t final = rc;
    int brc = sae__comm_broadcast(data, &final, sizeof final, 0);
    if (brc != SAE_OK)
        return sae__fail(brc, "%s: the communicator failed", fn);
    if (data->rank != 0 && final != SAE_OK)
        return sae__fail(final, "%s: data group 0 failed: %s", fn, sae_status_string(final));
    return final != SAE_OK ? final : rc; /* (another group's own arguments) */
}
