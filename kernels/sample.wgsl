// GPU token sampling, one workgroup, llama.cpp's chain:
//   repetition penalty → top-k → top-p → min-p → temperature → draw.
//
// Values: v_i = logits[i] with NaN read as -inf, then, for each distinct id
// among the last last_n history ids, v > 0 ? v * inv_pen : v * pen.
// Order: "sorted" means by value descending, then id ascending; values are
// compared through an order-preserving u32 key (key_of; -0 == +0).
//   top-k  keeps the first top_k of that order (ties broken by lower id);
//   top-p  keeps, of the top-k set, every value ≥ v*, where v* is the value
//          of the shortest sorted prefix whose mass (T = 1, exp(v - vmax))
//          reaches top_p × the top-k set's mass (ties at v* all kept);
//   min-p  keeps v ≥ vmax + log(min_p) (f32 add, as llama.cpp's logit test);
// then weights w_i = exp((v_i - vmax) * inv_temp) over the kept ids, and
// the token is the first kept id, in id order, whose inclusive cumulative
// weight exceeds u × Σw (u = bitcast<f32>(state[0]) in [0, 1)).
// greedy: the lowest id of the largest value (penalties applied).
//
// Thresholds are found by radix search on the key, 4 bits per pass, 16
// candidate thresholds per pass counted (top-k) or weighed (top-p) at once;
// the draw scans contiguous id chunks per invocation with a workgroup
// prefix scan. The penalty set is an open-addressing hash in workgroup
// memory, built by invocation 0 from the ring.

struct Params {
    n: u32,
    top_k: u32,      // 0: off
    hist_cap: u32,   // ring capacity in ids
    last_n: u32,     // penalty window, 0: off
    top_p: f32,      // ≥ 1: off
    log_min_p: f32,
    inv_temp: f32,
    pen: f32,
    inv_pen: f32,
    greedy: u32,
    min_p_on: u32,
    _pad: u32,
}

const WG: u32 = 256u;
const HSIZE: u32 = 1024u;
const EMPTY: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> state: array<u32>;
@group(0) @binding(3) var<storage, read> history: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

var<workgroup> htab: array<u32, HSIZE>;
var<workgroup> red: array<vec4<u32>, 1024>; // 4 × WG: 16 counters per invocation
var<workgroup> su: array<u32, WG>;
var<workgroup> su2: array<u32, WG>;
var<workgroup> sf: array<f32, WG>;
var<workgroup> bc: array<u32, 4>;
var<workgroup> owner: atomic<u32>;

fn hslot(id: u32) -> u32 {
    return (id * 2654435761u) >> 22u;
}

fn penalized(i: u32) -> bool {
    var h = hslot(i);
    for (var probe = 0u; probe < HSIZE; probe++) {
        let t = htab[h];
        if (t == i) {
            return true;
        }
        if (t == EMPTY) {
            return false;
        }
        h = (h + 1u) & (HSIZE - 1u);
    }
    return false;
}

// -inf, read from a variable: WGSL makes a constant expression that
// evaluates to an infinity a shader-creation error (Chrome's Tint enforces
// it, wgpu's naga does not), so the bitcast must not be constant-folded.
var<private> neg_inf_bits: u32 = 0xff800000u;

// The penalized value of logit i.
fn lv(i: u32) -> f32 {
    var v = logits[i];
    if ((bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u) {
        v = bitcast<f32>(neg_inf_bits);
    }
    if (params.last_n != 0u && penalized(i)) {
        v = select(v * params.pen, v * params.inv_pen, v > 0.0);
    }
    return v;
}

// Order-preserving key of a non-NaN float; -0 and +0 share a key.
fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn val_of(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// Sums red[4·lid .. 4·lid+3] over the workgroup into red[0..3], as u32
// or (asf) as f32 bits.
fn reduce16(lid: u32, asf: bool) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var q = 0u; q < 4u; q++) {
                let a = red[lid * 4u + q];
                let b = red[(lid + s) * 4u + q];
                if (asf) {
                    red[lid * 4u + q] = bitcast<vec4<u32>>(bitcast<vec4<f32>>(a) + bitcast<vec4<f32>>(b));
                } else {
                    red[lid * 4u + q] = a + b;
                }
            }
        }
        workgroupBarrier();
    }
}

// Inclusive prefix scans over the workgroup (Hillis–Steele).
fn scan_f(lid: u32) {
    for (var off = 1u; off < WG; off <<= 1u) {
        var t = 0.0;
        if (lid >= off) {
            t = sf[lid - off];
        }
        workgroupBarrier();
        sf[lid] += t;
        workgroupBarrier();
    }
}

