//! A model-block plugin: the squeeze-and-excitation gate of Hu, Shen & Sun 2018 ("Squeeze-and-
//! Excitation Networks", eq. 2–4), usable in a spec as `Plugin("se", (reduction: 4))`.
//!
//! For each example and channel c: s_c = mean over positions of x_c (squeeze);
//! g = σ(W₂ relu(W₁ s + b₁) + b₂) (excitation); y_c = g_c · x_c (scale).
//! W₁ is (C/r × C), W₂ is (C × C/r); the host owns all four parameters.

use vaelab_plugin_abi::*;

pub struct SqueezeExcite {
    input: Shape,
    c: usize,
    hw: usize,
    hidden: usize,
}

/// Intermediate values of one example's gate.
struct Gate {
    s: Vec<f32>,
    a: Vec<f32>,
    g: Vec<f32>,
}

impl SqueezeExcite {
    fn gate(&self, x: &[f32], p: &[&[f32]]) -> Gate {
        let (c, hw, r) = (self.c, self.hw, self.hidden);
        let (w1, b1, w2, b2) = (p[0], p[1], p[2], p[3]);
        let s: Vec<f32> = (0..c).map(|ch| x[ch * hw..(ch + 1) * hw].iter().sum::<f32>() / hw as f32).collect();
        let a: Vec<f32> = (0..r).map(|j| b1[j] + (0..c).map(|k| w1[j * c + k] * s[k]).sum::<f32>()).collect();
        let g = (0..c)
            .map(|k| {
                let e = b2[k] + (0..r).map(|j| w2[k * r + j] * a[j].max(0.0)).sum::<f32>();
                1.0 / (1.0 + (-e).exp())
            })
            .collect();
        Gate { s, a, g }
    }
}

impl BlockPlugin for SqueezeExcite {
    const NAME: &'static std::ffi::CStr = c"se";

    fn create(config: &Config, input: Shape) -> Result<Self, String> {
        config.only(&["reduction"])?;
        let reduction: usize = config.parse_or("reduction", 4)?;
        let Shape::Image(c, h, w) = input else {
            return Err(format!("se needs an image input (C, H, W), got {input}"));
        };
        if reduction == 0 {
            return Err("`reduction` must be at least 1".into());
        }
        Ok(SqueezeExcite { input, c, hw: h * w, hidden: (c / reduction).max(1) })
    }

    fn output(&self) -> Shape {
        self.input
    }

    fn params(&self) -> Vec<ParamSpec> {
        let (c, r) = (self.c, self.hidden);
        vec![
            ParamSpec { name: "fc1_weight".into(), dims: vec![r, c], init: Init::FanInUniform(c) },
            ParamSpec { name: "fc1_bias".into(), dims: vec![r], init: Init::FanInUniform(c) },
            ParamSpec { name: "fc2_weight".into(), dims: vec![c, r], init: Init::FanInUniform(r) },
            ParamSpec { name: "fc2_bias".into(), dims: vec![c], init: Init::FanInUniform(r) },
        ]
    }

    fn forward(&self, batch: usize, x: &[f32], params: &[&[f32]]) -> Result<Vec<f32>, String> {
        let n = self.c * self.hw;
        let mut y = vec![0.0; batch * n];
        for (xe, ye) in x.chunks(n).zip(y.chunks_mut(n)) {
            let gate = self.gate(xe, params);
            for ch in 0..self.c {
                for p in ch * self.hw..(ch + 1) * self.hw {
                    ye[p] = xe[p] * gate.g[ch];
                }
            }
        }
        Ok(y)
    }

    fn backward(&self, batch: usize, x: &[f32], params: &[&[f32]], dy: &[f32]) -> Result<BlockGrads, String> {
        let (c, hw, r) = (self.c, self.hw, self.hidden);
        let n = c * hw;
        let (w1, w2) = (params[0], params[2]);
        let mut dx = vec![0.0; batch * n];
        let (mut dw1, mut db1, mut dw2, mut db2) = (vec![0.0; r * c], vec![0.0; r], vec![0.0; c * r], vec![0.0; c]);
        for e in 0..batch {
            let (xe, dye) = (&x[e * n..(e + 1) * n], &dy[e * n..(e + 1) * n]);
            let gate = self.gate(xe, params);
            // dL/de_k = (Σ_p dy·x) · σ'(e_k)
            let de: Vec<f32> = (0..c)
                .map(|k| {
                    let dg: f32 = (k * hw..(k + 1) * hw).map(|p| dye[p] * xe[p]).sum();
                    dg * gate.g[k] * (1.0 - gate.g[k])
                })
                .collect();
            let mut da = vec![0.0; r];
            for k in 0..c {
                db2[k] += de[k];
                for j in 0..r {
                    dw2[k * r + j] += de[k] * gate.a[j].max(0.0);
                    da[j] += w2[k * r + j] * de[k];
                }
            }
            for j in 0..r {
                if gate.a[j] <= 0.0 {
                    da[j] = 0.0;
                }
                db1[j] += da[j];
                for k in 0..c {
                    dw1[j * c + k] += da[j] * gate.s[k];
                }
            }
            for k in 0..c {
                let ds: f32 = (0..r).map(|j| w1[j * c + k] * da[j]).sum();
                for p in k * hw..(k + 1) * hw {
                    dx[e * n + p] = dye[p] * gate.g[k] + ds / hw as f32;
                }
            }
        }
        Ok(BlockGrads { dx, dparams: vec![dw1, db1, dw2, db2] })
    }
}

export_plugin!(name: c"block-se", metrics: [], blocks: [SqueezeExcite]);
