//go:build cgo || js

package kernels

import (
	_ "embed"
	"encoding/binary"
	"fmt"
)

//go:embed attention_prefill_tiled.wgsl
var attentionPrefillTiledWGSL string

// attnTile is the tile of attention_prefill_tiled.wgsl: bq query tokens ×
// bk keys a step.
type attnTile struct{ bq, bk int }

// attnTiledFits reports whether tile t can serve head dimension headDim
// (whole vec4s; each of the 256/bq invocations of a query row gets keys
// and output vec4s) in maxShared bytes of workgroup memory.
func attnTiledFits(t attnTile, headDim, maxShared int) bool {
	if t.bq <= 0 || t.bk <= 0 || 256%t.bq != 0 || headDim%4 != 0 {
		return false
	}
	tpq, hq := 256/t.bq, headDim/4
	return t.bk%tpq == 0 && hq%tpq == 0 && attnTiledShared(t, headDim) <= maxShared
}

// attnTiledShared is the kernel's workgroup memory in bytes: q, K (rows
// padded by a vec4), V, the probabilities and 256 partial maxima.
func attnTiledShared(t attnTile, headDim int) int {
	return 4 * (t.bq*headDim + t.bk*(headDim+4) + t.bk*headDim + t.bq*t.bk + 256)
}

// attnPrefillTiledShape picks the tile for m query tokens: 32 queries
// unless a batch has no more than 16, then as many keys a step as fit.
func (d *Device) attnPrefillTiledShape(headDim, m int) (attnTile, bool) {
	if t := d.attn.tune.prefill; t != (attnTile{}) {
		return t, attnTiledFits(t, headDim, d.limits.MaxWorkgroupStorage)
	}
	tiles := []attnTile{{32, 32}, {32, 16}, {16, 32}, {16, 16}}
	if m <= 16 {
		tiles = []attnTile{{16, 32}, {16, 16}, {32, 32}, {32, 16}}
	}
	for _, t := range tiles {
		if attnTiledFits(t, headDim, d.limits.MaxWorkgroupStorage) {
			return t, true
		}
	}
	return attnTile{}, false
}

func (d *Device) attentionPrefillTiled(q, kCache, vCache, out, pos, sinks BufferRange, m, heads, headDim int, f16 bool, t attnTile, prm attentionParams) ([]*Op, error) {
	src := attnKVBlock.ReplaceAllLiteralString(attentionPrefillTiledWGSL, attnKVLoads(f16, true))
	var err error
	for _, c := range []struct {
		name string
		v    int
	}{{"BQ", t.bq}, {"BK", t.bk}, {"HD", headDim}} {
		if src, err = setConst(src, c.name, uint32(c.v)); err != nil {
			return nil, err
		}
	}
	dt := "f32"
	if f16 {
		dt = "f16"
	}
	key := fmt.Sprintf("attention/prefill/tiled/q%d/k%d/hd%d/%s", t.bq, t.bk, headDim, dt)
	pipe, err := d.Pipeline(key, src, "main", []Binding{Uniform, ReadOnly, ReadOnly, ReadOnly, Storage, ReadOnly, ReadOnly})
	if err != nil {
		return nil, err
	}
	params, _ := binary.Append(nil, binary.LittleEndian, prm)
	op, err := d.NewOp(pipe, params, [3]uint32{uint32((m + t.bq - 1) / t.bq), uint32(heads), 1}, q, kCache, vCache, out, pos, sinks)
	if err != nil {
		return nil, err
	}
	return []*Op{op}, nil
}
