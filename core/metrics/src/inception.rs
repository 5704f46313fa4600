//! Inception-v3 as pytorch-fid runs it for FID (Heusel et al. 2017; Szegedy et al. 2016 for the
//! network): the TensorFlow FID graph's variant, whose blocks differ from torchvision's in three
//! places, all kept here:
//! - the pooling branches of the A, C and first E blocks average over in-image taps only
//!   (`count_include_pad = False`);
//! - the last E block (`Mixed_7c`) pools its branch with a 3×3 *max* pool;
//! - inputs are resized to 299×299 by plain bilinear interpolation (`align_corners = False`, no
//!   antialiasing) and mapped from [0, 1] to [−1, 1]; grey images are replicated to 3 channels.
//!
//! The 2048 features are the global average of `Mixed_7c`. Every convolution is followed by
//! batch norm (ε = 0.001, running statistics) and ReLU; the norm is folded into the convolution's
//! weights at load time. Inference only: the convolutions are vaelab's fused im2col + gemm
//! kernels on batch-last activations, so a branch concatenation is a plain append.
//!
//! Parameters are named as in pytorch-fid's weight file (`Mixed_5b.branch1x1.conv.weight`,
//! `….bn.running_var`); see `xtask/scripts/fid_weights_to_safetensors.py`.

use rayon::prelude::*;
use std::collections::HashMap;
use vaelab_nn::fused::conv_forward;
use vaelab_nn::ConvGeom;

/// Side of the square input the network sees.
pub const INPUT_SIDE: usize = 299;
/// Length of the pool features.
pub const FEATURES: usize = 2048;
const BN_EPS: f64 = 1e-3;

type Pair = (usize, usize);

/// One node of the network.
enum Node {
    /// `name.conv` (no bias) + `name.bn` + ReLU.
    Conv { name: String, cin: usize, cout: usize, k: Pair, s: Pair, p: Pair },
    /// Padding taps are ignored (PyTorch pads with −∞).
    MaxPool { k: usize, s: usize, p: usize },
    /// Average over the taps inside the image (`count_include_pad = False`).
    AvgPool { k: usize, s: usize, p: usize },
    /// Branches run on the same input; outputs are concatenated along channels in order.
    Concat(Vec<Vec<Node>>),
}

fn conv(name: String, cin: usize, cout: usize, k: Pair, s: usize, p: Pair) -> Node {
    Node::Conv { name, cin, cout, k, s: (s, s), p }
}

