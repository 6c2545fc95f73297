/* The smallest host: proves a C program links against libembraft (static
 * or shared) and that the loaded library's ABI matches the header. */
#include "embraft.h"

#include <stdio.h>

int main(void) {
    embraft_config *config = NULL;
    if (embraft_abi_version() != EMBRAFT_ABI_VERSION) {
        fprintf(stderr, "ABI mismatch: library %u, header %u\n", embraft_abi_version(),
                (unsigned)EMBRAFT_ABI_VERSION);
        return 1;
    }
    if (embraft_config_new(&config) != EMBRAFT_OK) {
        return 1;
    }
    embraft_config_free(config);
    printf("embraft %s, ABI %u\n", embraft_version(), embraft_abi_version());
    return 0;
}
