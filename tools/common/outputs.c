#include "outputs.h"

#include "args.h"
#include "checkpoint.h"

#include <sys/stat.h>

bool tool_outputs_option(tool_outputs *o, int code, const char *arg)
{
    switch (code) {
    case TOOL_OPT_LOG: o->log_path = arg; return true;
    case TOOL_OPT_SAVE: o->save_dir = arg; return true;
    case TOOL_OPT_RESUME: o->resume_dir = arg; return true;
    case TOOL_OPT_CHECKPOINT_EVERY:
        o->checkpoint_every = tool_arg_count("--checkpoint-every", arg, 1);
        return true;
    default: return false;
    }
}

void tool_outputs_check(const tool_outputs *o)
{
    if (o->checkpoint_every && !o->save_dir && !o->resume_dir)
        tool_usage_error("--checkpoint-every: give --save DIR (or --resume DIR) to write them in");
}

static bool same_dir(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void tool_outputs_prepare(tool_outputs *o, bool create)
{
    if (o->resume_dir && (!o->save_dir || same_dir(o->save_dir, o->resume_dir)))
        o->save_dir = o->resume_dir;
    if (o->save_dir && create)
        tool_checkpoint_prepare(o->save_dir == o->resume_dir ? "--resume" : "--save", o->save_dir);
}
