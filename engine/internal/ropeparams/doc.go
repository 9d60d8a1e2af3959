// Package ropeparams turns a manifest's RoPE description into the RoPE
// kernel's parameters: the inverse frequencies with the context-extension
// scaling folded in. The engine and its CPU reference model
// (engine/reference) both read RoPE through it.
//
// It builds on package kernels, so natively it needs cgo too.
package ropeparams