/// A square `k`×`k` convolution with stride `s` and padding `p`.
fn sq(prefix: &str, branch: &str, cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Node {
    conv(format!("{prefix}.{branch}"), cin, cout, (k, k), s, (p, p))
}

/// A square stem convolution named as it is, without a branch (`Conv2d_1a_3x3`).
fn stem(name: &str, cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Node {
    conv(name.to_string(), cin, cout, (k, k), s, (p, p))
}

/// A 1×n (`wide`) or n×1 convolution with "same" padding.
fn strip(prefix: &str, branch: &str, cin: usize, cout: usize, n: usize, wide: bool) -> Node {
    let (k, p) = if wide { ((1, n), (0, n / 2)) } else { ((n, 1), (n / 2, 0)) };
    conv(format!("{prefix}.{branch}"), cin, cout, k, 1, p)
}

fn block_a(x: &str, cin: usize, pool: usize) -> Node {
    Node::Concat(vec![
        vec![sq(x, "branch1x1", cin, 64, 1, 1, 0)],
        vec![sq(x, "branch5x5_1", cin, 48, 1, 1, 0), sq(x, "branch5x5_2", 48, 64, 5, 1, 2)],
        vec![
            sq(x, "branch3x3dbl_1", cin, 64, 1, 1, 0),
            sq(x, "branch3x3dbl_2", 64, 96, 3, 1, 1),
            sq(x, "branch3x3dbl_3", 96, 96, 3, 1, 1),
        ],
        vec![Node::AvgPool { k: 3, s: 1, p: 1 }, sq(x, "branch_pool", cin, pool, 1, 1, 0)],
    ])
}

fn block_b(x: &str, cin: usize) -> Node {
    Node::Concat(vec![
        vec![sq(x, "branch3x3", cin, 384, 3, 2, 0)],
        vec![
            sq(x, "branch3x3dbl_1", cin, 64, 1, 1, 0),
            sq(x, "branch3x3dbl_2", 64, 96, 3, 1, 1),
            sq(x, "branch3x3dbl_3", 96, 96, 3, 2, 0),
        ],
        vec![Node::MaxPool { k: 3, s: 2, p: 0 }],
    ])
}

fn block_c(x: &str, c7: usize) -> Node {
    Node::Concat(vec![
        vec![sq(x, "branch1x1", 768, 192, 1, 1, 0)],
        vec![
            sq(x, "branch7x7_1", 768, c7, 1, 1, 0),
            strip(x, "branch7x7_2", c7, c7, 7, true),
            strip(x, "branch7x7_3", c7, 192, 7, false),
        ],
        vec![
            sq(x, "branch7x7dbl_1", 768, c7, 1, 1, 0),
            strip(x, "branch7x7dbl_2", c7, c7, 7, false),
            strip(x, "branch7x7dbl_3", c7, c7, 7, true),
            strip(x, "branch7x7dbl_4", c7, c7, 7, false),
            strip(x, "branch7x7dbl_5", c7, 192, 7, true),
        ],
        vec![Node::AvgPool { k: 3, s: 1, p: 1 }, sq(x, "branch_pool", 768, 192, 1, 1, 0)],
    ])
}

fn block_d(x: &str) -> Node {
    Node::Concat(vec![
        vec![sq(x, "branch3x3_1", 768, 192, 1, 1, 0), sq(x, "branch3x3_2", 192, 320, 3, 2, 0)],
        vec![
            sq(x, "branch7x7x3_1", 768, 192, 1, 1, 0),
            strip(x, "branch7x7x3_2", 192, 192, 7, true),
            strip(x, "branch7x7x3_3", 192, 192, 7, false),
            sq(x, "branch7x7x3_4", 192, 192, 3, 2, 0),
        ],
        vec![Node::MaxPool { k: 3, s: 2, p: 0 }],
    ])
}

fn block_e(x: &str, cin: usize, max_pool: bool) -> Node {
    let split =
        |a: &str, b: &str| Node::Concat(vec![vec![strip(x, a, 384, 384, 3, true)], vec![strip(x, b, 384, 384, 3, false)]]);
    let pool = if max_pool { Node::MaxPool { k: 3, s: 1, p: 1 } } else { Node::AvgPool { k: 3, s: 1, p: 1 } };
    Node::Concat(vec![
        vec![sq(x, "branch1x1", cin, 320, 1, 1, 0)],
        vec![sq(x, "branch3x3_1", cin, 384, 1, 1, 0), split("branch3x3_2a", "branch3x3_2b")],
        vec![
            sq(x, "branch3x3dbl_1", cin, 448, 1, 1, 0),
            sq(x, "branch3x3dbl_2", 448, 384, 3, 1, 1),
            split("branch3x3dbl_3a", "branch3x3dbl_3b"),
        ],
        vec![pool, sq(x, "branch_pool", cin, 192, 1, 1, 0)],
    ])
}

/// The whole network up to `Mixed_7c`.
fn architecture() -> Vec<Node> {
    vec![
        stem("Conv2d_1a_3x3", 3, 32, 3, 2, 0),
        stem("Conv2d_2a_3x3", 32, 32, 3, 1, 0),
        stem("Conv2d_2b_3x3", 32, 64, 3, 1, 1),
        Node::MaxPool { k: 3, s: 2, p: 0 },
        stem("Conv2d_3b_1x1", 64, 80, 1, 1, 0),
        stem("Conv2d_4a_3x3", 80, 192, 3, 1, 0),
        Node::MaxPool { k: 3, s: 2, p: 0 },
        block_a("Mixed_5b", 192, 32),
        block_a("Mixed_5c", 256, 64),
        block_a("Mixed_5d", 288, 64),
        block_b("Mixed_6a", 288),
        block_c("Mixed_6b", 128),
        block_c("Mixed_6c", 160),
        block_c("Mixed_6d", 160),
        block_c("Mixed_6e", 192),
        block_d("Mixed_7a"),
        block_e("Mixed_7b", 1280, false),
        block_e("Mixed_7c", 2048, true),
    ]
}

fn for_each_conv(nodes: &[Node], f: &mut impl FnMut(&str, usize, usize, Pair)) {
    for node in nodes {
        match node {
            Node::Conv { name, cin, cout, k, .. } => f(name, *cin, *cout, *k),
            Node::Concat(branches) => branches.iter().for_each(|b| for_each_conv(b, f)),
            _ => {}
        }
    }
}

/// Every parameter the network reads, with its shape, in network order.
pub fn parameter_shapes() -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for_each_conv(&architecture(), &mut |name, cin, cout, (kh, kw)| {
        out.push((format!("{name}.conv.weight"), vec![cout, cin, kh, kw]));
        for stat in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{name}.bn.{stat}"), vec![cout]));
        }
    });
    out
}

