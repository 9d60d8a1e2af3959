//go:build !js

package kernels

import "github.com/cogentcore/webgpu/wgpu"

// The native and js backends of cogentcore/webgpu differ in a few
// signatures; these shims keep the rest of the package on one code path.

func endPass(p *wgpu.ComputePassEncoder) error { return p.End() }

func computePipelineDesc(label string, l *wgpu.PipelineLayout, m *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Label: label, Layout: l, Compute: wgpu.ProgrammableStageDescriptor{Module: m, EntryPoint: entry}}
}
