/*
 * Checkpoint directories that change in one atomic step (see "Checkpoint
 * directories" in libsae/sae.h for the layout and the promises).
 *
 *   DIR/gen-<n>/   a complete checkpoint, written as a staging directory
 *   DIR/current    symlink "gen-<n>", replaced by one rename(2): the commit
 *   DIR/<file>     symlink "current/<file>" for each file of a generation
 *
 * The order of a commit, each step made durable before the next:
 *   1. fsync every file of the staging directory, then the directory;
 *   2. a directory of flat files from before (no DIR/current, files the new
 *      generation also writes) is adopted first: its regular files are
 *      hard-linked into gen-0, which becomes current, so that the links of
 *      step 3 show the same bytes as the flat files they replace;
 *   3. the fixed links DIR/<file> that are missing, or replace a flat file
 *      that is the current generation's (the same inode), are made;
 *      fsync DIR;
 *   4. DIR/.sae-current (symlink "gen-<n>") is renamed over DIR/current;
 *      fsync DIR. This rename is the commit;
 *   5. what the commit left over: links still to replace (a flat file of
 *      other bytes), older generations, links to files the new generation
 *      does not have; fsync DIR. Crashing here leaves the new checkpoint
 *      whole; sae_checkpoint_begin finishes the clean-up.
 *
 * Everything works relative to a descriptor of DIR (openat, renameat, ...),
 * so names are short and DIR cannot change under a step.
 */
#define _XOPEN_SOURCE 700 /* the *at functions, fsync, readlinkat, fdopendir */
#include "fileio.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GEN_PREFIX "gen-"
#define CURRENT "current"
#define LINK_PREFIX "current/"
#define TMP_CURRENT ".sae-current"  /* the new "current" before its rename */
#define TMP_LINK ".sae-link-"       /* + the file's name: a link before its rename */
#define NAME_MAX_BYTES 200          /* a staged file's name, so TMP_LINK + name fits */
#define GEN_NAME_BYTES 32           /* "gen-" + 20 digits + NUL, rounded up */
#define PATH_EXTRA 32               /* the header's promise: strlen(dir) + 32 bytes
                                       hold dir + "/gen-<n>" (at most + 25) */

/* "gen-<n>" with n a decimal number without leading zeros (0 alone is fine). */
static bool parse_generation(const char *name, uint64_t *n)
{
    if (strncmp(name, GEN_PREFIX, sizeof GEN_PREFIX - 1) != 0)
        return false;
    const char *p = name + sizeof GEN_PREFIX - 1;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] != '\0'))
        return false;
    uint64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *n = v;
    return true;
}

/* The generation DIR/current names: 1 (found, *n set), 0 (no DIR/current),
 * or a status (SAE_E_FORMAT: DIR/current is not a link to "gen-<n>"). */
static int read_current(int dir_fd, uint64_t *n)
{
    char target[GEN_NAME_BYTES];
    ssize_t len = readlinkat(dir_fd, CURRENT, target, sizeof target);
    if (len < 0 && errno == ENOENT)
        return 0;
    if (len < 0 && errno == EINVAL) /* exists, not a symlink */
        return sae__fail(SAE_E_FORMAT, CURRENT " is not a symbolic link (not a checkpoint "
                                       "directory of this layout)");
    if (len < 0)
        return sae__fail(SAE_E_IO, CURRENT ": %s", strerror(errno));
    if ((size_t)len >= sizeof target)
        return sae__fail(SAE_E_FORMAT, CURRENT " does not point to gen-<n>");
    target[len] = '\0';
    return parse_generation(target, n) ? 1 : sae__fail(SAE_E_FORMAT, CURRENT " points to '%s', not "
                                                       "to gen-<n>", target);
}

/* Best effort: make a directory's entries durable. Some file systems refuse
 * fsync on a directory; they order metadata themselves. */
static void sync_dir(int fd)
{
    (void)fsync(fd);
}