/// A convolution with its batch norm folded in: `w·γ/√(var+ε)`, `β − mean·γ/√(var+ε)`.
struct Folded {
    w: Vec<f32>,
    b: Vec<f32>,
}

/// The loaded network.
pub struct Inception {
    nodes: Vec<Node>,
    convs: HashMap<String, Folded>,
}

/// Batch-last activations: `(c·h·w, batch)`.
struct Acts {
    v: Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
}

impl Inception {
    /// Builds the network from named tensors (`lookup(name)` gives shape and values in row-major
    /// order). Errors name the first missing or misshapen tensor.
    pub fn from_tensors(mut lookup: impl FnMut(&str) -> Option<(Vec<usize>, Vec<f32>)>) -> Result<Inception, String> {
        let nodes = architecture();
        let mut convs = HashMap::new();
        let mut error = None;
        for_each_conv(&nodes, &mut |name, cin, cout, (kh, kw)| {
            if error.is_some() {
                return;
            }
            let mut get = |suffix: &str, shape: Vec<usize>| -> Option<Vec<f32>> {
                let full = format!("{name}.{suffix}");
                match lookup(&full) {
                    None => {
                        error = Some(format!("missing tensor `{full}`"));
                        None
                    }
                    Some((s, _)) if s != shape => {
                        error = Some(format!("tensor `{full}` has shape {s:?}, expected {shape:?}"));
                        None
                    }
                    Some((_, v)) => Some(v),
                }
            };
            let Some(w) = get("conv.weight", vec![cout, cin, kh, kw]) else { return };
            let mut stats = Vec::new();
            for stat in ["weight", "bias", "running_mean", "running_var"] {
                let Some(v) = get(&format!("bn.{stat}"), vec![cout]) else { return };
                stats.push(v);
            }
            let per_out = cin * kh * kw;
            let scale: Vec<f64> = (0..cout).map(|o| stats[0][o] as f64 / (stats[3][o] as f64 + BN_EPS).sqrt()).collect();
            let w = w.chunks(per_out).zip(&scale).flat_map(|(row, s)| row.iter().map(move |v| (*v as f64 * s) as f32)).collect();
            let b = (0..cout).map(|o| (stats[1][o] as f64 - stats[2][o] as f64 * scale[o]) as f32).collect();
            convs.insert(name.to_string(), Folded { w, b });
        });
        match error {
            Some(e) => Err(e),
            None => Ok(Inception { nodes, convs }),
        }
    }

