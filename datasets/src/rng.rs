/// A small counter-based random stream (SplitMix64).
///
/// vaelab derives every random number from `(seed, purpose, counter)` instead of carrying RNG state,
/// which makes a resumed run bit-identical to an uninterrupted one and lets images be generated in
/// any order on any thread. SplitMix64: Steele, Lea & Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014.
#[derive(Clone, Debug)]
pub struct StreamRng {
    state: u64,
}

impl StreamRng {
    /// A stream identified by a seed and any number of keys (purpose tag, step, index...).
    pub fn new(seed: u64, keys: &[u64]) -> Self {
        let mut state = mix(seed ^ 0x9E37_79B9_7F4A_7C15);
        for &k in keys {
            state = mix(state ^ mix(k.wrapping_add(0x632B_E59B_D9B4_E019)));
        }
        StreamRng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal, by the Box–Muller transform.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Turns a purpose name into a stream key, so call sites read `StreamRng::new(seed, &[tag("data"), step])`.
pub fn tag(name: &str) -> u64 {
    // FNV-1a: stable across platforms and Rust versions, unlike `DefaultHasher`.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
