#include "progress.h"

#include "opts.h"

#include <sys/ioctl.h>
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

int ex_csv_header(FILE *f, const char *lead)
{
    return fprintf(f, "%s%s%s\n", lead, *lead ? "," : "", EX_CSV_COLUMNS) < 0 ? -1 : 0;
}

int ex_csv_row(FILE *f, const char *lead, const ex_row *r)
{
    int n = fprintf(f, "%s%s%llu,%llu,%.3f,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g\n", lead, *lead ? "," : "",
                    (unsigned long long)r->step, (unsigned long long)r->tokens, r->seconds, r->loss,
                    r->l2, r->l1, r->l0, r->l0_frac, r->dead_frac);
    return n < 0 ? -1 : 0;
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

void ex_progress_end(ex_progress *p)
{
    if (p->live && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    p->drawn = 0;
}
