//! The spec's plain data. Nothing here knows about tensors; `vaelab_nn` builds models from it.

use super::patch::section;
use serde::{Deserialize, Serialize};

/// A whole experiment, resolved: every `extends` applied and every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub seed: u64,
    pub device: Device,
    pub data: Data,
    pub model: ModelSpec,
    pub losses: Vec<Loss>,
    pub train: Train,
    pub eval: Eval,
    /// Plugin libraries (metrics and model blocks), relative to the spec file that names them. An entry
    /// may be a file, a directory (every shared library in it) or a bare library name such as
    /// `../target/release/vaelab_block_se` (the platform's `lib…so` / `lib…dylib` / `….dll` is added).
    #[serde(default)]
    pub plugins: Vec<std::path::PathBuf>,
    /// Adversarial terms trained beside the losses: `None`, or `Gan(…)`.
    #[serde(default)]
    pub adversarial: Adversarial,
}

/// The prior that samples codes for a quantized latent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Prior {
    /// Each position's code drawn independently from the training code frequencies.
    #[default]
    Frequencies,
    /// A PixelCNN over the code grid (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
    /// §3.5 masked convolutions; as the VQ-VAE paper's prior, in small): the one-hot codes pass one
    /// `kernel`×`kernel` mask-A convolution (the centre and everything after it hidden), `layers`
    /// 3×3 mask-B convolutions (the centre visible) of `channels` channels with ReLU, and a 1×1
    /// convolution to one logit per code; it minimises the cross-entropy of each position's code given
    /// the codes before it in raster order. Sampling draws the positions one by one.
    PixelCnn {
        #[serde(default = "pixelcnn_channels")]
        channels: usize,
        #[serde(default = "pixelcnn_layers")]
        layers: usize,
        #[serde(default = "pixelcnn_kernel")]
        kernel: usize,
        #[serde(default = "pixelcnn_steps")]
        steps: usize,
        #[serde(default = "pixelcnn_lr")]
        lr: f32,
        #[serde(default = "pixelcnn_batch")]
        batch: usize,
    },
}

fn pixelcnn_channels() -> usize {
    64
}
fn pixelcnn_layers() -> usize {
    4
}
fn pixelcnn_kernel() -> usize {
    7
}
fn pixelcnn_steps() -> usize {
    2000
}
fn pixelcnn_lr() -> f32 {
    1e-3
}
fn pixelcnn_batch() -> usize {
    64
}

