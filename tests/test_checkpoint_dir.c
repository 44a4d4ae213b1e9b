/*
 * Checkpoint directories (sae_checkpoint_begin / _commit / _abort / _current):
 * the layout a commit leaves, generations replacing each other, what a
 * crashed writer left being cleared, flat directories from before being
 * read and converted, every bad argument refused with a detail and nothing
 * changed, and every allocation failure. The kill-at-every-step tests are
 * tests/crash/ (they need a whole process to kill).
 */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include "nomem.h"
#include "testutil.h"

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <libsae/sae.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const double sd[4] = {0.3, 0.1, 0.3, 0.1};

/* A fresh directory for each test; `dir` is where checkpoints go (missing
 * until a test makes it), inside it. */
static char root[256], dir[300];

static void setup(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof root, "%s/sae_ckdir_XXXXXX", base);
    ck_assert_ptr_nonnull(mkdtemp(root));
    snprintf(dir, sizeof dir, "%s/run", root);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir/name (a static buffer per call site's use: copy if kept) */
static const char *in_dir(const char *name)
{
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* The whole file as a string (malloc'ed), or NULL if it cannot be read. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *text = calloc(1, 4096);
    fread(text, 1, 4095, f);
    fclose(f);
    return text;
}

static void ck_file_text(const char *path, const char *want)
{
    char *got = read_file(path);
    ck_assert_msg(got != NULL, "%s: cannot read", path);
    ck_assert_str_eq(got, want);
    free(got);
}

/* The link's target, or "" if path is not a symbolic link. */
static const char *link_of(const char *path)
{
    static char target[512];
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    return target;
}

/* The sorted names in dir, space-separated: "cfg.json current gen-1 ...". */
static const char *listing(void)
{
    static char out[2048];
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | tr '\\n' ' '", dir);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p)
        pclose(p);
    return out;
}

/* One generation holding the given files (name, text, name, text, ..., NULL). */
static void commit_files(const char *first, ...)
{
    char stage[512];
    ck_assert_int_eq(sae_checkpoint_begin(dir, stage, sizeof stage), SAE_OK);
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name; name = va_arg(ap, const char *)) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", stage, name);
        write_file(path, va_arg(ap, const char *));
    }
    va_end(ap);
    ck_assert_int_eq(sae_checkpoint_commit(dir, stage), SAE_OK);
}

static void ck_current(const char *want_gen)
{
    char path[512], want[512];
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_OK);
    snprintf(want, sizeof want, "%s/%s", dir, want_gen);
    ck_assert_str_eq(path, want);
    ck_assert_str_eq(link_of(in_dir("current")), want_gen);
}

START_TEST(first_generation)
{
    char stage[512], want[600];
    ck_assert_int_eq(sae_checkpoint_begin(dir, stage, sizeof stage), SAE_OK); /* makes dir */
    snprintf(want, sizeof want, "%s/gen-1", dir);
    ck_assert_str_eq(stage, want);
    ck_assert_str_eq(listing(), "gen-1 ");
    char path[600];
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_E_IO); /* nothing yet */
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "no checkpoint"));

    /* a model and its optimizer, as a trainer writes them */
    sae_model *m = test_random_model(SAE_ARCH_JUMPRELU, 0.05, 6, 10, 3, sd), *back;
    sae_optimizer *o, *o_back;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    ck_assert_int_eq(sae_model_save(m, stage), SAE_OK);
    ck_assert_int_eq(sae_optimizer_save(o, stage), SAE_OK);
    snprintf(path, sizeof path, "%s/state.txt", stage);
    write_file(path, "step 0\n");
    ck_assert_int_eq(sae_checkpoint_commit(dir, stage), SAE_OK);

    ck_assert_str_eq(listing(), "cfg.json current gen-1 optimizer.safetensors "
                                "sae_weights.safetensors state.txt ");
    ck_current("gen-1");
    ck_assert_str_eq(link_of(in_dir("cfg.json")), "current/cfg.json");
    ck_assert_str_eq(link_of(in_dir("sae_weights.safetensors")), "current/sae_weights.safetensors");
    ck_file_text(in_dir("state.txt"), "step 0\n");
    /* DIR reads as a flat checkpoint: SAELens's cfg.json + weights, our loaders */
    model_snapshot snap;
    snapshot_take(&snap, m);
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    ck_assert(snapshot_equal(&snap, back));
    ck_assert_int_eq(sae_optimizer_load(&o_back, back, dir), SAE_OK);
    snapshot_free(&snap);
    sae_optimizer_free(o_back);
    sae_optimizer_free(o);
    sae_model_free(back);
    sae_model_free(m);
}
END_TEST

