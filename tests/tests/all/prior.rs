//! The PixelCNN prior over VQ code grids: causal masks, its loss against a host computation, and
//! `train-prior` end to end (fitted better than the code frequencies, deterministic, sampled by eval).

use crate::training::{options, scratch, tiny};
use dfdx::prelude::*;
use vaelab::nn::{Ctx, ParamStore};
use vaelab::prior::PixelCnn;
use vaelab::prior_fit::{fit_prior, PriorOptions};
use vaelab::spec::{Latent, Layer::*, Loss, Prior};

fn net(store: &mut ParamStore<Cpu>) -> PixelCnn {
    let spec = Prior::PixelCnn { channels: 6, layers: 2, kernel: 5, steps: 1, lr: 1e-3, batch: 1 };
    PixelCnn::build(&spec, 4, 3, 4, store).unwrap()
}

/// The logits of position p depend only on the codes before p in raster order: changing the code at
/// q leaves every position ≤ q unchanged, and changes some position after it.
#[test]
fn pixelcnn_is_causal_in_raster_order() {
    let mut store = ParamStore::new(Cpu::default(), 3);
    let net = net(&mut store);
    let positions = 12;
    let base: Vec<usize> = (0..positions).map(|p| (p * 3 + 1) % 4).collect();
    let logits = |grid: &Vec<usize>| {
        let ctx = Ctx::new(&store, false, 0, 0);
        net.logits(&ctx, net.one_hot(&store.dev, std::slice::from_ref(grid))).split_tape().0.as_vec()
    };
    let at = |l: &[f32], p: usize| -> Vec<f32> { (0..4).map(|k| l[k * positions + p]).collect() };
    let reference = logits(&base);
    for q in 0..positions - 1 {
        let mut changed = base.clone();
        changed[q] = (changed[q] + 1) % 4;
        let l = logits(&changed);
        for p in 0..=q {
            assert_eq!(at(&l, p), at(&reference, p), "position {p} saw the code at {q}");
        }
        assert!((q + 1..positions).any(|p| at(&l, p) != at(&reference, p)), "nothing after {q} saw it");
    }
}

/// The loss is the mean cross-entropy per position of the softmax over codes, as computed on the host
/// from the logits.
#[test]
fn pixelcnn_loss_is_the_mean_cross_entropy() {
    let mut store = ParamStore::new(Cpu::default(), 5);
    let net = net(&mut store);
    let grids: Vec<Vec<usize>> = (0..3).map(|b| (0..12).map(|p| (p * 7 + b * 5) % 4).collect()).collect();
    let ctx = Ctx::new(&store, false, 0, 0);
    let got = net.loss(&ctx, &grids).as_vec()[0] as f64;
    let l = net.logits(&ctx, net.one_hot(&store.dev, &grids)).split_tape().0.as_vec();
    let mut want = 0.0f64;
    for (b, grid) in grids.iter().enumerate() {
        for (p, &k) in grid.iter().enumerate() {
            let z: Vec<f64> = (0..4).map(|c| l[(c * 12 + p) * 3 + b] as f64).collect();
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            want += lse - z[k];
        }
    }
    want /= 36.0;
    assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
}

/// A tiny VQ-VAE run: `train-prior` fits the PixelCNN to its codes, the held-out NLL beats the
/// independent code-frequency prior, fitting twice gives the same file, a second fit without
/// `--force` is refused, and evaluation samples from the fitted prior.
#[test]
fn train_prior_fits_better_than_frequencies_and_eval_samples_from_it() {
    let mut spec = tiny();
    spec.model.encoder = vec![Conv { out: 8, k: 4, s: 2, p: 1 }, Relu, Conv { out: 16, k: 4, s: 2, p: 1 }, Relu];
    spec.model.latent = Latent::Quantized { codes: 8, dim: 4, beta: 0.25, ema: true };
    spec.model.decoder = vec![ConvT { out: 8, k: 4, s: 2, p: 1 }, Relu, ConvT { out: 1, k: 4, s: 2, p: 1 }];
    spec.model.prior = Prior::PixelCnn { channels: 16, layers: 1, kernel: 3, steps: 150, lr: 3e-3, batch: 32 };
    spec.losses = vec![Loss::Reconstruction { weight: 1.0 }, Loss::Vq { weight: 1.0 }];
    spec.train.steps = 150;
    spec.data.train_size = 512;
    spec.data.test_size = 128;
    spec.eval.test_images = 128;
    spec.eval.metrics = vec!["mse".into()];
    let dir = scratch("prior-run");
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    let before = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
    assert!(before.prior.contains("frequencies"), "{}", before.prior);

    let opts = PriorOptions { progress: false, force: false };
    let report = fit_prior(&dir, &opts).unwrap();
    assert_eq!((report.train_grids, report.test_grids, report.model_step), (512, 128, 150));
    assert!(
        report.nll_pixelcnn < report.nll_frequencies,
        "PixelCNN {} vs frequencies {}",
        report.nll_pixelcnn,
        report.nll_frequencies
    );
    let first = std::fs::read(dir.join("prior.safetensors")).unwrap();
    let refused = fit_prior(&dir, &opts).unwrap_err().to_string();
    assert!(refused.contains("--force"), "{refused}");
    fit_prior(&dir, &PriorOptions { progress: false, force: true }).unwrap();
    assert!(first == std::fs::read(dir.join("prior.safetensors")).unwrap(), "fitting twice gave different files");

    let after = vaelab::eval::evaluate(&dir, &Default::default()).unwrap();
    assert!(after.prior.contains("PixelCNN"), "{}", after.prior);
    assert_eq!(after.metrics["mse"].value, before.metrics["mse"].value, "the prior does not touch reconstructions");
}