    /// Pool features of `batch` images already at 299×299×3 in [−1, 1], batch-last.
    pub fn forward(&self, input: Vec<f32>, batch: usize) -> Vec<Vec<f32>> {
        let x = Acts { v: input, c: 3, h: INPUT_SIDE, w: INPUT_SIDE };
        let y = self.run(&self.nodes, x, batch);
        let area = (y.h * y.w) as f64;
        (0..batch)
            .map(|b| {
                (0..y.c)
                    .map(|c| {
                        let plane = &y.v[c * y.h * y.w * batch..][..y.h * y.w * batch];
                        (plane.iter().skip(b).step_by(batch).map(|v| *v as f64).sum::<f64>() / area) as f32
                    })
                    .collect()
            })
            .collect()
    }

    fn run(&self, nodes: &[Node], mut x: Acts, batch: usize) -> Acts {
        for node in nodes {
            x = match node {
                Node::Conv { name, cin, cout, k, s, p } => {
                    debug_assert_eq!(*cin, x.c);
                    let g = ConvGeom::conv_rect(x.c, x.h, x.w, *k, *s, *p).expect("299 px input fits every layer");
                    let f = &self.convs[name.as_str()];
                    let mut v = conv_forward(&x.v, batch, &f.w, &f.b, &g, *cout, None);
                    v.par_iter_mut().for_each(|a| *a = a.max(0.0));
                    Acts { v, c: *cout, h: g.oh, w: g.ow }
                }
                Node::MaxPool { k, s, p } => pool(&x, batch, *k, *s, *p, true),
                Node::AvgPool { k, s, p } => pool(&x, batch, *k, *s, *p, false),
                Node::Concat(branches) => {
                    let outs: Vec<Acts> =
                        branches.iter().map(|b| self.run(b, Acts { v: x.v.clone(), c: x.c, h: x.h, w: x.w }, batch)).collect();
                    let (h, w) = (outs[0].h, outs[0].w);
                    debug_assert!(outs.iter().all(|o| (o.h, o.w) == (h, w)));
                    let c = outs.iter().map(|o| o.c).sum();
                    Acts { v: outs.into_iter().flat_map(|o| o.v).collect(), c, h, w }
                }
            };
        }
        x
    }
}

/// Max or average (over in-image taps) pooling of batch-last activations.
fn pool(x: &Acts, batch: usize, k: usize, s: usize, p: usize, max: bool) -> Acts {
    let oh = ConvGeom::conv_out(x.h, k, s, p).expect("fits");
    let ow = ConvGeom::conv_out(x.w, k, s, p).expect("fits");
    let mut v = vec![0.0f32; x.c * oh * ow * batch];
    v.par_chunks_mut(oh * ow * batch).enumerate().for_each(|(c, out)| {
        let plane = &x.v[c * x.h * x.w * batch..][..x.h * x.w * batch];
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = &mut out[(oy * ow + ox) * batch..][..batch];
                dst.fill(if max { f32::NEG_INFINITY } else { 0.0 });
                let mut taps = 0;
                for ky in 0..k {
                    let Some(y) = (oy * s + ky).checked_sub(p).filter(|&y| y < x.h) else { continue };
                    for kx in 0..k {
                        let Some(xx) = (ox * s + kx).checked_sub(p).filter(|&xx| xx < x.w) else { continue };
                        taps += 1;
                        let src = &plane[(y * x.w + xx) * batch..][..batch];
                        for (d, v) in dst.iter_mut().zip(src) {
                            *d = if max { d.max(*v) } else { *d + v };
                        }
                    }
                }
                if !max {
                    dst.iter_mut().for_each(|d| *d /= taps as f32);
                }
            }
        }
    });
    Acts { v, c: x.c, h: oh, w: ow }
}

