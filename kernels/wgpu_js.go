//go:build js

package kernels

import "github.com/cogentcore/webgpu/wgpu"

func endPass(p *wgpu.ComputePassEncoder) error {
	p.End()
	return nil
}

func computePipelineDesc(_ string, l *wgpu.PipelineLayout, m *wgpu.ShaderModule, entry string) *wgpu.ComputePipelineDescriptor {
	return &wgpu.ComputePipelineDescriptor{Layout: l, Compute: wgpu.ProgrammableStageDescriptor{Module: m, EntryPoint: entry}}
}