/// Adversarial training beside the losses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Adversarial {
    #[default]
    None,
    /// A separate discriminator on images (Goodfellow et al. 2014), with its own optimizer and
    /// parameter group (`discriminator.*`). With an encoder it makes a VAE-GAN (Larsen et al. 2016):
    /// the discriminator tells test-time-like reconstructions and decoded prior samples from data,
    /// and the generator side (encoder and decoder) adds `weight ×` the generator loss to its losses.
    Gan {
        /// Layers from the image to one logit per image (the last layer must output 1 feature).
        discriminator: Vec<Layer>,
        #[serde(default)]
        loss: GanLoss,
        #[serde(default = "unit_weight")]
        weight: f32,
        /// Discriminator updates per generator update (on the same batch and fakes).
        #[serde(default = "one")]
        d_steps: usize,
        /// The discriminator's optimizer [default: the training optimizer].
        #[serde(default)]
        optimizer: Option<OptimizerSpec>,
        /// γ of the R1 gradient penalty on real images (Mescheder et al. 2018, eq. 9):
        /// γ/2 · E‖∇ₓ D(x)‖² added to the discriminator's loss; 0 (the default) leaves it out.
        #[serde(default)]
        r1_gamma: f32,
        /// Whether the generator loss on reconstructions reaches the encoder. `true` (default) as in
        /// VQGAN (Esser et al. 2021), whose GAN term trains the whole autoencoder; `false` as in
        /// VAE-GAN (Larsen et al. 2016, Algorithm 1), whose encoder learns from the prior and
        /// likelihood terms only (the reconstruction the discriminator judges is decoded from sg(z)).
        #[serde(default = "yes")]
        gan_trains_encoder: bool,
        /// Reconstruction judged in the discriminator's features (Larsen et al. 2016, eq. 6–7): with
        /// `Some(n)`, the generator side adds ½·Σ (D_n(x̃) − D_n(x))², summed over the features that
        /// discriminator layer `n` (0-based) outputs and averaged over the batch, x̃ the reconstruction
        /// of x with its gradient reaching the encoder and the decoder, D_n(x) a constant. Larsen et al.
        /// use it in place of the pixel likelihood (then leave the likelihood out of `losses`); their
        /// decoder weighs it by γ against the GAN loss, which here is 1/`weight`. Never trains the
        /// discriminator. Left out of the resolved spec when off, so runs without it keep their hash.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature_layer: Option<usize>,
    },
    /// IntroVAE (Huang et al. 2018), as the official code trains it (hhb072/IntroVAE, `main.py`
    /// `train()`): the encoder is the critic. With KL(·) = KL(q(z|·) ‖ N(0, I)) per image,
    /// x_r = D(z) for z ~ q(z|x), x_p = D(z_p) for z_p ~ N(0, I) and L_rec = Σ_pixels (x_r − x)²
    /// (no ½), all averaged over the batch, each step first updates the encoder by
    /// L_E = weight_rec·L_rec + weight_kl·(KL(x) + ½·weight_neg·([m − KL(sg x_r)]⁺ + [m − KL(sg x_p)]⁺)),
    /// then the decoder by L_G = weight_rec·L_rec + ½·weight_kl·(KL(x_r) + KL(x_p)), the KLs now taken
    /// by the updated encoder (the official decoder gradient keeps weight_rec·∇L_rec because its
    /// `optimizerG.zero_grad()` is commented out). Defaults: the official `run_256.sh` settings. During
    /// the first `warmup` steps the spec's `losses` train the whole model as a plain VAE.
    IntroVae {
        #[serde(default = "intro_margin")]
        margin: f32,
        #[serde(default = "intro_weight_rec")]
        weight_rec: f32,
        #[serde(default = "unit_weight")]
        weight_kl: f32,
        #[serde(default = "intro_weight_neg")]
        weight_neg: f32,
        #[serde(default)]
        warmup: usize,
    },
    /// Soft-IntroVAE (Daniel & Tamar 2021), the exponential form of the authors' code. With
    /// s = 1/(C·H·W), L_rec = Σ_pixels (a − b)² and KL per image, the encoder minimises
    /// s(β_rec·L_rec + β_kl·KL(x)) + ¼[mean exp(−2s(β_rec·L_rec,rr + β_neg·KL(sg x_r))) +
    /// mean exp(−2s(β_rec·L_rec,rf + β_neg·KL(sg x_p)))] and the decoder
    /// s(β_rec·L_rec + ½β_kl(KL(x_r) + KL(x_p)) + ½γ_r·β_rec(L_rec,rr + L_rec,rf)), each with its own
    /// optimizer: the encoder first, then the decoder, scored by the updated encoder, as in the authors'
    /// `train_soft_intro_vae.py`, with fresh noise for every reparameterisation. Defaults: the authors'
    /// image settings (β_rec = β_kl = 1,
    /// β_neg = 256, γ_r = 1e-8). During the first `warmup` steps the spec's `losses` train a plain VAE.
    SoftIntroVae {
        #[serde(default = "unit_weight")]
        beta_rec: f32,
        #[serde(default = "unit_weight")]
        beta_kl: f32,
        #[serde(default = "soft_intro_beta_neg")]
        beta_neg: f32,
        #[serde(default = "soft_intro_gamma_r")]
        gamma_r: f32,
        /// Whether the encoder's L_rec(x_r, x_rr) keeps x_r on the tape, as the authors' code does
        /// (`calc_reconstruction_loss(rec, rec_rec)` with `rec` attached); `false` detaches it.
        #[serde(default = "yes")]
        attach_rec_target: bool,
        #[serde(default)]
        warmup: usize,
    },
    /// VPGA (Zhang, Huang & Bach 2020, "Perceptual Generative Autoencoders", as in the authors' code):
    /// the encoder learns to invert the decoder in latent space. Terms (means over elements):
    /// L_img = (x − D(μ(x)))², L_zN = (μ(D(z)) − z)² for z ~ N(0, I), L_zH = (μ(D(sg μ)) − sg μ)²,
    /// L_vrec = ([f̃(D(sg μ + σ⊙ε)) − f̃(D(sg μ))]_j / n_j)² with f̃ the frozen encoder mean and
    /// n_j = sg √(mean_b μ_bj²), L_kl = −½(1 + log σ² − μ² − σ²). The encoder minimises
    /// L_img + a_N·L_zN + a_H·L_zH + a_v·L_vrec + a_kl·L_kl, the decoder L_img + a_v·L_vrec.
    /// Defaults: the authors' CelebA settings (a_N = 3e-2, a_H = 1e-2, a_v = 1e-2, a_kl = 2e-3) divided by
    /// 4: the authors scale images to [−1, 1] (zj10/PGA `utils.py`, a tanh output), where L_img is 4×
    /// what it is for the same images in vaelab's [0, 1]; the latent-space terms do not change with the
    /// pixel range, so a quarter of each weight keeps the authors' balance. The spec's `losses` are not
    /// used.
    Vpga {
        #[serde(default = "vpga_a_n")]
        a_n: f32,
        #[serde(default = "vpga_a_h")]
        a_h: f32,
        #[serde(default = "vpga_a_v")]
        a_v: f32,
        #[serde(default = "vpga_a_kl")]
        a_kl: f32,
    },
}

