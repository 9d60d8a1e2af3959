//go:build !js && cgo

package kernels

/*
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

// The structs of wgpu-native's webgpu.h that creating a WGSL module
// takes, under names of our own with the same layout: the header is the
// binding's, inside its module.
typedef struct dop_chained { struct dop_chained *next; uint32_t sType; } dop_chained;
typedef struct { const char *data; size_t length; } dop_string_view;
typedef struct { dop_chained *nextInChain; dop_string_view label; } dop_shader_module_desc;
typedef struct { dop_chained chain; dop_string_view code; } dop_shader_source_wgsl;

// wgpu.h: WGPUShaderModule wgpuDeviceCreateShaderModuleTrusted(WGPUDevice,
// WGPUShaderModuleDescriptor const *, WGPUShaderRuntimeChecks).
void *wgpuDeviceCreateShaderModuleTrusted(void *device, dop_shader_module_desc const *descriptor, uint64_t runtimeChecks);

static void *dop_create_trusted(void *device, const char *label, const char *code, uint64_t checks) {
	dop_shader_source_wgsl src = { { NULL, 0x00000002 }, { code, SIZE_MAX } }; // sType: WGPUSType_ShaderSourceWGSL
	dop_shader_module_desc desc = { &src.chain, { label, SIZE_MAX } };
	return wgpuDeviceCreateShaderModuleTrusted(device, &desc, checks);
}
*/
import "C"

import (
	"fmt"
	"reflect"
	"unsafe"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// shaderChecks are the runtime checks wgpu compiles into our kernels:
// bounds checks on every buffer and array access, as wgpu-native 0.19
// did, but not wgpu's newer forced loop bounding (a counter in every
// loop, against loops the driver could assume finite and remove), which
// made the tiled prefill matmul 1.5-1.65× and the tiled prefill attention
// 4× slower on an H100 (docs/BENCHMARKS.md, 2026-12-07). Every loop of
// these kernels ends on a bound that the host sets.
const shaderChecks = wgpu.ShaderRuntimeChecksBoundsChecks

// shaderModule compiles WGSL source with shaderChecks. The binding has no
// call for wgpu-native's wgpuDeviceCreateShaderModuleTrusted, so the
// source is validated through the binding first (its error scope turns a
// bad shader into an error) and then created again, trusted, here.
func (d *Device) shaderModule(label, src string) (*wgpu.ShaderModule, error) {
	checked, err := d.dev.TryCreateShaderModule(&wgpu.ShaderModuleDescriptor{Label: label, WGSLSource: &wgpu.ShaderSourceWGSL{Code: src}})
	if err != nil {
		return nil, err
	}
	checked.Release()
	dev, err := handleRef(d.dev)
	if err != nil {
		return nil, err
	}
	cl, cs := C.CString(label), C.CString(src)
	defer C.free(unsafe.Pointer(cl))
	defer C.free(unsafe.Pointer(cs))
	ref := C.dop_create_trusted(dev, cl, cs, C.uint64_t(shaderChecks))
	if ref == nil {
		return nil, fmt.Errorf("kernels: %s: wgpuDeviceCreateShaderModuleTrusted returned no module", label)
	}
	m := new(wgpu.ShaderModule)
	if err := setHandleRef(m, ref); err != nil {
		return nil, err
	}
	return m, nil
}

// handleField is the binding's C handle field of *T (named ref).
func handleField[T any](p *T) (unsafe.Pointer, error) {
	f := reflect.ValueOf(p).Elem().FieldByName("ref")
	if !f.IsValid() || f.Kind() != reflect.Pointer {
		return nil, fmt.Errorf("kernels: %T has no C handle field: the webgpu binding changed, update wgpu_trusted.go", p)
	}
	return unsafe.Pointer(f.UnsafeAddr()), nil
}

func handleRef[T any](p *T) (unsafe.Pointer, error) {
	a, err := handleField(p)
	if err != nil {
		return nil, err
	}
	return *(*unsafe.Pointer)(a), nil
}

func setHandleRef[T any](p *T, ref unsafe.Pointer) error {
	a, err := handleField(p)
	if err != nil {
		return err
	}
	*(*unsafe.Pointer)(a) = ref
	return nil
}
