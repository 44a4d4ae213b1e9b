/*
 * What resuming rests on, below the programs: tool_batcher_skip lands exactly
 * where drawing the same rows would have (across epochs, however the draws
 * were cut into batches), and the checkpoint's state file reads back what
 * was written and rejects every truncated or damaged version of itself.
 * Files go to a fresh directory under $TMPDIR (or /tmp), removed afterwards.
 */
#include "common/batch.h"
#include "common/checkpoint.h"

#include "check.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Rows 0..rows-1, each row's floats all equal to its index. */
static float *indexed_rows(size_t rows, size_t cols)
{
    float *x = malloc(rows * cols * sizeof *x);
    for (size_t i = 0; i < rows * cols; i++)
        x[i] = (float)(i / cols);
    return x;
}

/* Draw `skip` rows in batches of `batch`, or skip them; then the next `n`
 * row indices go to out. */
static void rows_after(const tool_data *d, uint64_t seed, uint64_t skip, size_t batch, bool by_skip,
                       size_t *out, size_t n)
{
    tool_batcher b;
    if (tool_batcher_init(&b, d, seed) != 0)
        abort();
    float *buf = malloc((batch > n ? batch : n) * d->cols * sizeof *buf);
    if (by_skip) {
        tool_batcher_skip(&b, skip);
    } else {
        for (uint64_t done = 0; done < skip;) {
            size_t k = skip - done < batch ? (size_t)(skip - done) : batch;
            tool_batcher_next(&b, buf, k, NULL);
            done += k;
        }
    }
    CHECK(b.drawn == skip, "drawn %llu after skipping %llu", (unsigned long long)b.drawn,
          (unsigned long long)skip);
    tool_batcher_next(&b, buf, n, out);
    for (size_t t = 0; t < n; t++)
        CHECK(buf[t * d->cols] == (float)out[t], "row %zu copied wrongly", t);
    free(buf);
    tool_batcher_free(&b);
}

static void test_skip(void)
{
    const size_t rows = 37, cols = 3, n = 100;
    tool_data d;
    tool_data_wrap(&d, indexed_rows(rows, cols), rows, cols, "test");
    size_t want[100], got[100];
    /* skips within the first epoch, at and across epoch boundaries */
    const uint64_t skips[] = {0, 1, 36, 37, 38, 74, 100, 37 * 5 + 11};
    for (size_t i = 0; i < sizeof skips / sizeof *skips; i++) {
        rows_after(&d, 7, skips[i], 5, false, want, n);
        rows_after(&d, 7, skips[i], 0, true, got, n);
        CHECK(memcmp(want, got, sizeof want) == 0, "skip %llu differs from drawing",
              (unsigned long long)skips[i]);
        /* the batch size does not change the sequence */
        rows_after(&d, 7, skips[i], 4, false, got, n);
        CHECK(memcmp(want, got, sizeof want) == 0, "batch 4 and 5 differ after %llu",
              (unsigned long long)skips[i]);
    }
    /* each epoch is a permutation, and a new one */
    rows_after(&d, 7, 0, 1, true, want, 74);
    int first_seen[37] = {0}, second_seen[37] = {0};
    for (size_t t = 0; t < 37; t++) {
        first_seen[want[t]]++;
        second_seen[want[37 + t]]++;
    }
    bool perms = true;
    for (size_t r = 0; r < 37; r++)
        perms = perms && first_seen[r] == 1 && second_seen[r] == 1;
    CHECK(perms, "an epoch is not a permutation of the rows");
    CHECK(memcmp(want, want + 37, 37 * sizeof *want) != 0, "the second epoch repeats the first");
    tool_data_close(&d);
}

static tool_run_state sample_state(bool synthetic)
{
    tool_run_state s;
    memset(&s, 0, sizeof s);
    s.step = 1234;
    s.tokens = 1234 * 256 + 17; /* the batch changed once */
    s.steps = 5000;
    s.seconds = 12.5;
    s.seed = UINT64_MAX; /* survives exactly, unlike a double */
    s.batch = 256;
    s.log_every = 50;
    s.dead_window = 100000;
    s.rows = 65536;
    s.d_in = 64;
    s.sample = 4096;
    s.resample_every = 250;
    s.resample_window = 50000;
    s.hist_every = 500;
    if (synthetic) {
        s.arch = SAE_ARCH_TOPK;
        s.k = 7;
        s.normalize = true;
        s.scale = 0.1; /* not exact in binary either */
        s.b_dec_init = SAE_B_DEC_GEOMETRIC_MEDIAN;
        strcpy(s.data, "synthetic");
        s.synth_features = 256;
        s.synth_active = 0.1; /* not exact in binary: must round-trip anyway */
        s.synth_tokens = 65536;
    } else {
        s.arch = SAE_ARCH_JUMPRELU;
        s.threshold0 = 0.003;
        s.scale = 1.0;
        s.b_dec_init = -1;
        strcpy(s.data, "npy");
        strcpy(s.input, "dir with spaces/acts #1.npy");
    }
    return s;
}

static bool same_state(const tool_run_state *a, const tool_run_state *b)
{
    return a->step == b->step && a->tokens == b->tokens && a->steps == b->steps &&
           a->seconds == b->seconds && a->seed == b->seed && a->batch == b->batch &&
           a->log_every == b->log_every && a->dead_window == b->dead_window &&
           strcmp(a->data, b->data) == 0 && a->rows == b->rows && a->d_in == b->d_in &&
           a->synth_features == b->synth_features && a->synth_active == b->synth_active &&
           a->synth_tokens == b->synth_tokens && strcmp(a->input, b->input) == 0 &&
           a->arch == b->arch && a->k == b->k && a->threshold0 == b->threshold0 &&
           a->normalize == b->normalize && a->scale == b->scale &&
           a->b_dec_init == b->b_dec_init && a->sample == b->sample &&
           a->resample_every == b->resample_every && a->resample_window == b->resample_window &&
           a->hist_every == b->hist_every;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *text = calloc(1, 4096);
    *len = fread(text, 1, 4095, f);
    fclose(f);
    return text;
}

