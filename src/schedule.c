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
    if (t == 0)
        return sae__fail(SAE_E_INVALID_ARG, "step 0: steps are numbered from 1");
    if (!schedule_consistent(o))
        return sae__fail(SAE_E_INVALID_ARG, "the schedule options contradict each other: "
                         "lr_warmup_steps %llu, lr_decay_fraction %g, lr_schedule %d, "
                         "total_steps %llu (see \"Training recipe\" in sae.h)",
                         (unsigned long long)o->opt.lr_warmup_steps, o->opt.lr_decay_fraction,
                         o->opt.lr_schedule, (unsigned long long)o->opt.total_steps);
    /* t above 2^53 rounds to a nearby double: every factor is then constant */
    const double step = (double)t;
    *lr = o->opt.lr * lr_factor(o, step);
    *lambda = o->opt.l1_coeff * l1_factor(o, step);
    return SAE_OK;
}

/* The query of one of the two values (which: 0 lr, 1 lambda). */
static int value_at(const char *fn, const sae_optimizer *o, uint64_t step, double *out,
                    int which)
{
    double v[2] = {0.0, 0.0};
    if (!o || !out)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, !o ? "o" : "the output");
    int rc = sae__schedule_values(o, step, &v[0], &v[1]);
    if (rc != SAE_OK)
        return sae__fail_context(rc, "%s", fn);
    *out = v[which];
    return SAE_OK;
}

int sae_optimizer_lr_at(const sae_optimizer *o, uint64_t step, double *lr)
{
    return value_at("sae_optimizer_lr_at", o, step, lr, 0);
}

int sae_optimizer_l1_coeff_at(const sae_optimizer *o, uint64_t step, double *lambda)
{
    return value_at("sae_optimizer_l1_coeff_at", o, step, lambda, 1);
}
