#include "inputs.h"

#include "args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void open_or_exit(tool_data *d, const char *path, size_t cols, const char *option)
{
    char err[256];
    if (tool_data_open_cols(d, path, cols, option, err, sizeof err) != 0)
        tool_usage_error("%s: %s", path, err);
}

/* The targets at path of the rows of data (read from rows_of). */
static void open_target(tool_data *d, const char *path, size_t d_out, const tool_data *data,
                        const char *rows_of)
{
    open_or_exit(d, path, d_out, "--d-out");
    if (d->rows != data->rows)
        tool_usage_error("%s: %zu rows, but %s has %zu (a target per row)", path, d->rows,
                         rows_of, data->rows);
}

/* Synthetic pairs: the training and held-out tokens with their targets. */
static void load_synthetic_pairs(tool_inputs *in, tool_config *c, size_t d_in)
{
    const size_t d_out = c->d_out ? c->d_out : d_in;
    float *x, *y;
    if (tool_synth_pairs_init(&in->pairs, &in->synth, d_out, c->skip, c->seed) != 0)
        tool_usage_error("out of memory for the synthetic output directions");
    if (tool_synth_pairs_matrix(&in->synth, &in->pairs, c->synth_tokens, c->seed,
                                TOOL_STREAM_TRAIN_TOKENS, &x, &y) != 0)
        tool_usage_error("out of memory for %llu synthetic pairs",
                         (unsigned long long)c->synth_tokens);
    tool_data_wrap(&in->train, x, c->synth_tokens, d_in, "synthetic");
    tool_data_wrap(&in->target, y, c->synth_tokens, d_out, "synthetic");
    if (c->eval_path)
        return;
    if (tool_synth_pairs_matrix(&in->synth, &in->pairs, TOOL_SYNTH_EVAL_TOKENS, c->seed,
                                TOOL_STREAM_EVAL_TOKENS, &x, &y) != 0)
        tool_usage_error("out of memory for the synthetic evaluation pairs");
    tool_data_wrap(&in->eval, x, TOOL_SYNTH_EVAL_TOKENS, d_in, "synthetic");
    tool_data_wrap(&in->eval_target, y, TOOL_SYNTH_EVAL_TOKENS, d_out, "synthetic");
}

void tool_inputs_load(tool_inputs *in, tool_config *c)
{
    memset(in, 0, sizeof *in);
    size_t d_in;
    if (c->input) {
        open_or_exit(&in->train, c->input, c->d_in, "--d-in");
        d_in = in->train.cols;
        if (c->target_path)
            open_target(&in->target, c->target_path, c->d_out, &in->train, c->input);
    } else if (c->synth_target) {
        d_in = c->d_in ? c->d_in : TOOL_SYNTH_D_IN;
        in->synthetic = true;
        if (tool_synth_init(&in->synth, d_in, c->synth_features, c->synth_active, c->seed) != 0)
            tool_usage_error("out of memory for the synthetic features");
        load_synthetic_pairs(in, c, d_in);
    } else {
        d_in = c->d_in ? c->d_in : TOOL_SYNTH_D_IN;
        in->synthetic = true;
        if (tool_synth_init(&in->synth, d_in, c->synth_features, c->synth_active, c->seed) != 0)
            tool_usage_error("out of memory for the synthetic features");
        float *x = tool_synth_matrix(&in->synth, c->synth_tokens, c->seed,
                                     TOOL_STREAM_TRAIN_TOKENS);
        if (!x)
            tool_usage_error("out of memory for %llu synthetic tokens",
                             (unsigned long long)c->synth_tokens);
        tool_data_wrap(&in->train, x, c->synth_tokens, d_in, "synthetic");
    }
    if (c->eval_path) {
        open_or_exit(&in->eval, c->eval_path, d_in, "--d-in");
        if (in->eval.rows < 2)
            tool_usage_error("%s: evaluation needs at least 2 rows", c->eval_path);
        if (c->eval_target_path) {
            open_target(&in->eval_target, c->eval_target_path, in->target.cols, &in->eval,
                        c->eval_path);
            if (in->eval_target.cols != in->target.cols)
                tool_usage_error("%s: %zu columns, the training targets have %zu",
                                 c->eval_target_path, in->eval_target.cols, in->target.cols);
        }
        in->eval_rows = in->eval.rows;
        snprintf(in->eval_label, sizeof in->eval_label, "%s (%zu rows)", c->eval_path,
                 in->eval_rows);
    } else if (in->synthetic && in->eval.x) { /* synthetic pairs */
        in->eval_rows = TOOL_SYNTH_EVAL_TOKENS;
        snprintf(in->eval_label, sizeof in->eval_label, "held-out synthetic (%d pairs)",
                 TOOL_SYNTH_EVAL_TOKENS);
    } else if (in->synthetic) {
        float *x = tool_synth_matrix(&in->synth, TOOL_SYNTH_EVAL_TOKENS, c->seed,
                                     TOOL_STREAM_EVAL_TOKENS);
        if (!x)
            tool_usage_error("out of memory for the synthetic evaluation tokens");
        tool_data_wrap(&in->eval, x, TOOL_SYNTH_EVAL_TOKENS, d_in, "synthetic");
        in->eval_rows = TOOL_SYNTH_EVAL_TOKENS;
        snprintf(in->eval_label, sizeof in->eval_label, "held-out synthetic (%d tokens)",
                 TOOL_SYNTH_EVAL_TOKENS);
    } else {
        in->eval_rows = in->train.rows < TOOL_TRAIN_EVAL_ROWS ? in->train.rows : TOOL_TRAIN_EVAL_ROWS;
        if (in->eval_rows < 2)
            tool_usage_error("%s: needs at least 2 rows", c->input);
        snprintf(in->eval_label, sizeof in->eval_label, "the first %zu training rows",
                 in->eval_rows);
    }
    c->d_out = in->target.cols;
}

