// Package reference is the engine's whole-model CPU reference: the same
// forward pass the engine records on the GPU, computed with the scalar
// reference of every kernel (package kernels' *Ref functions), from the
// weights as stored (quantized blocks dequantized exactly as the kernels
// decode them), with the KV cache rounded through f16 where the engine's
// is. It covers every family the engine runs (llama, mistral, qwen3,
// gemma3, mixtral, gpt-oss). The engine's tests require its logits within
// a tolerance of this model's at every step.
//
// With [Options.LlamaCPU] it instead rounds activations as llama.cpp's
// CPU backend does — each matmul's input row quantized to the weight
// type's vec_dot type (Q8_0 for Q8_0/Q4_0/Q5_0/MXFP4, Q8_K for the
// K-quants, f16 for F16 weights), and, on the non-flash-attention path
// over an f16 KV cache, q and the softmax probabilities rounded to f16 —
// so a llama.cpp golden can be told apart from a fault of ours.
//
// It builds on package kernels, so natively it needs cgo too. It is slow
// (float64 scalar loops) and meant for the tiny test models.
package reference
