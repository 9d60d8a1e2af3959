// Split-K ("flash-decoding") attention, built for decode (m == 1) and the
// fallback for any m. Query token t is at position i = pos[0] + t and
// attends over cache positions lo..i, lo = max(0, i-window+1,
// i-capacity+1), reading K/V at slot j % capacity of the
// [kv_heads][capacity][HD] cache (f32 bits, or F16 pairs packed in u32).
//
// PHASE 0, grid (kv_heads·heads/kv_heads/GW, NC, m): workgroup (x, c, t)
// serves the GW query heads x·GW.. (all reading kv head x·GW/(heads/
// kv_heads), so K/V are read once for them) over chunk c of the nk = i-lo+1
// keys: chunks of L = max(minl, ceil(nk/NC)) keys; chunks past the last
// exit at once (the grid is sized for the capacity, pos varies per token).
// Per block of ≤ WG keys: thread k computes the GW scores of key k (q from
// workgroup memory, K as vec4), a two-level max updates the running max,
// then threads (part, d4) accumulate p·V for all GW heads over the keys
// k ≡ part (mod P), four dims each. The P parts are summed at the end and
// the chunk's (max, Σp, Σp·V) goes to part[].
//
// With ROPE != 0 (AttnOpts.RoPE; one token a sequence: m == 1 or slots),
// phase 0 also does RoPEKV's work for the token at position i: q binds the
// whole q/k/v buffer (q_off, k_off, v_off, strides), q is rotated as it
// is loaded, and the chunk holding key i takes k (rotated) and v from
// that buffer, rounded as the cache rounds them, instead of from the
// cache. Phase 1 then writes them to the cache (the first head of each
// kv head's group), the only phase that binds the caches read-write: no
// workgroup reads the caches there, and phase 0's reads of them compile
// as before.
//
// PHASE 1, grid (heads, m): merges the chunks of each head with
// exp(m_c - M) weights, the sink logit (GPT-OSS) joining max and
// denominator once, and writes out.

struct Params {
    heads: u32,
    kv_heads: u32,
    capacity: u32,
    q_stride: u32,
    window: u32,
    has_sinks: u32,
    m: u32,
    nc: u32,       // chunks per (head, token): the grid's y
    scale: f32,
    softcap: f32,
    minl: u32,     // fewest keys per chunk
    slots: u32,    // 0: one cache, token t at position pos[0] + t
    slot_rows: u32, // head rows from one slot's cache to the next
    q_off: u32,    // q's first value in q[] (ROPE: of the q/k/v rows)
    _pad1: u32,
    _pad2: u32,
// BEGIN ROPEPARAMS
// END ROPEPARAMS
}

const WG: u32 = 128u;
const HD: u32 = 64u;
const F16: u32 = 0u;
const GW: u32 = 1u;     // query heads per workgroup
const PHASE: u32 = 0u;  // 0: chunk partials, 1: combine
const ROPE: u32 = 0u;   // 1: phases 0 and 1 do RoPEKV's work (ROPE block)
const HD4: u32 = (HD + 3u) / 4u;
const P: u32 = WG / HD4; // p·V parts (HD ≤ 4·WG)
const S: u32 = WG / GW;  // max segments per head
const PS: u32 = HD4 + 1u; // vec4 per partial: (m, l, 0, 0), then Σp·V
const QN: u32 = GW * HD4;
const PN: u32 = GW * WG;
const NEG: f32 = -1e30;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> pos: array<u32>;
@group(0) @binding(7) var<storage, read> sinks: array<f32>;

// K/V loads of 4 elements from element e (e - row start a multiple of 4).
// Go swaps this block for f16 and for head dims that are not a multiple
// of 4 (scalar loads; the lanes past HD meet zero q and are never written).
// BEGIN KV
@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;
fn kld(e: u32) -> vec4<f32> { return bitcast<vec4<f32>>(kc[e >> 2u]); }
fn vld(e: u32) -> vec4<f32> { return bitcast<vec4<f32>>(vc[e >> 2u]); }
// END KV

var<workgroup> qs: array<vec4<f32>, QN>;
var<workgroup> ps: array<f32, PN>;
var<workgroup> red: array<f32, WG>;
var<workgroup> cmb: array<vec4<f32>, WG>;
var<workgroup> kcur: array<vec4<f32>, HD4>; // ROPE: key i, as the cache holds it
var<workgroup> vcur: array<vec4<f32>, HD4>;

// Value e of the q head whose values start at q[base], as attention
// reads it, and key i's k and v (ROPE): the ROPE block replaces these.
// BEGIN ROPE
fn qval(base: u32, e: u32, p: u32) -> f32 {
    return q[base + e];
}

fn load_cur(t: u32, kvh: u32, p: u32, lid: u32) {
}
// END ROPE
// BEGIN ROPESTORE
fn store_cur(t: u32, kvh: u32, p: u32, lid: u32, dst: u32) {
}
// END ROPESTORE

