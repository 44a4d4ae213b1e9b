/*
 * Checkpoints on disk: a model and optimizer saved to a file or a directory
 * (with SAELens's cfg.json, checked per architecture) and loaded back; I/O
 * errors with their details; and atomic saves that fail (missing directory,
 * /proc, a file-size limit, a crash mid-write in a child process, a full
 * tmpfs) leave the previous file exactly as it was.
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

/* ---- files and directories ----------------------------------------------------- */

START_TEST(file_and_directory_round_trip)
{
    char *dir = make_tmpdir();
    sae_model *m = trained_model(4, 6, 21);
    bytes enc = model_bytes(m);
    char *file = join(dir, "model.safetensors");
    ck_assert_int_eq(sae_model_save(m, file), SAE_OK);
    bytes on_disk = read_file(file);
    ck_assert(same_bytes(on_disk, enc)); /* the file is the buffer encoding */
    free(on_disk.p);
    ck_assert_int_eq(count_entries(dir), 1); /* no temporary left */
    struct stat st;
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0666 & ~(unsigned)umask(022)); /* like fopen */
    sae_model *back;
    ck_assert_int_eq(sae_model_load(&back, file), SAE_OK);
    ck_assert(models_equal(m, back));
    sae_model_free(back);
    /* saving again replaces the file */
    sae_model *other = trained_model(4, 6, 22);
    ck_assert_int_eq(sae_model_save(other, file), SAE_OK);
    ck_assert_int_eq(sae_model_load(&back, file), SAE_OK);
    ck_assert(models_equal(other, back));
    sae_model_free(back);
    sae_model_free(other);
    /* a directory gets sae_weights.safetensors and cfg.json */
    char *ckpt = join(dir, "ckpt");
    ck_assert_int_eq(mkdir(ckpt, 0755), 0);
    ck_assert_int_eq(sae_model_save(m, ckpt), SAE_OK);
    ck_assert_int_eq(count_entries(ckpt), 2);
    char *weights = join(ckpt, "sae_weights.safetensors");
    on_disk = read_file(weights);
    ck_assert(same_bytes(on_disk, enc));
    free(on_disk.p);
    char *cfg = join(ckpt, "cfg.json");
    bytes c = read_file(cfg);
    c.p[c.len] = '\0';
    const char *expect[] = {"\"architecture\": \"standard\"", "\"d_in\": 4,", "\"d_sae\": 6,",
                            "\"dtype\": \"float32\"", "\"apply_b_dec_to_input\": true",
                            "\"normalize_activations\": \"none\"",
                            /* SAELens 6's layout, which keeps the producer */
                            "\"metadata\": {\n    \"sae_lens_version\": \"6.0.0\",",
                            "\"producer\": \"libsae\",\n    \"libsae_version\": \"" TEST_VERSION_TEXT "\"\n  }"};
    for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++)
        ck_assert_msg(strstr((char *)c.p, expect[k]) != NULL, "cfg.json lacks %s", expect[k]);
    free(c.p);
    ck_assert_int_eq(sae_model_load(&back, ckpt), SAE_OK);
    ck_assert(models_equal(m, back));
    sae_model_free(back);
    /* a trailing slash names the same directory */
    char *slash = join(ckpt, "");
    ck_assert_int_eq(sae_model_load(&back, slash), SAE_OK);
    sae_model_free(back);
    ck_assert_int_eq(sae_model_save(m, slash), SAE_OK);
    ck_assert_int_eq(count_entries(ckpt), 2);
    free(slash);
    /* a relative path without a directory part */
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(dir), 0);
    ck_assert_int_eq(sae_model_save(m, "relative.safetensors"), SAE_OK);
    ck_assert_int_eq(sae_model_load(&back, "relative.safetensors"), SAE_OK);
    sae_model_free(back);
    ck_assert_int_eq(chdir(cwd), 0);
    free(cfg);
    free(weights);
    free(ckpt);
    free(file);
    free(enc.p);
    sae_model_free(m);
    remove_tree(dir);
    free(dir);
}
END_TEST

