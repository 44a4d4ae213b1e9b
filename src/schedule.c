/*
 * The schedules of the April 2024 recipe: learning-rate warm-up and decay
 * (linear or cosine) and the warm-up of the L1 coefficient, as pure functions
 * of the optimizer's options and the 1-based number of the step being taken.
 *
 * sae_step takes its lr and lambda from sae__schedule_values, and the public
 * queries sae_optimizer_lr_at / sae_optimizer_l1_coeff_at call the same
 * function, so what a program sees is exactly what the step applies. The
 * formulas are documented in include/libsae/sae.h ("Training recipe").
 */
#include "internal.h"

#include <math.h>

static const double pi = 3.14159265358979323846;

/* round(fraction * total) as a whole number of steps; fraction is in [0, 1]
 * and total a whole number below 2^53, so the result is exact and <= total. */
static double fraction_steps(double fraction, double total)
{
    return round(fraction * total);
}

/* The options' combination: only meaningful when the total is known. */
static bool schedule_consistent(const sae_optimizer *o)
{
    const double total = (double)o->opt.total_steps, warmup = (double)o->opt.lr_warmup_steps;
    if (total == 0.0)
        return true;
    switch (o->opt.lr_schedule) {
    case SAE_LR_LINEAR: return warmup + fraction_steps(o->opt.lr_decay_fraction, total) <= total;
    case SAE_LR_COSINE: return warmup < total; /* at least one step of cosine */
    default: return warmup <= total;            /* SAE_LR_CONSTANT */
    }
}

/* The learning-rate multiplier at step t (1-based). */
static double lr_factor(const sae_optimizer *o, double t)
{
    const double total = (double)o->opt.total_steps, warmup = (double)o->opt.lr_warmup_steps;
    double factor = 1.0;
    if (warmup > 0.0 && t < warmup)
        factor = t / warmup;
    if (total == 0.0)
        return factor; /* the decays need the total: inactive */
    switch (o->opt.lr_schedule) {
    case SAE_LR_LINEAR: {
        double decay = fraction_steps(o->opt.lr_decay_fraction, total);
        if (decay > 0.0 && t > total - decay)
            factor = fmin(factor, t >= total ? 0.0 : (total - t) / decay);
        break;
    }
    case SAE_LR_COSINE:
        if (t >= total)
            factor = 0.0;
        else if (t > warmup)
            factor = 0.5 * (1.0 + cos(pi * (t - warmup) / (total - warmup)));
        break;
    default: break;
    }
    return factor;
}

/* The L1 coefficient's multiplier at step t (1-based). */
static double l1_factor(const sae_optimizer *o, double t)
{
    double warmup = fraction_steps(o->opt.l1_warmup_fraction, (double)o->opt.total_steps);
    return warmup > 0.0 && t < warmup ? t / warmup : 1.0;
}

int sae__schedule_values(const sae_optimizer *o, uint64_t t, double *lr, double *lambda)
{
    if (t == 0 || !schedule_consistent(o))
        return SAE_E_INVALID_ARG;
    /* t above 2^53 rounds to a nearby double: every factor is then constant */
    const double step = (double)t;
    *lr = o->opt.lr * lr_factor(o, step);
    *lambda = o->opt.l1_coeff * l1_factor(o, step);
    return SAE_OK;
}

int sae_optimizer_lr_at(const sae_optimizer *o, uint64_t step, double *lr)
{
    double value, unused;
    if (!o || !lr)
        return SAE_E_INVALID_ARG;
    int rc = sae__schedule_values(o, step, &value, &unused);
    if (rc == SAE_OK)
        *lr = value;
    return rc;
}

int sae_optimizer_l1_coeff_at(const sae_optimizer *o, uint64_t step, double *lambda)
{
    double value, unused;
    if (!o || !lambda)
        return SAE_E_INVALID_ARG;
    int rc = sae__schedule_values(o, step, &unused, &value);
    if (rc == SAE_OK)
        *lambda = value;
    return rc;
}
