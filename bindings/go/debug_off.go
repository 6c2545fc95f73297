//go:build !embraftdebug

package embraft

// debugAccess is a no-op in normal builds; see debug_on.go.
func debugAccess() {}
