#include "reference_families.h"

#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *dalloc(size_t count)
{
    double *p = calloc(count ? count : 1, sizeof(double));
    if (!p)
        abort(); /* tests only */
    return p;
}

static bool has_thresholds(int arch) { return arch == REFF_JUMPRELU; }
static bool is_gated(int arch) { return arch == REFF_GATED; }
static bool batch_selected(int arch) { return arch == REFF_BATCHTOPK || arch == REFF_MATRYOSHKA; }
static bool topk_family(int arch)
{
    return arch == REFF_TOPK || arch == REFF_BATCHTOPK || arch == REFF_MATRYOSHKA;
}

void reff_alloc(reff_model *r, int arch, int kind, size_t d_in, size_t d_out, size_t d_sae,
                size_t k, const size_t *widths, size_t n_levels)
{
    memset(r, 0, sizeof *r);
    if ((kind == REFF_AUTOENCODER && d_out != d_in) || n_levels > REFF_MAX_LEVELS)
        abort();
    r->arch = arch;
    r->kind = kind;
    r->d_in = d_in;
    r->d_out = d_out;
    r->d_sae = d_sae;
    r->k = k;
    if (arch == REFF_MATRYOSHKA) {
        for (size_t m = 0; m < n_levels; m++) {
            if (widths[m] == 0 || widths[m] > d_sae || (m > 0 && widths[m] <= widths[m - 1]))
                abort();
            r->widths[m] = widths[m];
        }
        if (n_levels == 0 || widths[n_levels - 1] != d_sae)
            abort();
        r->n_levels = n_levels;
    }
    r->W_enc = dalloc(d_in * d_sae);
    r->b_enc = dalloc(d_sae);
    r->W_dec = dalloc(d_sae * d_out);
    r->b_dec = dalloc(d_out);
    if (has_thresholds(arch))
        r->log_theta = dalloc(d_sae);
    if (is_gated(arch)) {
        r->r_mag = dalloc(d_sae);
        r->b_mag = dalloc(d_sae);
    }
    if (kind == REFF_SKIP_TRANSCODER)
        r->W_skip = dalloc(d_out * d_in);
}

void reff_alloc_like(reff_model *r, const reff_model *src)
{
    reff_alloc(r, src->arch, src->kind, src->d_in, src->d_out, src->d_sae, src->k, src->widths,
               src->n_levels);
    r->rescale = src->rescale;
}

void reff_free(reff_model *r)
{
    free(r->W_enc);
    free(r->b_enc);
    free(r->W_dec);
    free(r->b_dec);
    free(r->log_theta);
    free(r->r_mag);
    free(r->b_mag);
    free(r->W_skip);
    memset(r, 0, sizeof *r);
}

/* ---- the flat parameter list ------------------------------------------------ */

typedef struct tensor_view {
    const char *name;
    double *data;
    size_t count;
} tensor_view;

/* The family's tensors in the flat order; returns their number. */
static size_t tensors_of(const reff_model *r, tensor_view v[8])
{
    size_t n = 0;
    v[n++] = (tensor_view){"W_enc", r->W_enc, r->d_in * r->d_sae};
    v[n++] = (tensor_view){is_gated(r->arch) ? "b_gate" : "b_enc", r->b_enc, r->d_sae};
    v[n++] = (tensor_view){"W_dec", r->W_dec, r->d_sae * r->d_out};
    v[n++] = (tensor_view){"b_dec", r->b_dec, r->d_out};
    if (r->log_theta)
        v[n++] = (tensor_view){"log_threshold", r->log_theta, r->d_sae};
    if (r->r_mag) {
        v[n++] = (tensor_view){"r_mag", r->r_mag, r->d_sae};
        v[n++] = (tensor_view){"b_mag", r->b_mag, r->d_sae};
    }
    if (r->W_skip)
        v[n++] = (tensor_view){"W_skip", r->W_skip, r->d_out * r->d_in};
    return n;
}

size_t reff_n_params(const reff_model *r)
{
    tensor_view v[8];
    size_t n = tensors_of(r, v), total = 0;
    for (size_t a = 0; a < n; a++)
        total += v[a].count;
    return total;
}

