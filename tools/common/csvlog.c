#include "csvlog.h"

#include "args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

int tool_csv_header(FILE *f, const char *lead, const char *trail)
{
    return fprintf(f, "%s%s%s%s%s\n", lead, *lead ? "," : "", TOOL_CSV_COLUMNS, *trail ? "," : "",
                   trail) < 0 ? -1 : 0;
}

int tool_csv_row(FILE *f, const char *lead, const char *trail, const tool_row *r)
{
    int n = fprintf(f, "%s%s%llu,%llu,%.3f,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.6g,%.6g,%.6g,%llu%s%s\n",
                    lead, *lead ? "," : "", (unsigned long long)r->step,
                    (unsigned long long)r->tokens, r->seconds, r->loss, r->l2, r->l1, r->l0,
                    r->l0_frac, r->dead_frac, r->checkpoint ? 1 : 0, r->lr_t, r->lambda_t, r->fvu,
                    (unsigned long long)r->resampled, *trail ? "," : "", trail);
    return n < 0 ? -1 : 0;
}

void tool_csv_columns_help(FILE *f, const char *lead, const char *trail)
{
    char all[512];
    snprintf(all, sizeof all, "%s%s%s%s%s", lead, *lead ? "," : "", TOOL_CSV_COLUMNS,
             *trail ? "," : "", trail);
    const char *p = all;
    while (*p) {
        size_t len = strlen(p), cut = len;
        if (len > 76) { /* the last comma within the line */
            cut = 76;
            while (cut > 0 && p[cut - 1] != ',')
                cut--;
            if (cut == 0)
                cut = len;
        }
        fprintf(f, "    %.*s\n", (int)cut, p);
        p += cut;
    }
}

/* Check an existing log: our header, a complete last row; *last_step gets
 * the step of that row (0 if there are no rows). -1 with err set if not. */
static int check_log(FILE *f, uint64_t *last_step, char *err, size_t errlen)
{
    static const char header[] = TOOL_CSV_COLUMNS "\n";
    char head[sizeof header];
    if (fread(head, 1, sizeof header - 1, f) != sizeof header - 1 ||
        memcmp(head, header, sizeof header - 1) != 0)
        return snprintf(err, errlen, "exists and does not start with the header %s", TOOL_CSV_COLUMNS), -1;
    char tail[1024]; /* holds the last line */
    off_t size;
    if (fseeko(f, 0, SEEK_END) != 0 || (size = ftello(f)) < 0 ||
        fseeko(f, size > (off_t)sizeof tail - 1 ? size - (off_t)sizeof tail + 1 : 0, SEEK_SET) != 0)
        return snprintf(err, errlen, "%s", strerror(errno)), -1;
    size_t n = fread(tail, 1, sizeof tail - 1, f);
    if (n == 0 || tail[n - 1] != '\n')
        return snprintf(err, errlen, "its last row is incomplete (remove it, then resume)"), -1;
    tail[n - 1] = '\0';
    *last_step = 0;
    if (size > (off_t)sizeof header - 1) { /* it has rows */
        char *line = strrchr(tail, '\n');
        line = line ? line + 1 : tail;
        char *end;
        errno = 0;
        unsigned long long step = strtoull(line, &end, 10);
        if (*line < '0' || *line > '9' || errno != 0 || *end != ',')
            return snprintf(err, errlen, "its last row does not start with a step number"), -1;
        *last_step = step;
    }
    return 0;
}

FILE *tool_csv_append(const char *path, uint64_t *last_step, char *err, size_t errlen)
{
    *last_step = 0;
    bool empty = true;
    FILE *f = fopen(path, "r");
    if (f) {
        struct stat st;
        empty = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0;
        int rc = empty ? 0 : check_log(f, last_step, err, errlen);
        fclose(f);
        if (rc != 0)
            return NULL;
    } else if (errno != ENOENT) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    f = fopen(path, "a");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    if (empty && tool_csv_header(f, "", "") != 0) {
        fclose(f);
        snprintf(err, errlen, "cannot write");
        return NULL;
    }
    return f;
}


FILE *tool_csv_open_log(const char *path, bool append, uint64_t resume_step, char *err,
                        size_t errlen)
{
    FILE *log;
    if (append) {
        char why[256];
        uint64_t last_step;
        if (!(log = tool_csv_append(path, &last_step, why, sizeof why))) {
            snprintf(err, errlen, "--log '%s': %s", path, why);
            return NULL;
        }
        if (last_step > resume_step)
            fprintf(stderr, "%s: note: --log '%s' goes on to step %llu, past the checkpoint's "
                            "step %llu; the new rows follow\n", tool_program(), path,
                    (unsigned long long)last_step, (unsigned long long)resume_step);
    } else {
        if (!(log = fopen(path, "w"))) {
            snprintf(err, errlen, "--log: cannot write '%s'", path);
            return NULL;
        }
        tool_csv_header(log, "", "");
    }
    setvbuf(log, NULL, _IOLBF, 0);
    return log;
}
