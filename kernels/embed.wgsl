// Embedding gather for one part of a (possibly split) table:
//   out[t][i] = dequant(table row ids[t])[i] * scale
// for the tokens whose id falls in this part's rows [row0, row0 + rows).
// One invocation per output element. DT (the quant.DType number) is
// templated by embed.go; the decoders follow rdrr/quant's Dequantize
// (llama.cpp's block layouts), read byte-wise from the raw table bytes.
// The op of part 0 also writes zeros for ids ≥ vocab.

struct Params {
    m: u32,
    dim: u32,
    row0: u32,
    rows: u32,
    vocab: u32,
    zero_oob: u32,
    row_bytes: u32,
    scale: f32,
}

const DT: u32 = 1u;
const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> tbl: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// E2M1 codes times two (ggml's kvalues_mxfp4).
fn e2m1x2(q: u32) -> f32 {
    var mag = array<f32, 8>(0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0);
    let v = mag[q & 7u];
    return select(v, -v, (q & 8u) != 0u);
}

// Value i of the row starting at byte rb.
fn deq(rb: u32, i: u32) -> f32 {
    if (DT == 1u) { // F32
        return bitcast<f32>(tbl_u32(rb + 4u * i));
    }
    if (DT == 2u) { // F16
        return tbl_f16(rb + 2u * i);
    }
    if (DT == 3u) { // BF16
        return tbl_bf16(rb + 2u * i);
    }
    if (DT == 4u) { // Q8_0: d f16, 32 × i8
        let b = rb + (i / 32u) * 34u;
        return f32(i8_to_i32(tbl_u8(b + 2u + i % 32u))) * tbl_f16(b);
    }
    if (DT == 5u) { // Q4_0: d f16, 16 bytes of nibbles (j low, j+16 high)
        let b = rb + (i / 32u) * 18u;
        let j = i % 32u;
        let q = (tbl_u8(b + 2u + j % 16u) >> (4u * (j / 16u))) & 15u;
        return f32(i32(q) - 8) * tbl_f16(b);
    }
    if (DT == 6u) { // Q5_0: d f16, qh u32, 16 bytes of nibbles
        let b = rb + (i / 32u) * 22u;
        let j = i % 32u;
        let qh = tbl_u32(b + 2u);
        let q = ((tbl_u8(b + 6u + j % 16u) >> (4u * (j / 16u))) & 15u) | (((qh >> j) & 1u) << 4u);
        return f32(i32(q) - 16) * tbl_f16(b);
    }
    if (DT == 7u) { // Q4_K: d, dmin f16, 12 bytes of 6-bit scales/mins, 128 bytes
        let b = rb + (i / 256u) * 144u;
        let j = i % 256u;
        let k = j / 64u;
        let hi = (j / 32u) & 1u;
        let l = j % 32u;
        let sub = 2u * k + hi;
        var sc: u32;
        var mn: u32;
        if (sub < 4u) {
            sc = tbl_u8(b + 4u + sub) & 63u;
            mn = tbl_u8(b + 8u + sub) & 63u;
        } else {
            let q4 = tbl_u8(b + 8u + sub);
            sc = (q4 & 15u) | ((tbl_u8(b + sub) >> 6u) << 4u);
            mn = (q4 >> 4u) | ((tbl_u8(b + 4u + sub) >> 6u) << 4u);
        }
        let q = (tbl_u8(b + 16u + 32u * k + l) >> (4u * hi)) & 15u;
        return tbl_f16(b) * f32(sc) * f32(q) - tbl_f16(b + 2u) * f32(mn);
    }
    if (DT == 8u) { // Q6_K: ql[128], qh[64], scales i8[16], d f16
        let b = rb + (i / 256u) * 210u;
        let j = i % 256u;
        let h = j / 128u;
        let r = j % 128u;
        let quarter = r / 32u;
        let l = r % 32u;
        let ql = tbl_u8(b + 64u * h + l + 32u * (quarter & 1u));
        let qh = tbl_u8(b + 128u + 32u * h + l);
        let q = ((ql >> (4u * (quarter / 2u))) & 15u) | (((qh >> (2u * quarter)) & 3u) << 4u);
        let sc = i8_to_i32(tbl_u8(b + 192u + 8u * h + l / 16u + 2u * quarter));
        return tbl_f16(b + 208u) * f32(sc) * f32(i32(q) - 32);
    }
    if (DT == 9u) { // MXFP4: e8m0 byte, 16 bytes of E2M1 nibbles
        let b = rb + (i / 32u) * 17u;
        let j = i % 32u;
        let e = tbl_u8(b);
        var d: f32;
        if (e < 2u) {
            d = bitcast<f32>(0x00200000u << e);
        } else {
            d = bitcast<f32>((e - 1u) << 23u);
        }
        let q = (tbl_u8(b + 1u + j % 16u) >> (4u * (j / 16u))) & 15u;
        return e2m1x2(q) * d;
    }
    return 0.0;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * WG + lid;
    let dim = params.dim;
    if (e >= params.m * dim) {
        return;
    }
    let t = e / dim;
    let i = e % dim;
    let id = ids[t];
    if (id < params.row0 || id - params.row0 >= params.rows) {
        if (params.zero_oob != 0u && id >= params.vocab) {
            out[e] = 0.0;
        }
        return;
    }
    out[e] = deq((id - params.row0) * params.row_bytes, i) * params.scale;
}