static const tensor_view *locate(const reff_model *r, size_t *k, tensor_view v[8])
{
    size_t n = tensors_of(r, v);
    for (size_t a = 0; a < n; a++) {
        if (*k < v[a].count)
            return &v[a];
        *k -= v[a].count;
    }
    abort();
}

double *reff_param(reff_model *r, size_t k)
{
    tensor_view v[8];
    const tensor_view *t = locate(r, &k, v);
    return t->data + k;
}

const char *reff_param_tensor(const reff_model *r, size_t k)
{
    tensor_view v[8];
    return locate(r, &k, v)->name;
}

void reff_copy(reff_model *dst, const reff_model *src)
{
    tensor_view a[8], b[8];
    size_t n = tensors_of(src, a);
    if (tensors_of(dst, b) != n)
        abort();
    for (size_t t = 0; t < n; t++) {
        if (a[t].count != b[t].count)
            abort();
        memcpy(b[t].data, a[t].data, a[t].count * sizeof(double));
    }
    dst->rescale = src->rescale;
}

void reff_randomize(reff_model *r, double sd, uint64_t seed)
{
    test_rng rng = {seed};
    tensor_view v[8];
    size_t n = tensors_of(r, v);
    for (size_t a = 0; a < n; a++)
        for (size_t k = 0; k < v[a].count; k++)
            v[a].data[k] = sd * test_normal(&rng);
    for (size_t i = 0; r->log_theta && i < r->d_sae; i++)
        r->log_theta[i] = log(0.05) + test_uniform(&rng) * (log(0.5) - log(0.05));
    for (size_t i = 0; r->r_mag && i < r->d_sae; i++)
        r->r_mag[i] = test_uniform(&rng) - 0.5;
}

/* ---- forward ------------------------------------------------------------------ */

static double row_norm(const reff_model *r, size_t i)
{
    double s = 0.0;
    for (size_t o = 0; o < r->d_out; o++)
        s += r->W_dec[i * r->d_out + o] * r->W_dec[i * r->d_out + o];
    return sqrt(s);
}

/* The encoder's input for token t: x - b_dec (autoencoders) or x. */
static double encoder_input(const reff_model *r, const float *x, size_t t, size_t j)
{
    double v = x[t * r->d_in + j];
    return r->kind == REFF_AUTOENCODER ? v - r->b_dec[j] : v;
}

/* u = xc W_enc (n x d_sae), without any bias. */
static void encoder_product(const reff_model *r, const float *x, size_t n, double *u)
{
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < r->d_sae; i++) {
            double s = 0.0;
            for (size_t j = 0; j < r->d_in; j++)
                s += encoder_input(r, x, t, j) * r->W_enc[j * r->d_sae + i];
            u[t * r->d_sae + i] = s;
        }
}

typedef struct ranked {
    double v;
    size_t at;
} ranked;

static int by_value_then_index(const void *a, const void *b)
{
    const ranked *p = a, *q = b;
    if (p->v != q->v)
        return p->v > q->v ? -1 : 1;
    return p->at < q->at ? -1 : p->at > q->at;
}

/* sel[a] = 1 for the `keep` largest positive v[a] among the allowed ones (all
 * if allowed is NULL; allowed is indexed a % period), ties in index order. */
static void keep_largest(const double *v, size_t count, size_t keep, const unsigned char *allowed,
                         size_t period, unsigned char *sel)
{
    ranked *list = malloc((count ? count : 1) * sizeof *list);
    if (!list)
        abort();
    size_t m = 0;
    for (size_t a = 0; a < count; a++) {
        sel[a] = 0;
        if (v[a] > 0.0 && (!allowed || allowed[a % period]))
            list[m++] = (ranked){v[a], a};
    }
    qsort(list, m, sizeof *list, by_value_then_index);
    for (size_t a = 0; a < m && a < keep; a++)
        sel[list[a].at] = 1;
    free(list);
}

/* R(u) = clamp(u / eps + 1/2, 0, 1), the surrogate's ramp. */
static double ramp(double u, double eps)
{
    double v = u / eps + 0.5;
    return v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;
}