fn soft_intro_beta_neg() -> f32 {
    256.0
}
fn soft_intro_gamma_r() -> f32 {
    1e-8
}
/// The authors' CelebA weight for [−1, 1] images, for vaelab's [0, 1] images (see `Adversarial::Vpga`).
const VPGA_RANGE_RESCALE: f32 = 0.25;
fn vpga_a_n() -> f32 {
    3e-2 * VPGA_RANGE_RESCALE
}
fn vpga_a_h() -> f32 {
    1e-2 * VPGA_RANGE_RESCALE
}
fn vpga_a_v() -> f32 {
    1e-2 * VPGA_RANGE_RESCALE
}
fn vpga_a_kl() -> f32 {
    2e-3 * VPGA_RANGE_RESCALE
}

fn intro_margin() -> f32 {
    120.0
}
fn intro_weight_neg() -> f32 {
    0.5
}
fn intro_weight_rec() -> f32 {
    0.05
}

/// The two-player objective of a GAN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GanLoss {
    /// D: −log σ(D(x)) − log(1 − σ(D(x̃))); G: −log σ(D(x̃)) (Goodfellow et al. 2014, §3).
    #[default]
    NonSaturating,
    /// D: max(0, 1 − D(x)) + max(0, 1 + D(x̃)); G: −D(x̃) (Lim & Ye 2017; Miyato et al. 2018).
    Hinge,
}

impl Adversarial {
    pub fn kind(&self) -> &'static str {
        match self {
            Adversarial::None => "None",
            Adversarial::Gan { .. } => "Gan",
            Adversarial::IntroVae { .. } => "IntroVae",
            Adversarial::SoftIntroVae { .. } => "SoftIntroVae",
            Adversarial::Vpga { .. } => "Vpga",
        }
    }
}

