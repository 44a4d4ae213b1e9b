/*
 * An LD_PRELOAD shim that kills its process (SIGKILL) right after the N-th
 * file-system operation that changes something under a directory: the
 * deterministic half of the crash tests (kill_each_op.sh).
 *
 *   SAE_CRASH_DIR=/abs/dir   count only operations on paths under it
 *   SAE_CRASH_AT=N           SIGKILL after the N-th one (0 or unset: never)
 *   SAE_CRASH_LOG=FILE       append "N op path" for each one counted
 *
 * Counted, when the path (or the file behind the descriptor or stream) is
 * under SAE_CRASH_DIR: open/openat/mkstemp/fopen for writing or creating;
 * write, pwrite, fwrite (a run of them to one file counts once); fflush and
 * fclose of a stream open for writing (they may write);
 * fsync, fdatasync, ftruncate; rename(at), link(at), symlink(at),
 * unlink(at), mkdir(at), rmdir; only those that succeed (a failed one
 * changed nothing). Each counted call completes before the kill,
 * so killing after operation N, for N = 1, 2, ..., covers every point
 * between two operations. (Writes glibc makes inside its own functions,
 * such as the flush in fclose, are counted as that function.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char prefix[PATH_MAX];
static size_t prefix_len;
static long crash_at, counted;
static int log_fd = -1;
static char last_write[PATH_MAX]; /* the file of the run of writes going on */

__attribute__((constructor)) static void init(void)
{
    const char *dir = getenv("SAE_CRASH_DIR"), *at = getenv("SAE_CRASH_AT");
    const char *log = getenv("SAE_CRASH_LOG");
    if (dir && *dir) {
        snprintf(prefix, sizeof prefix, "%s", dir);
        prefix_len = strlen(prefix);
    }
    crash_at = at ? atol(at) : 0;
    if (log && *log)
        log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
}

#define REAL(ret, name, ...)                                   \
    static ret (*real)(__VA_ARGS__);                           \
    if (!real)                                                 \
        real = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

static bool under(const char *path)
{
    return prefix_len && strncmp(path, prefix, prefix_len) == 0 &&
           (path[prefix_len] == '/' || path[prefix_len] == '\0');
}

/* The path of descriptor fd (AT_FDCWD: the working directory), "" if unknown. */
static void fd_path(int fd, char *out, size_t len)
{
    char link[64];
    ssize_t n;
    if (fd == AT_FDCWD) {
        if (!getcwd(out, len))
            out[0] = '\0';
        return;
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, out, len - 1);
    out[n > 0 ? n : 0] = '\0';
}

/* The absolute path of `path` relative to directory descriptor dirfd. */
static void at_path(int dirfd, const char *path, char *out, size_t len)
{
    if (path[0] == '/') {
        snprintf(out, len, "%s", path);
        return;
    }
    char base[PATH_MAX];
    fd_path(dirfd, base, sizeof base);
    snprintf(out, len, "%s/%s", base, path);
}

/* An operation on path completed: count it, log it, kill when it is the one.
 * A run of writes to one file (write, pwrite, fwrite with nothing else in
 * between) counts once, at its first write: killing after any of them
 * leaves the same thing, a partly written file. */
