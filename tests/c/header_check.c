/* The header must compile cleanly on its own, twice, as C99 and as C++. */
#include "embraft.h"
#include "embraft.h"

int header_check_abi(void);
int header_check_abi(void) {
    return EMBRAFT_ABI_VERSION;
}