static int open_dir(const char *path)
{
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int open_dir_at(int dir_fd, const char *name)
{
    return openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* A file name a generation may hold: not hidden, no slash, not one of the
 * names of the layout, short enough for its temporary link. */
static bool plain_name(const char *name)
{
    uint64_t n;
    return name[0] != '\0' && name[0] != '.' && strchr(name, '/') == NULL &&
           strlen(name) <= NAME_MAX_BYTES && strcmp(name, CURRENT) != 0 &&
           !parse_generation(name, &n);
}

/* A listing of directory fd from its start. The DIR gets a duplicate of fd,
 * which shares its file offset: hence the rewind. NULL on failure. */
static DIR *list_dir(int fd)
{
    int copy = dup(fd);
    DIR *d = copy >= 0 ? fdopendir(copy) : NULL;
    if (!d && copy >= 0)
        close(copy);
    if (d)
        rewinddir(d);
    return d;
}

/* The names of the regular files in directory fd (not hidden ones), in one
 * allocation: count NUL-terminated names back to back. SAE_E_INVALID_ARG
 * when strict and an entry is anything else (a subdirectory, a link, a name
 * plain_name refuses); otherwise such entries are skipped. */
typedef struct name_list {
    char *names;
    size_t count, bytes;
} name_list;

static void names_free(name_list *l)
{
    sae__free(l->names);
    memset(l, 0, sizeof *l);
}

static int names_add(name_list *l, const char *name, size_t *capacity)
{
    size_t len = strlen(name) + 1;
    if (l->bytes + len > *capacity) {
        size_t grown = *capacity ? 2 * *capacity : 1024;
        while (grown < l->bytes + len)
            grown *= 2;
        char *bigger = sae__alloc(grown);
        if (!bigger)
            return sae__fail(SAE_E_NOMEM, "%zu bytes for file names", grown);
        if (l->bytes)
            memcpy(bigger, l->names, l->bytes);
        sae__free(l->names);
        l->names = bigger;
        *capacity = grown;
    }
    memcpy(l->names + l->bytes, name, len);
    l->bytes += len;
    l->count++;
    return SAE_OK;
}

static int list_files(int fd, bool strict, name_list *out)
{
    memset(out, 0, sizeof *out);
    DIR *d = list_dir(fd);
    if (!d)
        return sae__fail(SAE_E_IO, "cannot list the directory: %s", strerror(errno));
    size_t capacity = 0;
    int rc = SAE_OK;
    struct dirent *e;
    while (rc == SAE_OK && (errno = 0, e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        bool regular = fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
        if (regular && plain_name(e->d_name))
            rc = names_add(out, e->d_name, &capacity);
        else if (strict)
            rc = sae__fail(SAE_E_INVALID_ARG, "'%s' is not a regular file with a plain name "
                           "(not hidden, not current or gen-<n>, at most %d bytes)", e->d_name,
                           NAME_MAX_BYTES);
    }
    if (rc == SAE_OK && errno != 0)
        rc = sae__fail(SAE_E_IO, "cannot list the directory: %s", strerror(errno));
    closedir(d);
    if (rc != SAE_OK)
        names_free(out);
    return rc;
}

static bool names_contain(const name_list *l, const char *name)
{
    const char *p = l->names;
    for (size_t i = 0; i < l->count; i++, p += strlen(p) + 1)
        if (strcmp(p, name) == 0)
            return true;
    return false;
}

/* Remove directory `name` in dir_fd and the files in it (a generation or a
 * staging directory); false if anything stays. */
static bool remove_generation(int dir_fd, const char *name)
{
    int fd = open_dir_at(dir_fd, name);
    if (fd < 0)
        return errno == ENOENT;
    DIR *d = list_dir(fd);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            (void)unlinkat(fd, e->d_name, 0);
    if (d)
        closedir(d);
    close(fd);
    return unlinkat(dir_fd, name, AT_REMOVEDIR) == 0;
}

/* Point the link `name` at target through a temporary link and one rename,
 * so that name is never missing (and its old content stays valid until the
 * rename). */
static int replace_link(int dir_fd, const char *tmp, const char *target, const char *name)
{
    (void)unlinkat(dir_fd, tmp, 0);
    if (symlinkat(target, dir_fd, tmp) != 0)
        return sae__fail(SAE_E_IO, "cannot create the link %s: %s", tmp, strerror(errno));
    if (renameat(dir_fd, tmp, dir_fd, name) != 0) {
        int e = errno;
        (void)unlinkat(dir_fd, tmp, 0);
        return sae__fail(SAE_E_IO, "cannot rename %s to %s: %s", tmp, name, strerror(e));
    }
    return SAE_OK;
}

static int switch_current(int dir_fd, uint64_t n)
{
    char target[GEN_NAME_BYTES];
    snprintf(target, sizeof target, GEN_PREFIX "%" PRIu64, n);
    int rc = replace_link(dir_fd, TMP_CURRENT, target, CURRENT);
    sync_dir(dir_fd);
    return rc;
}

/* DIR/<name> as a fixed link "current/<name>" (a temporary link renamed over
 * whatever was there). */
static int make_fixed_link(int dir_fd, const char *name)
{
    char tmp[sizeof TMP_LINK + NAME_MAX_BYTES], target[sizeof LINK_PREFIX + NAME_MAX_BYTES];
    snprintf(tmp, sizeof tmp, TMP_LINK "%s", name);
    snprintf(target, sizeof target, LINK_PREFIX "%s", name);
    return replace_link(dir_fd, tmp, target, name);
}

/* What DIR/<name> is, before the switch to a generation holding <name>. */
enum link_state { LINK_OK, LINK_MAKE_NOW, LINK_MAKE_AFTER };

static enum link_state fixed_link_state(int dir_fd, const char *name, bool has_current)
{
    struct stat st, cur;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return LINK_MAKE_NOW; /* missing: nobody reads it yet */
    if (S_ISLNK(st.st_mode)) {
        char target[sizeof LINK_PREFIX + NAME_MAX_BYTES];
        ssize_t len = readlinkat(dir_fd, name, target, sizeof target - 1);
        if (len >= 0) {
            target[len] = '\0';
            if (strncmp(target, LINK_PREFIX, sizeof LINK_PREFIX - 1) == 0 &&
                strcmp(target + sizeof LINK_PREFIX - 1, name) == 0)
                return LINK_OK;
        }
        return LINK_MAKE_AFTER;
    }
    /* a flat file: replaced now only if the link would show the same bytes */
    char path[sizeof LINK_PREFIX + NAME_MAX_BYTES];
    snprintf(path, sizeof path, LINK_PREFIX "%s", name);
    if (S_ISREG(st.st_mode) && has_current && fstatat(dir_fd, path, &cur, 0) == 0 &&
        cur.st_dev == st.st_dev && cur.st_ino == st.st_ino)
        return LINK_MAKE_NOW;
    return LINK_MAKE_AFTER;
}

/* A directory of flat files (no DIR/current) whose names the new generation
 * shares: hard-link its regular files into gen-0 and make that current, so
 * that the flat files can become links without changing a byte a reader sees. */
static int adopt_flat_files(int dir_fd, const name_list *staged, bool *has_current)
{
    name_list flat;
    int rc = list_files(dir_fd, false, &flat);
    if (rc != SAE_OK)
        return rc;
    bool shared = false;
    const char *p = flat.names;
    for (size_t i = 0; i < flat.count && !shared; i++, p += strlen(p) + 1)
        shared = names_contain(staged, p);
    int gen_fd = -1;
    if (!shared)
        goto cleanup;
    (void)remove_generation(dir_fd, GEN_PREFIX "0");
    if (mkdirat(dir_fd, GEN_PREFIX "0", 0777) != 0 || (gen_fd = open_dir_at(dir_fd, GEN_PREFIX "0")) < 0)
        rc = sae__fail(SAE_E_IO, "cannot create " GEN_PREFIX "0 for the flat files: %s", strerror(errno));
    p = flat.names;
    for (size_t i = 0; i < flat.count && rc == SAE_OK; i++, p += strlen(p) + 1)
        if (linkat(dir_fd, p, gen_fd, p, 0) != 0)
            rc = sae__fail(SAE_E_IO, "cannot link %s into " GEN_PREFIX "0: %s", p, strerror(errno));
    if (gen_fd >= 0)
        sync_dir(gen_fd);
    if (rc == SAE_OK) {
        sync_dir(dir_fd);
        rc = switch_current(dir_fd, 0);
    }
    if (rc != SAE_OK)
        (void)remove_generation(dir_fd, GEN_PREFIX "0");
    *has_current = rc == SAE_OK;
cleanup:
    if (gen_fd >= 0)
        close(gen_fd);
    names_free(&flat);
    return rc;
}

/* fsync every staged file, then the staging directory. */
static int sync_stage(int stage_fd, const name_list *staged)
{
    const char *p = staged->names;
    for (size_t i = 0; i < staged->count; i++, p += strlen(p) + 1) {
        int fd = openat(stage_fd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        bool ok = fd >= 0 && fsync(fd) == 0;
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (!ok)
            return sae__fail(SAE_E_IO, "%s: cannot sync it: %s", p, strerror(e));
    }
    if (fsync(stage_fd) != 0)
        return sae__fail(SAE_E_IO, "cannot sync the staging directory: %s", strerror(errno));
    return SAE_OK;
}

/* After the switch to generation n: the links still to make, then every
 * other generation, every stale temporary link and every link to a file n
 * does not have. Best effort: what fails stays for the next begin. */
static void clean_up(int dir_fd, uint64_t n, const name_list *staged, bool make_links)
{
    const char *p = staged->names;
    for (size_t i = 0; make_links && i < staged->count; i++, p += strlen(p) + 1)
        if (fixed_link_state(dir_fd, p, true) != LINK_OK)
            (void)make_fixed_link(dir_fd, p);
    DIR *d = list_dir(dir_fd);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        uint64_t k;
        char target[sizeof LINK_PREFIX + NAME_MAX_BYTES];
        ssize_t len;
        if (parse_generation(e->d_name, &k) && k != n) {
            (void)remove_generation(dir_fd, e->d_name);
        } else if (strncmp(e->d_name, ".sae-", 5) == 0) {
            (void)unlinkat(dir_fd, e->d_name, 0);
        } else if ((len = readlinkat(dir_fd, e->d_name, target, sizeof target - 1)) > 0) {
            target[len] = '\0';
            if (strncmp(target, LINK_PREFIX, sizeof LINK_PREFIX - 1) == 0 &&
                !names_contain(staged, target + sizeof LINK_PREFIX - 1))
                (void)unlinkat(dir_fd, e->d_name, 0);
        }
    }
    if (d)
        closedir(d);
    sync_dir(dir_fd);
}

/* The generation number and name of stage, which must be dir + "/gen-<n>"
 * exactly as sae_checkpoint_begin wrote it (sae__path_join's joining). */
static bool stage_generation(const char *dir, const char *stage, uint64_t *n, const char **name)
{
    size_t len = strlen(dir);
    if (strncmp(stage, dir, len) != 0)
        return false;
    const char *rest = stage + len;
    if (dir[len - 1] != '/' && *rest++ != '/')
        return false;
    *name = rest;
    return strchr(rest, '/') == NULL && parse_generation(rest, n);
}

/* The highest generation in dir (0 if none), removing every generation but
 * `keep` (when has_keep) and every stale temporary link on the way. */
static uint64_t clear_stale(int dir_fd, bool has_keep, uint64_t keep)
{
    uint64_t highest = has_keep ? keep : 0;
    DIR *d = list_dir(dir_fd);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        uint64_t k;
        if (parse_generation(e->d_name, &k)) {
            if (k > highest)
                highest = k;
            if (!has_keep || k != keep)
                (void)remove_generation(dir_fd, e->d_name);
        } else if (strncmp(e->d_name, ".sae-", 5) == 0) {
            (void)unlinkat(dir_fd, e->d_name, 0);
        }
    }
    if (d)
        closedir(d);
    return highest;
}

/* Open dir, creating it (one level) when it is missing. */
static int open_or_make_dir(const char *dir)
{
    int fd = open_dir(dir);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    fd = open_dir(dir);
    if (fd >= 0) { /* make the new directory's own entry durable */
        char *parent = sae__path_join(dir, "..");
        int parent_fd = parent ? open_dir(parent) : -1;
        if (parent_fd >= 0) {
            sync_dir(parent_fd);
            close(parent_fd);
        }
        sae__free(parent);
    }
    return fd;
}

/* The checks every entry point makes of dir and a path buffer. */
static int check_args(const char *fn, const char *dir, const void *buf, const char *buf_name)
{
    if (!dir || !*dir)
        return sae__fail(SAE_E_INVALID_ARG, "%s: dir is %s", fn, dir ? "empty" : "NULL");
    if (!buf)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, buf_name);
    return SAE_OK;
}

/* Copy path into out (capacity bytes) or fail naming what it needs. */
static int copy_path(const char *fn, const char *path, char *out, size_t capacity)
{
    size_t len = strlen(path);
    if (len >= capacity)
        return sae__fail(SAE_E_INVALID_ARG, "%s: capacity %zu is too small for '%s' (%zu bytes)",
                         fn, capacity, path, len + 1);
    memcpy(out, path, len + 1);
    return SAE_OK;
}

/* Make directory gen-<next+1> (or the next free number after it) in dir_fd;
 * its name goes to name. */
static int make_stage(int dir_fd, uint64_t next, char name[GEN_NAME_BYTES])
{
    for (int tries = 0; tries < 100 && next < UINT64_MAX; tries++) {
        snprintf(name, GEN_NAME_BYTES, GEN_PREFIX "%" PRIu64, ++next);
        if (mkdirat(dir_fd, name, 0777) == 0)
            return SAE_OK;
        if (errno != EEXIST)
            return sae__fail(SAE_E_IO, "cannot create %s: %s", name, strerror(errno));
    }
    return sae__fail(SAE_E_IO, "no free generation number after %" PRIu64, next);
}

int sae_checkpoint_begin(const char *dir, char *stage, size_t capacity)
{
    static const char fn[] = "sae_checkpoint_begin";
    int rc = check_args(fn, dir, stage, "stage");
    size_t need;
    if (rc == SAE_OK && (!sae__add(strlen(dir), PATH_EXTRA, &need) || capacity < need))
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: capacity %zu is below strlen(dir) + %d", fn,
                       capacity, PATH_EXTRA);
    if (rc != SAE_OK)
        return rc;
    int dir_fd = open_or_make_dir(dir);
    if (dir_fd < 0)
        return sae__fail(SAE_E_IO, "%s: %s: cannot create or open the directory: %s", fn, dir,
                         strerror(errno));
    uint64_t cur = 0;
    char name[GEN_NAME_BYTES];
    int found = read_current(dir_fd, &cur);
    rc = found < 0 ? found : make_stage(dir_fd, clear_stale(dir_fd, found == 1, cur), name);
    if (rc == SAE_OK) {
        char *path = sae__path_join(dir, name);
        rc = path ? copy_path(fn, path, stage, capacity) : sae__fail(SAE_E_NOMEM, "%s: the path", fn);
        if (rc != SAE_OK)
            (void)unlinkat(dir_fd, name, AT_REMOVEDIR);
        sae__free(path);
    }
    close(dir_fd);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s: %s", fn, dir);
}

