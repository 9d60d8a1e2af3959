// Per-dtype weight decoders for matmul_vec.wgsl, matmul_tile.wgsl and
// moe_matmul.wgsl. matmulSection (matmul.go) assembles ONE dtype's decoder
// from the sections below (each from its "// ==== NAME" line to the next):
// the text before the first section, the dtype's own section, then the
// shared sections (LINEAR, HALVES, BLOCKS) that matmulShared lists for it,
// whose `// BEGIN X` … `// END X` blocks it fills with the same-named
// blocks of the dtype's section. The result defines:
//
//   const UV: u32            values per unit (a unit is what one invocation
//                            decodes at once: a block, or a slice of one)
//   fn col(u, i) -> u32      the column of value i of unit u of a row
//   fn decode(ro, u)         the UV values of unit u of the row that starts
//                            at byte ro of W, as f32, in col() order
//
// The kernels only need sum_i decode(ro,u)[i] * x[col(u,i)], so a unit's
// values need not be contiguous columns (Q4_K and Q6_K units are not). W is
// an array<u32> of the weight bytes exactly as stored (llama.cpp / OCP
// layouts); blocks that are not 4-byte aligned go through the W_u32/W_u16/
// W_u8 readers of common.wgsl, or w_funnel over consecutive aligned words
// (n + 1 loads for n unaligned words). params.cols masks the tail of float
// rows.

// The u32 at byte shift s/8 (s in 0, 8, 16, 24) of the word pair (a, b).
fn w_funnel(a: u32, b: u32, s: u32) -> u32 {
    return (a >> s) | ((b << (31u - s)) << 1u);
}

// ==== LINEAR
// Units of UV consecutive columns (every dtype but the K-quants).
fn col(u: u32, i: u32) -> u32 {
    return u * UV + i;
}

// ==== HALVES
// 16-bit floats, 8 values a unit; the dtype's section defines
// fn half2(w) -> vec2<f32>, the two values of the little-endian word w.
const UV: u32 = 8u;

fn decode(ro: u32, u: u32) -> array<f32, 8> {
    var v: array<f32, 8>;
    let c0 = u * 8u;
    let o = ro + c0 * 2u; // 4-aligned unless cols is odd
    for (var j = 0u; j < 4u; j++) {
        let f = half2(W_u32(o + 4u * j));
        v[2u * j] = select(0.0, f.x, c0 + 2u * j < params.cols);
        v[2u * j + 1u] = select(0.0, f.y, c0 + 2u * j + 1u < params.cols);
    }
    return v;
}

// ==== BLOCKS
// 32-value blocks of BB bytes (any alignment) whose quants fill the QW
// words from byte QS of the block, read as QW + 1 aligned loads through
// w_funnel. Unit = block. The dtype's section defines BB, QS and QW and
// the blocks HEAD (its scale; o is the block's byte, lo the first word at
// i0 and sh the funnel shift) and QUANTS (the values of byte b of the
// quant word w = quants [4j, 4j + 4)).
const UV: u32 = 32u;

fn decode(ro: u32, u: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let o = ro + u * BB;
    let i0 = (o + QS) >> 2u;
    let sh = ((o + QS) & 3u) * 8u;
    var lo = W[i0];
// BEGIN HEAD
// END HEAD
    for (var j = 0u; j < QW; j++) {
        let hi = W[i0 + j + 1u];
        let w = w_funnel(lo, hi, sh);
        lo = hi;
        for (var b = 0u; b < 4u; b++) {
// BEGIN QUANTS
// END QUANTS
        }
    }
    return v;
}

// ==== F32
const UV: u32 = 8u;

fn decode(ro: u32, u: u32) -> array<f32, 8> {
    var v: array<f32, 8>;
    let c0 = u * 8u;
    let w0 = (ro >> 2u) + c0; // f32 rows are 4-byte aligned
    for (var i = 0u; i < 8u; i++) {
        v[i] = select(0.0, bitcast<f32>(W[w0 + i]), c0 + i < params.cols);
    }
    return v;
}

// ==== F16
fn half2(w: u32) -> vec2<f32> {
    return unpack2x16float(w);
}