void reff_features(const reff_model *r, const reff_train *t, const float *x, size_t n,
                   double *f, double *pre_out, double *gate_out)
{
    const size_t d = r->d_sae;
    double *u = dalloc(n * d), *pre = dalloc(n * d);
    unsigned char *sel = calloc(n * d + 1, 1);
    if (!sel)
        abort();
    encoder_product(r, x, n, u);
    for (size_t a = 0; a < n * d; a++) {
        size_t i = a % d;
        pre[a] = is_gated(r->arch) ? exp(r->r_mag[i]) * u[a] + r->b_mag[i] : u[a] + r->b_enc[i];
        if (r->rescale && topk_family(r->arch))
            pre[a] *= row_norm(r, i);
    }
    switch (r->arch) {
    case REFF_TOPK:
        for (size_t tok = 0; tok < n; tok++)
            keep_largest(pre + tok * d, d, r->k, NULL, 1, sel + tok * d);
        for (size_t a = 0; a < n * d; a++)
            f[a] = sel[a] ? pre[a] : 0.0;
        break;
    case REFF_BATCHTOPK:
    case REFF_MATRYOSHKA:
        keep_largest(pre, n * d, n * r->k, NULL, 1, sel);
        for (size_t a = 0; a < n * d; a++)
            f[a] = sel[a] ? pre[a] : 0.0;
        break;
    case REFF_JUMPRELU:
        for (size_t a = 0; a < n * d; a++) {
            size_t i = a % d;
            double theta = exp(r->log_theta[i]);
            if (t && t->surrogate_log_theta0) {
                double theta0 = exp(t->surrogate_log_theta0[i]);
                f[a] = (pre[a] > theta0 ? pre[a] : 0.0) +
                       theta0 * (ramp(pre[a] - theta, t->bandwidth) -
                                 ramp(pre[a] - theta0, t->bandwidth));
            } else {
                f[a] = pre[a] > theta ? pre[a] : 0.0;
            }
        }
        break;
    case REFF_GATED:
        for (size_t a = 0; a < n * d; a++) {
            double gate = u[a] + r->b_enc[a % d];
            f[a] = gate > 0.0 && pre[a] > 0.0 ? pre[a] : 0.0;
            if (gate_out)
                gate_out[a] = gate > 0.0 ? gate : 0.0;
        }
        break;
    default: /* ReLU */
        for (size_t a = 0; a < n * d; a++)
            f[a] = pre[a] > 0.0 ? pre[a] : 0.0;
        break;
    }
    if (pre_out)
        memcpy(pre_out, pre, n * d * sizeof(double));
    free(sel);
    free(pre);
    free(u);
}

/* out (n x d_out) = bias + sum over features i < width of f_ti W_dec[i]
 * (f / r with rescale), plus x W_skip^T when skip. */
static void decode_prefix(const reff_model *r, const float *x, const double *f, size_t n,
                          size_t width, bool bias, bool skip, double *out)
{
    const size_t d = r->d_sae, d_out = r->d_out;
    for (size_t t = 0; t < n; t++)
        for (size_t o = 0; o < d_out; o++) {
            double s = bias ? r->b_dec[o] : 0.0;
            for (size_t i = 0; i < width; i++) {
                double fi = f[t * d + i];
                if (fi != 0.0 && r->rescale && topk_family(r->arch))
                    fi /= row_norm(r, i);
                s += fi * r->W_dec[i * d_out + o];
            }
            if (skip && r->W_skip)
                for (size_t j = 0; j < r->d_in; j++)
                    s += r->W_skip[o * r->d_in + j] * x[t * r->d_in + j];
            out[t * d_out + o] = s;
        }
}

void reff_output(const reff_model *r, const float *x, const double *f, size_t n, double *y_hat)
{
    decode_prefix(r, x, f, n, r->d_sae, true, true, y_hat);
}

void reff_infer(const reff_model *r, double threshold, const float *x, size_t n, double *f_out,
                double *y_hat)
{
    const size_t d = r->d_sae;
    double *f = dalloc(n * d), *pre = dalloc(n * d);
    reff_features(r, NULL, x, n, f, pre, NULL);
    if (batch_selected(r->arch))
        for (size_t a = 0; a < n * d; a++)
            f[a] = pre[a] > 0.0 && (threshold < 0.0 || pre[a] > threshold) ? pre[a] : 0.0;
    if (f_out)
        memcpy(f_out, f, n * d * sizeof(double));
    if (y_hat)
        reff_output(r, x, f, n, y_hat);
    free(pre);
    free(f);
}

