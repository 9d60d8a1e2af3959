// WGSL helpers that kernels prepend (see helpersWGSL in common.go).
// This wgpu rejects `enable f16`: f16 values are stored packed in u32.
// Shards are uploaded byte for byte, so quantized blocks (Q8_0 = 34 bytes,
// Q4_K = 144 bytes, ...) start at byte offsets that need not be 4-aligned.

// f16 bits (low 16 bits of h) to f32.
fn f16_to_f32(h: u32) -> f32 {
    return unpack2x16float(h & 0xffffu).x;
}

// bf16 bits (low 16 bits of h) to f32.
fn bf16_to_f32(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// Sign-extends the low byte of b.
fn i8_to_i32(b: u32) -> i32 {
    return bitcast<i32>(b << 24u) >> 24u;
}

// ---- byte readers: BYTES is replaced by the name of an array<u32> ----

// Byte at byte offset off.
fn BYTES_u8(off: u32) -> u32 {
    return (BYTES[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

// Little-endian u32 at any byte offset.
fn BYTES_u32(off: u32) -> u32 {
    let i = off >> 2u;
    let s = (off & 3u) * 8u;
    if (s == 0u) {
        return BYTES[i];
    }
    return (BYTES[i] >> s) | (BYTES[i + 1u] << (32u - s));
}

// Little-endian u16 at any byte offset.
fn BYTES_u16(off: u32) -> u32 {
    if ((off & 3u) == 3u) {
        return BYTES_u32(off) & 0xffffu;
    }
    return (BYTES[off >> 2u] >> ((off & 3u) * 8u)) & 0xffffu;
}

// f16 / bf16 at any byte offset, as f32.
fn BYTES_f16(off: u32) -> f32 {
    return f16_to_f32(BYTES_u16(off));
}

fn BYTES_bf16(off: u32) -> f32 {
    return bf16_to_f32(BYTES_u16(off));
}
