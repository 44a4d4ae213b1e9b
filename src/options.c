/*
 * The optimizer's options: one table (number, name, storage, default, bounds)
 * drives sae_optimizer_set and sae_optimizer_get, the defaults of a new
 * optimizer, the bounds query, and the options a checkpoint saves (in table
 * order, which is increasing number). The ABI passes every value as a double;
 * inside, counts and enum values are stored as integers.
 */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define REAL(field) SAE_OPTION_STORE_REAL, offsetof(sae_options, field)
#define INT(field) SAE_OPTION_STORE_INT, offsetof(sae_options, field)
#define U64(field) SAE_OPTION_STORE_U64, offsetof(sae_options, field)

enum {
    OPEN_LOW = SAE_OPTION_LOWER_OPEN,
    OPEN_HIGH = SAE_OPTION_UPPER_OPEN,
    WHOLE = SAE_OPTION_WHOLE
};

/* 2^53: counts a double holds exactly */
#define EXACT_MAX 9007199254740992.0

/* Sorted by number. The allowed ranges are the header's (sae.h, "Options"). */
static const sae_option_info option_table[] = {
    {SAE_OPT_LR, "lr", REAL(lr), 5e-5, 0.0, DBL_MAX, OPEN_LOW},
    {SAE_OPT_BETA1, "beta1", REAL(beta1), 0.9, 0.0, 1.0, OPEN_HIGH},
    {SAE_OPT_BETA2, "beta2", REAL(beta2), 0.999, 0.0, 1.0, OPEN_HIGH},
    {SAE_OPT_EPS, "eps", REAL(eps), 1e-8, 0.0, DBL_MAX, OPEN_LOW},
    {SAE_OPT_L1_COEFF, "l1_coeff", REAL(l1_coeff), 5.0, 0.0, DBL_MAX, 0},
    {SAE_OPT_GRAD_CLIP, "grad_clip", REAL(grad_clip), 1.0, 0.0, DBL_MAX, 0},
    {SAE_OPT_THREADS, "threads", INT(threads), 0.0, 0.0, SAE_MAX_THREADS, WHOLE},
    {SAE_OPT_KERNEL, "kernel", INT(kernel), SAE_KERNEL_AUTO, SAE_KERNEL_AUTO, SAE_KERNEL_SPARSE,
     WHOLE},
    {SAE_OPT_TOTAL_STEPS, "total_steps", U64(total_steps), 0.0, 0.0, EXACT_MAX, WHOLE},
    {SAE_OPT_L1_WARMUP_FRACTION, "l1_warmup_fraction", REAL(l1_warmup_fraction), 0.0, 0.0, 1.0, 0},
    {SAE_OPT_LR_WARMUP_STEPS, "lr_warmup_steps", U64(lr_warmup_steps), 0.0, 0.0, EXACT_MAX, WHOLE},
    {SAE_OPT_LR_DECAY_FRACTION, "lr_decay_fraction", REAL(lr_decay_fraction), 0.0, 0.0, 1.0, 0},
    {SAE_OPT_LR_SCHEDULE, "lr_schedule", INT(lr_schedule), SAE_LR_CONSTANT, SAE_LR_CONSTANT,
     SAE_LR_COSINE, WHOLE},
    {SAE_OPT_AUXK_COEFF, "auxk_coeff", REAL(auxk_coeff), 1.0 / 32.0, 0.0, DBL_MAX, 0},
    {SAE_OPT_AUXK_K, "auxk_k", U64(auxk_k), 0.0, 0.0, 4294967295.0, WHOLE},
    {SAE_OPT_DEAD_WINDOW, "dead_window", U64(dead_window), 1e7, 1.0, 1.8e19, WHOLE},
    {SAE_OPT_JUMPRELU_BANDWIDTH, "jumprelu_bandwidth", REAL(jumprelu_bandwidth), 0.001, 0.0,
     DBL_MAX, OPEN_LOW},
    {SAE_OPT_THRESHOLD_BETA, "threshold_beta", REAL(threshold_beta), 0.999, 0.0, 1.0, OPEN_HIGH},
    {SAE_OPT_GEMM, "gemm", INT(gemm), SAE_GEMM_AUTO, SAE_GEMM_AUTO, SAE_GEMM_ONEDNN, WHOLE},
    {SAE_OPT_PRECISION, "precision", INT(precision), SAE_PRECISION_FP32, SAE_PRECISION_FP32,
     SAE_PRECISION_BF16, WHOLE},
};

#define N_OPTIONS (sizeof option_table / sizeof option_table[0])

size_t sae__option_count(void) { return N_OPTIONS; }

const sae_option_info *sae__option_at(size_t i) { return i < N_OPTIONS ? &option_table[i] : NULL; }