START_TEST(generations_replace_each_other)
{
    commit_files("a", "1", "old-only", "x", NULL);
    ck_current("gen-1");
    commit_files("a", "2", "new-only", "y", NULL);
    /* gen-1 and the link to the file only it had are gone; the new file's is there */
    ck_assert_str_eq(listing(), "a current gen-2 new-only ");
    ck_current("gen-2");
    ck_file_text(in_dir("a"), "2");
    ck_file_text(in_dir("new-only"), "y");
    /* other files of the directory (a log, say) are left alone */
    write_file(in_dir("run.csv"), "log\n");
    commit_files("a", "3", NULL);
    ck_assert_str_eq(listing(), "a current gen-3 run.csv ");
    ck_file_text(in_dir("run.csv"), "log\n");
}
END_TEST

START_TEST(abort_leaves_dir_as_it_was)
{
    commit_files("a", "1", NULL);
    char before[2048], stage[512], path[700];
    snprintf(before, sizeof before, "%s", listing());
    ck_assert_int_eq(sae_checkpoint_begin(dir, stage, sizeof stage), SAE_OK);
    snprintf(path, sizeof path, "%s/a", stage);
    write_file(path, "half written");
    ck_assert_int_eq(sae_checkpoint_abort(dir, stage), SAE_OK);
    ck_assert_str_eq(listing(), before);
    ck_current("gen-1");
    ck_file_text(in_dir("a"), "1");
    /* the current generation is never aborted */
    char cur[512];
    ck_assert_int_eq(sae_checkpoint_current(dir, cur, sizeof cur), SAE_OK);
    ck_assert_int_eq(sae_checkpoint_abort(dir, cur), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "current generation"));
    ck_assert_str_eq(listing(), before);
}
END_TEST

/* What a writer killed at some point leaves, cleared by the next begin. */
START_TEST(stale_leftovers_cleared)
{
    commit_files("a", "1", NULL);
    ck_assert_int_eq(mkdir(in_dir("gen-7"), 0777), 0); /* a stage never committed */
    write_file(in_dir("gen-7/a"), "partial");
    ck_assert_int_eq(mkdir(in_dir("gen-0"), 0777), 0); /* an old generation */
    ck_assert_int_eq(symlink("gen-7", in_dir(".sae-current")), 0);
    ck_assert_int_eq(symlink("current/a", in_dir(".sae-link-a")), 0);
    char stage[512], want[512];
    ck_assert_int_eq(sae_checkpoint_begin(dir, stage, sizeof stage), SAE_OK);
    snprintf(want, sizeof want, "%s/gen-8", dir); /* numbers never go back */
    ck_assert_str_eq(stage, want);
    ck_assert_str_eq(listing(), "a current gen-1 gen-8 ");
    ck_assert_int_eq(sae_checkpoint_abort(dir, stage), SAE_OK);
    ck_current("gen-1");
}
END_TEST

