#include "progress.h"

#include "opts.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Terminal width, so the live line never wraps (a wrapped line cannot be
 * redrawn with \r). */
static int terminal_width(FILE *f)
{
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    return 80;
}

int ex_csv_header(FILE *f, const char *lead, const char *trail)
{
    return fprintf(f, "%s%s%s%s%s\n", lead, *lead ? "," : "", EX_CSV_COLUMNS, *trail ? "," : "",
                   trail) < 0 ? -1 : 0;
}

int ex_csv_row(FILE *f, const char *lead, const char *trail, const ex_row *r)
{
    int n = fprintf(f, "%s%s%llu,%llu,%.3f,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.6g,%.6g,%.6g,%llu%s%s\n",
                    lead, *lead ? "," : "", (unsigned long long)r->step,
                    (unsigned long long)r->tokens, r->seconds, r->loss, r->l2, r->l1, r->l0,
                    r->l0_frac, r->dead_frac, r->checkpoint ? 1 : 0, r->lr_t, r->lambda_t, r->fvu,
                    (unsigned long long)r->resampled, *trail ? "," : "", trail);
    return n < 0 ? -1 : 0;
}

void ex_csv_columns_help(FILE *f, const char *lead, const char *trail)
{
    char all[512];
    snprintf(all, sizeof all, "%s%s%s%s%s", lead, *lead ? "," : "", EX_CSV_COLUMNS,
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
    static const char header[] = EX_CSV_COLUMNS "\n";
    char head[sizeof header];
    if (fread(head, 1, sizeof header - 1, f) != sizeof header - 1 ||
        memcmp(head, header, sizeof header - 1) != 0)
        return snprintf(err, errlen, "exists and does not start with the header %s", EX_CSV_COLUMNS), -1;
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

FILE *ex_csv_append(const char *path, uint64_t *last_step, char *err, size_t errlen)
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
    if (empty && ex_csv_header(f, "", "") != 0) {
        fclose(f);
        snprintf(err, errlen, "cannot write");
        return NULL;
    }
    return f;
}

void ex_progress_init(ex_progress *p, FILE *out, bool live, const char *label,
                      uint64_t total_steps, uint64_t every)
{
    p->out = out;
    p->live = live;
    p->label = label;
    p->total_steps = total_steps;
    p->every = every ? every : 1;
    p->last_draw = -1.0;
    p->drawn = 0;
}

static void format_duration(double s, char *buf, size_t len)
{
    unsigned long t = s > 0.0 ? (unsigned long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
}

void ex_progress_update(ex_progress *p, const ex_row *r, bool final)
{
    double now = ex_now();
    if (p->live) {
        if (!final && p->last_draw >= 0.0 && now - p->last_draw < 0.2)
            return;
    } else if (!final && r->step % p->every != 0) {
        return;
    }
    p->last_draw = now;
    double tps = r->seconds > 0.0 ? (double)r->tokens / r->seconds : 0.0;
    char eta[32];
    double per_step = r->step ? r->seconds / (double)r->step : 0.0;
    format_duration(per_step * (double)(p->total_steps - r->step), eta, sizeof eta);
    char line[256];
    int n = snprintf(line, sizeof line,
                     "%s%sstep %llu/%llu  %.3gk tok/s  ETA %s  loss %.4g  l2 %.4g  l1 %.4g  "
                     "l0 %.1f  dead %.1f%%",
                     p->label, *p->label ? "  " : "", (unsigned long long)r->step,
                     (unsigned long long)p->total_steps, tps / 1000.0, eta, r->loss, r->l2, r->l1,
                     r->l0, 100.0 * r->dead_frac);
    if (n < 0)
        return;
    if (n >= (int)sizeof line)
        n = (int)sizeof line - 1;
    if (p->live) {
        int width = terminal_width(p->out) - 1;
        if (n > width) {
            line[width] = '\0';
            n = width;
        }
        /* \r back to the start; pad with spaces over a longer previous line */
        fprintf(p->out, "\r%s%*s", line, p->drawn > n ? p->drawn - n : 0, "");
        p->drawn = n;
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
}

void ex_progress_note(ex_progress *p, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n >= (int)sizeof line)
        n = (int)sizeof line - 1;
    if (p->live) /* over the live line, padded to its width */
        fprintf(p->out, "\r%s%*s\n", line, p->drawn > n ? p->drawn - n : 0, "");
    else
        fprintf(p->out, "%s\n", line);
    p->drawn = 0;
    p->last_draw = -1.0; /* draw the live line again at the next update */
    fflush(p->out);
}

void ex_progress_end(ex_progress *p)
{
    if (p->live && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    p->drawn = 0;
}