// ==== BF16
fn half2(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

// ==== Q8_0
// 34-byte blocks: f16 d, 32 × i8.
const BB: u32 = 34u;
const QS: u32 = 2u;
const QW: u32 = 8u;

// BEGIN HEAD
    let d = W_f16(o);
// END HEAD
// BEGIN QUANTS
            v[4u * j + b] = f32(i8_to_i32(w >> (8u * b))) * d;
// END QUANTS

// ==== Q4_0
// 18-byte blocks: f16 d, 16 bytes; byte j = value j (low), j+16 (high).
const BB: u32 = 18u;
const QS: u32 = 2u;
const QW: u32 = 4u;

// BEGIN HEAD
    let d = W_f16(o);
// END HEAD
// BEGIN QUANTS
            let q = w >> (8u * b);
            v[4u * j + b] = f32(i32(q & 15u) - 8) * d;
            v[16u + 4u * j + b] = f32(i32((q >> 4u) & 15u) - 8) * d;
// END QUANTS

// ==== Q5_0
// 22-byte blocks: f16 d, u32 qh (bit j = 5th bit of value j), 16 bytes of
// low nibbles as Q4_0.
const BB: u32 = 22u;
const QS: u32 = 6u;
const QW: u32 = 4u;

// BEGIN HEAD
    let d = W_f16(o);
    let qh = w_funnel(W[i0 - 1u], lo, sh); // bytes 2..5
// END HEAD
// BEGIN QUANTS
            let k = 4u * j + b;
            let q = w >> (8u * b);
            let h0 = ((qh >> k) & 1u) << 4u;
            let h1 = ((qh >> (k + 16u)) & 1u) << 4u;
            v[k] = f32(i32((q & 15u) | h0) - 16) * d;
            v[16u + k] = f32(i32(((q >> 4u) & 15u) | h1) - 16) * d;
// END QUANTS

// ==== MXFP4
// 17-byte blocks: E8M0 scale byte e, 16 bytes of E2M1 codes (byte j =
// value j low nibble, j+16 high). value = kvalues[q] · 2^(e−128), with
// kvalues twice the E2M1 values (0,1,2,3,4,6,8,12 and negatives), as ggml.
const BB: u32 = 17u;
const QS: u32 = 1u;
const QW: u32 = 4u;

// Twice the E2M1 value of code q (low 4 bits).
fn e2m1x2(q: u32) -> f32 {
    let m = f32((0xc8643210u >> ((q & 7u) * 4u)) & 15u);
    return select(m, -m, (q & 8u) != 0u);
}

// BEGIN HEAD
    let e = W_u8(o);
    // 2^(e−128): ggml's GGML_E8M0_TO_FP32_HALF.
    let d = select(bitcast<f32>((e - 1u) << 23u), bitcast<f32>(0x00200000u << e), e < 2u);
// END HEAD
// BEGIN QUANTS
            let q = w >> (8u * b);
            v[4u * j + b] = e2m1x2(q) * d;
            v[16u + 4u * j + b] = e2m1x2(q >> 4u) * d;
// END QUANTS

// ==== Q4_K
// 144-byte super-blocks of 256 values (always 4-byte aligned): f16 d,
// f16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles;
// sub-blocks 2k (low nibbles) and 2k+1 (high) share qs[32k:32k+32].
// Unit u (8 per block): block u/8, k = (u/2)%4, half h = u%2: the 16 bytes
// qs[32k+16h : +16], i.e. values 16h..16h+15 of sub-blocks 2k and 2k+1.
const UV: u32 = 32u;

fn col(u: u32, i: u32) -> u32 {
    return (u >> 3u) * 256u + ((u >> 1u) & 3u) * 64u + (u & 1u) * 16u + (i & 15u) + (i >> 4u) * 32u;
}

// Byte n (0..11) of the packed scales held in words s0, s1, s2.
fn k4_byte(n: u32, s0: u32, s1: u32, s2: u32) -> u32 {
    return (select(select(s2, s1, n < 8u), s0, n < 4u) >> ((n & 3u) * 8u)) & 0xffu;
}

// ggml's get_scale_min_k4: (scale, min) of sub-block j.
fn k4_scale_min(j: u32, s0: u32, s1: u32, s2: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(k4_byte(j, s0, s1, s2) & 63u, k4_byte(j + 4u, s0, s1, s2) & 63u);
    }
    let b = k4_byte(j + 4u, s0, s1, s2);
    return vec2<u32>((b & 15u) | ((k4_byte(j - 4u, s0, s1, s2) >> 6u) << 4u),
                     (b >> 4u) | ((k4_byte(j, s0, s1, s2) >> 6u) << 4u));
}

