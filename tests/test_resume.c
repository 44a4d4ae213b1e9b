/*
 * Resuming training in a new process: N steps, a checkpoint (model and
 * optimizer), N more steps in another process give the bits of 2N steps in
 * one, for each architecture; without the optimizer's state they do not.
 * Each run is this program started again (run_self), so all use the same
 * BLAS kernels.
 */
#define _GNU_SOURCE /* unshare, mount, mkdtemp, realpath */
#include "checkpoint_util.h"
#include "nomem.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- resuming in a new process ------------------------------------------------ */

enum { RESUME_D_IN = 8, RESUME_D_SAE = 16, RESUME_TOKENS = 32, RESUME_STEPS = 6 };

/* The runs of the resume test, by architecture. TopK and BatchTopK keep few
 * features per token and count a feature dead after 8 silent tokens, so
 * that AuxK is on and the activity counters matter; JumpReLU starts with
 * thresholds near 1, whose logarithms do not survive logf(expf(t)), on data
 * large enough to cross them, with a wide band so that they train. */
static const struct resume_arch {
    const char *name;
    int arch;
    double param;
    double scale; /* of the data */
} resume_archs[] = {
    {"standard", SAE_ARCH_RELU, 0.0, 1.0},
    {"topk", SAE_ARCH_TOPK, 2.0, 1.0},
    {"batchtopk", SAE_ARCH_BATCHTOPK, 2.0, 1.0},
    {"jumprelu", SAE_ARCH_JUMPRELU, 0.9, 8.0},
};
#define RESUME_DEAD_WINDOW 8 /* tokens: a quarter of a batch */

static const struct resume_arch *resume_arch_named(const char *name)
{
    for (size_t k = 0; k < sizeof resume_archs / sizeof resume_archs[0]; k++)
        if (strcmp(resume_archs[k].name, name) == 0)
            return &resume_archs[k];
    return NULL;
}

/* Steps first..first+count-1, batch s drawn from seed 5000 + s (no Check
 * calls: the child process runs this outside a test). */
static int train_steps(sae_model *m, sae_optimizer *o, const struct resume_arch *ra, size_t first,
                       size_t count)
{
    float x[RESUME_TOKENS * RESUME_D_IN];
    for (size_t s = first; s < first + count; s++) {
        test_rng r = {5000 + s};
        for (size_t k = 0; k < RESUME_TOKENS * RESUME_D_IN; k++)
            x[k] = (float)((test_normal(&r) + 0.3) * ra->scale);
        int rc = sae_step(m, o, x, RESUME_TOKENS, NULL);
        if (rc != SAE_OK)
            return rc;
    }
    return SAE_OK;
}

/* Every option away from its default (the architecture options too, which
 * the others ignore). */