/// Where tensors live. `--device` on the command line overrides the spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal; needs vaelab built with `--features cuda`.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if lower == "cpu" {
            return Ok(Device::Cpu);
        }
        let ordinal = lower.strip_prefix("cuda").map(|r| r.trim_start_matches(':'));
        match ordinal {
            Some("") => Ok(Device::Cuda(0)),
            Some(n) => n.parse().map(Device::Cuda).map_err(|_| format!("bad CUDA ordinal in `{s}`")),
            None => Err(format!("unknown device `{s}`: expected `cpu`, `cuda` or `cuda:N`")),
        }
    }
}

/// Which images to train on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Dataset {
    /// The built-in procedural dSprites-like shapes (no download).
    #[default]
    Shapes,
    /// MNIST-style IDX files: `<train>-images-idx3-ubyte[.gz]` + `<train>-labels-idx1-ubyte[.gz]` and the
    /// same for `test`, in `dir` (relative paths are resolved against the spec file that writes them).
    /// `data.train_size` / `data.test_size` cap how many images of each file are used.
    Idx {
        dir: std::path::PathBuf,
        #[serde(default = "idx_train")]
        train: String,
        #[serde(default = "idx_test")]
        test: String,
    },
    /// Synthetic standing AP knee radiographs (`vaelab_datasets::knee`), with KL-like grade, joint-space
    /// width, osteophytes, sclerosis, rotation, laterality and exposure as ground-truth factors.
    KneePhantom {
        #[serde(default = "yes")]
        patella: bool,
    },
    /// A folder of PNG (8/16-bit), JPEG or TIFF files: either `root/{train,test}/<class>/*` (class
    /// folders become labels, as in the Knee OA grading data) or images directly in `root` (no labels;
    /// a seeded shuffle picks `test_size` test images). Relative roots are resolved against the spec file.
    Folder {
        root: std::path::PathBuf,
        #[serde(default)]
        channels: vaelab_datasets::Channels,
        /// `Exact` (sizes must equal `data.size`), `Resize` or `CenterCrop`.
        #[serde(default)]
        fit: vaelab_datasets::Fit,
        /// `Error` (stop, naming the file) or `Skip` (leave it out with a warning; counted in run.json).
        #[serde(default)]
        on_bad_file: vaelab_datasets::OnBadFile,
        /// Keep decoded images in memory when they all fit in this many MiB.
        #[serde(default = "cache_mib")]
        cache_mib: usize,
    },
    /// DICOM radiographs read with dicom-rs: one file or a folder of them. Stored values are rescaled
    /// (slope/intercept), windowed (the file's window, or `window: (center: …, width: …)`) and
    /// MONOCHROME1 is inverted. With `patches: (size: 256, stride: 128, min_foreground: 0.5)` each
    /// radiograph is cut into patches; otherwise each file is one image, brought to `size` by `fit`.
    Dicom {
        root: std::path::PathBuf,
        #[serde(default)]
        fit: vaelab_datasets::Fit,
        #[serde(default)]
        window: Option<vaelab_datasets::Window>,
        #[serde(default)]
        patches: Option<vaelab_datasets::Patches>,
        #[serde(default)]
        on_bad_file: vaelab_datasets::OnBadFile,
    },
}

impl Dataset {
    /// The folder or file the dataset reads (`Idx`'s `dir`, `Folder`'s and `Dicom`'s `root`); `None`
    /// for the built-in generators. `vaelab train --data-root` replaces it.
    pub fn root_mut(&mut self) -> Option<&mut std::path::PathBuf> {
        match self {
            Dataset::Idx { dir, .. } => Some(dir),
            Dataset::Folder { root, .. } | Dataset::Dicom { root, .. } => Some(root),
            Dataset::Shapes | Dataset::KneePhantom { .. } => None,
        }
    }
}

fn yes() -> bool {
    true
}

fn cache_mib() -> usize {
    2048
}

fn idx_train() -> String {
    "train".into()
}
fn idx_test() -> String {
    "t10k".into()
}

