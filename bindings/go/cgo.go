package embraft

// The package links the static library cargo builds in the repository
// (`cargo build --release` at the repository root); the system libraries
// after it are what the Rust standard library needs (docs/FFI.md).

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: ${SRCDIR}/../../target/release/libembraft.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
#include <embraft.h>
*/
import "C"

import "fmt"

// ABIVersion is the ABI version of the header this package was compiled
// against.
const ABIVersion = uint32(C.EMBRAFT_ABI_VERSION)

// abiMismatch is set by init when the linked library speaks another ABI;
// every constructor then refuses to run.
var abiMismatch error

func init() {
	if got := uint32(C.embraft_abi_version()); got != ABIVersion {
		// A panic here would kill hosts that only import the package; the
		// constructors report the error instead.
		abiMismatch = fmt.Errorf("embraft: library ABI version %d, binding needs %d", got, ABIVersion)
	}
}

// Version returns the linked library's release version, for humans.
func Version() string {
	return C.GoString(C.embraft_version())
}