struct Span {
    lo: u32,    // first key position
    nk: u32,    // keys
    len: u32,   // keys per chunk
    nact: u32,  // chunks holding keys
}

// Token t's position and the first head row of its cache: with slots,
// pos holds a (position, slot) pair per token (one sequence each).
fn row_at(t: u32) -> vec2<u32> {
    if (params.slots > 0u) {
        return vec2<u32>(pos[2u * t], pos[2u * t + 1u] * params.slot_rows);
    }
    return vec2<u32>(pos[0] + t, 0u);
}

// A token whose slot lies past the caches has no keys: it is skipped.
fn skipped(t: u32) -> bool {
    return params.slots > 0u && pos[2u * t + 1u] >= params.slots;
}

fn span(t: u32) -> Span {
    let i = row_at(t).x;
    var lo = i + 1u - min(i + 1u, params.capacity);
    if (params.window > 0u) {
        lo = max(lo, i + 1u - min(i + 1u, params.window));
    }
    let nk = i + 1u - lo;
    let len = max(params.minl, (nk + params.nc - 1u) / params.nc);
    return Span(lo, nk, len, (nk + len - 1u) / len);
}

fn chunk(wid: vec3<u32>, lid: u32) {
    let t = wid.z;
    let c = wid.y;
    if (skipped(t)) {
        return;
    }
    let sp = span(t);
    if (c >= sp.nact) {
        return;
    }
    let grp = params.heads / params.kv_heads;
    let kvh = (wid.x * GW) / grp;
    let h0 = wid.x * GW;
    let cs = sp.lo + c * sp.len;
    let ce = min(cs + sp.len, sp.lo + sp.nk);
    let kvbase = row_at(t).y + kvh * params.capacity;
    let icur = sp.lo + sp.nk - 1u; // the token's own position: its key is the last
    let cur = ROPE != 0u && ce == icur + 1u;

    for (var x = lid; x < GW * HD4; x += WG) {
        let g = x / HD4;
        let d = (x % HD4) * 4u;
        let b = params.q_off + t * params.q_stride + (h0 + g) * HD;
        var v = vec4<f32>(0.0);
        for (var k = 0u; k < 4u; k++) {
            if (d + k < HD) {
                v[k] = qval(b, d + k, icur);
            }
        }
        qs[x] = v;
    }
    if (cur) {
        load_cur(t, kvh, icur, lid);
    }
    var m_run: array<f32, GW>;
    var l: array<f32, GW>;
    var acc: array<vec4<f32>, GW>;
    for (var g = 0u; g < GW; g++) {
        m_run[g] = NEG;
        l[g] = 0.0;
        acc[g] = vec4<f32>(0.0);
    }
    let pt = lid / HD4;
    let d4 = lid % HD4;
    workgroupBarrier();

    for (var c0 = cs; c0 < ce; c0 += WG) {
        let n = min(WG, ce - c0);
        var s: array<f32, GW>;
        for (var g = 0u; g < GW; g++) {
            s[g] = NEG;
        }
        if (lid < n) {
            let row = (kvbase + (c0 + lid) % params.capacity) * HD;
            var sd: array<f32, GW>;
            for (var g = 0u; g < GW; g++) {
                sd[g] = 0.0;
            }
            // Key i's slot holds an older key (ROPE): its lane loads key
            // lo's row instead and takes kcur, with no branch in the loop
            // (a branch there kept the loads from being issued together).
            let own = cur && c0 + lid == icur;
            let krow = select(row, (kvbase + sp.lo % params.capacity) * HD, own);
            for (var k4 = 0u; k4 < HD4; k4++) {
                let kv = select(kld(krow + 4u * k4), kcur[k4], own);
                for (var g = 0u; g < GW; g++) {
                    sd[g] += dot(qs[g * HD4 + k4], kv);
                }
            }
            for (var g = 0u; g < GW; g++) {
                var x = sd[g] * params.scale;
                if (params.softcap > 0.0) {
                    x = params.softcap * tanh(clamp(x / params.softcap, -20.0, 20.0));
                }
                s[g] = x;
            }
        }
        for (var g = 0u; g < GW; g++) {
            ps[g * WG + lid] = s[g];
        }
        workgroupBarrier();
        // Max per head: S segments of the n scores, then one thread a head.
        {
            let g = lid / S;
            let seg = lid % S;
            if (g < GW) {
                let sl = (n + S - 1u) / S;
                var mx = NEG;
                for (var k = seg * sl; k < min(seg * sl + sl, n); k++) {
                    mx = max(mx, ps[g * WG + k]);
                }
                red[lid] = mx;
            }
        }
        workgroupBarrier();
        if (lid < GW) {
            var mx = NEG;
            for (var k = 0u; k < S; k++) {
                mx = max(mx, red[lid * S + k]);
            }
            cmb[lid].x = mx;
        }
        workgroupBarrier();
        var alpha: array<f32, GW>;
        for (var g = 0u; g < GW; g++) {
            let mn = max(m_run[g], cmb[g].x);
            alpha[g] = exp(m_run[g] - mn);
            m_run[g] = mn;
            if (lid < n) {
                ps[g * WG + lid] = exp(s[g] - mn);
            }
        }
        workgroupBarrier();
        if (pt < P) {
            for (var g = 0u; g < GW; g++) {
                acc[g] *= alpha[g];
                l[g] *= alpha[g];
            }
            for (var kk = pt; kk < n; kk += P) {
                let vown = cur && c0 + kk == icur;
                let vpos = select(c0 + kk, sp.lo, vown);
                let v = select(vld((kvbase + vpos % params.capacity) * HD + 4u * d4), vcur[d4], vown);
                for (var g = 0u; g < GW; g++) {
                    let p = ps[g * WG + kk];
                    l[g] += p;
                    acc[g] += p * v;
                }
            }
        }
        workgroupBarrier();
    }

    // Sum the P parts of each head; write (m, l) and Σp·V.
    for (var g = 0u; g < GW; g++) {
        if (pt < P) {
            cmb[lid] = acc[g];
            if (d4 == 0u) {
                red[pt] = l[g];
            }
        }
        workgroupBarrier();
        let base = ((t * params.heads + h0 + g) * params.nc + c) * PS;
        if (lid < HD4) {
            var a = vec4<f32>(0.0);
            for (var pp = 0u; pp < P; pp++) {
                a += cmb[pp * HD4 + lid];
            }
            part[base + 1u + lid] = a;
        }
        if (lid == 0u) {
            var den = 0.0;
            for (var pp = 0u; pp < P; pp++) {
                den += red[pp];
            }
            part[base] = vec4<f32>(m_run[g], den, 0.0, 0.0);
        }
        workgroupBarrier();
    }
}