fn scan_u(lid: u32) {
    for (var off = 1u; off < WG; off <<= 1u) {
        var t = 0u;
        if (lid >= off) {
            t = su[lid - off];
        }
        workgroupBarrier();
        su[lid] += t;
        workgroupBarrier();
    }
}

// The 16 thresholds P | d << s, d = 0..15, as four vec4s.
fn thresholds(P: u32, s: u32, q: u32) -> vec4<u32> {
    return vec4<u32>(P) | ((vec4<u32>(0u, 1u, 2u, 3u) + vec4<u32>(4u * q)) << vec4<u32>(s));
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let n = params.n;

    // 0. the penalty set
    for (var j = lid; j < HSIZE; j += WG) {
        htab[j] = EMPTY;
    }
    if (lid == 0u) {
        atomicStore(&owner, 0u);
    }
    workgroupBarrier();
    if (lid == 0u && params.last_n != 0u) {
        let cnt = state[1];
        let cap = params.hist_cap;
        let L = min(min(cnt, cap), params.last_n);
        for (var j = 0u; j < L; j++) {
            let id = history[(cnt - 1u - j) % cap];
            if (id >= n) {
                continue;
            }
            var h = hslot(id);
            loop {
                let t = htab[h];
                if (t == id) {
                    break;
                }
                if (t == EMPTY) {
                    htab[h] = id;
                    break;
                }
                h = (h + 1u) & (HSIZE - 1u);
            }
        }
    }
    workgroupBarrier();

    // 1. the largest value and its lowest id
    var bk = 0u;
    var bi = EMPTY;
    for (var i = lid; i < n; i += WG) {
        let k = key_of(lv(i));
        if (k > bk) {
            bk = k;
            bi = i;
        }
    }
    su[lid] = bk;
    su2[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ok = su[lid + s];
            let oi = su2[lid + s];
            if (ok > su[lid] || (ok == su[lid] && oi < su2[lid])) {
                su[lid] = ok;
                su2[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    let vmax = val_of(su[0]);
    let imax = su2[0];
    workgroupBarrier();
    if (params.greedy != 0u) {
        if (lid == 0u) {
            out[0] = imax;
        }
        return;
    }

    // 2. top-k: kK = the key of the top_k-th sorted value
    let tk = params.top_k != 0u;
    var kK = 0u;
    if (tk) {
        var P = 0u;
        for (var ps = 0u; ps < 8u; ps++) {
            let s = 28u - 4u * ps;
            let t0 = thresholds(P, s, 0u);
            let t1 = thresholds(P, s, 1u);
            let t2 = thresholds(P, s, 2u);
            let t3 = thresholds(P, s, 3u);
            var c0 = vec4<u32>(0u);
            var c1 = vec4<u32>(0u);
            var c2 = vec4<u32>(0u);
            var c3 = vec4<u32>(0u);
            for (var i = lid; i < n; i += WG) {
                let k = key_of(lv(i));
                if (k >= P) {
                    let kv = vec4<u32>(k);
                    c0 += select(vec4<u32>(0u), vec4<u32>(1u), kv >= t0);
                    c1 += select(vec4<u32>(0u), vec4<u32>(1u), kv >= t1);
                    c2 += select(vec4<u32>(0u), vec4<u32>(1u), kv >= t2);
                    c3 += select(vec4<u32>(0u), vec4<u32>(1u), kv >= t3);
                }
            }
            red[lid * 4u] = c0;
            red[lid * 4u + 1u] = c1;
            red[lid * 4u + 2u] = c2;
            red[lid * 4u + 3u] = c3;
            reduce16(lid, false);
            if (lid == 0u) {
                var dd = 0u;
                for (var d = 1u; d < 16u; d++) {
                    if (red[d / 4u][d % 4u] >= params.top_k) {
                        dd = d;
                    }
                }
                bc[0] = P | (dd << s);
            }
            workgroupBarrier();
            P = bc[0];
            workgroupBarrier();
        }
        kK = P;
    }

    // 3. the top-k set's mass (T = 1) and how many lie strictly above kK
    let tp_on = params.top_p < 1.0;
    var zk = 0.0;
    var cgt = 0u;
    if (tk || tp_on) {
        var z = 0.0;
        var c = 0u;
        for (var i = lid; i < n; i += WG) {
            let v = lv(i);
            if (!tk || key_of(v) > kK) {
                z += exp(v - vmax);
                c += 1u;
            }
        }
        sf[lid] = z;
        su[lid] = c;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) {
                sf[lid] += sf[lid + s];
                su[lid] += su[lid + s];
            }
            workgroupBarrier();
        }
        zk = sf[0];
        cgt = su[0];
        workgroupBarrier();
    }
    let rk = params.top_k - cgt; // ties at kK kept, lowest ids first
    if (tk) {
        zk += f32(rk) * exp(val_of(kK) - vmax);
    }

    // 4. top-p: tpk = the largest key whose top-k mass at or above reaches
    //    top_p × zk
    var tpk = 0u;
    if (tp_on) {
        let goal = params.top_p * zk;
        var P = 0u;
        for (var ps = 0u; ps < 8u; ps++) {
            let s = 28u - 4u * ps;
            let t0 = thresholds(P, s, 0u);
            let t1 = thresholds(P, s, 1u);
            let t2 = thresholds(P, s, 2u);
            let t3 = thresholds(P, s, 3u);
            var m0 = vec4<f32>(0.0);
            var m1 = vec4<f32>(0.0);
            var m2 = vec4<f32>(0.0);
            var m3 = vec4<f32>(0.0);
            for (var i = lid; i < n; i += WG) {
                let v = lv(i);
                let k = key_of(v);
                if ((!tk || k > kK) && k >= P) {
                    let e = vec4<f32>(exp(v - vmax));
                    let kv = vec4<u32>(k);
                    m0 += select(vec4<f32>(0.0), e, kv >= t0);
                    m1 += select(vec4<f32>(0.0), e, kv >= t1);
                    m2 += select(vec4<f32>(0.0), e, kv >= t2);
                    m3 += select(vec4<f32>(0.0), e, kv >= t3);
                }
            }
            red[lid * 4u] = bitcast<vec4<u32>>(m0);
            red[lid * 4u + 1u] = bitcast<vec4<u32>>(m1);
            red[lid * 4u + 2u] = bitcast<vec4<u32>>(m2);
            red[lid * 4u + 3u] = bitcast<vec4<u32>>(m3);
            reduce16(lid, true);
            if (lid == 0u) {
                var dd = 0u;
                for (var d = 1u; d < 16u; d++) {
                    var m = bitcast<f32>(red[d / 4u][d % 4u]);
                    if (tk && (P | (d << s)) <= kK) {
                        m = zk;
                    }
                    if (m >= goal) {
                        dd = d;
                    }
                }
                bc[0] = P | (dd << s);
            }
            workgroupBarrier();
            P = bc[0];
            workgroupBarrier();
        }
        tpk = P;
    }

    // 5. min-p
    let mp_on = params.min_p_on != 0u;
    let tm = vmax + params.log_min_p;

    // 6. the draw, over contiguous chunks of ids
    let chunk = (n + WG - 1u) / WG;
    let lo = min(lid * chunk, n);
    let hi = min(lo + chunk, n);
    var tie_base = 0u;
    if (tk) {
        var c = 0u;
        for (var i = lo; i < hi; i++) {
            if (key_of(lv(i)) == kK) {
                c += 1u;
            }
        }
        workgroupBarrier();
        su[lid] = c;
        workgroupBarrier();
        scan_u(lid);
        tie_base = su[lid] - c;
    }
    var w = 0.0;
    var rank = tie_base;
    for (var i = lo; i < hi; i++) {
        let v = lv(i);
        let k = key_of(v);
        var ok = true;
        if (tk) {
            if (k == kK) {
                ok = rank < rk;
                rank += 1u;
            } else {
                ok = k > kK;
            }
        }
        ok = ok && (!tp_on || k >= tpk) && (!mp_on || v >= tm);
        if (ok) {
            w += exp((v - vmax) * params.inv_temp);
        }
    }
    sf[lid] = w;
    workgroupBarrier();
    scan_f(lid);
    let total = sf[WG - 1u];
    let base = select(0.0, sf[max(lid, 1u) - 1u], lid > 0u);
    let goal = bitcast<f32>(state[0]) * total;
    if (w > 0.0 && base <= goal) {
        atomicMax(&owner, lid);
    }
    workgroupBarrier();
    if (lid == atomicLoad(&owner)) {
        var cum = base;
        var pick = EMPTY;
        var last = EMPTY;
        rank = tie_base;
        for (var i = lo; i < hi; i++) {
            let v = lv(i);
            let k = key_of(v);
            var ok = true;
            if (tk) {
                if (k == kK) {
                    ok = rank < rk;
                    rank += 1u;
                } else {
                    ok = k > kK;
                }
            }
            ok = ok && (!tp_on || k >= tpk) && (!mp_on || v >= tm);
            if (ok) {
                let wi = exp((v - vmax) * params.inv_temp);
                if (wi > 0.0) {
                    cum += wi;
                    last = i;
                    if (cum > goal) {
                        pick = i;
                        break;
                    }
                }
            }
        }
        if (pick == EMPTY) {
            pick = last;
        }
        if (pick == EMPTY) {
            pick = imax;
        }
        out[0] = pick;
    }
}