/* text with the first occurrence of `from` replaced by `to`, into path */
static void write_edited(const char *path, const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at)
        abort();
    char out[4096];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    write_text(path, out, strlen(out));
}

static void expect_rejected(const char *path, const char *needle, const char *what)
{
    tool_run_state s;
    char err[256] = "";
    int rc = tool_run_state_read(path, &s, err, sizeof err);
    CHECK(rc == -1, "%s: accepted", what);
    CHECK(strstr(err, needle) != NULL, "%s: error '%s' lacks '%s'", what, err, needle);
}

static void test_state_file(void)
{
    char err[256];
    for (int synthetic = 0; synthetic < 2; synthetic++) {
        tool_run_state s = sample_state(synthetic), back;
        CHECK(tool_run_state_write(check_path_of("state.txt"), &s) == 0, "write failed");
        CHECK(tool_run_state_read(check_path_of("state.txt"), &back, err, sizeof err) == 0, "read: %s", err);
        CHECK(same_state(&s, &back), "the state does not read back as written (synthetic %d)",
              synthetic);
        CHECK(back.format == TOOL_STATE_FORMAT, "format %d", back.format);
    }
    /* every truncation of a valid file is refused */
    size_t len;
    char *text = read_text(check_path_of("state.txt"), &len);
    for (size_t cut = 0; cut < len; cut++) {
        tool_run_state s;
        write_text(check_path_of("cut.txt"), text, cut);
        CHECK(tool_run_state_read(check_path_of("cut.txt"), &s, err, sizeof err) == -1,
              "truncated to %zu of %zu bytes: accepted", cut, len);
    }
    expect_rejected(check_path_of("missing.txt"), "No such file", "a missing file");
    write_edited(check_path_of("bad.txt"), text, "step 1234\n", "step 1234\nstep 1234\n");
    expect_rejected(check_path_of("bad.txt"), "'step' appears twice", "a duplicate key");
    write_edited(check_path_of("bad.txt"), text, "batch 256", "batch 25x");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'batch'", "a bad number");
    write_edited(check_path_of("bad.txt"), text, "batch 256", "batch 0");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'batch'", "batch 0");
    write_edited(check_path_of("bad.txt"), text, "seed 18446744073709551615", "seed 18446744073709551616");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'seed'", "a seed beyond 64 bits");
    write_edited(check_path_of("bad.txt"), text, "format 3", "format 4");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'format'", "another format");
    write_edited(check_path_of("bad.txt"), text, "tokens ", "tokenz ");
    expect_rejected(check_path_of("bad.txt"), "'tokens' is missing", "a missing key");
    write_edited(check_path_of("bad.txt"), text, "synth_active", "synth_activ");
    expect_rejected(check_path_of("bad.txt"), "'synth_active' is missing", "a missing synthetic key");
    write_edited(check_path_of("bad.txt"), text, "rows 65536", "rows 65535");
    expect_rejected(check_path_of("bad.txt"), "inconsistent synthetic", "rows != synth_tokens");
    write_edited(check_path_of("bad.txt"), text, "end\n", "end\nmore\n");
    expect_rejected(check_path_of("bad.txt"), "after the end line", "text after the end");
    write_edited(check_path_of("bad.txt"), text, "d_in", "d\001in");
    expect_rejected(check_path_of("bad.txt"), "'d_in' is missing", "a control character");
    write_edited(check_path_of("bad.txt"), text, "arch topk", "arch temporal");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'arch'", "an unknown architecture");
    write_edited(check_path_of("bad.txt"), text, "scale 0.1", "scale -0.1");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'scale'", "a negative scale");
    write_edited(check_path_of("bad.txt"), text, "b_dec_init median", "b_dec_init mode");
    expect_rejected(check_path_of("bad.txt"), "bad value for 'b_dec_init'", "an unknown b_dec_init");
    /* a format 1 file (an earlier sae-train: no recipe keys) reads as a run
     * without them */
    {
        char old[4096];
        snprintf(old, sizeof old, "%s", text);
        char *recipe = strstr(old, "arch ");
        if (!recipe)
            abort();
        strcpy(recipe, "end\n");
        write_edited(check_path_of("old.txt"), old, "format 3", "format 1");
        tool_run_state s1;
        CHECK(tool_run_state_read(check_path_of("old.txt"), &s1, err, sizeof err) == 0, "format 1: %s", err);
        CHECK(s1.format == 1 && s1.arch == -1 && !s1.normalize && s1.scale == 1.0 &&
              s1.b_dec_init == -1 && s1.sample == 0 && s1.resample_every == 0 && s1.step == 1234,
              "format 1: arch %d normalize %d scale %g b_dec_init %d", s1.arch, s1.normalize,
              s1.scale, s1.b_dec_init);
    }
    /* comments and unknown keys (a later version's) are fine */
    write_edited(check_path_of("ok.txt"), text, "end\n", "# a comment\nnew_key 42\nend\n");
    tool_run_state s;
    CHECK(tool_run_state_read(check_path_of("ok.txt"), &s, err, sizeof err) == 0, "unknown key: %s", err);
    free(text);
    /* the write is atomic: no temporary file stays behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q 'state.txt[.]'", check_scratch_dir());
    CHECK(system(cmd) != 0, "a temporary file was left in %s", check_scratch_dir());
}

int main(void)
{
    check_scratch_begin("sae-resume-test");
    test_skip();
    test_state_file();
    return check_finish();
}