section! {
    /// The data section.
    pub struct Data / DataPatch as "Data" {
        dataset: Dataset = Dataset::Shapes,
        /// Image side in pixels.
        size: usize = 64,
        /// Images in the train split.
        train_size: usize = 100_000,
        /// Images in the validation split (`vaelab eval --split val`): generated for procedural
        /// data, held out of the training images for flat folders, DICOM and IDX, read from
        /// `root/val/` for class folders. 0: no validation split.
        val_size: usize = 0,
        /// Held-out images in the test split.
        test_size: usize = 1_000,
        /// Images per training step.
        batch: usize = 64,
        /// Training-time augmentation: `(flip_horizontal: true, rotate_degrees: 5, brightness: 0.05,
        /// contrast: 0.1)`; evaluation never augments.
        augment: vaelab_datasets::Augment = vaelab_datasets::Augment::default(),
    }
}

section! {
    /// The model section: encoder layers → latent → decoder layers → likelihood. A model with
    /// `noise_dim` and no encoder is a generator alone (a plain GAN): its decoder maps N(0, I) noise
    /// of that size to images. `prior` is how a quantized latent's codes are sampled: the training
    /// frequencies, or a PixelCNN trained after the model by `vaelab train-prior RUN_DIR`.
    pub struct ModelSpec / ModelPatch as "Model" {
        encoder: Vec<Layer> = Vec::new(),
        latent: Latent = Latent::Gaussian { dim: 10 },
        decoder: Vec<Layer> = Vec::new(),
        likelihood: Likelihood = Likelihood::Bernoulli,
        noise_dim: Option<usize> = None,
        prior: Prior = Prior::Frequencies,
    }
}

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn leaky_slope() -> f32 {
    0.01
}
fn norm_eps() -> f32 {
    1e-5
}
fn bn_momentum() -> f32 {
    0.1
}

/// One layer of an encoder or decoder. Sizes not written are inferred from the layer's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Layer {
    /// Fully connected: `out` features.
    Dense {
        out: usize,
    },
    /// 2-D convolution: `out` channels, kernel `k`, stride `s`, zero padding `p`.
    Conv {
        out: usize,
        k: usize,
        #[serde(default = "one")]
        s: usize,
        #[serde(default)]
        p: usize,
    },
    /// Transposed 2-D convolution (the adjoint of `Conv` with the same k, s, p).
    ConvT {
        out: usize,
        k: usize,
        #[serde(default = "one")]
        s: usize,
        #[serde(default)]
        p: usize,
    },
    /// Nearest-neighbour upsampling by an integer factor.
    Upsample {
        #[serde(default = "two")]
        factor: usize,
    },
    /// (C, H, W) → (C, H/k, W/k): the mean of each k×k block (non-overlapping; H and W must be
    /// multiples of k). IntroVAE's official encoder downsamples this way (`nn.AvgPool2d(2)` between
    /// its residual blocks; hhb072/IntroVAE `networks.py`).
    AvgPool {
        k: usize,
    },
    /// (C, H, W) → (C·H·W).
    Flatten,
    /// (N) → (C, H, W) with N = C·H·W.
    Reshape {
        c: usize,
        h: usize,
        w: usize,
    },
    Relu,
    LeakyRelu {
        #[serde(default = "leaky_slope")]
        slope: f32,
    },
    Silu,
    Tanh,
    Sigmoid,
    /// Batch normalisation over the batch and spatial positions, per channel or feature.
    BatchNorm {
        #[serde(default = "bn_momentum")]
        momentum: f32,
        #[serde(default = "norm_eps")]
        eps: f32,
    },
    /// Group normalisation (Wu & He 2018) over `groups` channel groups per image.
    GroupNorm {
        groups: usize,
        #[serde(default = "norm_eps")]
        eps: f32,
    },
    /// Zeroes each activation with probability `p` during training (inverted dropout).
    Dropout {
        p: f32,
    },
    /// `x + f(x)` where `f` is the layer list; `f` must keep the shape.
    Residual(Vec<Layer>),
    /// Spectral normalisation (Miyato et al. 2018) of a `Dense`, `Conv` or `ConvT` layer's weight:
    /// W / σ(W), σ the largest singular value of W as an (out × in·k·k) matrix, estimated by one power
    /// iteration per training step from a vector u kept as a buffer (in the checkpoint). Gradients flow
    /// through W and σ = uᵀWv with u and v held constant, as in the paper and PyTorch's `spectral_norm`.
    /// `SpectralNorm(Conv(out: 64, k: 4, s: 2, p: 1))`.
    SpectralNorm(Box<Layer>),
    /// A block from a plugin library, by name, with its configuration: `Plugin("se", (reduction: 4))`.
    Plugin(String, #[serde(default = "no_config")] ron::Value),
}

