/* Version and status strings. */
#include "internal.h"

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
