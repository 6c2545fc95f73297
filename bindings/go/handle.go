package embraft

/*
#include <embraft.h>
*/
import "C"

import (
	"runtime"
	"sync"
)

// handle is a C handle (a node, a runtime) that goroutines share. Every
// call holds mu shared and free holds it exclusively, because the C API
// forbids freeing a handle concurrently with any other call on it; calls
// after free return ErrClosed.
// P is the pointer type (*C.embraft_node, ...): cgo's incomplete struct
// types cannot be type arguments themselves.
type handle[P comparable] struct {
	mu  sync.RWMutex
	ptr P
	// lastErrorOf copies the handle's last error message into buf
	// (embraft_node_last_error, embraft_runtime_last_error).
	lastErrorOf func(ptr P, buf *C.char, size C.size_t)
	release     func(ptr P)
}

// call runs one C call on the live handle. It keeps the handle (and what
// embeds it) alive until the call returned, and turns a failure into a
// CallError carrying the handle's last error message.
func (h *handle[P]) call(op string, f func(P) C.embraft_status) error {
	debugAccess()
	h.mu.RLock()
	defer h.mu.RUnlock()
	var closed P
	if h.ptr == closed {
		return ErrClosed
	}
	code := f(h.ptr)
	var err error
	if code != C.EMBRAFT_OK {
		err = h.lastError(op, code)
	}
	runtime.KeepAlive(h)
	return err
}

// lastError builds the error of a failed call; h.mu is held.
func (h *handle[P]) lastError(op string, code C.embraft_status) error {
	if code == C.EMBRAFT_ERR_BUSY || code == C.EMBRAFT_TIMED_OUT {
		// Frequent and self-explanatory: skip the message copy.
		return &CallError{Op: op, Code: Code(code)}
	}
	var buf [512]C.char
	h.lastErrorOf(h.ptr, &buf[0], C.size_t(len(buf)))
	return &CallError{Op: op, Code: Code(code), Message: C.GoString(&buf[0])}
}

// errorOf builds the error of a failed call on something the handle made
// (a snapshot writer shares its last error), with the message while the
// handle is open.
func (h *handle[P]) errorOf(op string, code C.embraft_status) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var closed P
	if h.ptr == closed {
		return &CallError{Op: op, Code: Code(code)}
	}
	err := h.lastError(op, code)
	runtime.KeepAlive(h)
	return err
}

// free releases the C handle once no call runs; false when it was
// already freed.
func (h *handle[P]) free() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	var closed P
	if h.ptr == closed {
		return false
	}
	h.release(h.ptr)
	h.ptr = closed
	return true
}