START_TEST(checks_saelens_config)
{
    char *dir = make_tmpdir();
    sae_model *m = trained_model(4, 6, 3);
    ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
    char *cfg = join(dir, "cfg.json");
    struct { const char *json; int expect; } cases[] = {
        /* as SAELens 6 writes it: nested metadata, floats, nulls */
        {"{\"d_in\": 4, \"d_sae\": 6, \"dtype\": \"float32\", \"device\": \"cpu\", "
         "\"apply_b_dec_to_input\": true, \"normalize_activations\": \"none\", "
         "\"reshape_activations\": \"none\", \"metadata\": {\"sae_lens_version\": \"6.5.1\", "
         "\"hook_name\": \"blocks.8.hook_resid_pre\", \"context_size\": 128, "
         "\"seqpos_slice\": [null]}, \"architecture\": \"standard\", \"l1_coefficient\": 5.0e0, "
         "\"lr\": 5e-05, \"decoder_init_norm\": 0.1}", SAE_OK},
        {"{}", SAE_OK},
        {"{\"normalize_activations\": null, \"activation_fn_str\": \"relu\"}", SAE_OK},
        {"{\"normalize_activations\": false}", SAE_OK},
        {"{\"architecture\": \"jumprelu\"}", SAE_E_FORMAT},
        {"{\"architecture\": \"topk\"}", SAE_E_FORMAT},
        {"{\"architecture\": \"standard\", \"activation_fn_str\": \"topk\", "
         "\"activation_fn_kwargs\": {\"k\": 32}}", SAE_E_FORMAT},
        {"{\"activation_fn\": \"topk\"}", SAE_E_FORMAT},
        {"{\"apply_b_dec_to_input\": false}", SAE_E_FORMAT},
        {"{\"apply_b_dec_to_input\": \"true\"}", SAE_E_FORMAT},
        {"{\"normalize_activations\": \"expected_average_only_in\"}", SAE_E_FORMAT},
        {"{\"normalize_activations\": true}", SAE_E_FORMAT},
        {"{\"d_in\": 5}", SAE_E_FORMAT},
        {"{\"d_sae\": 7}", SAE_E_FORMAT},
        {"{\"d_in\": \"4\"}", SAE_E_FORMAT},
        {"{\"d_in\": 4.0}", SAE_E_FORMAT},
        {"{\"d_in\": 4, \"d_in\": 4}", SAE_E_FORMAT},
        {"[]", SAE_E_FORMAT},
        {"", SAE_E_FORMAT},
        {"{\"architecture\": \"standard\",}", SAE_E_FORMAT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_file(cfg, cases[k].json, strlen(cases[k].json));
        sae_model *back = m;
        int rc = sae_model_load(&back, dir);
        ck_assert_msg(rc == cases[k].expect, "case %zu: %d", k, rc);
        if (rc == SAE_OK) {
            ck_assert(models_equal(m, back));
            sae_model_free(back);
        } else {
            ck_assert_ptr_null(back);
        }
    }
    /* larger than 1 MB: refused without reading it all */
    char *big = malloc((1 << 20) + 2);
    memset(big, ' ', (1 << 20) + 2);
    big[0] = '{';
    big[(1 << 20) + 1] = '}';
    write_file(cfg, big, (1 << 20) + 2);
    free(big);
    sae_model *back;
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_FORMAT);
    /* no cfg.json at all is fine */
    unlink(cfg);
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    sae_model_free(back);
    /* cfg.json that is a directory cannot be read */
    ck_assert_int_eq(mkdir(cfg, 0755), 0);
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_IO);
    free(cfg);
    sae_model_free(m);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* cfg.json as written for each architecture, and what it must agree with. */
