/*
 * The argument checks every public function shares: buffers given as rows x
 * width elements (their byte size must fit size_t before any of them is
 * read or written) and data that must be finite. Each failure records a
 * detail naming the function, the argument and its shape.
 */
#include "internal.h"

#include <math.h>

int sae__check_rows(const char *fn, const char *name, const void *ptr, size_t rows,
                    const char *rows_name, size_t width, const char *width_name, size_t elem_size)
{
    if (!ptr)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL", fn, name);
    if (rows == 0)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is 0", fn, rows_name);
    size_t elems, bytes;
    if (!sae__mul(rows, width, &elems) || !sae__mul(elems, elem_size, &bytes))
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: %s: %s x %s = %zu x %zu elements of %zu bytes overflow size_t", fn,
                         name, rows_name, width_name, rows, width, elem_size);
    return SAE_OK;
}

int sae__check_capacity(const char *fn, const char *name, const void *ptr, size_t capacity,
                        const char *capacity_name, size_t elem_size)
{
    if (capacity == 0)
        return SAE_OK;
    if (!ptr)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s is NULL with %s %zu", fn, name,
                         capacity_name, capacity);
    if (capacity > SIZE_MAX / elem_size)
        return sae__fail(SAE_E_INVALID_ARG,
                         "%s: %s: %s = %zu elements of %zu bytes overflow size_t", fn, name,
                         capacity_name, capacity, elem_size);
    return SAE_OK;
}

int sae__check_offsets(const char *fn, const char *name, const void *ptr, size_t n_tokens)
{
    if (n_tokens == SIZE_MAX)
        return sae__fail(SAE_E_INVALID_ARG, "%s: %s: n_tokens + 1 overflows size_t", fn, name);
    int rc = sae__check_rows(fn, name, ptr, n_tokens + 1, "n_tokens + 1", 1, "1", sizeof(size_t));
    if (rc == SAE_OK && n_tokens == 0)
        rc = sae__fail(SAE_E_INVALID_ARG, "%s: n_tokens is 0", fn);
    return rc;
}

int sae__check_finite(const char *fn, const char *name, const float *v, size_t count)
{
    if (sae__all_finite(v, count))
        return SAE_OK;
    size_t k = 0;
    while (k < count && isfinite(v[k]))
        k++;
    const char *what = isnan(v[k]) ? "NaN" : v[k] > 0 ? "+Inf" : "-Inf";
    if (!fn)
        return sae__fail(SAE_E_NONFINITE, "%s[%zu] is %s", name, k, what);
    return sae__fail(SAE_E_NONFINITE, "%s: %s[%zu] is %s", fn, name, k, what);
}