fn decode(ro: u32, u: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let wb = (ro >> 2u) + (u >> 3u) * 36u; // word of the super-block
    let k = (u >> 1u) & 3u;
    let h = u & 1u;
    let dd = unpack2x16float(W[wb]);
    let s0 = W[wb + 1u];
    let s1 = W[wb + 2u];
    let s2 = W[wb + 3u];
    let sm1 = k4_scale_min(2u * k, s0, s1, s2);
    let sm2 = k4_scale_min(2u * k + 1u, s0, s1, s2);
    let d1 = dd.x * f32(sm1.x);
    let m1 = dd.y * f32(sm1.y);
    let d2 = dd.x * f32(sm2.x);
    let m2 = dd.y * f32(sm2.y);
    let qw = wb + 4u + 8u * k + 4u * h;
    for (var j = 0u; j < 4u; j++) {
        let w = W[qw + j];
        for (var b = 0u; b < 4u; b++) {
            let q = w >> (8u * b);
            v[4u * j + b] = d1 * f32(q & 15u) - m1;
            v[16u + 4u * j + b] = d2 * f32((q >> 4u) & 15u) - m2;
        }
    }
    return v;
}

// ==== Q6_K
// 210-byte super-blocks of 256 values (unaligned): ql[128], qh[64],
// scales[16] i8, f16 d. Each half h of 128 values uses ql[64h:], qh[32h:],
// scales[8h:]; for l < 32, value l = ql[l] low | qh[l] bits 0-1, l+32 =
// ql[l+32] low | bits 2-3, l+64 = ql[l] high | bits 4-5, l+96 = ql[l+32]
// high | bits 6-7, all minus 32, times d·scales[l/16 + 2·(which)].
// Unit u (8 per block): block u/8, half h = (u/4)%2, l in [8g, 8g+8) with
// g = u%4, and its four values l, l+32, l+64, l+96.
const UV: u32 = 32u;

fn col(u: u32, i: u32) -> u32 {
    return (u >> 3u) * 256u + ((u >> 2u) & 1u) * 128u + (u & 3u) * 8u + (i & 7u) + (i >> 3u) * 32u;
}

fn q6_byte(i: u32, w0: u32, w1: u32) -> u32 {
    return (select(w1, w0, i < 4u) >> ((i & 3u) * 8u)) & 0xffu;
}

fn decode(ro: u32, u: u32) -> array<f32, 32> {
    var v: array<f32, 32>;
    let o = ro + (u >> 3u) * 210u;
    let h = (u >> 2u) & 1u;
    let g = u & 3u;
    let l0 = 8u * g;
    let d = W_f16(o + 208u);
    let ql = o + 64u * h + l0;
    let a0 = W_u32(ql);
    let a1 = W_u32(ql + 4u);
    let b0 = W_u32(ql + 32u);
    let b1 = W_u32(ql + 36u);
    let qh = o + 128u + 32u * h + l0;
    let h0 = W_u32(qh);
    let h1 = W_u32(qh + 4u);
    let sc = o + 192u + 8u * h + (g >> 1u);
    let ds0 = d * f32(i8_to_i32(W_u8(sc)));
    let ds1 = d * f32(i8_to_i32(W_u8(sc + 2u)));
    let ds2 = d * f32(i8_to_i32(W_u8(sc + 4u)));
    let ds3 = d * f32(i8_to_i32(W_u8(sc + 6u)));
    for (var i = 0u; i < 8u; i++) {
        let a = q6_byte(i, a0, a1);
        let b = q6_byte(i, b0, b1);
        let hb = q6_byte(i, h0, h1);
        v[i] = ds0 * f32(i32((a & 15u) | ((hb & 3u) << 4u)) - 32);
        v[8u + i] = ds1 * f32(i32((b & 15u) | (((hb >> 2u) & 3u) << 4u)) - 32);
        v[16u + i] = ds2 * f32(i32((a >> 4u) | (((hb >> 4u) & 3u) << 4u)) - 32);
        v[24u + i] = ds3 * f32(i32((b >> 4u) | (((hb >> 6u) & 3u) << 4u)) - 32);
    }
    return v;
}

// ==== END