/* Steps 2 to 5 of a commit, with DIR, the stage and its file names open. */
static int commit_generation(int dir_fd, uint64_t n, const name_list *staged)
{
    uint64_t cur = 0;
    int found = read_current(dir_fd, &cur);
    if (found < 0)
        return found;
    if (found == 1 && cur == n)
        return sae__fail(SAE_E_INVALID_ARG, GEN_PREFIX "%" PRIu64 " is current already", n);
    bool has_current = found == 1, deferred = false;
    int rc = has_current ? SAE_OK : adopt_flat_files(dir_fd, staged, &has_current);
    const char *p = staged->names;
    for (size_t i = 0; i < staged->count && rc == SAE_OK; i++, p += strlen(p) + 1) {
        enum link_state s = fixed_link_state(dir_fd, p, has_current);
        if (s == LINK_MAKE_NOW)
            rc = make_fixed_link(dir_fd, p);
        deferred |= s == LINK_MAKE_AFTER;
    }
    sync_dir(dir_fd);
    if (rc == SAE_OK)
        rc = switch_current(dir_fd, n);
    if (rc == SAE_OK)
        clean_up(dir_fd, n, staged, deferred);
    return rc;
}

/* Open dir and the staging directory stage in it (dir + "/gen-<n>"). */
static int open_stage(const char *fn, const char *dir, const char *stage, int *dir_fd,
                      int *stage_fd, uint64_t *n)
{
    const char *name = NULL;
    *dir_fd = *stage_fd = -1;
    int rc = check_args(fn, dir, stage, "stage");
    if (rc == SAE_OK && !stage_generation(dir, stage, n, &name))
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: '%s' is not a staging directory of '%s' "
                       "(dir/gen-<n>, as sae_checkpoint_begin wrote it)", fn, stage, dir);
    if (rc == SAE_OK && (*dir_fd = open_dir(dir)) < 0)
        rc = sae__fail(SAE_E_IO, "%s: %s: %s", fn, dir, strerror(errno));
    if (rc == SAE_OK && (*stage_fd = open_dir_at(*dir_fd, name)) < 0)
        rc = sae__fail(SAE_E_IO, "%s: %s: %s", fn, stage, strerror(errno));
    return rc;
}

