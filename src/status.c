/*
 * Version, status strings, and the detail message of the last failure on each
 * thread (sae_error_detail). The detail is the library's only global mutable
 * state: one buffer per thread, written only by failing calls.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define SAE_STR2(x) #x
#define SAE_STR(x) SAE_STR2(x)

unsigned sae_version_number(void) { return SAE_VERSION_NUMBER; }

const char *sae_version_string(void)
{
    return SAE_STR(SAE_VERSION_MAJOR) "." SAE_STR(SAE_VERSION_MINOR) "." SAE_STR(SAE_VERSION_PATCH);
}

const char *sae_status_string(int status)
{
    switch (status) {
    case SAE_OK: return "success";
    case SAE_E_INVALID_ARG: return "invalid argument (NULL pointer, zero or overflowing size, "
                                   "mismatched count or shape, or option out of range)";
    case SAE_E_NOMEM: return "out of memory";
    case SAE_E_NONFINITE: return "non-finite value (NaN or Inf in data, a hyperparameter, "
                                 "gradients or updated parameters)";
    case SAE_E_IO: return "input/output error";
    case SAE_E_FORMAT: return "malformed or unsupported file or buffer";
    case SAE_E_STATE: return "call not valid in the current state";
    case SAE_E_COMM: return "communicator failure (a collective of the sae_comm failed)";
    default: return "unknown status";
    }
}

/* Long enough for a message that names a path; longer ones are cut short. */
#define DETAIL_BYTES 1024

static _Thread_local char detail[DETAIL_BYTES];

const char *sae_error_detail(void) { return detail; }

int sae__fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return status;
}

int sae__fail_context(int status, const char *fmt, ...)
{
    char prefix[DETAIL_BYTES];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof prefix ? (size_t)n : sizeof prefix - 1;
    /* detail becomes prefix + ": " + detail, cut at the buffer's end */
    if (len + 2 >= sizeof detail) {
        memcpy(detail, prefix, sizeof detail);
        detail[sizeof detail - 1] = '\0';
        return status;
    }
    size_t rest = strlen(detail);
    if (rest > sizeof detail - 1 - len - 2)
        rest = sizeof detail - 1 - len - 2;
    memmove(detail + len + 2, detail, rest);
    detail[len + 2 + rest] = '\0';
    memcpy(detail, prefix, len);
    detail[len] = ':';
    detail[len + 1] = ' ';
    return status;
}
