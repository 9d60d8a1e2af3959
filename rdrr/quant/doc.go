// Package quant defines the tensor storage types of DOPPLER models and their
// CPU encoders and decoders.
//
// The block layouts follow llama.cpp's ggml-common.h (and the OCP MX spec for
// MXFP4) byte for byte: a shard's bytes are what the GPU kernels read. The
// CPU code here is the reference the WGSL kernels are tested against and the
// requantizer used by the converter.
//
// Dequantize gives llama.cpp's dequantize_row_* results. Quantize follows
// llama.cpp's quantize_row_*_ref and, for every type but Q4_K, reproduces
// its bytes exactly (the tests re-encode the shared llama.cpp-quantized
// models block for block). Q4_K starts from the same algorithm, then
// chooses each sub-block's 6-bit scale and min jointly and, where a
// sub-block is one-signed, also tries encodings that keep its offset; its
// error is never above llama.cpp's. Such blocks may carry a negative dmin,
// which decoders must treat as the signed f16 it is.
//
// The float32 arithmetic is written so that the compiler cannot fuse it
// into FMAs: Quantize gives the same bytes on every architecture.
package quant