static void done(const char *op, const char *path)
{
    if (!under(path))
        return;
    bool data = strcmp(op, "write") == 0;
    if (data && strcmp(path, last_write) == 0)
        return;
    snprintf(last_write, sizeof last_write, "%s", data ? path : "");
    long n = __atomic_add_fetch(&counted, 1, __ATOMIC_SEQ_CST);
    if (log_fd >= 0) {
        char line[PATH_MAX + 64];
        int len = snprintf(line, sizeof line, "%ld %s %s\n", n, op, path);
        if (len > 0)
            (void)!write(log_fd, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    }
    if (n == crash_at)
        kill(getpid(), SIGKILL);
}

static void done_fd(const char *op, int fd)
{
    char path[PATH_MAX];
    fd_path(fd, path, sizeof path);
    done(op, path);
}

static void done_at(const char *op, int dirfd, const char *path)
{
    char full[PATH_MAX * 2];
    at_path(dirfd, path, full, sizeof full);
    done(op, full);
}

static bool writes(int flags)
{
    return (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) != 0;
}

int open(const char *path, int flags, ...)
{
    REAL(int, "open", const char *, int, ...);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    int fd = real(path, flags, mode);
    if (fd >= 0 && writes(flags))
        done_at("open", AT_FDCWD, path);
    return fd;
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    REAL(int, "openat", int, const char *, int, ...);
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    int fd = real(dirfd, path, flags, mode);
    if (fd >= 0 && writes(flags))
        done_at("open", dirfd, path);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int mkstemp(char *template)
{
    REAL(int, "mkstemp", char *);
    int fd = real(template);
    if (fd >= 0)
        done_at("open", AT_FDCWD, template);
    return fd;
}

int mkstemp64(char *template) __attribute__((alias("mkstemp")));

FILE *fopen(const char *path, const char *mode)
{
    REAL(FILE *, "fopen", const char *, const char *);
    FILE *f = real(path, mode);
    if (f && strpbrk(mode, "wa+"))
        done_at("fopen", AT_FDCWD, path);
    return f;
}

FILE *fopen64(const char *path, const char *mode) __attribute__((alias("fopen")));

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(ssize_t, "write", int, const void *, size_t);
    ssize_t r = real(fd, buf, n);
    if (r > 0)
        done_fd("write", fd);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
    ssize_t r = real(fd, buf, n, off);
    if (r > 0)
        done_fd("write", fd);
    return r;
}

size_t fwrite(const void *buf, size_t size, size_t n, FILE *f)
{
    REAL(size_t, "fwrite", const void *, size_t, size_t, FILE *);
    size_t r = real(buf, size, n, f);
    if (r > 0)
        done_fd("write", fileno(f));
    return r;
}

/* The path of the stream's file if it is open for writing, else "". */
static void stream_path(FILE *f, char *path, size_t len)
{
    int fd = f ? fileno(f) : -1;
    int flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    path[0] = '\0';
    if (flags >= 0 && (flags & O_ACCMODE) != O_RDONLY)
        fd_path(fd, path, len);
}

int fflush(FILE *f)
{
    REAL(int, "fflush", FILE *);
    char path[PATH_MAX];
    stream_path(f, path, sizeof path);
    int r = real(f);
    if (r == 0)
        done("fflush", path);
    return r;
}

int fclose(FILE *f)
{
    REAL(int, "fclose", FILE *);
    char path[PATH_MAX];
    stream_path(f, path, sizeof path);
    int r = real(f);
    if (r == 0)
        done("fclose", path);
    return r;
}

int fsync(int fd)
{
    REAL(int, "fsync", int);
    int r = real(fd);
    if (r == 0)
        done_fd("fsync", fd);
    return r;
}

int fdatasync(int fd)
{
    REAL(int, "fdatasync", int);
    int r = real(fd);
    if (r == 0)
        done_fd("fdatasync", fd);
    return r;
}

int ftruncate(int fd, off_t len)
{
    REAL(int, "ftruncate", int, off_t);
    int r = real(fd, len);
    if (r == 0)
        done_fd("ftruncate", fd);
    return r;
}

int rename(const char *from, const char *to)
{
    REAL(int, "rename", const char *, const char *);
    int r = real(from, to);
    if (r == 0)
        done_at("rename", AT_FDCWD, to);
    return r;
}

int renameat(int fromfd, const char *from, int tofd, const char *to)
{
    REAL(int, "renameat", int, const char *, int, const char *);
    int r = real(fromfd, from, tofd, to);
    if (r == 0)
        done_at("rename", tofd, to);
    return r;
}

int link(const char *from, const char *to)
{
    REAL(int, "link", const char *, const char *);
    int r = real(from, to);
    if (r == 0)
        done_at("link", AT_FDCWD, to);
    return r;
}

int linkat(int fromfd, const char *from, int tofd, const char *to, int flags)
{
    REAL(int, "linkat", int, const char *, int, const char *, int);
    int r = real(fromfd, from, tofd, to, flags);
    if (r == 0)
        done_at("link", tofd, to);
    return r;
}

int symlink(const char *target, const char *path)
{
    REAL(int, "symlink", const char *, const char *);
    int r = real(target, path);
    if (r == 0)
        done_at("symlink", AT_FDCWD, path);
    return r;
}

int symlinkat(const char *target, int dirfd, const char *path)
{
    REAL(int, "symlinkat", const char *, int, const char *);
    int r = real(target, dirfd, path);
    if (r == 0)
        done_at("symlink", dirfd, path);
    return r;
}

int unlink(const char *path)
{
    REAL(int, "unlink", const char *);
    char full[PATH_MAX * 2];
    at_path(AT_FDCWD, path, full, sizeof full);
    int r = real(path);
    if (r == 0)
        done("unlink", full);
    return r;
}

int unlinkat(int dirfd, const char *path, int flags)
{
    REAL(int, "unlinkat", int, const char *, int);
    char full[PATH_MAX * 2];
    at_path(dirfd, path, full, sizeof full);
    int r = real(dirfd, path, flags);
    if (r == 0)
        done(flags & AT_REMOVEDIR ? "rmdir" : "unlink", full);
    return r;
}

int mkdir(const char *path, mode_t mode)
{
    REAL(int, "mkdir", const char *, mode_t);
    int r = real(path, mode);
    if (r == 0)
        done_at("mkdir", AT_FDCWD, path);
    return r;
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    REAL(int, "mkdirat", int, const char *, mode_t);
    int r = real(dirfd, path, mode);
    if (r == 0)
        done_at("mkdir", dirfd, path);
    return r;
}

int rmdir(const char *path)
{
    REAL(int, "rmdir", const char *);
    char full[PATH_MAX * 2];
    at_path(AT_FDCWD, path, full, sizeof full);
    int r = real(path);
    if (r == 0)
        done("rmdir", full);
    return r;
}
