// Fast matrix-vector product for decode (one token) of the common dtypes:
//   out[row0 + r] (+)= sum_c W[r][c] * x[c] (+ bias[row0 + r])
// matmul.go prepends nothing: it appends ONE dtype section (below the
// "// ==== NAME" lines) to this prelude. Each section declares W (as
// array<vec4<u32>> where rows are 16-byte aligned, else array<u32>) and
//
//   struct XU                  what one unit needs of x (values and sums)
//   fn xunit(u) -> XU          loads it (once per workgroup and unit)
//   struct WU, fn uload(row, u) -> WU   the weight words of unit u of a row
//   struct WD, fn udec(w, u) -> WD      those words decoded (values, scales)
//   fn udot(d, xu) -> f32      their dot with xu
//   fn ucalc(w, u, xu) -> f32  = udot(udec(w, u), xu)
// (The batched kernel, matmul_batch.go, decodes a unit once for all its
// vectors: udec, then udot per vector, the same arithmetic.)
//
// Units are as in matmul_dtypes.wgsl (same UV, same params.units), so the
// layout facts there hold. Speed, measured on an H200 (docs/bench-matvec.md):
//   - no int → float conversions per value (16/clk/SM on NVIDIA, they capped
//     Q4_K near 2 TB/s): a 4-8 bit field q is OR-ed into the mantissa of 1.0
//     (f = 1 + q/2^n, exact) and sum q·x = 2^n (sum f·x − sum x), with the
//     x sums computed once per unit for all R rows;
//   - scales are applied once per sub-block, not per value;
//   - 16-byte weight loads where the layout allows (Q4_K, F16);
//   - a two-level reduction (2 barriers) instead of a log2(WG) tree.
// A workgroup of WG invocations owns R rows; invocation lid takes units lid,
// lid+WG, ... of each row, so a warp reads consecutive bytes of a row.

struct Params {
    rows: u32,
    cols: u32,
    row_bytes: u32,
    units: u32,
    row0: u32,
    out_stride: u32,
    m: u32,
    flags: u32,
}

const WG: u32 = 64u;
const R: u32 = 2u;
const RS: u32 = WG + 8u; // row stride of red (offsets the banks of rows)
const RED: u32 = R * RS;
const RED2: u32 = R * 8u;

@group(0) @binding(0) var<uniform> params: Params;
// BEGIN XBIND
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
// END XBIND
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, RED>;
var<workgroup> red2: array<f32, RED2>;

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// BEGIN XF32
// The 8 vec4 (32 values) of x that a quantized unit pairs with: x[c0],
// x[c0 + 1], x[c1], x[c1 + 1], ..., x[c3 + 1].
struct X8 {
    v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>,
    v4: vec4<f32>, v5: vec4<f32>, v6: vec4<f32>, v7: vec4<f32>,
}

fn x8(c0: u32, c1: u32, c2: u32, c3: u32) -> X8 {
    return X8(xl(c0), xl(c0 + 1u), xl(c1), xl(c1 + 1u), xl(c2), xl(c2 + 1u), xl(c3), xl(c3 + 1u));
}

// xl loads vec4 i of x; every value of x is loaded once per workgroup.
// The normed kernel (MatMulOpts.Norm) replaces it: see matvecNormed.
// BEGIN XLOAD
fn xl(i: u32) -> vec4<f32> {
    return x[i];
}
// END XLOAD

// END XF32

