// Package grpcbuffers gives a plugin process a gRPC buffer pool sized for
// tpmid's messages.
//
// gRPC's default pool has tiers of 256 B, 4, 16 and 32 KiB and then 1 MiB,
// and it zeroes a pooled buffer's whole capacity on every Get. tpmid's
// evidence (the event log and quotes, 40-200 KB) falls between 32 KiB and
// 1 MiB, so every attestation cleared a whole mebibyte to receive it: 5-7%
// of the server plugin's CPU under load (docs/performance.md). The
// plugin SDK's pluginmain.Serve takes no gRPC server options, and the
// proto codec's pool can only be changed process-wide, so the plugins
// install this pool at init. Buffers are still zeroed on Get, as gRPC's own
// pool does: only the tiers change.
package grpcbuffers

import (
	"fmt"

	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// Exponents are the pool's tiers as powers of two: gRPC's defaults with
// every power of two from 64 KiB to 1 MiB added, so no message wastes more
// than half its buffer.
var Exponents = []uint8{8, 12, 14, 15, 16, 17, 18, 19, 20}

// New returns the pool: zeroing, tiered by Exponents.
func New() mem.BufferPool {
	pool, err := mem.NewBinaryTieredBufferPool(Exponents...)
	if err != nil {
		// Exponents is a constant list that fits any 64- or 32-bit word.
		panic(fmt.Sprintf("grpcbuffers: %v", err))
	}
	return pool
}

// Install makes New's pool the process's default gRPC buffer pool. gRPC
// allows this only during initialisation: call it from an init function of
// package main, before any gRPC server or client exists.
func Install() { experimental.SetDefaultBufferPool(New()) }
