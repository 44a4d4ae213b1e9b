/* A header that breaks every naming rule check_header_names.py enforces; the
 * header_names_selftest test requires each problem to be reported. */
#ifndef BAD_NAMES_H
#define BAD_NAMES_H
#include <stddef.h>
#define SAE_FINE 1
#define MAX_ITEMS 16
typedef int item_count;
struct item { int a; };
enum sae_kind { SAE_KIND_A = 0, KIND_B = 1 };
int helper(void);
extern int counter;
typedef struct sae_fine { int (*callback)(void); } sae_fine;
int sae_fine_function(sae_fine *f);
#endif
