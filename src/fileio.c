/*
 * Checkpoint files: atomic replacement on write (temporary file in the same
 * directory, fwrite + fflush + fsync, rename) and a reader that only accepts
 * regular files. See fileio.h.
 */
#define _XOPEN_SOURCE 700 /* open flags, pread, fsync, fdopen, clock_gettime */
#include "fileio.h"

#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* Record a failure: what went wrong with path (NULL: the caller names the
 * file) and the system's reason (errno e). */
static int fail_errno(int status, const char *what, const char *path, int e)
{
    char reason[128] = "";
    if (strerror_r(e, reason, sizeof reason) != 0)
        reason[0] = '\0';
    if (!path)
        return sae__fail(status, "%s: %s", what, reason[0] ? reason : "error");
    return sae__fail(status, "%s: %s: %s", path, what, reason[0] ? reason : "error");
}

bool sae__is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *sae__path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name), bytes;
    if (!sae__add(a, b, &bytes) || !sae__add(bytes, 2, &bytes))
        return NULL;
    char *out = sae__alloc(bytes);
    if (!out)
        return NULL;
    memcpy(out, dir, a);
    size_t pos = a;
    if (a == 0 || dir[a - 1] != '/')
        out[pos++] = '/';
    memcpy(out + pos, name, b + 1);
    return out;
}

/* The directory part of path: "." without a slash, "/" for "/name". */
static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    if (slash && n == 0)
        n = 1;
    char *dir = sae__alloc(n + 1);
    if (!dir)
        return NULL;
    if (slash)
        memcpy(dir, path, n);
    else
        dir[0] = '.';
    dir[n] = '\0';
    return dir;
}

static uint64_t splitmix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int sae__tmpfile_open(sae_tmpfile *t, const char *path)
{
    memset(t, 0, sizeof *t);
    t->path = path;
    if (path[0] == '\0')
        return sae__fail(SAE_E_IO, "the path is empty");
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) /* never replace a directory, device or FIFO */
        return sae__fail(SAE_E_IO, "%s: exists and is not a regular file", path);
    static const char suffix[] = ".tmp-0123456789abcdef";
    size_t len = strlen(path), bytes;
    if (!sae__add(len, sizeof suffix, &bytes))
        return sae__fail(SAE_E_IO, "the path is too long");
    int rc = SAE_OK, fd = -1, e = 0;
    t->tmp_path = sae__alloc(bytes);
    t->dir_path = t->tmp_path ? directory_of(path) : NULL;
    if (!t->dir_path) {
        rc = sae__fail(SAE_E_NOMEM, "%s: out of memory for the temporary file's name", path);
        goto cleanup;
    }
    memcpy(t->tmp_path, path, len);
    memcpy(t->tmp_path + len, suffix, 5);
    /* A name nobody else is using: O_EXCL guarantees it, the mix of process,
     * time and attempt makes a collision (and a retry) unlikely. */
    struct timespec ts = {0};
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = splitmix((uint64_t)getpid() ^ ((uint64_t)ts.tv_sec << 32) ^
                             (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)t);
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        uint64_t r = splitmix(seed + (uint64_t)attempt);
        for (int k = 0; k < 16; k++)
            t->tmp_path[len + 5 + k] = "0123456789abcdef"[(r >> (4 * k)) & 15];
        t->tmp_path[len + 5 + 16] = '\0';
        fd = open(t->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        e = errno;
        if (fd < 0 && e != EEXIST)
            break;
    }
    if (fd < 0) {
        rc = fail_errno(SAE_E_IO, "cannot create a temporary file beside it", path, e);
        goto cleanup;
    }
    t->created = true;
    t->f = fdopen(fd, "wb");
    if (!t->f)
        rc = fail_errno(SAE_E_IO, "cannot open the temporary file", path, errno);
cleanup:
    if (rc != SAE_OK) {
        if (fd >= 0 && !t->f)
            close(fd);
        sae__tmpfile_abort(t);
    }
    return rc;
}

int sae__tmpfile_write(void *ctx, const void *data, size_t len)
{
    sae_tmpfile *t = ctx;
    if (t->rc == SAE_OK && fwrite(data, 1, len, t->f) != len)
        t->rc = fail_errno(SAE_E_IO, "cannot write", t->path, errno);
    return t->rc;
}

int sae__tmpfile_finish(sae_tmpfile *t)
{
    int rc = t->rc;
    if (rc == SAE_OK && (fflush(t->f) != 0 || fsync(fileno(t->f)) != 0))
        rc = fail_errno(SAE_E_IO, "cannot write", t->path, errno);
    if (fclose(t->f) != 0 && rc == SAE_OK)
        rc = fail_errno(SAE_E_IO, "cannot write", t->path, errno);
    t->f = NULL;
    if (rc != SAE_OK)
        sae__tmpfile_abort(t);
    return rc;
}

int sae__tmpfile_commit(sae_tmpfile *t)
{
    if (rename(t->tmp_path, t->path) != 0) {
        fail_errno(SAE_E_IO, "cannot rename the temporary file over it", t->path, errno);
        sae__tmpfile_abort(t);
        return SAE_E_IO;
    }
    t->created = false; /* it is the destination now */
    /* Make the rename itself durable. */
    int dfd = open(t->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    sae__tmpfile_abort(t);
    return SAE_OK;
}

void sae__tmpfile_abort(sae_tmpfile *t)
{
    if (t->f)
        fclose(t->f);
    if (t->created)
        unlink(t->tmp_path);
    sae__free(t->tmp_path);
    sae__free(t->dir_path);
    memset(t, 0, sizeof *t);
}

/* ---- reading ------------------------------------------------------------- */

static int file_read(void *ctx, uint64_t offset, void *dst, size_t len)
{
    sae_file_source *fs = ctx;
    unsigned char *p = dst;
    if (offset > fs->src.size || len > fs->src.size - offset)
        return sae__fail(SAE_E_FORMAT, "ends at byte %llu, before %llu + %zu",
                         (unsigned long long)fs->src.size, (unsigned long long)offset, len);
    while (len > 0) {
        ssize_t n = pread(fs->fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail_errno(SAE_E_IO, "cannot read", NULL, errno);
        }
        if (n == 0) /* the file shrank after we measured it */
            return sae__fail(SAE_E_FORMAT, "shrank to %llu bytes while being read",
                             (unsigned long long)offset);
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return SAE_OK;
}

int sae__file_source_open(sae_file_source *fs, const char *path, bool *missing)
{
    memset(fs, 0, sizeof *fs);
    fs->fd = -1;
    if (missing)
        *missing = false;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (missing && errno == ENOENT) {
            *missing = true; /* the caller decides whether that is a failure */
            return SAE_E_IO;
        }
        return fail_errno(SAE_E_IO, "cannot open", path, errno);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0) {
        close(fd);
        return sae__fail(SAE_E_IO, "%s: not a regular file", path);
    }
    fs->fd = fd;
    fs->src.read = file_read;
    fs->src.ctx = fs;
    fs->src.size = (uint64_t)st.st_size;
    return SAE_OK;
}

void sae__file_source_close(sae_file_source *fs)
{
    if (fs->fd >= 0)
        close(fs->fd);
    fs->fd = -1;
}
