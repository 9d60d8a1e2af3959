// The gated activations, act(gate) · up, of act.wgsl and of the matvec
// that fuses them (matmul.go, MatMulOpts.Gated): both prepend this file,
// so both compute the same expression. ACT is templated by act.go:
//   0 SiLU:      g * sigmoid(g) * up
//   1 GELUTanh:  0.5 g (1 + tanh(√(2/π)(g + 0.044715 g³))) * up, computed
//                as g * sigmoid(2z), which equals it and never overflows
//   2 SwiGLUOAI: g = min(g, 7); u = clamp(up, -7, 7);
//                out = (u + 1) * g * sigmoid(1.702 g)      (GPT-OSS)

const ACT: u32 = 0u;

fn sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}

fn gated_act(gate: f32, up: f32) -> f32 {
    var g = gate;
    var u = up;
    if (ACT == 0u) {
        return g * sigmoid(g) * u;
    }
    if (ACT == 1u) {
        let z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
        return g * sigmoid(2.0 * z) * u;
    }
    g = min(g, 7.0);
    u = clamp(u, -7.0, 7.0);
    return (u + 1.0) * g * sigmoid(1.702 * g);
}
