#include "inputs.h"

#include "args.h"

#include <stdlib.h>
#include <string.h>

static void open_or_exit(tool_data *d, const char *path, size_t d_in)
{
    char err[256];
    if (tool_data_open(d, path, d_in, err, sizeof err) != 0)
        tool_usage_error("%s: %s", path, err);
}

void tool_inputs_load(tool_inputs *in, const tool_config *c)
{
    memset(in, 0, sizeof *in);
    size_t d_in;
    if (c->input) {
        open_or_exit(&in->train, c->input, c->d_in);
        d_in = in->train.cols;
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
        open_or_exit(&in->eval, c->eval_path, d_in);
        if (in->eval.rows < 2)
            tool_usage_error("%s: evaluation needs at least 2 rows", c->eval_path);
        in->eval_rows = in->eval.rows;
        snprintf(in->eval_label, sizeof in->eval_label, "%s (%zu rows)", c->eval_path,
                 in->eval_rows);
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
}

void tool_inputs_free(tool_inputs *in)
{
    tool_data_close(&in->train);
    tool_data_close(&in->eval);
    tool_synth_free(&in->synth);
}

const float *tool_inputs_eval_x(const tool_inputs *in)
{
    return in->eval.x ? in->eval.x : in->train.x;
}

int tool_evaluate(const sae_model *m, const tool_inputs *in, double lambda, sae_losses *l,
                  double *fvu)
{
    const float *x = tool_inputs_eval_x(in);
    int rc = sae_loss(m, x, in->eval_rows, lambda, l);
    if (rc == SAE_OK)
        rc = sae_fvu(m, x, in->eval_rows, fvu);
    return rc;
}

int tool_truth_mmcs(const sae_model *m, const tool_synth *truth, double *mmcs, double *recovered)
{
    const size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    float *w_dec = malloc(d_sae * d_in * sizeof *w_dec);
    if (!w_dec)
        return SAE_E_NOMEM;
    int rc = sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_sae * d_in);
    if (rc == SAE_OK)
        tool_mmcs(truth->dirs, truth->n_feat, w_dec, d_sae, d_in, 0.9, mmcs, recovered);
    free(w_dec);
    return rc;
}