/* ---- losses ------------------------------------------------------------------- */

/* The levels a family's reconstruction loss sums over: Matryoshka's widths, or
 * the full width once. */
static size_t levels_of(const reff_model *r, size_t widths[REFF_MAX_LEVELS])
{
    if (r->arch == REFF_MATRYOSHKA) {
        memcpy(widths, r->widths, r->n_levels * sizeof(size_t));
        return r->n_levels;
    }
    widths[0] = r->d_sae;
    return 1;
}

static const float *target_of(const reff_model *r, const float *x, const float *y)
{
    if (!y && r->kind != REFF_AUTOENCODER)
        abort(); /* a transcoder needs its target */
    return y ? y : x;
}

static double sum_sq_diff(const double *a, const float *b, size_t count)
{
    double s = 0.0;
    for (size_t k = 0; k < count; k++)
        s += (a[k] - b[k]) * (a[k] - b[k]);
    return s;
}

void reff_residual(const reff_model *r, const reff_train *t, const float *x, const float *y,
                   size_t n, double *e)
{
    const float *target = target_of(r, x, y);
    double *f = dalloc(n * r->d_sae);
    reff_features(r, t, x, n, f, NULL, NULL);
    reff_output(r, x, f, n, e);
    for (size_t k = 0; k < n * r->d_out; k++)
        e[k] = target[k] - e[k];
    free(f);
}

/* AuxK's picks: the top k_aux positive pre-activations among dead features,
 * per token, ties in feature order. f_aux: n x d_sae (pre where picked). */
static void auxk_picks(const reff_model *r, const reff_train *t, const double *pre, size_t n,
                       double *f_aux)
{
    const size_t d = r->d_sae;
    unsigned char *sel = calloc(d + 1, 1);
    if (!sel)
        abort();
    for (size_t tok = 0; tok < n; tok++) {
        keep_largest(pre + tok * d, d, t->k_aux, t->dead, d, sel);
        for (size_t i = 0; i < d; i++)
            f_aux[tok * d + i] = sel[i] ? pre[tok * d + i] : 0.0;
    }
    free(sel);
}

/* AuxK's normaliser: (1/n) sum ||e_t||^2 - ||mean e||^2. */
static double residual_variance(const double *e, size_t n, size_t d_out)
{
    double total = 0.0, mean_sq = 0.0;
    for (size_t k = 0; k < n * d_out; k++)
        total += e[k] * e[k];
    for (size_t o = 0; o < d_out; o++) {
        double mean = 0.0;
        for (size_t tok = 0; tok < n; tok++)
            mean += e[tok * d_out + o] / (double)n;
        mean_sq += mean * mean;
    }
    return total / (double)n - mean_sq;
}

/* AuxK's reconstruction of the residual: sum of the picks times their decoder
 * rows, no bias, no skip. */
static void auxk_reconstruction(const reff_model *r, const double *f_aux, size_t n, double *e_hat)
{
    decode_prefix(r, NULL, f_aux, n, r->d_sae, false, false, e_hat);
}

