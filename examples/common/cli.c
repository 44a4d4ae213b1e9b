#include "cli.h"

#include "opts.h"

#include <stdlib.h>
#include <string.h>

#define SYNTH_D_IN 64         /* synthetic dimension unless --d-in */
#define SYNTH_EVAL_TOKENS 8192 /* held-out synthetic tokens */
#define TRAIN_EVAL_ROWS 16384  /* training rows evaluated when there is no --eval */

void ex_config_defaults(ex_config *c)
{
    memset(c, 0, sizeof *c);
    c->synth_features = 256;
    c->synth_active = 4.0;
    c->synth_tokens = 65536;
    c->d_sae = 512;
    c->lambda = 0.3;
    c->lr = 1e-3;
    c->clip = 1.0;
    c->batch = 256;
    c->steps = 3000;
    c->seed = 1;
    c->log_every = 100;
    c->dead_window = 100000;
}

int ex_getopt(int argc, char **argv, const struct option *longopts)
{
    opterr = 0; /* we print our own one-line messages */
    int c = getopt_long(argc, argv, ":h", longopts, NULL);
    if (c == '?') {
        if (optopt && optopt < 256)
            ex_usage_error("unknown option '-%c' (see --help)", optopt);
        ex_usage_error("unknown option '%s' (see --help)", argv[optind - 1]);
    }
    if (c == ':')
        ex_usage_error("option '%s' needs a value (see --help)", argv[optind - 1]);
    return c;
}

static size_t arg_size(const char *opt, const char *s, uint64_t min)
{
    uint64_t v = ex_arg_count(opt, s, min);
    if (v > (uint64_t)SIZE_MAX / 16 || v > 0x7fffffff)
        ex_usage_error("%s: %s is too large", opt, s);
    return (size_t)v;
}

_Static_assert(EX_OPT_DEAD_WINDOW - EX_OPT_D_IN < 32, "ex_config.given has a bit per option");

bool ex_config_option(ex_config *c, int code, const char *arg)
{
    switch (code) {
    case EX_OPT_D_IN: c->d_in = arg_size("--d-in", arg, 1); break;
    case EX_OPT_EVAL: c->eval_path = arg; break;
    case EX_OPT_SYNTH_FEATURES: c->synth_features = arg_size("--synth-features", arg, 1); break;
    case EX_OPT_SYNTH_ACTIVE: c->synth_active = ex_arg_double("--synth-active", arg, 0.0, false); break;
    case EX_OPT_SYNTH_TOKENS: c->synth_tokens = arg_size("--synth-tokens", arg, 2); break;
    case EX_OPT_D_SAE: c->d_sae = arg_size("--d-sae", arg, 1); break;
    case EX_OPT_LAMBDA: c->lambda = ex_arg_double("--lambda", arg, 0.0, true); break;
    case EX_OPT_LR: c->lr = ex_arg_double("--lr", arg, 0.0, false); break;
    case EX_OPT_CLIP: c->clip = ex_arg_double("--clip", arg, 0.0, true); break;
    case EX_OPT_BATCH: c->batch = arg_size("--batch", arg, 1); break;
    case EX_OPT_STEPS: c->steps = ex_arg_count("--steps", arg, 1); c->tokens = 0; break;
    case EX_OPT_TOKENS: c->tokens = ex_arg_count("--tokens", arg, 1); break;
    case EX_OPT_SEED: c->seed = ex_arg_count("--seed", arg, 0); break;
    case EX_OPT_LOG_EVERY: c->log_every = ex_arg_count("--log-every", arg, 1); break;
    case EX_OPT_DEAD_WINDOW: c->dead_window = ex_arg_count("--dead-window", arg, 1); break;
    default: return false;
    }
    c->given |= UINT32_C(1) << (code - EX_OPT_D_IN);
    return true;
}

bool ex_config_given(const ex_config *c, int code)
{
    return c->given >> (code - EX_OPT_D_IN) & 1;
}

void ex_config_finish(ex_config *c, int argc, char **argv, int optind_)
{
    if (optind_ < argc)
        c->input = argv[optind_++];
    if (optind_ < argc)
        ex_usage_error("unexpected argument '%s' (one input FILE at most)", argv[optind_]);
    if (c->synth_active > (double)c->synth_features)
        ex_usage_error("--synth-active %g exceeds --synth-features %zu", c->synth_active,
                       c->synth_features);
    if (c->tokens)
        c->steps = c->tokens / c->batch + (c->tokens % c->batch != 0);
}

void ex_config_help(FILE *f, const ex_config *c)
{
    fprintf(f,
            "Data (FILE: a .npy of float32, 2-D (tokens, d_in), C order, as np.save writes;\n"
            "      anything else is read as raw little-endian float32 and needs --d-in;\n"
            "      the file is memory-mapped. Without FILE: built-in synthetic data):\n"
            "  --d-in N            columns of a raw FILE; dimension of the synthetic data\n"
            "                      (default %d)\n"
            "  --eval FILE         evaluate on FILE (same formats); default: held-out\n"
            "                      synthetic tokens, or the first %d training rows\n"
            "  --synth-features N  synthetic: number of true features (default %zu)\n"
            "  --synth-active X    synthetic: mean active features per token (default %g)\n"
            "  --synth-tokens N    synthetic: training tokens generated (default %llu)\n"
            "Model and training:\n"
            "  --d-sae N           SAE features (default %zu)\n"
            "  --lambda X          L1 coefficient, >= 0 (default %g)\n"
            "  --lr X              Adam learning rate, > 0 (default %g)\n"
            "  --clip X            clip the global gradient norm at X; 0 = off (default %g)\n"
            "  --batch N           tokens per step (default %zu)\n"
            "  --steps N           training steps (default %llu)\n"
            "  --tokens N          train on N tokens instead: steps = ceil(N / batch)\n"
            "  --seed N            seeds the model, the shuffle and the synthetic data\n"
            "                      (default %llu)\n"
            "  --log-every N       a CSV row every N steps (default %llu)\n"
            "  --dead-window N     a feature is dead when it fired on none of the last N\n"
            "                      training tokens (default %llu)\n"
            "Counts accept a k, M or G suffix (--tokens 2M).\n",
            SYNTH_D_IN, TRAIN_EVAL_ROWS, c->synth_features, c->synth_active,
            (unsigned long long)c->synth_tokens, c->d_sae, c->lambda, c->lr, c->clip, c->batch,
            (unsigned long long)c->steps, (unsigned long long)c->seed,
            (unsigned long long)c->log_every, (unsigned long long)c->dead_window);
}