static int configure(sae_optimizer *o)
{
    const struct { int option; double value; } opts[] = {
        {SAE_OPT_LR, 2e-3}, {SAE_OPT_BETA1, 0.85}, {SAE_OPT_BETA2, 0.995},
        {SAE_OPT_EPS, 1e-6}, {SAE_OPT_L1_COEFF, 0.3}, {SAE_OPT_GRAD_CLIP, 0.5},
        {SAE_OPT_AUXK_COEFF, 0.25}, {SAE_OPT_AUXK_K, 3}, {SAE_OPT_DEAD_WINDOW, RESUME_DEAD_WINDOW},
        {SAE_OPT_JUMPRELU_BANDWIDTH, 0.5}, {SAE_OPT_THRESHOLD_BETA, 0.75}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
        if (sae_optimizer_set(o, opts[k].option, opts[k].value) != SAE_OK)
            return 1;
    return 0;
}

/* Children of the resume test, each a new process (arch: a resume_archs name):
 *   --reference dir arch  2N uninterrupted steps, saved as dir/reference{,.opt}
 *   --first dir arch      N steps, saved as a checkpoint directory dir/ckpt
 *   --resume dir arch     load dir/ckpt, N more steps, saved as dir/resumed{,.opt}
 *   --fresh dir arch      load the model of dir/ckpt but a new optimizer (its
 *                         moments, step count, counters and options lost), N
 *                         more steps, saved as dir/fresh */
static int child_resume(const char *mode, const char *dir, const char *arch)
{
    const struct resume_arch *ra = resume_arch_named(arch);
    if (!ra)
        return 1;
    char path[PATH_MAX], opt_path[PATH_MAX], ckpt[PATH_MAX];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", dir);
    sae_model *m;
    sae_optimizer *o;
    size_t first = 0, steps = RESUME_STEPS;
    const char *out = NULL;
    if (strcmp(mode, "--reference") == 0 || strcmp(mode, "--first") == 0) {
        if (sae_model_create_arch(&m, RESUME_D_IN, RESUME_D_SAE, 9, ra->arch, ra->param) != SAE_OK ||
            sae_optimizer_create(&o, m) != SAE_OK || configure(o) != 0)
            return 2;
        if (strcmp(mode, "--reference") == 0) {
            steps = 2 * RESUME_STEPS;
            out = "reference";
        } else {
            if (mkdir(ckpt, 0755) != 0)
                return 3;
            out = "ckpt";
        }
    } else {
        if (sae_model_load(&m, ckpt) != SAE_OK)
            return 4;
        int rc = strcmp(mode, "--resume") == 0 ? sae_optimizer_load(&o, m, ckpt)
                                               : sae_optimizer_create(&o, m);
        if (rc != SAE_OK || (strcmp(mode, "--fresh") == 0 && configure(o) != 0))
            return 5;
        first = RESUME_STEPS;
        out = strcmp(mode, "--resume") == 0 ? "resumed" : "fresh";
    }
    if (train_steps(m, o, ra, first, steps) != SAE_OK)
        return 6;
    snprintf(path, sizeof path, "%s/%s", dir, out);
    snprintf(opt_path, sizeof opt_path, "%s/%s%s", dir, out, strcmp(out, "ckpt") ? ".opt" : "");
    if (sae_model_save(m, path) != SAE_OK || sae_optimizer_save(o, opt_path) != SAE_OK)
        return 7;
    sae_optimizer_free(o);
    sae_model_free(m);
    return 0;
}

START_TEST(resume_in_a_new_process_is_bit_identical)
{
    /* Every training run is its own process started the same way, so all use
     * the same BLAS kernels (under valgrind this process would not). */
    char *top = make_tmpdir();
    for (size_t a = 0; a < sizeof resume_archs / sizeof resume_archs[0]; a++) {
        const struct resume_arch *ra = &resume_archs[a];
        char *dir = join(top, ra->name);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        expect_exit0(run_self("--reference", dir, ra->name, NULL));
        expect_exit0(run_self("--first", dir, ra->name, NULL));
        expect_exit0(run_self("--resume", dir, ra->name, NULL));
        expect_exit0(run_self("--fresh", dir, ra->name, NULL));
        char *ref_path = join(dir, "reference"), *ref_opt = join(dir, "reference.opt");
        char *res_path = join(dir, "resumed"), *res_opt = join(dir, "resumed.opt");
        char *fresh_path = join(dir, "fresh"), *ckpt = join(dir, "ckpt");
        sae_model *ref, *resumed, *fresh, *mid;
        ck_assert_int_eq(sae_model_load(&ref, ref_path), SAE_OK);
        ck_assert_int_eq(sae_model_load(&resumed, res_path), SAE_OK);
        ck_assert_int_eq(sae_model_load(&fresh, fresh_path), SAE_OK);
        ck_assert_int_eq(sae_model_arch(ref), ra->arch);
        /* N + N steps across two processes == 2N steps in one, bit for bit */
        ck_assert_msg(models_equal(ref, resumed), "%s", ra->name);
        bytes a1 = read_file(ref_opt), b1 = read_file(res_opt);
        ck_assert_msg(same_bytes(a1, b1), "%s", ra->name); /* moments, steps, counters, options */
        free(a1.p), free(b1.p);
        sae_optimizer *o;
        ck_assert_int_eq(sae_optimizer_load(&o, resumed, res_opt), SAE_OK);
        ck_assert_uint_eq(sae_optimizer_steps(o), 2 * RESUME_STEPS);
        sae_optimizer_free(o);
        /* what the checkpoint had to carry */
        ck_assert_int_eq(sae_model_load(&mid, ckpt), SAE_OK);
        ck_assert_int_eq(sae_optimizer_load(&o, mid, ckpt), SAE_OK);
        size_t dead;
        ck_assert_int_eq(sae_optimizer_dead_count(o, RESUME_DEAD_WINDOW, &dead), SAE_OK);
        if (ra->arch == SAE_ARCH_TOPK || ra->arch == SAE_ARCH_BATCHTOPK)
            ck_assert_msg(dead > 0, "%s: AuxK has no dead features", ra->name); /* AuxK on */
        if (ra->arch == SAE_ARCH_BATCHTOPK) {
            float thr[2];
            ck_assert_int_eq(sae_model_get_tensor(mid, SAE_THRESHOLD, thr, 1), SAE_OK);
            ck_assert_int_eq(sae_model_get_tensor(ref, SAE_THRESHOLD, thr + 1, 1), SAE_OK);
            ck_assert(thr[0] > 0.0f && thr[1] > 0.0f && thr[0] != thr[1]); /* set, and moving */
        }
        if (ra->arch == SAE_ARCH_JUMPRELU) {
            int lossy = 0, moved = 0;
            for (size_t i = 0; i < RESUME_D_SAE; i++) {
                float t = sae__log_thr(mid)[i];
                lossy += logf(expf(t)) != t;
                moved += t != (float)log(0.9);
            }
            ck_assert_int_gt(lossy, 0);
            ck_assert_int_gt(moved, 0);
        }
        sae_optimizer_free(o);
        sae_model_free(mid);
        /* The comparison can fail: without the optimizer's state the same data
         * gives different parameters. */
        ck_assert_msg(!models_equal(ref, fresh), "%s", ra->name);
        free(ref_path), free(ref_opt), free(res_path), free(res_opt), free(fresh_path), free(ckpt);
        sae_model_free(ref);
        sae_model_free(resumed);
        sae_model_free(fresh);
        free(dir);
    }
    remove_tree(top);
    free(top);
}
END_TEST

static Suite *resume_suite(void)
{
    Suite *s = suite_create("resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, resume_in_a_new_process_is_bit_identical);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (!realpath(argv[0], self_exe))
        return 99;
    if (argc == 4)
        return child_resume(argv[1], argv[2], argv[3]);
    return test_run_suite(resume_suite());
}