/* A directory of flat files, as sae_model_save(m, dir) writes it. */
START_TEST(flat_directory_read_and_converted)
{
    ck_assert_int_eq(mkdir(dir, 0777), 0);
    sae_model *m = test_random_model(SAE_ARCH_RELU, 0, 4, 8, 5, sd);
    ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
    write_file(in_dir("state.txt"), "old state");
    write_file(in_dir("notes.txt"), "mine");
    char path[512];
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_OK);
    ck_assert_str_eq(path, dir);
    struct stat before;
    ck_assert_int_eq(stat(in_dir("notes.txt"), &before), 0);

    commit_files("sae_weights.safetensors", "new weights", "state.txt", "new state", NULL);
    ck_current("gen-1"); /* gen-0 held the adopted files while they became links */
    ck_assert_str_eq(listing(), "cfg.json current gen-1 notes.txt sae_weights.safetensors state.txt ");
    ck_file_text(in_dir("state.txt"), "new state");
    ck_assert_str_eq(link_of(in_dir("state.txt")), "current/state.txt");
    /* files the new generation does not have stay as they were */
    ck_assert_str_eq(link_of(in_dir("cfg.json")), "");
    ck_assert_str_eq(link_of(in_dir("notes.txt")), "");
    struct stat after;
    ck_assert_int_eq(stat(in_dir("notes.txt"), &after), 0);
    ck_assert(after.st_ino == before.st_ino && after.st_nlink == 1);
    ck_file_text(in_dir("notes.txt"), "mine");
    sae_model_free(m);
}
END_TEST

START_TEST(bad_arguments)
{
    char stage[512], path[512];
    ck_assert_int_eq(sae_checkpoint_begin(NULL, stage, sizeof stage), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_checkpoint_begin: dir is NULL"));
    ck_assert_int_eq(sae_checkpoint_begin("", stage, sizeof stage), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_begin(dir, NULL, sizeof stage), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_begin(dir, stage, strlen(dir) + 8), SAE_E_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "capacity"));
    ck_assert_int_eq(access(dir, F_OK), -1); /* nothing created */
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_E_IO);
    ck_assert_int_eq(sae_checkpoint_current(NULL, path, sizeof path), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_current(dir, NULL, sizeof path), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_commit(dir, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_checkpoint_abort(NULL, "x/gen-1"), SAE_E_INVALID_ARG);

    commit_files("a", "1", NULL);
    char before[2048];
    snprintf(before, sizeof before, "%s", listing());
    ck_assert_int_eq(sae_checkpoint_current(dir, path, strlen(dir) + 3), SAE_E_INVALID_ARG);
    /* stages that are not this directory's */
    static const char *const not_stages[] = {"gen-2", "/tmp/gen-2", "%s/gen-02", "%s/gen-x",
                                             "%s/current", "%s/gen-2/", "%s//gen-2", "%s/a"};
    for (size_t i = 0; i < sizeof not_stages / sizeof *not_stages; i++) {
        snprintf(stage, sizeof stage, not_stages[i], dir);
        ck_assert_int_eq(sae_checkpoint_commit(dir, stage), SAE_E_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(sae_error_detail(), "not a staging directory"));
        ck_assert_int_eq(sae_checkpoint_abort(dir, stage), SAE_E_INVALID_ARG);
    }
    /* the current generation again; a stage that is not a directory */
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_OK);
    ck_assert_int_eq(sae_checkpoint_commit(dir, path), SAE_E_INVALID_ARG);
    snprintf(stage, sizeof stage, "%s/gen-9", dir);
    ck_assert_int_eq(sae_checkpoint_commit(dir, stage), SAE_E_IO);
    ck_assert_str_eq(listing(), before);

    /* stages holding what a generation cannot: nothing, a subdirectory, a
     * hidden file, a link, a layout name */
    static const char *const bad[] = {NULL, "sub/", ".hidden", "link@", "current", "gen-3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(sae_checkpoint_begin(dir, stage, sizeof stage), SAE_OK);
        char entry[700];
        if (bad[i]) {
            snprintf(entry, sizeof entry, "%s/%.*s", stage, (int)strcspn(bad[i], "/@"), bad[i]);
            if (strchr(bad[i], '/'))
                ck_assert_int_eq(mkdir(entry, 0777), 0);
            else if (strchr(bad[i], '@'))
                ck_assert_int_eq(symlink("../a", entry), 0);
            else
                write_file(entry, "x");
        }
        ck_assert_int_eq(sae_checkpoint_commit(dir, stage), SAE_E_INVALID_ARG);
        ck_assert_ptr_nonnull(strstr(sae_error_detail(), "sae_checkpoint_commit: "));
        if (bad[i] && strchr(bad[i], '/'))
            rmdir(entry);
        ck_assert_int_eq(sae_checkpoint_abort(dir, stage), SAE_OK);
        ck_assert_str_eq(listing(), before);
        ck_current("gen-1");
    }
}
END_TEST

