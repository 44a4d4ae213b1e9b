/*
 * Files for checkpoints: atomic replacement when writing, a hardened reader.
 * Not installed.
 *
 * Writing goes to a new temporary file in the destination's directory (so the
 * final rename cannot cross file systems), is flushed and fsync'ed, and only
 * then renamed over the destination. Until the rename the destination is
 * untouched; any failure removes the temporary file. A process killed mid-way
 * may leave a "<path>.tmp-XXXXXXXXXXXXXXXX" file behind, never a damaged
 * destination.
 */
#ifndef LIBSAE_FILEIO_H
#define LIBSAE_FILEIO_H

#include "safetensors.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sae_tmpfile {
    const char *path; /* destination (borrowed) */
    char *tmp_path;   /* the temporary file's name */
    bool created;     /* whether tmp_path exists and is ours to remove */
    char *dir_path;   /* the destination's directory, fsync'ed after the rename */
    FILE *f;
    int rc;           /* first write error */
} sae_tmpfile;

/* Create the temporary file for path (mode 0666 less the umask, like fopen).
 * SAE_E_IO if the destination exists but is neither a regular file nor a
 * symlink to one (it would be replaced), or the file cannot be created;
 * SAE_E_NOMEM. On error nothing is left behind. */
int sae__tmpfile_open(sae_tmpfile *t, const char *path);

/* A sink writing to the temporary file (ctx: the sae_tmpfile). */
int sae__tmpfile_write(void *ctx, const void *data, size_t len);

/* Flush, fsync and close the temporary file. On error it is removed. */
int sae__tmpfile_finish(sae_tmpfile *t);

/* Rename the finished temporary file over the destination, then fsync the
 * directory (best effort: some file systems cannot). On error it is removed. */
int sae__tmpfile_commit(sae_tmpfile *t);

/* Close and remove the temporary file if there still is one; free memory.
 * Safe on a zeroed or already committed sae_tmpfile. */
void sae__tmpfile_abort(sae_tmpfile *t);

/* Whether path names an existing directory (following symlinks). */
bool sae__is_directory(const char *path);

/* dir + "/" + name, allocated with sae__alloc; NULL on overflow or NOMEM. */
char *sae__path_join(const char *dir, const char *name);

/* A file opened for reading as a sae_st_source. Only regular files are
 * accepted (a FIFO or device is SAE_E_IO, without blocking on it). */
typedef struct sae_file_source {
    sae_st_source src;
    int fd;
} sae_file_source;

/* SAE_OK, SAE_E_IO (cannot open, not a regular file; *missing set if the file
 * does not exist, when missing is not NULL: then no detail is recorded, the
 * caller decides whether a missing file is a failure). */
int sae__file_source_open(sae_file_source *fs, const char *path, bool *missing);
void sae__file_source_close(sae_file_source *fs);

#endif /* LIBSAE_FILEIO_H */