const sae_option_info *sae__option_find(int option)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (option_table[i].id == option)
            return &option_table[i];
    return NULL;
}

double sae__option_read(const sae_options *opt, const sae_option_info *info)
{
    const char *p = (const char *)opt + info->offset;
    switch (info->store) {
    case SAE_OPTION_STORE_INT: return (double)*(const int *)(const void *)p;
    case SAE_OPTION_STORE_U64: return (double)*(const uint64_t *)(const void *)p;
    default: return *(const double *)(const void *)p;
    }
}

void sae__option_write(sae_options *opt, const sae_option_info *info, double value)
{
    char *p = (char *)opt + info->offset;
    switch (info->store) {
    case SAE_OPTION_STORE_INT: *(int *)(void *)p = (int)value; break;
    case SAE_OPTION_STORE_U64: *(uint64_t *)(void *)p = (uint64_t)value; break;
    default: *(double *)(void *)p = value; break;
    }
}

void sae__options_init(sae_options *opt)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        sae__option_write(opt, &option_table[i], option_table[i].def);
}

/* The shortest "%g" text of v that reads back as v (for messages). */
static void shortest(double v, char out[32])
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(out, 32, "%.*g", digits, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

int sae__option_check(const char *fn, const sae_option_info *info, double value)
{
    if (!isfinite(value))
        return sae__fail(SAE_E_NONFINITE, "%s: option %s (%d): %g is not finite", fn, info->name,
                         info->id, value);
    bool low_ok = info->flags & SAE_OPTION_LOWER_OPEN ? value > info->lower : value >= info->lower;
    bool high_ok = info->flags & SAE_OPTION_UPPER_OPEN ? value < info->upper : value <= info->upper;
    if (low_ok && high_ok && (!(info->flags & SAE_OPTION_WHOLE) || value == floor(value)))
        return SAE_OK;
    char v[32], lo[32], hi[32];
    shortest(value, v);
    shortest(info->lower, lo);
    shortest(info->upper, hi);
    return sae__fail(SAE_E_INVALID_ARG, "%s: option %s (%d): %s is not %s in %c%s, %s%c", fn,
                     info->name, info->id, v,
                     info->flags & SAE_OPTION_WHOLE ? "a whole number" : "a number",
                     info->flags & SAE_OPTION_LOWER_OPEN ? '(' : '[', lo, hi,
                     info->flags & SAE_OPTION_UPPER_OPEN ? ')' : ']');
}

int sae_optimizer_set(sae_optimizer *o, int option, double value)
{
    if (!o)
        return sae__fail(SAE_E_INVALID_ARG, "sae_optimizer_set: o is NULL");
    const sae_option_info *info = sae__option_find(option);
    if (!info)
        return sae__fail(SAE_E_INVALID_ARG, "sae_optimizer_set: %d is not an option", option);
    int rc = sae__option_check("sae_optimizer_set", info, value);
    if (rc != SAE_OK)
        return rc;
    sae__option_write(&o->opt, info, value);
    return SAE_OK;
}

int sae_optimizer_get(const sae_optimizer *o, int option, double *value)
{
    if (!o || !value)
        return sae__fail(SAE_E_INVALID_ARG, "sae_optimizer_get: %s is NULL", !o ? "o" : "value");
    const sae_option_info *info = sae__option_find(option);
    if (!info)
        return sae__fail(SAE_E_INVALID_ARG, "sae_optimizer_get: %d is not an option", option);
    *value = sae__option_read(&o->opt, info);
    return SAE_OK;
}

const char *sae_option_name(int option)
{
    const sae_option_info *info = sae__option_find(option);
    return info ? info->name : NULL;
}

int sae_option_default(int option, double *value)
{
    const sae_option_info *info = sae__option_find(option);
    if (!info)
        return sae__fail(SAE_E_INVALID_ARG, "sae_option_default: %d is not an option", option);
    if (!value)
        return sae__fail(SAE_E_INVALID_ARG, "sae_option_default: value is NULL");
    *value = info->def;
    return SAE_OK;
}

int sae_option_bounds(int option, double *lower, double *upper, unsigned *flags)
{
    const sae_option_info *info = sae__option_find(option);
    if (!info)
        return sae__fail(SAE_E_INVALID_ARG, "sae_option_bounds: %d is not an option", option);
    if (!lower || !upper || !flags)
        return sae__fail(SAE_E_INVALID_ARG, "sae_option_bounds: %s is NULL",
                         !lower ? "lower" : !upper ? "upper" : "flags");
    *lower = info->lower;
    *upper = info->upper;
    *flags = info->flags;
    return SAE_OK;
}