void tool_inputs_free(tool_inputs *in)
{
    tool_data_close(&in->train);
    tool_data_close(&in->eval);
    tool_data_close(&in->target);
    tool_data_close(&in->eval_target);
    tool_synth_free(&in->synth);
    tool_synth_pairs_free(&in->pairs);
}

const float *tool_inputs_eval_x(const tool_inputs *in)
{
    return in->eval.x ? in->eval.x : in->train.x;
}

const float *tool_inputs_eval_y(const tool_inputs *in)
{
    return in->eval.x ? in->eval_target.x : in->target.x;
}

int tool_evaluate(const sae_model *m, const tool_inputs *in, double lambda, sae_losses *l,
                  double *fvu)
{
    const float *x = tool_inputs_eval_x(in), *y = tool_inputs_eval_y(in);
    int rc = y ? sae_loss_target(m, x, y, in->eval_rows, lambda, l)
               : sae_loss(m, x, in->eval_rows, lambda, l);
    if (rc == SAE_OK)
        rc = y ? sae_fvu_target(m, x, y, in->eval_rows, fvu) : sae_fvu(m, x, in->eval_rows, fvu);
    return rc;
}

/* A Matryoshka model's levels on the eval rows: each width's l2 and FVU (the
 * total variance is the full width's l2 over its FVU). */
static int print_levels(const sae_model *m, const tool_inputs *in, const sae_losses *full,
                        double fvu)
{
    size_t n = sae_model_matryoshka_levels(m), widths[64];
    double l2[64];
    int rc = n > 64 ? SAE_E_INVALID_ARG : sae_model_matryoshka_widths(m, widths, n);
    if (rc == SAE_OK)
        rc = sae_loss_levels(m, tool_inputs_eval_x(in), in->eval_rows, l2, n);
    if (rc != SAE_OK)
        return rc;
    printf("eval levels (features: l2 fvu):");
    for (size_t i = 0; i < n; i++)
        printf("  %zu: %.5g %.4f", widths[i], l2[i], full->l2 > 0.0 ? l2[i] * fvu / full->l2 : 0.0);
    printf("\n");
    return SAE_OK;
}

int tool_evaluate_print(const sae_model *m, const tool_inputs *in, const tool_config *c)
{
    sae_losses l;
    double fvu;
    int rc = tool_evaluate(m, in, tool_arch_is_topk(c->arch) ? 0.0 : c->lambda, &l, &fvu);
    if (rc == SAE_OK)
        printf("eval on %s: l2 %.5g  l1 %.5g  l0 %.2f (%.2f%% of %zu)  fvu %.4f\n", in->eval_label,
               l.l2, l.l1, l.l0, 100.0 * l.l0 / (double)c->d_sae, c->d_sae, fvu);
    if (rc == SAE_OK && sae_model_arch(m) == SAE_ARCH_MATRYOSHKA)
        rc = print_levels(m, in, &l, fvu);
    return rc;
}

int tool_truth_mmcs(const sae_model *m, const tool_inputs *in, double *mmcs, double *recovered)
{
    const tool_synth *truth = in->pairs.out.dirs ? &in->pairs.out : &in->synth;
    const size_t d_out = sae_model_d_out(m), d_sae = sae_model_d_sae(m);
    if (truth->d_in != d_out)
        return SAE_E_INVALID_ARG;
    float *w_dec = malloc(d_sae * d_out * sizeof *w_dec);
    if (!w_dec)
        return SAE_E_NOMEM;
    int rc = sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_sae * d_out);
    if (rc == SAE_OK)
        rc = tool_mmcs(truth->dirs, truth->n_feat, w_dec, d_sae, d_out, 0.9, mmcs, recovered);
    free(w_dec);
    return rc;
}

int tool_truth_skip_error(const sae_model *m, const tool_inputs *in, double *error)
{
    const size_t count = sae_model_d_out(m) * sae_model_d_in(m);
    if (!in->pairs.skip || in->pairs.out.d_in * in->synth.d_in != count)
        return SAE_E_INVALID_ARG;
    float *w_skip = malloc(count * sizeof *w_skip);
    if (!w_skip)
        return SAE_E_NOMEM;
    int rc = sae_model_get_tensor(m, SAE_W_SKIP, w_skip, count);
    if (rc == SAE_OK) {
        double diff = 0.0, norm = 0.0;
        for (size_t k = 0; k < count; k++) {
            diff += ((double)w_skip[k] - in->pairs.skip[k]) * ((double)w_skip[k] - in->pairs.skip[k]);
            norm += (double)in->pairs.skip[k] * in->pairs.skip[k];
        }
        *error = sqrt(diff / norm);
    }
    free(w_skip);
    return rc;
}
