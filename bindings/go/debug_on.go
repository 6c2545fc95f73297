//go:build embraftdebug

package embraft

import "runtime"

// debugAccess forces a collection before every access to a C handle, so
// that a wrapper the garbage collector considers dead while C still uses
// it (a missing runtime.KeepAlive) is finalized, and freed, right away and
// the use after free shows up in tests instead of in production.
func debugAccess() { runtime.GC() }

// debugBuild tells tests that every access collects garbage (slow).
const debugBuild = true