// The u32 at byte shift s/8 (s in 0, 8, 16, 24) of the word pair (a, b).
fn funnel(a: u32, b: u32, s: u32) -> u32 {
    return (a >> s) | ((b << (31u - s)) << 1u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r0 = (wid.x + wid.y * nwg.x) * R;
    if (r0 >= params.rows) {
        return;
    }
    // ---- body
    // matmul.go generates the unrolled loop here: per row i < R a clamped
    // row index ri (rows past the end repeat the last row; their sums are
    // dropped) and an accumulator acci; per step, xunit once, then uload of
    // every row and unit (all loads in flight) before any ucalc.
    // ---- end
    // BEGIN NSUM
    // END NSUM
    workgroupBarrier();
    for (var q = lid; q < RED2; q += WG) {
        let base = (q >> 3u) * RS;
        var s = 0.0;
        for (var i = q & 7u; i < WG; i += 8u) {
            s += red[base + i];
        }
        red2[q] = s;
    }
    workgroupBarrier();
    // BEGIN NSCALE
    // END NSCALE
    // The batched and the gated kernels replace this block (matmul*.go).
    // BEGIN STORE
    if (lid < R && r0 + lid < params.rows) {
        let row = params.row0 + r0 + lid;
        var v = 0.0;
        for (var i = 0u; i < 8u; i++) {
            v += red2[lid * 8u + i];
        }
        if ((params.flags & 1u) != 0u) {
            v += bias[row];
        }
        if ((params.flags & 2u) != 0u) {
            v += out[row];
        }
        out[row] = v;
    }
    // END STORE
}

// ==== Q4_K
// 144-byte super-blocks = 9 vec4: [d, dmin, scales], qs[0:16], ..., qs[112:128].
// Unit u: block u/8, t = u%8 = 2k + h: qs[16t : 16t+16], whose low nibbles
// are values 16h.. of sub-block 2k (columns 64k+16h+i) and high nibbles
// those of sub-block 2k+1 (32 columns on).
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;

// x: v0..v3 pair with the low nibbles, v4..v7 with the high ones.
struct XU {
    x: X8,
    sl: f32, sh: f32,
}

fn xunit(u: u32) -> XU {
    let c = (u >> 3u) * 64u + (u & 7u) * 4u + ((u >> 1u) & 3u) * 8u;
    let v = x8(c, c + 2u, c + 8u, c + 10u);
    return XU(v, hsum((v.v0 + v.v1) + (v.v2 + v.v3)), hsum((v.v4 + v.v5) + (v.v6 + v.v7)));
}

// 1 + n/16 for the low nibbles n of the 4 bytes of w.
fn nib4(w: u32) -> vec4<f32> {
    let m = vec4<u32>(w << 19u, w << 11u, w << 3u, w >> 5u);
    return bitcast<vec4<f32>>((m & vec4<u32>(0x00780000u)) | vec4<u32>(0x3f800000u));
}

// BEGIN WLOAD
struct WU {
    hd: vec4<u32>, q: vec4<u32>,
}

fn uload(row: u32, u: u32) -> WU {
    let vb = row * (params.row_bytes >> 4u) + (u >> 3u) * 9u;
    return WU(W[vb], W[vb + 1u + (u & 7u)]);
}
// The scales (x, y) and mins (z, w) of the unit's sub-blocks 2k and 2k+1
// (ggml's get_scale_min_k4, two bytes at a time in the low 16 bits).
fn scmin(hd: vec4<u32>, u: u32) -> vec4<f32> {
    let k = (u >> 1u) & 3u;
    let s = (k & 1u) * 16u;
    let a = hd.y >> s;
    let b = hd.z >> s;
    let c = hd.w >> s;
    let hi = k >= 2u;
    let sc = select(a & 0x3f3fu, (c & 0x0f0fu) | ((a >> 2u) & 0x3030u), hi);
    let mn = select(b & 0x3f3fu, ((c >> 4u) & 0x0f0fu) | ((b >> 2u) & 0x3030u), hi);
    return vec4<f32>(f32(sc & 0xffu), f32((sc >> 8u) & 0xffu), f32(mn & 0xffu), f32((mn >> 8u) & 0xffu));
}
// END WLOAD

// A unit's 32 values as 1 + n/16 (low nibbles l*, high h*), d·16, dmin,
// and the scales and mins of its two sub-blocks.
struct WD {
    l0: vec4<f32>, l1: vec4<f32>, l2: vec4<f32>, l3: vec4<f32>,
    h0: vec4<f32>, h1: vec4<f32>, h2: vec4<f32>, h3: vec4<f32>,
    d16: f32, dmin: f32, s0: f32, s1: f32, m0: f32, m1: f32,
}

fn udec(w: WU, u: u32) -> WD {
    let q = w.q;
    let dm = unpack2x16float(w.hd.x);
    let sm = scmin(w.hd, u);
    return WD(nib4(q.x), nib4(q.y), nib4(q.z), nib4(q.w),
              nib4(q.x >> 4u), nib4(q.y >> 4u), nib4(q.z >> 4u), nib4(q.w >> 4u),
              dm.x * 16.0, dm.y, sm.x, sm.y, sm.z, sm.w);
}

fn udot(d: WD, xu: XU) -> f32 {
    let al = dot(d.l0, xu.x.v0) + dot(d.l1, xu.x.v1) + dot(d.l2, xu.x.v2) + dot(d.l3, xu.x.v3);
    let ah = dot(d.h0, xu.x.v4) + dot(d.h1, xu.x.v5) + dot(d.h2, xu.x.v6) + dot(d.h3, xu.x.v7);
    return d.d16 * (d.s0 * (al - xu.sl) + d.s1 * (ah - xu.sh)) - d.dmin * (d.m0 * xu.sl + d.m1 * xu.sh);
}

fn ucalc(w: WU, u: u32, xu: XU) -> f32 {
    return udot(udec(w, u), xu);
}

// ==== Q6_K
// 210-byte super-blocks (2-byte aligned): ql[128], qh[64], scales[16] i8,
// f16 d. Unit u: block u/8, half h = (u/4)%2, g = u%4, l in [8g, 8g+8): the
// values l + 32s (s < 4) of the half, of scale scales[8h + g/2 + 2s].
@group(0) @binding(1) var<storage, read> W: array<u32>;

// x: v0, v1 pair with the values l + 32s of group s = 0 (see ucalc), v2,
// v3 with s = 1, …
struct XU {
    x: X8,
    s: vec4<f32>, // sum of x over each group s
}

fn xunit(u: u32) -> XU {
    let c = (u >> 3u) * 64u + ((u >> 2u) & 1u) * 32u + (u & 3u) * 2u;
    let v = x8(c, c + 8u, c + 16u, c + 24u);
    return XU(v, vec4<f32>(hsum(v.v0 + v.v1), hsum(v.v2 + v.v3), hsum(v.v4 + v.v5), hsum(v.v6 + v.v7)));
}

// 1 + q/64 for the 6-bit values q in the low bits of the 4 bytes of w.
fn six4(w: u32) -> vec4<f32> {
    let m = vec4<u32>(w << 17u, w << 9u, w << 1u, w >> 7u);
    return bitcast<vec4<f32>>((m & vec4<u32>(0x007e0000u)) | vec4<u32>(0x3f800000u));
}

// The words at byte o + 64h + 8g (ql), +32 (ql), o + 128 + 32h + 8g (qh),
// o + 192 + 8h (scales), o + 208 (d), 3 or 2 each, for funnel shifts.
// BEGIN WLOAD
struct WU {
    sh: u32,
    a0: u32, a1: u32, a2: u32, b0: u32, b1: u32, b2: u32,
    h0: u32, h1: u32, h2: u32, s0: u32, s1: u32, s2: u32, d0: u32, d1: u32,
}

fn uload(row: u32, u: u32) -> WU {
    let o = row * params.row_bytes + (u >> 3u) * 210u;
    let i = o >> 2u;
    let h = (u >> 2u) & 1u;
    let g = u & 3u;
    let ia = i + 16u * h + 2u * g; // ql[64h + 8g]
    let ib = ia + 8u;              // ql[64h + 8g + 32]
    let ih = i + 32u + 8u * h + 2u * g; // qh[32h + 8g]
    let is = i + 48u + 2u * h;          // scales[8h]
    return WU((o & 3u) * 8u, W[ia], W[ia + 1u], W[ia + 2u], W[ib], W[ib + 1u], W[ib + 2u],
              W[ih], W[ih + 1u], W[ih + 2u], W[is], W[is + 1u], W[is + 2u], W[i + 52u], W[i + 53u]);
}
// A unit's 6-bit values as bytes, word pairs q0/q1 … q6/q7 of groups
// s = 0..3 (the low 4 bits from ql, the high 2 from qh), their scales
// and d.
struct W6 {
    q0: u32, q1: u32, q2: u32, q3: u32, q4: u32, q5: u32, q6: u32, q7: u32,
    sc: vec4<f32>, d: f32,
}

fn uwords(w: WU, u: u32) -> W6 {
    let sh = w.sh;
    let a0 = funnel(w.a0, w.a1, sh);
    let a1 = funnel(w.a1, w.a2, sh);
    let b0 = funnel(w.b0, w.b1, sh);
    let b1 = funnel(w.b1, w.b2, sh);
    let h0 = funnel(w.h0, w.h1, sh);
    let h1 = funnel(w.h1, w.h2, sh);
    let gs = ((u & 3u) >> 1u) * 8u;
    let s0 = funnel(w.s0, w.s1, sh) >> gs; // bytes 0, 2 = scales 0, 2
    let s1 = funnel(w.s1, w.s2, sh) >> gs; // bytes 0, 2 = scales 4, 6
    let m4 = 0x0f0f0f0fu;
    let sc = vec4<f32>(f32(bitcast<i32>(s0 << 24u) >> 24u), f32(bitcast<i32>(s0 << 8u) >> 24u),
                       f32(bitcast<i32>(s1 << 24u) >> 24u), f32(bitcast<i32>(s1 << 8u) >> 24u));
    return W6((a0 & m4) | ((h0 & 0x03030303u) << 4u), (a1 & m4) | ((h1 & 0x03030303u) << 4u),
              (b0 & m4) | ((h0 & 0x0c0c0c0cu) << 2u), (b1 & m4) | ((h1 & 0x0c0c0c0cu) << 2u),
              ((a0 >> 4u) & m4) | (h0 & 0x30303030u), ((a1 >> 4u) & m4) | (h1 & 0x30303030u),
              ((b0 >> 4u) & m4) | ((h0 >> 2u) & 0x30303030u), ((b1 >> 4u) & m4) | ((h1 >> 2u) & 0x30303030u),
              sc, unpack2x16float(funnel(w.d0, w.d1, sh)).x);
}
// END WLOAD

// A unit's 32 values as 1 + q/64, pairs f0/f1 … f6/f7 of groups s = 0..3,
// their scales and d.
struct WD {
    f0: vec4<f32>, f1: vec4<f32>, f2: vec4<f32>, f3: vec4<f32>,
    f4: vec4<f32>, f5: vec4<f32>, f6: vec4<f32>, f7: vec4<f32>,
    sc: vec4<f32>, d: f32,
}

fn udec(w: WU, u: u32) -> WD {
    let q = uwords(w, u);
    return WD(six4(q.q0), six4(q.q1), six4(q.q2), six4(q.q3), six4(q.q4), six4(q.q5), six4(q.q6), six4(q.q7), q.sc, q.d);
}

fn udot(d: WD, xu: XU) -> f32 {
    let p0 = dot(d.f0, xu.x.v0) + dot(d.f1, xu.x.v1);
    let p1 = dot(d.f2, xu.x.v2) + dot(d.f3, xu.x.v3);
    let p2 = dot(d.f4, xu.x.v4) + dot(d.f5, xu.x.v5);
    let p3 = dot(d.f6, xu.x.v6) + dot(d.f7, xu.x.v7);
    // sum (q − 32)·x = 64·sum f·x − 96·sum x
    return d.d * dot(d.sc, 64.0 * vec4<f32>(p0, p1, p2, p3) - 96.0 * xu.s);
}

fn ucalc(w: WU, u: u32, xu: XU) -> f32 {
    return udot(udec(w, u), xu);
}

// ==== Q8_0
// 34-byte blocks (2-byte aligned): f16 d, 32 × i8. Unit = block.
@group(0) @binding(1) var<storage, read> W: array<u32>;

struct XU {
    x: X8,
    s: f32,
}

fn xunit(u: u32) -> XU {
    let c = u * 8u;
    let v = x8(c, c + 2u, c + 4u, c + 6u);
    return XU(v, hsum(((v.v0 + v.v1) + (v.v2 + v.v3)) + ((v.v4 + v.v5) + (v.v6 + v.v7))));
}

// 1 + (b ^ 0x80)/256 for the 4 bytes b of w (i8 q + 128 as the mantissa).
fn byte4(w: u32) -> vec4<f32> {
    let m = vec4<u32>(w << 15u, w << 7u, w >> 1u, w >> 9u);
    return bitcast<vec4<f32>>((m & vec4<u32>(0x007f8000u)) ^ vec4<u32>(0x3fc00000u));
}

// The word holding d, and the 9 words over the 32 quants from byte o + 2
// (o even: d is the word's low or high half, the quants start at shift 0
// or 16).
struct WU {
    o: u32, dw: u32,
    w0: u32, w1: u32, w2: u32, w3: u32, w4: u32, w5: u32, w6: u32, w7: u32, w8: u32,
}

fn uload(row: u32, u: u32) -> WU {
    let o = row * params.row_bytes + u * 34u;
    let i0 = (o + 2u) >> 2u;
    return WU(o, W[o >> 2u], W[i0], W[i0 + 1u], W[i0 + 2u], W[i0 + 3u], W[i0 + 4u],
              W[i0 + 5u], W[i0 + 6u], W[i0 + 7u], W[i0 + 8u]);
}

// A unit's 32 values as 1 + (q + 128)/256, and d.
struct WD {
    f0: vec4<f32>, f1: vec4<f32>, f2: vec4<f32>, f3: vec4<f32>,
    f4: vec4<f32>, f5: vec4<f32>, f6: vec4<f32>, f7: vec4<f32>,
    d: f32,
}

fn udec(wu: WU, u: u32) -> WD {
    let sh = ((wu.o + 2u) & 3u) * 8u;
    return WD(byte4(funnel(wu.w0, wu.w1, sh)), byte4(funnel(wu.w1, wu.w2, sh)),
              byte4(funnel(wu.w2, wu.w3, sh)), byte4(funnel(wu.w3, wu.w4, sh)),
              byte4(funnel(wu.w4, wu.w5, sh)), byte4(funnel(wu.w5, wu.w6, sh)),
              byte4(funnel(wu.w6, wu.w7, sh)), byte4(funnel(wu.w7, wu.w8, sh)),
              unpack2x16float(wu.dw >> ((wu.o & 2u) * 8u)).x);
}

fn udot(d: WD, xu: XU) -> f32 {
    let a = dot(d.f0, xu.x.v0) + dot(d.f1, xu.x.v1) + dot(d.f2, xu.x.v2) + dot(d.f3, xu.x.v3);
    let b = dot(d.f4, xu.x.v4) + dot(d.f5, xu.x.v5) + dot(d.f6, xu.x.v6) + dot(d.f7, xu.x.v7);
    // sum q·x = 256·sum f·x − 384·sum x
    return d.d * (256.0 * (a + b) - 384.0 * xu.s);
}

fn ucalc(wu: WU, u: u32, xu: XU) -> f32 {
    return udot(udec(wu, u), xu);
}

// ==== F16
// Rows of cols % 8 == 0 values (16-byte aligned). Unit = 8 values = 1 vec4.
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;

struct XU {
    v0: vec4<f32>, v1: vec4<f32>,
}

fn xunit(u: u32) -> XU {
    return XU(xl(2u * u), xl(2u * u + 1u));
}

struct WU {
    w: vec4<u32>,
}

fn uload(row: u32, u: u32) -> WU {
    return WU(W[row * (params.row_bytes >> 4u) + u]);
}

struct WD {
    f0: vec4<f32>, f1: vec4<f32>,
}

fn udec(wu: WU, u: u32) -> WD {
    let w = wu.w;
    return WD(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}

fn udot(d: WD, xu: XU) -> f32 {
    return dot(d.f0, xu.v0) + dot(d.f1, xu.v1);
}

fn ucalc(wu: WU, u: u32, xu: XU) -> f32 {
    return udot(udec(wu, u), xu);
}

// ==== END

// ==== Q4_K_Q8X
// Q4_K weights against activations rounded to 8 bits (quant8.wgsl; matmul.go
// binds them as x: array<vec4<u32>>): the units are Q4_K's, each value
// pair is one byte lane of a packed 4 × 8-bit integer dot product, and
// only the sums of a sub-block's 16 values meet floats.
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;

// The int8 of the unit's 16 low-nibble values (l) and 16 high-nibble
// values (h), the scales of their x blocks and d·Σq of their halves.
struct XU {
    l: vec4<u32>, h: vec4<u32>,
    dl: f32, dh: f32, sl: f32, sh: f32,
}

fn xunit(u: u32) -> XU {
    // Value 256b + 64k + 16h (b = u/8, u%8 = 2k + h), as vec4 of 16 int8.
    let v = (u >> 3u) * 16u + (u & 7u) + ((u >> 1u) & 3u) * 2u;
    let xb = v >> 1u; // its 32-value block (even)
    let nq = params.cols >> 4u;
    let dv = x[nq + (xb >> 2u)];
    let sv = x[nq + (params.cols >> 7u) + (v >> 2u)];
    let i = v & 3u; // 0 or 1: h
    return XU(x[v], x[v + 2u], bitcast<f32>(dv[xb & 3u]), bitcast<f32>(dv[(xb & 3u) + 1u]),
              bitcast<f32>(sv[i]), bitcast<f32>(sv[i + 2u]));
}

// BEGIN WLOAD
// (struct WU, uload and scmin: matmul.go copies them from the Q4_K section)
// END WLOAD

// The unit's nibbles as bytes (low: l, high: h), d, dmin, and the scales
// and mins of its two sub-blocks.
struct WD {
    l: vec4<u32>, h: vec4<u32>,
    d: f32, dmin: f32, s0: f32, s1: f32, m0: f32, m1: f32,
}

fn udec(w: WU, u: u32) -> WD {
    let dm = unpack2x16float(w.hd.x);
    let sm = scmin(w.hd, u);
    let m4 = vec4<u32>(0x0f0f0f0fu);
    return WD(w.q & m4, (w.q >> vec4<u32>(4u)) & m4, dm.x, dm.y, sm.x, sm.y, sm.z, sm.w);
}

fn udot(d: WD, xu: XU) -> f32 {
    let al = (dot4I8Packed(d.l.x, xu.l.x) + dot4I8Packed(d.l.y, xu.l.y)) + (dot4I8Packed(d.l.z, xu.l.z) + dot4I8Packed(d.l.w, xu.l.w));
    let ah = (dot4I8Packed(d.h.x, xu.h.x) + dot4I8Packed(d.h.y, xu.h.y)) + (dot4I8Packed(d.h.z, xu.h.z) + dot4I8Packed(d.h.w, xu.h.w));
    return d.d * (d.s0 * xu.dl * f32(al) + d.s1 * xu.dh * f32(ah)) - d.dmin * (d.m0 * xu.sl + d.m1 * xu.sh);
}

fn ucalc(w: WU, u: u32, xu: XU) -> f32 {
    return udot(udec(w, u), xu);
}

// ==== Q6_K_Q8X
// Q6_K weights against 8-bit activations (see Q4_K_Q8X): Q6_K's units,
// the 6-bit values as bytes in packed dot products, q − 32 applied through
// the x sums of each group.
@group(0) @binding(1) var<storage, read> W: array<u32>;

// Per group s = 0..3 of the unit: its 8 int8 (two words), the scale of
// its x block, and the sum of its 8 q.
struct XU {
    x0: vec2<u32>, x1: vec2<u32>, x2: vec2<u32>, x3: vec2<u32>,
    dx: vec4<f32>,
    sx: vec4<i32>,
}

fn xpair(i: u32, odd: bool) -> vec2<u32> {
    let v = x[i];
    return select(v.xy, v.zw, odd);
}

fn xsum(p: vec2<u32>) -> i32 {
    return dot4I8Packed(p.x, 0x01010101u) + dot4I8Packed(p.y, 0x01010101u);
}

fn xunit(u: u32) -> XU {
    // Group s: values 256b + 128h + 32s + 8g .. + 7 (b = u/8, h = (u/4)%2, g = u%4).
    let v = (u >> 3u) * 16u + ((u >> 2u) & 1u) * 8u + ((u & 3u) >> 1u);
    let odd = (u & 1u) != 0u;
    let p0 = xpair(v, odd);
    let p1 = xpair(v + 2u, odd);
    let p2 = xpair(v + 4u, odd);
    let p3 = xpair(v + 6u, odd);
    let dv = x[(params.cols >> 4u) + (v >> 3u)]; // the x blocks 8b + 4h + s
    return XU(p0, p1, p2, p3, bitcast<vec4<f32>>(dv), vec4<i32>(xsum(p0), xsum(p1), xsum(p2), xsum(p3)));
}

// The words at byte o + 64h + 8g (ql), +32 (ql), o + 128 + 32h + 8g (qh),
// o + 192 + 8h (scales), o + 208 (d), 3 or 2 each, for funnel shifts.
// BEGIN WLOAD
// (struct WU, uload and uwords: matmul.go copies them from the Q6_K section)
// END WLOAD

// A unit's 6-bit values as bytes (uwords, from the Q6_K section).
alias WD = W6;

fn udec(w: WU, u: u32) -> WD {
    return uwords(w, u);
}

fn udot(d: WD, xu: XU) -> f32 {
    let i = vec4<i32>(dot4I8Packed(d.q0, xu.x0.x) + dot4I8Packed(d.q1, xu.x0.y),
                      dot4I8Packed(d.q2, xu.x1.x) + dot4I8Packed(d.q3, xu.x1.y),
                      dot4I8Packed(d.q4, xu.x2.x) + dot4I8Packed(d.q5, xu.x2.y),
                      dot4I8Packed(d.q6, xu.x3.x) + dot4I8Packed(d.q7, xu.x3.y)) - 32 * xu.sx;
    return d.d * dot(d.sc * xu.dx, vec4<f32>(i));
}

fn ucalc(w: WU, u: u32, xu: XU) -> f32 {
    return udot(udec(w, u), xu);
}