fn no_config() -> ron::Value {
    ron::Value::Unit
}

/// A plugin block's configuration as the key/value text pairs that cross the plugin ABI:
/// `(channels: 32, mode: "fast")` → `[("channels", "32"), ("mode", "\"fast\"")]`.
pub fn config_pairs(config: &ron::Value) -> Result<Vec<(String, String)>, String> {
    match config {
        ron::Value::Unit => Ok(vec![]),
        ron::Value::Map(map) => map
            .iter()
            .map(|(k, v)| match k {
                ron::Value::String(key) => {
                    ron::to_string(v).map(|text| (key.clone(), text)).map_err(|e| format!("config `{key}`: {e}"))
                }
                other => Err(format!("config keys must be names, got {other:?}")),
            })
            .collect(),
        other => Err(format!("a plugin block's config must look like `(name: value, ...)`, got {other:?}")),
    }
}

impl Layer {
    /// The variant's name as written in specs.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Dense { .. } => "Dense",
            Layer::Conv { .. } => "Conv",
            Layer::ConvT { .. } => "ConvT",
            Layer::Upsample { .. } => "Upsample",
            Layer::AvgPool { .. } => "AvgPool",
            Layer::Flatten => "Flatten",
            Layer::Reshape { .. } => "Reshape",
            Layer::Relu => "Relu",
            Layer::LeakyRelu { .. } => "LeakyRelu",
            Layer::Silu => "Silu",
            Layer::Tanh => "Tanh",
            Layer::Sigmoid => "Sigmoid",
            Layer::BatchNorm { .. } => "BatchNorm",
            Layer::GroupNorm { .. } => "GroupNorm",
            Layer::Dropout { .. } => "Dropout",
            Layer::Residual(_) => "Residual",
            Layer::SpectralNorm(_) => "SpectralNorm",
            Layer::Plugin(..) => "Plugin",
        }
    }
}

/// The latent variable between encoder and decoder. More kinds (spatial, quantized, none) plug in here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Latent {
    /// No latent variable: the encoder's output is the code (a plain autoencoder; no KL term).
    None,
    /// A diagonal Gaussian posterior with a N(0, I) prior (Kingma & Welling 2014).
    /// A Dense head maps the encoder's features to mean and log-variance.
    Gaussian { dim: usize },
    /// A C×h×w Gaussian code (Wang, Yuan & Ji 2017; the KL-regularised autoencoder of Rombach et al.
    /// 2021): 1×1 convolutions map the encoder's (C', h, w) output to a per-element mean and
    /// log-variance with `channels` channels; the KL is summed over elements; the prior N(0, I) has
    /// the same C×h×w shape.
    Spatial { channels: usize },
    /// Vector quantization (van den Oord et al. 2017): a 1×1 convolution maps the encoder's (C', h, w)
    /// output to `dim` channels; each of the h·w vectors is replaced by its nearest of `codes` codebook
    /// vectors, with the straight-through gradient z_q = z_e + sg(z_q − z_e). The loss term `vq` is
    /// ‖sg(z_e) − e‖² + β‖z_e − sg(e)‖² (summed over the code, averaged over the batch). Prior samples
    /// draw each position's code from the training code frequencies.
    Quantized {
        codes: usize,
        dim: usize,
        #[serde(default = "commitment_beta")]
        beta: f32,
        /// Update the codebook by exponential moving averages of the assigned encoder outputs (decay
        /// 0.99, Laplace smoothing ε = 1e-5; van den Oord et al. 2017, appendix A.1) instead of by
        /// gradient; the `vq` term is then the commitment term alone.
        #[serde(default)]
        ema: bool,
    },
}

