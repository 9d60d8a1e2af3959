// Package gguf reads GGUF model files (versions 2 and 3): the metadata
// key/value table, the tensor table, and tensor bytes on demand.
//
// The reader is written here rather than taken from a library because every
// read must be bounded (a hostile file cannot make it allocate gigabytes),
// every error must name the file and what is wrong with it, it is fuzzed, and
// it must build for GOOS=js with nothing but the standard library.
package gguf
