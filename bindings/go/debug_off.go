//go:build !embraftdebug

package embraft

// debugAccess is a no-op in normal builds; see debug_on.go.
func debugAccess() {}

// debugBuild tells tests that every access collects garbage (slow).
const debugBuild = false