fn commitment_beta() -> f32 {
    0.25
}

impl Latent {
    /// The variant's name as written in specs.
    pub fn kind(&self) -> &'static str {
        match self {
            Latent::None => "None",
            Latent::Gaussian { .. } => "Gaussian",
            Latent::Spatial { .. } => "Spatial",
            Latent::Quantized { .. } => "Quantized",
        }
    }

    /// Whether the latent has a posterior and prior, so that a KL term means something.
    pub fn is_probabilistic(&self) -> bool {
        matches!(self, Latent::Gaussian { .. } | Latent::Spatial { .. })
    }

    /// The name of the latent's own loss term (`kl` or `vq`), if it has one.
    pub fn regulariser(&self) -> Option<&'static str> {
        match self {
            Latent::None => None,
            Latent::Gaussian { .. } | Latent::Spatial { .. } => Some("kl"),
            Latent::Quantized { .. } => Some("vq"),
        }
    }
}

/// p(x | z): how the decoder's output scores an image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Likelihood {
    /// Decoder outputs logits; reconstruction loss is binary cross-entropy summed over pixels.
    Bernoulli,
    /// Decoder outputs means; negative log-likelihood of N(x; mean, σ²) summed over pixels.
    Gaussian { sigma: Sigma },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sigma {
    Fixed(f32),
    /// One learned log σ shared by all pixels.
    Learned,
}

/// A weighted loss term. The total loss is the sum of the terms; each is logged under its name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Loss {
    /// −log p(x | z), summed over pixels, averaged over the batch.
    Reconstruction {
        #[serde(default = "unit_weight")]
        weight: f32,
    },
    /// KL(q(z|x) ‖ p(z)) averaged over the batch, times `weight` (β), ramped linearly from 0
    /// over the first `warmup` steps (Bowman et al. 2016).
    Kl {
        #[serde(default = "unit_weight")]
        weight: f32,
        #[serde(default)]
        warmup: usize,
    },
    /// The quantized latent's codebook and commitment loss (see `Latent::Quantized`), times `weight`.
    Vq {
        #[serde(default = "unit_weight")]
        weight: f32,
    },
}

fn unit_weight() -> f32 {
    1.0
}

impl Loss {
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Reconstruction { .. } => "rec",
            Loss::Kl { .. } => "kl",
            Loss::Vq { .. } => "vq",
        }
    }
}

section! {
    /// The training loop.
    pub struct Train / TrainPatch as "Train" {
        steps: usize = 3_000,
        optimizer: OptimizerSpec = OptimizerSpec::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule: Schedule = Schedule::Constant,
        grad_clip: GradClip = GradClip::Off,
        /// Write a log line every this many steps.
        log_every: usize = 10,
        /// Write a checkpoint every this many steps (and always at the end).
        checkpoint_every: usize = 1_000,
    }
}

