// Package quant defines the tensor storage types of DOPPLER models and their
// CPU encoders and decoders.
//
// The block layouts follow llama.cpp's ggml-common.h (and the OCP MX spec for
// MXFP4) byte for byte: a shard's bytes are what the GPU kernels read. The
// CPU code here is the reference the WGSL kernels are tested against and the
// requantizer used by the converter.
package quant