static void close_fds(int a, int b)
{
    if (a >= 0)
        close(a);
    if (b >= 0)
        close(b);
}

int sae_checkpoint_commit(const char *dir, const char *stage)
{
    static const char fn[] = "sae_checkpoint_commit";
    int dir_fd, stage_fd;
    uint64_t n = 0;
    int rc = open_stage(fn, dir, stage, &dir_fd, &stage_fd, &n);
    if (rc != SAE_OK) {
        close_fds(dir_fd, stage_fd);
        return rc;
    }
    name_list staged = {0};
    rc = list_files(stage_fd, true, &staged);
    if (rc == SAE_OK && staged.count == 0)
        rc = sae__fail(SAE_E_INVALID_ARG, "the staging directory is empty");
    if (rc == SAE_OK)
        rc = sync_stage(stage_fd, &staged);
    if (rc == SAE_OK)
        rc = commit_generation(dir_fd, n, &staged);
    names_free(&staged);
    close_fds(dir_fd, stage_fd);
    return rc == SAE_OK ? rc : sae__fail_context(rc, "%s: %s", fn, stage);
}

int sae_checkpoint_abort(const char *dir, const char *stage)
{
    static const char fn[] = "sae_checkpoint_abort";
    int dir_fd, stage_fd;
    uint64_t n = 0, cur = 0;
    int rc = open_stage(fn, dir, stage, &dir_fd, &stage_fd, &n);
    close_fds(stage_fd, -1);
    if (rc == SAE_OK && read_current(dir_fd, &cur) == 1 && cur == n)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: %s is the current generation", fn, stage);
    if (rc == SAE_OK && !remove_generation(dir_fd, strrchr(stage, '/') + 1))
        rc = sae__fail(SAE_E_IO, "%s: %s: cannot remove it: %s", fn, stage, strerror(errno));
    close_fds(dir_fd, -1);
    return rc;
}