void reff_loss(const reff_model *r, const reff_train *t, const float *x, const float *y,
               size_t n, const reff_held *held, reff_losses *out)
{
    const reff_held none = {NULL, NULL, NULL};
    if (!held)
        held = &none;
    const size_t d = r->d_sae, d_out = r->d_out;
    const float *target = target_of(r, x, y);
    double *f = dalloc(n * d), *pre = dalloc(n * d), *gate = dalloc(n * d);
    double *y_hat = dalloc(n * d_out);
    memset(out, 0, sizeof *out);
    reff_features(r, t, x, n, f, pre, gate);

    size_t widths[REFF_MAX_LEVELS], levels = levels_of(r, widths);
    double recon = 0.0;
    for (size_t m = 0; m < levels; m++) {
        decode_prefix(r, x, f, n, widths[m], true, true, y_hat);
        out->level_l2[m] = sum_sq_diff(y_hat, target, n * d_out) / (double)n;
        recon += out->level_l2[m];
    }
    out->l2 = out->level_l2[levels - 1]; /* y_hat now holds the full output */

    for (size_t a = 0; a < n * d; a++) {
        out->l1 += f[a] * row_norm(r, a % d) / (double)n;
        out->l0 += (f[a] > 0.0) / (double)n;
    }
    switch (r->arch) {
    case REFF_RELU:
        out->penalty = out->l1;
        break;
    case REFF_JUMPRELU:
        for (size_t a = 0; a < n * d; a++) {
            double theta = exp(r->log_theta[a % d]), on = pre[a] > theta;
            if (t->surrogate_log_theta0) {
                double theta0 = exp(t->surrogate_log_theta0[a % d]);
                on = (pre[a] > theta0) + ramp(pre[a] - theta, t->bandwidth) -
                     ramp(pre[a] - theta0, t->bandwidth);
            }
            out->penalty += on / (double)n;
        }
        break;
    case REFF_GATED: {
        for (size_t a = 0; a < n * d; a++)
            out->penalty += gate[a] * row_norm(r, a % d) / (double)n;
        /* through the frozen decoder: the held copy when there is one */
        reff_model frozen = *r;
        frozen.W_dec = held->W_dec ? (double *)held->W_dec : r->W_dec;
        frozen.b_dec = held->b_dec ? (double *)held->b_dec : r->b_dec;
        double *via_gate = dalloc(n * d_out);
        decode_prefix(&frozen, x, gate, n, d, true, true, via_gate);
        out->aux = sum_sq_diff(via_gate, target, n * d_out) / (double)n;
        free(via_gate);
        break;
    }
    default:
        break;
    }
    if (topk_family(r->arch) && t->auxk_coeff > 0.0) {
        double *e = dalloc(n * d_out), *f_aux = dalloc(n * d), *e_hat = dalloc(n * d_out);
        for (size_t k = 0; k < n * d_out; k++)
            e[k] = held->e ? held->e[k] : target[k] - y_hat[k];
        auxk_picks(r, t, pre, n, f_aux);
        auxk_reconstruction(r, f_aux, n, e_hat);
        double denom = residual_variance(e, n, d_out), num = 0.0;
        for (size_t k = 0; k < n * d_out; k++)
            num += (e_hat[k] - e[k]) * (e_hat[k] - e[k]);
        out->aux = denom > 0.0 ? num / (double)n / denom : 0.0;
        free(e);
        free(f_aux);
        free(e_hat);
    }
    switch (r->arch) {
    case REFF_RELU:
    case REFF_JUMPRELU: out->loss = recon + t->lambda * out->penalty; break;
    case REFF_GATED: out->loss = recon + t->lambda * out->penalty + out->aux; break;
    default: out->loss = recon + t->auxk_coeff * out->aux; break;
    }
    free(f);
    free(pre);
    free(gate);
    free(y_hat);
}

/* ---- gradients ------------------------------------------------------------------ */

/* The arrays of one backward pass: per token and feature (n x d_sae: f,
 * pre, gate, u = x W_enc, dL/df, dL/dpre, Gated's dL/du), per token and
 * output (n x d_out: y_hat, the scaled error, the residual e = y - y_hat of
 * the full model), and the decoder row norms. */
typedef struct grad_pass {
    const float *x, *target;
    size_t n;
    double *f, *pre, *gate, *u, *df, *dpre, *du;
    double *y_hat, *err, *e, *norms;
} grad_pass;

/* Each level's reconstruction error reaches the features below its width,
 * b_dec and W_skip: dL/dy_hat_m = (2/n)(y_hat_m - y); then e of the last. */
static void reconstruction_gradients(const reff_model *r, grad_pass *p, reff_model *g)
{
    const size_t d = r->d_sae, d_in = r->d_in, d_out = r->d_out, n = p->n;
    size_t widths[REFF_MAX_LEVELS], levels = levels_of(r, widths);
    for (size_t m = 0; m < levels; m++) {
        decode_prefix(r, p->x, p->f, n, widths[m], true, true, p->y_hat);
        for (size_t k = 0; k < n * d_out; k++)
            p->err[k] = 2.0 * (p->y_hat[k] - p->target[k]) / (double)n;
        for (size_t tok = 0; tok < n; tok++)
            for (size_t o = 0; o < d_out; o++) {
                double gk = p->err[tok * d_out + o];
                g->b_dec[o] += gk;
                for (size_t j = 0; g->W_skip && j < d_in; j++)
                    g->W_skip[o * d_in + j] += gk * p->x[tok * d_in + j];
                for (size_t i = 0; i < widths[m]; i++) {
                    p->df[tok * d + i] += r->W_dec[i * d_out + o] * gk;
                    g->W_dec[i * d_out + o] += p->f[tok * d + i] * gk;
                }
            }
    }
    for (size_t k = 0; k < n * d_out; k++)
        p->e[k] = p->target[k] - p->y_hat[k];
}