/* DIR/current that is not ours: left alone. */
START_TEST(foreign_current)
{
    char stage[512], path[512];
    ck_assert_int_eq(mkdir(dir, 0777), 0);
    write_file(in_dir("current"), "a file");
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "not a symbolic link"));
    ck_assert_int_eq(sae_checkpoint_begin(dir, stage, sizeof stage), SAE_E_FORMAT);
    ck_assert_str_eq(listing(), "current ");
    unlink(in_dir("current"));
    ck_assert_int_eq(symlink("../elsewhere", in_dir("current")), 0);
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "'../elsewhere'"));
    unlink(in_dir("current"));
    ck_assert_int_eq(symlink("gen-4", in_dir("current")), 0); /* a generation that is gone */
    ck_assert_int_eq(sae_checkpoint_current(dir, path, sizeof path), SAE_E_IO);
    ck_assert_ptr_nonnull(strstr(sae_error_detail(), "gen-4, which is missing"));
}
END_TEST

typedef struct commit_ctx {
    char stage[512];
} commit_ctx;

static int try_commit(void *ctx)
{
    commit_ctx *c = ctx;
    return sae_checkpoint_commit(dir, c->stage);
}

static void still_gen_1(void *ctx)
{
    (void)ctx;
    ck_current("gen-1");
    ck_file_text(in_dir("a"), "1");
}

static int try_begin(void *ctx)
{
    commit_ctx *c = ctx;
    int rc = sae_checkpoint_begin(dir, c->stage, sizeof c->stage);
    if (rc == SAE_OK)
        ck_assert_int_eq(sae_checkpoint_abort(dir, c->stage), SAE_OK);
    return rc;
}

START_TEST(allocation_failures)
{
    commit_files("a", "1", NULL);
    commit_ctx c;
    ck_assert_int_ge(nomem_fail_each_allocation(try_begin, &c, still_gen_1), 1);
    ck_assert_int_eq(sae_checkpoint_begin(dir, c.stage, sizeof c.stage), SAE_OK);
    for (int i = 0; i < 40; i++) { /* enough names to grow the list */
        char name[700];
        snprintf(name, sizeof name, "%s/file-%02d-%0100d", c.stage, i, 0);
        write_file(name, "x");
    }
    char path[700];
    snprintf(path, sizeof path, "%s/a", c.stage);
    write_file(path, "2");
    ck_assert_int_ge(nomem_fail_each_allocation(try_commit, &c, still_gen_1), 1);
    ck_current("gen-2");
    ck_file_text(in_dir("a"), "2");
}
END_TEST

static Suite *checkpoint_dir_suite(void)
{
    Suite *s = suite_create("checkpoint_dir");
    TCase *tc = tcase_create("layout");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, first_generation);
    tcase_add_test(tc, generations_replace_each_other);
    tcase_add_test(tc, abort_leaves_dir_as_it_was);
    tcase_add_test(tc, stale_leftovers_cleared);
    tcase_add_test(tc, flat_directory_read_and_converted);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, foreign_current);
    tcase_add_test(tc, allocation_failures);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(checkpoint_dir_suite)