fn beta1() -> f32 {
    0.9
}
fn beta2() -> f32 {
    0.999
}
fn adam_eps() -> f32 {
    1e-8
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
// Written without its name (`Adam(…)`); the rename keeps serde's type name what it always was.
#[serde(deny_unknown_fields, rename = "Optimizer")]
pub enum OptimizerSpec {
    /// Kingma & Ba 2015; `weight_decay` is decoupled (AdamW, Loshchilov & Hutter 2019).
    Adam {
        lr: f32,
        #[serde(default = "beta1")]
        beta1: f32,
        #[serde(default = "beta2")]
        beta2: f32,
        #[serde(default = "adam_eps")]
        eps: f32,
        #[serde(default)]
        weight_decay: f32,
    },
    Sgd {
        lr: f32,
        #[serde(default)]
        momentum: f32,
    },
}

impl OptimizerSpec {
    pub fn lr(&self) -> f32 {
        match self {
            OptimizerSpec::Adam { lr, .. } | OptimizerSpec::Sgd { lr, .. } => *lr,
        }
    }
}

/// Learning-rate schedule, as a factor on the optimizer's `lr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Schedule {
    Constant,
    /// Linear ramp from 0 over `steps`, then constant.
    Warmup {
        steps: usize,
    },
    /// Cosine decay to `min_factor`·lr over the run (Loshchilov & Hutter 2017, without restarts).
    Cosine {
        #[serde(default)]
        min_factor: f32,
    },
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: usize,
        gamma: f32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GradClip {
    Off,
    /// Rescale all gradients together so their global L2 norm is at most this.
    Norm(f32),
}

section! {
    /// What `vaelab eval` computes and draws.
    pub struct Eval / EvalPatch as "Eval" {
        /// Metric names; `vaelab eval` lists the available ones when a name is unknown.
        metrics: Vec<String> = vec!["mse".into(), "psnr".into(), "ssim".into(), "ms_ssim".into(), "elbo".into(), "domain_fd".into()],
        /// Held-out images the metrics average over.
        test_images: usize = 1_000,
        /// Images (and grid columns) in the reconstruction and sample grids.
        grid_images: usize = 8,
        /// Columns of the latent traversal, spanning −3σ … +3σ.
        traversal_steps: usize = 9,
        /// A run directory whose encoder provides the features of `domain_fd` (relative to the spec
        /// file); without one, the evaluated run's own encoder does.
        domain_encoder: Option<std::path::PathBuf> = None,
        /// pytorch-fid's Inception weights as safetensors, for `fid` (relative to the spec file);
        /// without it, `--fid-weights` or `VAELAB_FID_WEIGHTS` must name the file.
        fid_weights: Option<std::path::PathBuf> = None,
    }
}

/// One spec file as written: everything optional, so `extends` can fill the gaps.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename = "Experiment")]
pub struct ExperimentPatch {
    #[serde(default)]
    pub name: Option<String>,
    /// Another spec file, relative to this one, whose fields this file overrides.
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub device: Option<Device>,
    #[serde(default)]
    pub data: Option<DataPatch>,
    #[serde(default)]
    pub model: Option<ModelPatch>,
    #[serde(default)]
    pub losses: Option<Vec<Loss>>,
    #[serde(default)]
    pub train: Option<TrainPatch>,
    #[serde(default)]
    pub eval: Option<EvalPatch>,
    #[serde(default)]
    pub plugins: Option<Vec<std::path::PathBuf>>,
    #[serde(default)]
    pub adversarial: Option<Adversarial>,
}

fn merge_opt<T>(base: Option<T>, over: Option<T>, merge: impl FnOnce(T, T) -> T) -> Option<T> {
    match (base, over) {
        (Some(b), Some(o)) => Some(merge(b, o)),
        (b, o) => o.or(b),
    }
}

impl ExperimentPatch {
    /// `over` (the extending file) wins field by field; lists are replaced, not concatenated.
    pub fn merge(self, over: ExperimentPatch) -> ExperimentPatch {
        ExperimentPatch {
            name: over.name.or(self.name),
            extends: over.extends,
            seed: over.seed.or(self.seed),
            device: over.device.or(self.device),
            data: merge_opt(self.data, over.data, DataPatch::merge),
            model: merge_opt(self.model, over.model, ModelPatch::merge),
            losses: over.losses.or(self.losses),
            train: merge_opt(self.train, over.train, TrainPatch::merge),
            eval: merge_opt(self.eval, over.eval, EvalPatch::merge),
            plugins: over.plugins.or(self.plugins),
            adversarial: over.adversarial.or(self.adversarial),
        }
    }
}