/// Source taps of PyTorch's bilinear resize (`align_corners = False`, no antialiasing) along one
/// axis: for each output index, `(i0, i1, λ)` with value `(1−λ)·in[i0] + λ·in[i1]`.
fn bilinear_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// One image (`c`×`h`×`w` in [0, 1], `c` = 1 or 3) as the network's input: resized to 299×299,
/// grey replicated to RGB, mapped to [−1, 1]. Returns 3·299·299 values, channel-major.
pub fn prepare(image: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let (ty, tx) = (bilinear_taps(h, INPUT_SIDE), bilinear_taps(w, INPUT_SIDE));
    let mut out = Vec::with_capacity(3 * INPUT_SIDE * INPUT_SIDE);
    for ch in 0..3 {
        let plane = &image[(ch % c) * h * w..][..h * w];
        for &(y0, y1, ly) in &ty {
            for &(x0, x1, lx) in &tx {
                let top = plane[y0 * w + x0] * (1.0 - lx) + plane[y0 * w + x1] * lx;
                let bottom = plane[y1 * w + x0] * (1.0 - lx) + plane[y1 * w + x1] * lx;
                out.push(2.0 * (top * (1.0 - ly) + bottom * ly) - 1.0);
            }
        }
    }
    out
}

/// Deterministic stand-in weights for tests and benchmarks (real FID needs pytorch-fid's file):
/// each value comes from SplitMix64 seeded by the tensor's name, so the Python script that made the
/// parity fixture (`xtask/fixtures/inception_reference.py`) computes the very same tensors.
/// Convolutions get He-uniform values, batch norms values near the identity.
pub fn synthetic_parameters() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    parameter_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let u = uniform_stream(&name, shape.iter().product());
            let values = if name.ends_with("conv.weight") {
                let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
                let bound = (6.0 / fan_in).sqrt();
                u.iter().map(|u| ((2.0 * u - 1.0) * bound) as f32).collect()
            } else {
                let (a, b) = match name.rsplit('.').next() {
                    Some("weight") => (0.8, 0.4),
                    Some("bias") | Some("running_mean") => (-0.2, 0.4),
                    _ => (0.5, 1.0), // running_var
                };
                u.iter().map(|u| (a + b * u) as f32).collect()
            };
            (name, shape, values)
        })
        .collect()
}

/// `count` uniform values in [0, 1): SplitMix64 over `fnv1a64(name) + (i+1)·γ`, top 24 bits.
fn uniform_stream(name: &str, count: usize) -> Vec<f64> {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (0..count as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(GAMMA));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_taps_follow_pytorch_half_pixel_rule() {
        // Upsampling 2 → 4: sources −0.25 (clamped to 0), 0.25, 0.75, 1.25 (i1 clamped).
        let t = bilinear_taps(2, 4);
        assert_eq!(t[0], (0, 1, 0.0));
        assert_eq!(t[1], (0, 1, 0.25));
        assert_eq!(t[2], (0, 1, 0.75));
        assert_eq!(t[3], (1, 1, 0.25));
    }

    #[test]
    fn the_network_reads_every_pytorch_fid_block() {
        let shapes = parameter_shapes();
        // 94 BasicConv2d layers in pytorch-fid's InceptionV3 (up to Mixed_7c), 5 tensors each.
        assert_eq!(shapes.len(), 94 * 5);
        let last = shapes.iter().find(|(n, _)| n == "Mixed_7c.branch_pool.conv.weight").unwrap();
        assert_eq!(last.1, vec![192, 2048, 1, 1]);
        let strip = shapes.iter().find(|(n, _)| n == "Mixed_6b.branch7x7_2.conv.weight").unwrap();
        assert_eq!(strip.1, vec![128, 128, 1, 7]);
    }

    #[test]
    fn average_pool_ignores_padding_and_max_pool_ignores_it_too() {
        // One 2×2 channel, batch 1: corners of a 3×3/s1/p1 pool see 4 in-image taps.
        let x = Acts { v: vec![1.0, 2.0, 3.0, 4.0], c: 1, h: 2, w: 2 };
        let avg = pool(&x, 1, 3, 1, 1, false);
        assert_eq!(avg.v, vec![2.5; 4]);
        let x = Acts { v: vec![-1.0, -2.0, -3.0, -4.0], c: 1, h: 2, w: 2 };
        assert_eq!(pool(&x, 1, 3, 1, 1, true).v, vec![-1.0; 4]);
    }
}
