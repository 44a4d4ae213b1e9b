/*
 * The progress display of a training run: a live line redrawn in place on a
 * terminal, or a plain line every N steps when the output is a pipe or a
 * file, with notes (checkpoints, resampling) on lines of their own.
 */
#ifndef TOOL_PROGRESS_H
#define TOOL_PROGRESS_H

#include "csvlog.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct tool_progress {
    FILE *out;
    bool live;            /* out is a terminal: redraw one line in place */
    const char *label;    /* printed before each line, may be "" */
    uint64_t total_steps;
    uint64_t every;       /* plain mode: a line every `every` steps */
    double last_draw;
    int drawn;            /* width of the live line on screen */
} tool_progress;

/* live: redraw in place (pass isatty(fileno(out))). */
void tool_progress_init(tool_progress *p, FILE *out, bool live, const char *label,
                        uint64_t total_steps, uint64_t every);
/* Called after each step with the running figures; draws when due (live:
 * at most 5 times a second and on the last step; plain: every `every` steps
 * and on the last step). final forces a draw. */
void tool_progress_update(tool_progress *p, const tool_row *r, bool final);
/* A line of its own, e.g. "checkpoint written": on a terminal it replaces
 * the live line, which the next update draws again below it. */
void tool_progress_note(tool_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* End the live line (newline) so other output can follow. */
void tool_progress_end(tool_progress *p);

#endif