/* Gated: the auxiliary reconstruction through the frozen decoder reaches the
 * gate path only; dL/du, b_gate, b_mag, r_mag and the norm term of W_dec. */
static void gated_gradients(const reff_model *r, const reff_train *t, grad_pass *p,
                            reff_model *g)
{
    const size_t d = r->d_sae, d_out = r->d_out, n = p->n;
    double *via_gate = dalloc(n * d_out);
    decode_prefix(r, p->x, p->gate, n, d, true, true, via_gate);
    for (size_t tok = 0; tok < n; tok++)
        for (size_t i = 0; i < d; i++) {
            size_t a = tok * d + i;
            double gate_pre = p->u[a] + r->b_enc[i], dgate = 0.0, dmag = 0.0;
            if (gate_pre > 0.0) {
                dgate = t->lambda * p->norms[i] / (double)n;
                for (size_t o = 0; o < d_out; o++)
                    dgate += r->W_dec[i * d_out + o] * 2.0 *
                             (via_gate[tok * d_out + o] - p->target[tok * d_out + o]) /
                             (double)n;
            }
            if (p->f[a] > 0.0)
                dmag = p->df[a];
            p->du[a] = dgate + exp(r->r_mag[i]) * dmag;
            g->b_enc[i] += dgate; /* b_gate */
            g->b_mag[i] += dmag;
            g->r_mag[i] += dmag * exp(r->r_mag[i]) * p->u[a];
            if (p->gate[a] > 0.0 && p->norms[i] > 0.0)
                for (size_t o = 0; o < d_out; o++)
                    g->W_dec[i * d_out + o] += t->lambda / (double)n * p->gate[a] *
                                               r->W_dec[i * d_out + o] / p->norms[i];
        }
    free(via_gate);
}

/* dL/dpre through the architecture's activation (Gated: dL/du), with the
 * sparsity terms: the L1 norm term of W_dec (ReLU), the threshold's
 * straight-through estimator (JumpReLU). */
static void activation_gradients(const reff_model *r, const reff_train *t, grad_pass *p,
                                 reff_model *g)
{
    const size_t d = r->d_sae, d_out = r->d_out, n = p->n;
    switch (r->arch) {
    case REFF_RELU:
        for (size_t a = 0; a < n * d; a++) {
            size_t i = a % d;
            p->dpre[a] = p->f[a] > 0.0 ? p->df[a] + t->lambda * p->norms[i] / (double)n : 0.0;
            if (p->f[a] > 0.0 && p->norms[i] > 0.0)
                for (size_t o = 0; o < d_out; o++)
                    g->W_dec[i * d_out + o] +=
                        t->lambda / (double)n * p->f[a] * r->W_dec[i * d_out + o] / p->norms[i];
        }
        break;
    case REFF_JUMPRELU:
        for (size_t a = 0; a < n * d; a++) {
            size_t i = a % d;
            double theta = exp(r->log_theta[i]), dist = p->pre[a] - theta;
            p->dpre[a] = p->f[a] > 0.0 ? p->df[a] : 0.0;
            if (dist > -0.5 * t->bandwidth && dist < 0.5 * t->bandwidth)
                g->log_theta[i] += theta * (-(theta / t->bandwidth) * p->df[a] -
                                            t->lambda / ((double)n * t->bandwidth));
        }
        break;
    case REFF_GATED:
        gated_gradients(r, t, p, g);
        break;
    default: /* the TopK family: through the selected entries */
        for (size_t a = 0; a < n * d; a++)
            p->dpre[a] = p->f[a] > 0.0 ? p->df[a] : 0.0;
        break;
    }
}

