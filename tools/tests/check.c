#include "check.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int check_failures;
static char scratch[512];

void check_scratch_begin(const char *name)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(scratch, sizeof scratch, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
    if (!mkdtemp(scratch)) {
        perror("mkdtemp");
        exit(1);
    }
}

const char *check_scratch_dir(void)
{
    return scratch;
}

const char *check_path_of(const char *file)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", scratch, file);
    return path;
}

int check_finish(void)
{
    if (scratch[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", scratch);
    }
    if (check_failures) {
        fprintf(stderr, "%d check(s) failed\n", check_failures);
        return 1;
    }
    puts("all checks passed");
    return 0;
}
