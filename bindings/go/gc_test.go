package embraft

import "runtime"

func runtimeGC() { runtime.GC() }
