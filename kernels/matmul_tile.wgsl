// Matrix-matrix product for prefill (m tokens), dequantizing in the load:
//   out[t][row0 + r] (+)= sum_c W[r][c] * x[t][c] (+ bias[row0 + r])
// matmul.go prepends the helpers of common.wgsl for W and ONE dtype section
// of matmul_dtypes.wgsl (UV, col, decode).
//
// A workgroup of 256 invocations (16 × 16) computes a tile of TM tokens ×
// TR = 64 rows. The K dimension advances KS = 32 values (UK = 32/UV units)
// at a time: the tile's weight units are decoded ONCE into workgroup memory
// and the matching x values (in the units' col() order) staged beside
// them, then every invocation accumulates MT tokens × 4 rows from there, so
// each decoded weight value serves all TM tokens of the tile. TM = 16·MT is
// templated by matmul.go (MT in 1, 2, 4) to fit the token count.

struct Params {
    rows: u32,
    cols: u32,
    row_bytes: u32,
    units: u32,
    row0: u32,
    out_stride: u32,
    m: u32,
    flags: u32,     // 1: add bias, 2: accumulate into out
}

const MT: u32 = 4u;
const TM: u32 = 16u * MT;
const TR: u32 = 64u;
const KS: u32 = 32u;
const UK: u32 = KS / UV;
const LD: u32 = KS + 1u; // padded row of the staged tiles
const WS_LEN: u32 = TR * LD;
const XS_LEN: u32 = TM * LD;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> ws: array<f32, WS_LEN>;
var<workgroup> xs: array<f32, XS_LEN>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let rowTiles = (params.rows + TR - 1u) / TR;
    let g = wid.x + wid.y * nwg.x;
    // Uniform per workgroup: the whole workgroup returns or none of it.
    if (g >= rowTiles * ((params.m + TM - 1u) / TM)) {
        return;
    }
    let rbase = (g % rowTiles) * TR;
    let tbase = (g / rowTiles) * TM;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let cols = params.cols;
    let units = params.units;

    var acc: array<array<f32, 4>, MT>;
    let steps = (units + UK - 1u) / UK;
    for (var s = 0u; s < steps; s++) {
        let ub = s * UK;
        // Decode TR rows × UK units of weights.
        if (lid < TR * UK) {
            let lr = lid / UK;
            let uu = lid % UK;
            let u = ub + uu;
            let row = min(rbase + lr, params.rows - 1u);
            var wv = decode(row * params.row_bytes, min(u, units - 1u));
            let valid = u < units;
            for (var i = 0u; i < UV; i++) {
                ws[lr * LD + uu * UV + i] = select(0.0, wv[i], valid);
            }
        }
        // Stage the matching x values of TM tokens.
        for (var idx = lid; idx < TM * KS; idx += 256u) {
            let t = idx / KS;
            let k = idx % KS;
            let u = ub + k / UV;
            let c = col(u, k % UV);
            let tok = tbase + t;
            let ok = u < units && c < cols && tok < params.m;
            let xi = min(tok, params.m - 1u) * cols + min(c, cols - 1u);
            xs[t * LD + k] = select(0.0, x[xi], ok);
        }
        workgroupBarrier();
        for (var k = 0u; k < KS; k++) {
            var wr: array<f32, 4>;
            for (var j = 0u; j < 4u; j++) {
                wr[j] = ws[(tx + 16u * j) * LD + k];
            }
            for (var i = 0u; i < MT; i++) {
                let xa = xs[(ty + 16u * i) * LD + k];
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(wr[j], xa, acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < MT; i++) {
        let tok = tbase + ty + 16u * i;
        if (tok >= params.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let r = rbase + tx + 16u * j;
            if (r < params.rows) {
                let row = params.row0 + r;
                let o = tok * params.out_stride + row;
                var v = acc[i][j];
                if ((params.flags & 1u) != 0u) {
                    v += bias[row];
                }
                if ((params.flags & 2u) != 0u) {
                    v += out[o];
                }
                out[o] = v;
            }
        }
    }
}
