#include "progress.h"

#include "args.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>

/* Terminal width, so the live line never wraps (a wrapped line cannot be
 * redrawn with \r). */
static int terminal_width(FILE *f)
{
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    return 80;
}

void tool_progress_init(tool_progress *p, FILE *out, bool live, const char *label,
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

void tool_progress_update(tool_progress *p, const tool_row *r, bool final)
{
    double now = tool_now();
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

void tool_progress_note(tool_progress *p, const char *fmt, ...)
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

void tool_progress_end(tool_progress *p)
{
    if (p->live && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
    }
    p->drawn = 0;
}