static void open_or_exit(ex_data *d, const char *path, size_t d_in)
{
    char err[256];
    if (ex_data_open(d, path, d_in, err, sizeof err) != 0)
        ex_usage_error("%s: %s", path, err);
}

void ex_inputs_load(ex_inputs *in, const ex_config *c)
{
    memset(in, 0, sizeof *in);
    size_t d_in;
    if (c->input) {
        open_or_exit(&in->train, c->input, c->d_in);
        d_in = in->train.cols;
    } else {
        d_in = c->d_in ? c->d_in : SYNTH_D_IN;
        in->synthetic = true;
        if (ex_synth_init(&in->synth, d_in, c->synth_features, c->synth_active, c->seed) != 0)
            ex_usage_error("out of memory for the synthetic features");
        float *x = ex_synth_matrix(&in->synth, c->synth_tokens, c->seed, 1);
        if (!x)
            ex_usage_error("out of memory for %llu synthetic tokens",
                           (unsigned long long)c->synth_tokens);
        ex_data_wrap(&in->train, x, c->synth_tokens, d_in, "synthetic");
    }
    if (c->eval_path) {
        open_or_exit(&in->eval, c->eval_path, d_in);
        if (in->eval.rows < 2)
            ex_usage_error("%s: evaluation needs at least 2 rows", c->eval_path);
        in->eval_rows = in->eval.rows;
        snprintf(in->eval_label, sizeof in->eval_label, "%s (%zu rows)", c->eval_path,
                 in->eval_rows);
    } else if (in->synthetic) {
        float *x = ex_synth_matrix(&in->synth, SYNTH_EVAL_TOKENS, c->seed, 2);
        if (!x)
            ex_usage_error("out of memory for the synthetic evaluation tokens");
        ex_data_wrap(&in->eval, x, SYNTH_EVAL_TOKENS, d_in, "synthetic");
        in->eval_rows = SYNTH_EVAL_TOKENS;
        snprintf(in->eval_label, sizeof in->eval_label, "held-out synthetic (%d tokens)",
                 SYNTH_EVAL_TOKENS);
    } else {
        in->eval_rows = in->train.rows < TRAIN_EVAL_ROWS ? in->train.rows : TRAIN_EVAL_ROWS;
        if (in->eval_rows < 2)
            ex_usage_error("%s: needs at least 2 rows", c->input);
        snprintf(in->eval_label, sizeof in->eval_label, "the first %zu training rows",
                 in->eval_rows);
    }
}

void ex_inputs_free(ex_inputs *in)
{
    ex_data_close(&in->train);
    ex_data_close(&in->eval);
    ex_synth_free(&in->synth);
}

const float *ex_inputs_eval_x(const ex_inputs *in)
{
    return in->eval.x ? in->eval.x : in->train.x;
}

int ex_make_sae(const ex_config *c, size_t d_in, double lambda, sae_model **m, sae_optimizer **o)
{
    *o = NULL;
    int rc = sae_model_create(m, d_in, c->d_sae, c->seed);
    if (rc == SAE_OK)
        rc = sae_optimizer_create(o, *m);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(*o, SAE_OPT_LR, c->lr);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(*o, SAE_OPT_L1_COEFF, lambda);
    if (rc == SAE_OK)
        rc = sae_optimizer_set(*o, SAE_OPT_GRAD_CLIP, c->clip);
    if (rc != SAE_OK) {
        sae_optimizer_free(*o);
        sae_model_free(*m);
        *o = NULL;
        *m = NULL;
    }
    return rc;
}

int ex_evaluate(const sae_model *m, const ex_inputs *in, double lambda, sae_losses *l,
                double *fvu)
{
    const float *x = ex_inputs_eval_x(in);
    int rc = sae_loss(m, x, in->eval_rows, lambda, l);
    if (rc == SAE_OK)
        rc = sae_fvu(m, x, in->eval_rows, fvu);
    return rc;
}

int ex_truth_mmcs(const sae_model *m, const ex_synth *truth, double *mmcs, double *recovered)
{
    const size_t d_in = sae_model_d_in(m), d_sae = sae_model_d_sae(m);
    float *w_dec = malloc(d_sae * d_in * sizeof *w_dec);
    if (!w_dec)
        return SAE_E_NOMEM;
    int rc = sae_model_get_tensor(m, SAE_W_DEC, w_dec, d_sae * d_in);
    if (rc == SAE_OK)
        ex_mmcs(truth->dirs, truth->n_feat, w_dec, d_sae, d_in, 0.9, mmcs, recovered);
    free(w_dec);
    return rc;
}
