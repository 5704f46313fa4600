//! Shape inference over a layer list. The same function drives `vaelab check`'s summary table,
//! spec validation and model building, so the three can never disagree.

use super::build_error::BuildError;
use super::external::BlockSource;
use super::geom::ConvGeom;
use super::params::{Init, Role};
use super::shape::{FeatShape, ParamDecl};
use vaelab_spec::Layer;

fn trainable(suffix: &str, shape: Vec<usize>, init: Init) -> ParamDecl {
    ParamDecl { suffix: suffix.into(), shape, init, role: Role::Trainable }
}

fn buffer(suffix: &str, shape: Vec<usize>, init: Init) -> ParamDecl {
    ParamDecl { suffix: suffix.into(), shape, init, role: Role::Buffer }
}

/// Output shape and parameters of one (non-residual) layer, or what is wrong with its input.
/// Plugin blocks are asked through `blocks`.
pub fn layer_shape(layer: &Layer, input: FeatShape, blocks: &dyn BlockSource) -> Result<(FeatShape, Vec<ParamDecl>), String> {
    use FeatShape::*;
    let image = |input: FeatShape| match input {
        Image(c, h, w) => Ok((c, h, w)),
        Flat(_) => Err(format!("{} expects 3-D input (C,H,W), got {input}", layer.kind())),
    };
    Ok(match *layer {
        Layer::Dense { out } => {
            let Flat(n) = input else {
                return Err(format!("Dense expects 1-D input (N), got {input}; add Flatten before it"));
            };
            let fan_in = Init::FanInUniform { fan_in: n };
            (Flat(out), vec![trainable("weight", vec![out, n], fan_in), trainable("bias", vec![out], fan_in)])
        }
        Layer::Conv { out, k, s, p } => {
            let (c, h, w) = image(input)?;
            let g = ConvGeom::conv(c, h, w, k, s, p)
                .ok_or_else(|| format!("Conv kernel {k} does not fit input {input} with padding {p}"))?;
            let fan_in = Init::FanInUniform { fan_in: c * k * k };
            (Image(out, g.oh, g.ow), vec![trainable("weight", vec![out, c, k, k], fan_in), trainable("bias", vec![out], fan_in)])
        }
        Layer::ConvT { out, k, s, p } => {
            let (c, h, w) = image(input)?;
            let g = ConvGeom::conv_t(out, h, w, k, s, p)
                .ok_or_else(|| format!("ConvT with k={k}, s={s}, p={p} gives an empty output for input {input}"))?;
            // PyTorch computes ConvTranspose2d's fan-in from weight dim 1 (= out channels) × k × k.
            let fan_in = Init::FanInUniform { fan_in: out * k * k };
            (Image(out, g.h, g.w), vec![trainable("weight", vec![c, out, k, k], fan_in), trainable("bias", vec![out], fan_in)])
        }
        Layer::Upsample { factor } => {
            let (c, h, w) = image(input)?;
            (Image(c, h * factor, w * factor), vec![])
        }
        Layer::AvgPool { k } => {
            let (c, h, w) = image(input)?;
            if k == 0 || h % k != 0 || w % k != 0 {
                return Err(format!("AvgPool with k={k} needs a height and width divisible by {k}, got {input}"));
            }
            (Image(c, h / k, w / k), vec![])
        }
        Layer::Flatten => (Flat(input.len()), vec![]),
        Layer::Reshape { c, h, w } => {
            if c * h * w != input.len() {
                return Err(format!("Reshape to ({c}, {h}, {w}) needs {} values, got {input} = {}", c * h * w, input.len()));
            }
            (Image(c, h, w), vec![])
        }
        Layer::Relu | Layer::LeakyRelu { .. } | Layer::Silu | Layer::Tanh | Layer::Sigmoid | Layer::Dropout { .. } => {
            (input, vec![])
        }
        Layer::BatchNorm { .. } => {
            let (c, _) = input.channels();
            (
                input,
                vec![
                    trainable("weight", vec![c], Init::Ones),
                    trainable("bias", vec![c], Init::Zeros),
                    buffer("running_mean", vec![c], Init::Zeros),
                    buffer("running_var", vec![c], Init::Ones),
                ],
            )
        }
        Layer::GroupNorm { groups, .. } => {
            let (c, _) = input.channels();
            if c % groups != 0 {
                return Err(format!("GroupNorm: {c} channels do not split into {groups} groups"));
            }
            (input, vec![trainable("weight", vec![c], Init::Ones), trainable("bias", vec![c], Init::Zeros)])
        }
        Layer::Plugin(ref name, ref config) => {
            let block = blocks.instantiate(name, config, input)?;
            (block.output(), block.params().to_vec())
        }
        Layer::SpectralNorm(ref inner) => {
            let (out, mut decls) = layer_shape(inner, input, blocks)?;
            let rows = match **inner {
                Layer::Dense { out } | Layer::Conv { out, .. } | Layer::ConvT { out, .. } => out,
                ref other => return Err(format!("SpectralNorm wraps a Dense, Conv or ConvT layer, not {}", other.kind())),
            };
            // u: a random direction (normalised where used), moved by one power iteration per step.
            decls.push(buffer("sn_u", vec![rows], Init::Uniform { a: 1.0 }));
            (out, decls)
        }
        Layer::Residual(_) => unreachable!("residual blocks are walked by `infer`"),
    })
}

/// One row of a model summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Parameter-name prefix, e.g. `encoder.3` or `encoder.5.1` inside a residual block.
    pub name: String,
    /// The layer's kind as written in specs (`Conv`, or `Plugin(se)` for plugin blocks).
    pub kind: String,
    pub output: FeatShape,
    pub params: Vec<ParamDecl>,
}

impl SummaryRow {
    pub fn param_count(&self) -> usize {
        self.params.iter().filter(|p| p.role == Role::Trainable).map(|p| p.shape.iter().product::<usize>()).sum()
    }
}

/// Walks a layer list. Errors carry the spec path of the offending layer (`model.decoder[3]`).
pub fn infer(
    layers: &[Layer],
    input: FeatShape,
    name: &str,
    spec_path: &str,
    blocks: &dyn BlockSource,
) -> Result<(FeatShape, Vec<SummaryRow>), BuildError> {
    let mut shape = input;
    let mut rows = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let (lname, lpath) = (format!("{name}.{i}"), format!("{spec_path}[{i}]"));
        if let Layer::Residual(inner) = layer {
            let (out, inner_rows) = infer(inner, shape, &lname, &format!("{lpath}[0]"), blocks)?;
            if out != shape {
                return Err(BuildError::new(
                    lpath,
                    format!("Residual block must keep its input shape {shape}, but its layers output {out}"),
                ));
            }
            rows.push(SummaryRow { name: lname, kind: "Residual".into(), output: out, params: vec![] });
            rows.extend(inner_rows);
        } else {
            let (out, params) = layer_shape(layer, shape, blocks).map_err(|m| BuildError::new(lpath, m))?;
            let kind = match layer {
                Layer::Plugin(block, _) => format!("Plugin({block})"),
                other => other.kind().into(),
            };
            rows.push(SummaryRow { name: lname, kind, output: out, params });
            shape = out;
        }
    }
    Ok((shape, rows))
}