int sae_checkpoint_current(const char *dir, char *path, size_t capacity)
{
    static const char fn[] = "sae_checkpoint_current";
    int rc = check_args(fn, dir, path, "path");
    if (rc != SAE_OK)
        return rc;
    int dir_fd = open_dir(dir);
    if (dir_fd < 0)
        return sae__fail(SAE_E_IO, "%s: %s: %s", fn, dir, strerror(errno));
    uint64_t n = 0;
    int found = read_current(dir_fd, &n);
    char name[GEN_NAME_BYTES];
    snprintf(name, sizeof name, GEN_PREFIX "%" PRIu64, n);
    struct stat st;
    rc = found < 0 ? found : SAE_OK;
    if (found == 1 && (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)))
        rc = sae__fail(SAE_E_IO, CURRENT " points to %s, which is missing", name);
    if (found == 0 && (fstatat(dir_fd, "sae_weights.safetensors", &st, 0) != 0 || !S_ISREG(st.st_mode)))
        rc = sae__fail(SAE_E_IO, "no checkpoint (neither " CURRENT " nor sae_weights.safetensors)");
    close(dir_fd);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s: %s", fn, dir);
    if (found == 0)
        return copy_path(fn, dir, path, capacity);
    char *joined = sae__path_join(dir, name);
    rc = joined ? copy_path(fn, joined, path, capacity) : sae__fail(SAE_E_NOMEM, "%s: the path", fn);
    sae__free(joined);
    return rc;
}