/* AuxK (the TopK family): the dead features' reconstruction of e. */
static void auxk_gradients(const reff_model *r, const reff_train *t, grad_pass *p,
                           reff_model *g)
{
    const size_t d = r->d_sae, d_out = r->d_out, n = p->n;
    double *f_aux = dalloc(n * d), *e_hat = dalloc(n * d_out);
    auxk_picks(r, t, p->pre, n, f_aux);
    auxk_reconstruction(r, f_aux, n, e_hat);
    double denom = residual_variance(p->e, n, d_out);
    if (denom > 0.0)
        for (size_t tok = 0; tok < n; tok++)
            for (size_t i = 0; i < d; i++) {
                double fa = f_aux[tok * d + i];
                if (fa == 0.0)
                    continue;
                for (size_t o = 0; o < d_out; o++) {
                    size_t k = tok * d_out + o;
                    double de = 2.0 * t->auxk_coeff * (e_hat[k] - p->e[k]) / ((double)n * denom);
                    p->dpre[tok * d + i] += r->W_dec[i * d_out + o] * de;
                    g->W_dec[i * d_out + o] += fa * de;
                }
            }
    free(f_aux);
    free(e_hat);
}

/* The encoder, from dL/du (= dL/dpre outside Gated): W_enc, b_enc and, for
 * an autoencoder, b_dec through x - b_dec. */
static void encoder_gradients(const reff_model *r, const grad_pass *p, reff_model *g)
{
    const size_t d = r->d_sae, d_in = r->d_in;
    for (size_t tok = 0; tok < p->n; tok++)
        for (size_t i = 0; i < d; i++) {
            size_t a = tok * d + i;
            double gu = is_gated(r->arch) ? p->du[a] : p->dpre[a];
            if (!is_gated(r->arch))
                g->b_enc[i] += gu;
            if (gu == 0.0)
                continue;
            for (size_t j = 0; j < d_in; j++) {
                g->W_enc[j * d + i] += encoder_input(r, p->x, tok, j) * gu;
                if (r->kind == REFF_AUTOENCODER)
                    g->b_dec[j] -= r->W_enc[j * d + i] * gu;
            }
        }
}

void reff_gradients(const reff_model *r, const reff_train *t, const float *x, const float *y,
                    size_t n, reff_model *g)
{
    if (r->rescale)
        abort(); /* libsae does not train with SAELens's decoder-norm rescaling */
    const size_t d = r->d_sae, d_out = r->d_out;
    tensor_view gv[8];
    size_t n_tensors = tensors_of(g, gv);
    for (size_t a = 0; a < n_tensors; a++)
        memset(gv[a].data, 0, gv[a].count * sizeof(double));
    grad_pass p = {
        .x = x, .target = target_of(r, x, y), .n = n,
        .f = dalloc(n * d), .pre = dalloc(n * d), .gate = dalloc(n * d), .u = dalloc(n * d),
        .df = dalloc(n * d), .dpre = dalloc(n * d), .du = dalloc(n * d),
        .y_hat = dalloc(n * d_out), .err = dalloc(n * d_out), .e = dalloc(n * d_out),
        .norms = dalloc(d),
    };
    reff_features(r, NULL, x, n, p.f, p.pre, p.gate);
    encoder_product(r, x, n, p.u);
    for (size_t i = 0; i < d; i++)
        p.norms[i] = row_norm(r, i);
    reconstruction_gradients(r, &p, g);
    activation_gradients(r, t, &p, g);
    if (topk_family(r->arch) && t->auxk_coeff > 0.0)
        auxk_gradients(r, t, &p, g);
    encoder_gradients(r, &p, g);
    double *arrays[] = {p.f, p.pre, p.gate, p.u, p.df, p.dpre, p.du, p.y_hat, p.err, p.e, p.norms};
    for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++)
        free(arrays[k]);
}

void reff_fold_decoder_norms(reff_model *r)
{
    for (size_t i = 0; i < r->d_sae; i++) {
        double norm = row_norm(r, i);
        if (norm < 1e-8)
            norm = 1e-8;
        r->b_enc[i] *= norm;
        for (size_t o = 0; o < r->d_out; o++)
            r->W_dec[i * r->d_out + o] /= norm;
        for (size_t j = 0; j < r->d_in; j++)
            r->W_enc[j * r->d_sae + i] *= norm;
    }
    r->rescale = false;
}

/* ---- synthetic data ----------------------------------------------------------- */