START_TEST(saelens_config_per_architecture)
{
    char *dir = make_tmpdir();
    char *cfg = join(dir, "cfg.json");
    static const struct {
        size_t c;
        const char *expect_keys[6];
    } written[] = {
        {0, {"\"architecture\": \"standard\"", "\"activation_fn_str\": \"relu\"",
             "\"activation_fn_kwargs\": {}"}},
        {1, {"\"architecture\": \"topk\"", "\"k\": 2,", "\"activation_fn_str\": \"topk\"",
             "\"activation_fn_kwargs\": {\"k\": 2}", "\"rescale_acts_by_decoder_norm\": false"}},
        {2, {"\"architecture\": \"jumprelu\"", "\"activation_fn_str\": \"relu\"",
             "\"activation_fn_kwargs\": {}"}},
        {3, {"\"architecture\": \"jumprelu\"", "\"activation_fn_str\": \"relu\"",
             "\"activation_fn_kwargs\": {}"}},
    };
    for (size_t w = 0; w < 4; w++) {
        sae_model *m = edit_base_model(written[w].c), *back;
        ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
        bytes c = read_file(cfg);
        c.p[c.len] = '\0';
        for (size_t k = 0; k < 6 && written[w].expect_keys[k]; k++)
            ck_assert_msg(strstr((char *)c.p, written[w].expect_keys[k]) != NULL, "%s: no %s",
                          arch_cases[written[w].c].name, written[w].expect_keys[k]);
        if (written[w].c != 1)
            ck_assert_ptr_null(strstr((char *)c.p, "\"k\""));
        free(c.p);
        ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
        ck_assert(models_equal(m, back));
        sae_model_free(back);
        sae_model_free(m);
    }
    free(cfg);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* Other configurations beside each architecture's weights: accepted when
 * they agree with the weights, SAE_E_FORMAT otherwise. */
START_TEST(saelens_config_must_agree)
{
    char *dir = make_tmpdir();
    char *cfg = join(dir, "cfg.json");
    static const struct { size_t c; const char *json; int expect; } cases[] = {
        {1, "{\"architecture\": \"topk\", \"k\": 2}", SAE_OK},
        {1, "{\"architecture\": \"topk\", \"activation_fn_kwargs\": {\"k\": 2}}", SAE_OK},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_kwargs\": {}, "
            "\"rescale_acts_by_decoder_norm\": false, \"activation_fn\": \"topk\"}", SAE_OK},
        {1, "{\"architecture\": \"topk\"}", SAE_E_FORMAT}, /* no k */
        {1, "{\"architecture\": \"topk\", \"k\": 3}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_kwargs\": {\"k\": 3}}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"activation_fn_kwargs\": {\"k\": 3}}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 0}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2.0}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": \"2\"}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_kwargs\": [2]}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"activation_fn_str\": \"relu\"}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"topk\", \"k\": 2, \"apply_b_dec_to_input\": false}", SAE_E_FORMAT},
        /* before SAELens 6 TopK was also "standard" with a topk activation;
         * 6.x reads that as ReLU: ambiguous */
        {1, "{\"architecture\": \"standard\", \"activation_fn_str\": \"topk\", "
            "\"activation_fn_kwargs\": {\"k\": 2}}", SAE_E_FORMAT},
        {1, "{}", SAE_E_FORMAT}, /* "standard" by default */
        {1, "{\"architecture\": \"jumprelu\"}", SAE_E_FORMAT},
        {1, "{\"architecture\": \"batchtopk\", \"k\": 2}", SAE_E_FORMAT},
        {1, "{\"architecture\": [\"topk\"], \"k\": 2}", SAE_E_FORMAT},
        {2, "{\"architecture\": \"jumprelu\"}", SAE_OK},
        {2, "{\"architecture\": \"jumprelu\", \"k\": 7, \"activation_fn\": \"relu\"}", SAE_OK},
        {2, "{\"architecture\": \"topk\", \"k\": 2}", SAE_E_FORMAT},
        {2, "{\"architecture\": \"batchtopk\", \"k\": 2}", SAE_E_FORMAT},
        {2, "{\"architecture\": \"standard\"}", SAE_E_FORMAT},
        {3, "{\"architecture\": \"jumprelu\", \"d_sae\": 5}", SAE_OK},
        {3, "{\"architecture\": \"jumprelu\", \"activation_fn_str\": \"topk\"}", SAE_E_FORMAT},
        {3, "{\"architecture\": \"jumprelu\", \"rescale_acts_by_decoder_norm\": 1}", SAE_E_FORMAT},
        {3, "{\"architecture\": \"gated\"}", SAE_E_FORMAT},
        {3, "{}", SAE_E_FORMAT},
        {0, "{\"architecture\": \"standard\", \"rescale_acts_by_decoder_norm\": false}", SAE_OK},
        {0, "{\"architecture\": \"topk\", \"k\": 2}", SAE_E_FORMAT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        sae_model *m = edit_base_model(cases[k].c), *back = m;
        ck_assert_int_eq(sae_model_save(m, dir), SAE_OK);
        write_file(cfg, cases[k].json, strlen(cases[k].json));
        int rc = sae_model_load(&back, dir);
        ck_assert_msg(rc == cases[k].expect, "case %zu (%s): %d", k, cases[k].json, rc);
        if (rc == SAE_OK) {
            ck_assert(models_equal(m, back));
            sae_model_free(back);
        } else {
            ck_assert_ptr_null(back);
        }
        sae_model_free(m);
    }
    free(cfg);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* SAELens's own TopK directory has no libsae metadata: cfg.json gives k,
 * and the weights alone are a ReLU SAE. */
START_TEST(saelens_topk_directory)
{
    char *dir = make_tmpdir();
    char *cfg = join(dir, "cfg.json");
    sae_model *topk = edit_base_model(1), *back;
    bytes b = model_bytes(topk);
    bytes plain = st_drop_metadata(b);
    char *weights = join(dir, "sae_weights.safetensors");
    write_file(weights, plain.p, plain.len);
    const char *saelens = "{\"architecture\": \"topk\", \"d_in\": 3, \"d_sae\": 5, \"k\": 2, "
                          "\"dtype\": \"float32\", \"device\": \"cpu\", \"apply_b_dec_to_input\": true, "
                          "\"normalize_activations\": \"none\", \"reshape_activations\": \"none\", "
                          "\"rescale_acts_by_decoder_norm\": false, "
                          "\"metadata\": {\"sae_lens_version\": \"6.12.1\"}}";
    write_file(cfg, saelens, strlen(saelens));
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    ck_assert(models_equal(topk, back));
    sae_model_free(back);
    /* trained with rescale_acts_by_decoder_norm (SAELens's default since
     * 6.14): folded at load as SAELens's _fold_norm_topk, n_i = ||W_dec[i,:]||:
     * unit decoder rows, W_enc's columns and b_enc times n_i
     * (tests/python/test_saelens_files.py checks the forward) */
    const char *rescaled = "{\"architecture\": \"topk\", \"k\": 2, "
                           "\"rescale_acts_by_decoder_norm\": true}";
    write_file(cfg, rescaled, strlen(rescaled));
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_OK);
    {
        float w0[15], w1[15], e0[15], e1[15], b0[5], b1[5];
        ck_assert_int_eq(sae_model_get_tensor(topk, SAE_W_DEC, w0, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(back, SAE_W_DEC, w1, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(topk, SAE_W_ENC, e0, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(back, SAE_W_ENC, e1, 15), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(topk, SAE_B_ENC, b0, 5), SAE_OK);
        ck_assert_int_eq(sae_model_get_tensor(back, SAE_B_ENC, b1, 5), SAE_OK);
        for (size_t i = 0; i < 5; i++) {
            double n = sqrt(pow(w0[i * 3], 2) + pow(w0[i * 3 + 1], 2) + pow(w0[i * 3 + 2], 2));
            ck_assert_double_gt(fabs(n - 1.0), 1e-3); /* the fold is not the identity */
            ck_assert_double_eq_tol(b1[i], b0[i] * n, 1e-6 * (1 + fabs(b0[i] * n)));
            for (size_t j = 0; j < 3; j++) {
                ck_assert_double_eq_tol(w1[i * 3 + j], w0[i * 3 + j] / n, 1e-6);
                ck_assert_double_eq_tol(e1[j * 5 + i], e0[j * 5 + i] * n,
                                        1e-6 * (1 + fabs(e0[j * 5 + i] * n)));
            }
        }
    }
    sae_model_free(back);
    const char *too_big = "{\"architecture\": \"topk\", \"k\": 6}";
    write_file(cfg, too_big, strlen(too_big));
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_FORMAT); /* k > d_sae */
    ck_assert_int_eq(sae_model_load(&back, weights), SAE_OK);
    ck_assert_int_eq(sae_model_arch(back), SAE_ARCH_RELU);
    sae_model_free(back);
    free(weights);
    free(plain.p);
    free(b.p);
    sae_model_free(topk);
    free(cfg);
    remove_tree(dir);
    free(dir);
}
END_TEST

START_TEST(io_errors)
{
    char *dir = make_tmpdir();
    sae_model *m = trained_model(3, 5, 8);
    sae_optimizer *o;
    ck_assert_int_eq(sae_optimizer_create(&o, m), SAE_OK);
    sae_model *back = m;
    sae_optimizer *oback = o;
    /* NULL arguments */
    ck_assert_int_eq(sae_model_save(NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_save(m, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_load(NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_model_load(&back, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(back);
    ck_assert_int_eq(sae_optimizer_save(NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_save(o, NULL), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_load(NULL, m, dir), SAE_E_INVALID_ARG);
    ck_assert_int_eq(sae_optimizer_load(&oback, NULL, dir), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(oback);
    oback = o;
    ck_assert_int_eq(sae_optimizer_load(&oback, m, NULL), SAE_E_INVALID_ARG);
    ck_assert_ptr_null(oback);
    /* a directory that does not exist, /proc (not writable even for root) */
    char *missing = join(dir, "no/such/dir/model.safetensors");
    ck_assert_int_eq(sae_model_save(m, missing), SAE_E_IO);
    ck_assert_int_eq(sae_optimizer_save(o, missing), SAE_E_IO);
    ck_assert_int_eq(sae_model_save(m, "/proc/libsae-test.safetensors"), SAE_E_IO);
    ck_assert_int_eq(sae_model_save(m, ""), SAE_E_IO);
    back = m;
    ck_assert_int_eq(sae_model_load(&back, missing), SAE_E_IO);
    ck_assert_ptr_null(back);
    oback = o;
    ck_assert_int_eq(sae_optimizer_load(&oback, m, missing), SAE_E_IO);
    ck_assert_ptr_null(oback);
    ck_assert_int_eq(sae_model_load(&back, ""), SAE_E_IO);
    /* an empty directory has no weights; its optimizer.safetensors is missing */
    ck_assert_int_eq(sae_model_load(&back, dir), SAE_E_IO);
    ck_assert_int_eq(sae_optimizer_load(&oback, m, dir), SAE_E_IO);
    ck_assert_int_eq(count_entries(dir), 0);
    /* a FIFO is neither read (without blocking) nor replaced */
    char *fifo = join(dir, "fifo");
    ck_assert_int_eq(mkfifo(fifo, 0644), 0);
    ck_assert_int_eq(sae_model_load(&back, fifo), SAE_E_IO);
    ck_assert_int_eq(sae_model_save(m, fifo), SAE_E_IO);
    struct stat st;
    ck_assert_int_eq(lstat(fifo, &st), 0);
    ck_assert(S_ISFIFO(st.st_mode));
    ck_assert_int_eq(count_entries(dir), 1);
    /* /dev/null is a device: not a checkpoint */
    ck_assert_int_eq(sae_model_load(&back, "/dev/null"), SAE_E_IO);
    /* the weights file is in the way as a directory: nothing is changed,
     * cfg.json included */
    char *ckpt = join(dir, "ckpt");
    ck_assert_int_eq(mkdir(ckpt, 0755), 0);
    char *blocker = join(ckpt, "sae_weights.safetensors");
    ck_assert_int_eq(mkdir(blocker, 0755), 0);
    char *cfg = join(ckpt, "cfg.json");
    write_file(cfg, "{}", 2);
    ck_assert_int_eq(sae_model_save(m, ckpt), SAE_E_IO);
    bytes c = read_file(cfg);
    ck_assert_uint_eq(c.len, 2);
    free(c.p);
    ck_assert_int_eq(count_entries(ckpt), 2);
    free(cfg);
    free(blocker);
    free(ckpt);
    free(fifo);
    free(missing);
    sae_optimizer_free(o);
    sae_model_free(m);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* Child: save a 64 x 128 model (or its optimizer) to path under a 4 kB file
 * size limit. With SIGXFSZ ignored the write fails with EFBIG (exit 0 if the
 * save returned SAE_E_IO); with its default action the process is killed
 * mid-write, like a crash. */
static int child_save_limited(const char *path, const char *what, const char *sig)
{
    sae_model *m;
    sae_optimizer *o;
    if (sae_model_create(&m, 64, 128, 2) != SAE_OK || sae_optimizer_create(&o, m) != SAE_OK)
        return 91;
    if (strcmp(sig, "ignore") == 0)
        signal(SIGXFSZ, SIG_IGN);
    struct rlimit no_core = {0, 0}, limit = {4096, 4096};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0 || setrlimit(RLIMIT_FSIZE, &limit) != 0)
        return 90;
    int rc = strcmp(what, "optimizer") == 0 ? sae_optimizer_save(o, path) : sae_model_save(m, path);
    sae_optimizer_free(o);
    sae_model_free(m);
    return rc == SAE_E_IO ? 0 : 80 - rc;
}

START_TEST(failed_save_keeps_the_previous_file)
{
    char *dir = make_tmpdir();
    char *path = join(dir, "model.safetensors");
    sae_model *small = trained_model(2, 4, 1);
    ck_assert_int_eq(sae_model_save(small, path), SAE_OK);
    bytes before = read_file(path);
    /* the file-size limit makes a write fail (EFBIG) part-way */
    expect_exit0(run_self("--save-limited", path, "model", "ignore"));
    bytes after = read_file(path);
    ck_assert(same_bytes(before, after));
    free(after.p);
    ck_assert_int_eq(count_entries(dir), 1); /* the temporary file was removed */
    expect_exit0(run_self("--save-limited", path, "optimizer", "ignore"));
    after = read_file(path);
    ck_assert(same_bytes(before, after));
    free(after.p);
    ck_assert_int_eq(count_entries(dir), 1);
    /* into a directory: neither file changes */
    char *ckpt = join(dir, "ckpt");
    ck_assert_int_eq(mkdir(ckpt, 0755), 0);
    ck_assert_int_eq(sae_model_save(small, ckpt), SAE_OK);
    char *w = join(ckpt, "sae_weights.safetensors"), *cf = join(ckpt, "cfg.json");
    bytes w0 = read_file(w), c0 = read_file(cf);
    expect_exit0(run_self("--save-limited", ckpt, "model", "ignore"));
    bytes w1 = read_file(w), c1 = read_file(cf);
    ck_assert(same_bytes(w0, w1) && same_bytes(c0, c1));
    ck_assert_int_eq(count_entries(ckpt), 2);
    /* a crash mid-write (SIGXFSZ kills the process inside fwrite): the old
     * checkpoint is intact and loads; only a temporary file is left over */
    int status = run_self("--save-limited", path, "model", "default");
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ, "status %x", status);
    after = read_file(path);
    ck_assert(same_bytes(before, after));
    sae_model *back;
    ck_assert_int_eq(sae_model_load(&back, path), SAE_OK);
    ck_assert(models_equal(small, back));
    sae_model_free(back);
    ck_assert_int_eq(count_entries(dir), 3); /* model, ckpt/, the crash's temporary */
    free(after.p);
    free(w0.p), free(w1.p), free(c0.p), free(c1.p);
    free(w), free(cf), free(ckpt);
    free(before.p);
    free(path);
    sae_model_free(small);
    remove_tree(dir);
    free(dir);
}
END_TEST

/* Child: in a private mount namespace, a 64 kB tmpfs on mnt; a small model
 * fits, a 64 x 256 one (128 kB) does not: ENOSPC. Exit 77 if mounting is not
 * allowed here. */
static int child_full_disk(const char *mnt)
{
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", mnt, "tmpfs", 0, "size=64k") != 0)
        return 77;
    sae_model *small, *big, *back;
    if (sae_model_create(&small, 4, 8, 1) != SAE_OK || sae_model_create(&big, 64, 256, 2) != SAE_OK)
        return 91;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors", mnt);
    if (sae_model_save(small, path) != SAE_OK)
        return 92;
    if (sae_model_save(big, path) != SAE_E_IO)
        return 93;
    if (sae_model_load(&back, path) != SAE_OK || !models_equal(small, back))
        return 94;
    if (count_entries(mnt) != 1) /* no temporary file left */
        return 95;
    sae_model_free(back);
    sae_model_free(small);
    sae_model_free(big);
    return 0;
}

START_TEST(full_disk_keeps_the_previous_file)
{
    char *dir = make_tmpdir();
    int status = run_self("--full-disk", dir, NULL, NULL);
    ck_assert(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        printf("full_disk_keeps_the_previous_file: cannot mount a tmpfs here "
               "(not root?); the RLIMIT_FSIZE test covers write failures\n");
    else
        ck_assert_msg(WEXITSTATUS(status) == 0, "child exit %d", WEXITSTATUS(status));
    remove_tree(dir);
    free(dir);
}
END_TEST

static Suite *files_suite(void)
{
    Suite *s = suite_create("files");
    TCase *files = tcase_create("files");
    tcase_set_timeout(files, 120);
    tcase_add_test(files, file_and_directory_round_trip);
    tcase_add_test(files, checks_saelens_config);
    tcase_add_test(files, saelens_config_per_architecture);
    tcase_add_test(files, saelens_config_must_agree);
    tcase_add_test(files, saelens_topk_directory);
    tcase_add_test(files, io_errors);
    tcase_add_test(files, failed_save_keeps_the_previous_file);
    tcase_add_test(files, full_disk_keeps_the_previous_file);
    suite_add_tcase(s, files);
    return s;
}

int main(int argc, char **argv)
{
    if (!realpath(argv[0], self_exe))
        return 99;
    if (argc == 5 && strcmp(argv[1], "--save-limited") == 0)
        return child_save_limited(argv[2], argv[3], argv[4]);
    if (argc == 3 && strcmp(argv[1], "--full-disk") == 0)
        return child_full_disk(argv[2]);
    return test_run_suite(files_suite());
}