fn combine(wid: vec3<u32>, lid: u32) {
    let h = wid.x;
    let t = wid.y;
    if (skipped(t)) {
        return;
    }
    let sp = span(t);
    let grp = params.heads / params.kv_heads;
    if (ROPE != 0u && h % grp == 0u) {
        let p = sp.lo + sp.nk - 1u;
        store_cur(t, h / grp, p, lid, (row_at(t).y + (h / grp) * params.capacity + p % params.capacity) * HD);
    }
    let hb = (t * params.heads + h) * params.nc;
    // Chunk c's (m, l) to red / ps; then every thread finds M and the
    // denominator and thread c turns its chunk's m into a weight.
    if (lid < sp.nact) {
        let ml = part[(hb + lid) * PS];
        red[lid] = ml.x;
        ps[lid] = ml.y;
    }
    workgroupBarrier();
    var mx = NEG;
    if (params.has_sinks != 0u) {
        mx = sinks[h];
    }
    for (var c = 0u; c < sp.nact; c++) {
        mx = max(mx, red[c]);
    }
    var den = 0.0;
    if (params.has_sinks != 0u) {
        den = exp(sinks[h] - mx);
    }
    for (var c = 0u; c < sp.nact; c++) {
        den += ps[c] * exp(red[c] - mx);
    }
    workgroupBarrier();
    if (lid < sp.nact) {
        ps[lid] = exp(red[lid] - mx) / den;
    }
    workgroupBarrier();
    let pt = lid / HD4;
    let d4 = lid % HD4;
    var a = vec4<f32>(0.0);
    if (pt < P) {
        var c = pt;
        for (; c + 3u * P < sp.nact; c += 4u * P) {
            let o0 = part[(hb + c) * PS + 1u + d4];
            let o1 = part[(hb + c + P) * PS + 1u + d4];
            let o2 = part[(hb + c + 2u * P) * PS + 1u + d4];
            let o3 = part[(hb + c + 3u * P) * PS + 1u + d4];
            a += ps[c] * o0 + ps[c + P] * o1 + ps[c + 2u * P] * o2 + ps[c + 3u * P] * o3;
        }
        for (; c < sp.nact; c += P) {
            a += ps[c] * part[(hb + c) * PS + 1u + d4];
        }
        cmb[lid] = a;
    }
    workgroupBarrier();
    if (lid < HD4) {
        var o = vec4<f32>(0.0);
        for (var pp = 0u; pp < P; pp++) {
            o += cmb[pp * HD4 + lid];
        }
        for (var k = 0u; k < 4u; k++) {
            let d = lid * 4u + k;
            if (d < HD) {
                out[(t * params.heads + h) * HD + d] = o[k];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if (PHASE == 0u) {
        chunk(wid, lid);
    } else {
        combine(wid, lid);
    }
}