static void unit_rows(double *rows, size_t count, size_t dim, test_rng *rng)
{
    for (size_t a = 0; a < count; a++) {
        double s = 0.0;
        for (size_t j = 0; j < dim; j++) {
            rows[a * dim + j] = test_normal(rng);
            s += rows[a * dim + j] * rows[a * dim + j];
        }
        for (size_t j = 0; j < dim; j++)
            rows[a * dim + j] /= sqrt(s);
    }
}

void reff_transcoder_data_make(reff_transcoder_data *d, size_t n, size_t d_in, size_t d_out,
                               size_t n_true, double active, double skip_sd, uint64_t seed)
{
    test_rng rng = {seed};
    memset(d, 0, sizeof *d);
    d->n = n;
    d->d_in = d_in;
    d->d_out = d_out;
    d->n_true = n_true;
    d->dir_in = dalloc(n_true * d_in);
    d->dir_out = dalloc(n_true * d_out);
    d->code = dalloc(n * n_true);
    d->x = malloc(n * d_in * sizeof(float));
    d->y = malloc(n * d_out * sizeof(float));
    if (!d->x || !d->y)
        abort();
    unit_rows(d->dir_in, n_true, d_in, &rng);
    unit_rows(d->dir_out, n_true, d_out, &rng);
    if (skip_sd > 0.0) {
        d->skip = dalloc(d_out * d_in);
        for (size_t k = 0; k < d_out * d_in; k++)
            d->skip[k] = skip_sd / sqrt((double)d_in) * test_normal(&rng);
    }
    const double p = active / (double)n_true;
    double *xt = dalloc(d_in);
    for (size_t t = 0; t < n; t++) {
        double *c = d->code + t * n_true;
        for (size_t a = 0; a < n_true; a++)
            c[a] = test_uniform(&rng) < p ? 0.5 + test_uniform(&rng) : 0.0;
        for (size_t j = 0; j < d_in; j++) {
            double s = 0.0;
            for (size_t a = 0; a < n_true; a++)
                s += c[a] * d->dir_in[a * d_in + j];
            xt[j] = s;
            d->x[t * d_in + j] = (float)s;
        }
        for (size_t o = 0; o < d_out; o++) {
            double s = 0.0;
            for (size_t a = 0; a < n_true; a++)
                s += c[a] * d->dir_out[a * d_out + o];
            for (size_t j = 0; d->skip && j < d_in; j++)
                s += d->skip[o * d_in + j] * xt[j];
            d->y[t * d_out + o] = (float)s;
        }
    }
    free(xt);
}

void reff_transcoder_data_free(reff_transcoder_data *d)
{
    free(d->x);
    free(d->y);
    free(d->code);
    free(d->dir_in);
    free(d->dir_out);
    free(d->skip);
    memset(d, 0, sizeof *d);
}

/* Element (a, j) of n_vec vectors of length dim, stored as rows or as columns. */
static double element(const float *m, bool columns, size_t n_vec, size_t dim, size_t a, size_t j)
{
    return columns ? m[j * n_vec + a] : m[a * dim + j];
}

static double mmcs_of(const float *m, bool columns, size_t n_vec, size_t dim, const double *dirs,
                      size_t n_true, double *above)
{
    double total = 0.0;
    size_t good = 0;
    for (size_t a = 0; a < n_true; a++) {
        double best = 0.0;
        for (size_t v = 0; v < n_vec; v++) {
            double dot = 0.0, norm = 0.0;
            for (size_t j = 0; j < dim; j++) {
                double w = element(m, columns, n_vec, dim, v, j);
                dot += w * dirs[a * dim + j];
                norm += w * w;
            }
            if (norm > 0.0)
                best = fmax(best, dot / sqrt(norm));
        }
        total += best;
        good += best > 0.9;
    }
    if (above)
        *above = n_true ? (double)good / (double)n_true : 0.0;
    return n_true ? total / (double)n_true : 0.0;
}

double reff_mmcs(const float *rows, size_t n_rows, size_t dim, const double *dirs, size_t n_true,
                 double *above)
{
    return mmcs_of(rows, false, n_rows, dim, dirs, n_true, above);
}

double reff_mmcs_columns(const float *cols, size_t dim, size_t n_cols, const double *dirs,
                         size_t n_true, double *above)
{
    return mmcs_of(cols, true, n_cols, dim, dirs, n_true, above);
}
