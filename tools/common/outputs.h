/*
 * A training run's outputs on the command line, as sae-train and
 * sae-train-mpi take them: --log FILE (the CSV log, csvlog.h), --save DIR
 * and --checkpoint-every N (checkpoint directories, checkpoint.h) and
 * --resume DIR (the run to continue, resume.h). Their table for
 * getopt_long, their parsing, the check between them and the checkpoint
 * directory they name; each program
 * writes their --help lines itself (sae-train's say more).
 */
#ifndef TOOL_OUTPUTS_H
#define TOOL_OUTPUTS_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tool_outputs {
    const char *log_path;      /* --log: the CSV log; NULL: none */
    const char *save_dir;      /* --save: checkpoint directory; NULL: none (resuming:
                                  the program saves into resume_dir) */
    const char *resume_dir;    /* --resume: the checkpoint directory to continue; NULL:
                                  a new run */
    uint64_t checkpoint_every; /* steps; 0: a checkpoint after the last step only */
} tool_outputs;

/* Option codes (the shared training options are TOOL_OPT_* from 1000, a
 * program's own ones small numbers). */
enum { TOOL_OPT_LOG = 1100, TOOL_OPT_SAVE, TOOL_OPT_RESUME, TOOL_OPT_CHECKPOINT_EVERY };

#define TOOL_OUTPUTS_LONG_OPTIONS                                                  \
    {"log", required_argument, NULL, TOOL_OPT_LOG},                                \
    {"save", required_argument, NULL, TOOL_OPT_SAVE},                              \
    {"resume", required_argument, NULL, TOOL_OPT_RESUME},                          \
    {"checkpoint-every", required_argument, NULL, TOOL_OPT_CHECKPOINT_EVERY}

/* Apply one of these options; false if `code` is not one. Exits 2 on a bad
 * value. */
bool tool_outputs_option(tool_outputs *o, int code, const char *arg);

/* Once the command line is read: --checkpoint-every needs a directory to
 * write in (--save or --resume). Exits 2 otherwise. */
void tool_outputs_check(const tool_outputs *o);

/* Where checkpoints go: --save, or back into --resume's directory when
 * --save is not given or names the same directory. With create, make sure
 * that directory can be written in (tool_checkpoint_prepare, before any
 * training; exits 2 naming --save or --resume). */
void tool_outputs_prepare(tool_outputs *o, bool create);

#endif
