//! `vaelab eval` of a run, in stages: load the model at a checkpoint, check the metrics it asks
//! for, one pass over the test images (reconstructions, ELBO terms, codes), the image metrics, the
//! model metrics (ELBO, factors, FID, domain FD), the traversal order, then the files.

use super::{
    domain_fd, factors, generator_metrics_apply, make_room, mean_training_image, merge_earlier, other_data, prior_description,
    write_factor_grids, write_grids, EvalError, EvalOptions, MetricRegistry, MODEL_METRICS, TRAVERSAL_ROWS,
};
use dfdx::prelude::*;
use metric::MetricError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vaelab_datasets::{Dataset, ImageBatch, Split};
use vaelab_metrics::{fid, metric};
use vaelab_models::model::Model;
use vaelab_nn::batch::{normal_noise, to_tensor};
use vaelab_nn::{from_batch_last, Backend, Ctx, FeatShape, ParamStore};
use vaelab_plugin_host::PluginSet;
use vaelab_runs::checkpoint;
use vaelab_runs::data::{build_dataset, data_shape};
use vaelab_runs::{evaluations, paths, read_run_spec, EvalRecord, MetricEntry, OpenOptions, TrainedModel};
use vaelab_spec::Experiment;

type Metrics = BTreeMap<String, MetricEntry>;
type Failed = BTreeMap<String, String>;

pub fn evaluate(run_dir: &Path, opts: &EvalOptions) -> Result<EvalRecord, EvalError> {
    let mut spec = read_run_spec(run_dir)?;
    if let Some(d) = opts.device {
        spec.device = d;
    }
    if let Some(m) = &opts.metrics {
        spec.eval.metrics = m.clone();
    }
    let plugin_notes = vaelab_runs::recorded_plugins::reconcile(run_dir, &mut spec.plugins, &opts.plugins)?;
    if opts.domain_encoder.is_some() {
        spec.eval.domain_encoder = opts.domain_encoder.clone();
    }
    if opts.fid_weights.is_some() {
        spec.eval.fid_weights = opts.fid_weights.clone();
    }
    let data = match &opts.data {
        Some(path) => {
            let (other, name) = other_data(&spec, path)?;
            spec = other;
            Some(name)
        }
        None => None,
    };
    let target = Target { checkpoint: opts.checkpoint.as_deref(), split: opts.split, data, out: opts.out.clone(), plugin_notes };
    // On a pool thread, as training (see `vaelab_nn::pool`).
    vaelab_nn::pool::on_pool_thread(|| {
        vaelab_nn::on_device!(spec.device, spec.seed, |dev| evaluate_on(dev, &spec, run_dir, &target))
    })
}

/// Which evaluation this is, and where it goes.
struct Target<'a> {
    checkpoint: Option<&'a Path>,
    split: Split,
    data: Option<String>,
    out: Option<String>,
    /// What became of the run's plugin libraries (missing and replaced, or changed).
    plugin_notes: Vec<String>,
}

fn evaluate_on<D: Backend>(dev: D, spec: &Experiment, run_dir: &Path, target: &Target) -> Result<EvalRecord, EvalError> {
    let run = Evaluated::load(dev, spec, run_dir, target)?;
    let (registry, fid_net) = metrics_asked_for(spec, &run)?;
    let pass = TestPass::run(&run, spec, target.split)?;
    let (mut metrics, mut failed) = image_metrics(spec, &registry, &pass);
    let probabilistic = spec.model.latent.is_probabilistic();
    if spec.eval.metrics.iter().any(|m| m == "elbo") {
        elbo_metrics(&pass, probabilistic, &mut metrics);
    }
    let factor_metrics: Vec<&str> = spec.eval.metrics.iter().map(String::as_str).filter(|m| factors::NAMES.contains(m)).collect();
    if !factor_metrics.is_empty() {
        let names = run.dataset.factor_names();
        factors::evaluate(
            &factor_metrics,
            spec,
            &run.model,
            &run.store,
            &pass.codes,
            &pass.real,
            &names,
            &mut metrics,
            &mut failed,
        );
    }
    // The mean training image, once per test image: the MSE baseline and a domain-FD baseline.
    let mean_image: Vec<f32> = mean_training_image(run.dataset.as_ref()).iter().map(|v| *v as f32).collect();
    let mean_images = pass.real.with_pixels(mean_image.repeat(pass.n));
    let domain_fd_baselines = sample_metrics(&run, spec, &pass, fid_net.as_ref(), &mean_images, &mut metrics, &mut failed)?;
    let mean_image_mse = metric::Metric::compute(&metric::Mse, &pass.real, &mean_images).expect("same geometry");
    let (kl_per_dim, order, first_code) = traversal(&run.model, &pass, probabilistic);
    let mut record = EvalRecord {
        run: spec.name.clone(),
        checkpoint_step: run.step,
        split: target.split,
        test_images: pass.n,
        label_counts: pass.label_counts.clone(),
        bit_depth: pass.real.bit_depth,
        metrics,
        mean_image_mse,
        domain_fd_baselines,
        kl_per_dim,
        traversal_order: order,
        factor_grids: vec![],
        failed,
        prior: prior_description(&run.model, run.learned_prior).into(),
        data: target.data.clone(),
        folder: run.out_dir.clone(),
        notes: target.plugin_notes.clone(),
    };
    write_outputs(&run, spec, run_dir, target, &pass, &first_code, &mut record)?;
    Ok(record)
}

/// The run's model at the evaluated checkpoint, its data, and where the evaluation goes.
struct Evaluated<D: Backend> {
    dev: D,
    dataset: Box<dyn Dataset>,
    shape: FeatShape,
    plugins: PluginSet,
    model: Model,
    store: ParamStore<D>,
    step: usize,
    /// Whether a fitted PixelCNN prior was laid over the checkpoint.
    learned_prior: bool,
    out_dir: PathBuf,
}

impl<D: Backend> Evaluated<D> {
    fn load(dev: D, spec: &Experiment, run_dir: &Path, target: &Target) -> Result<Self, EvalError> {
        let dataset = build_dataset(spec)?;
        let shape = data_shape(dataset.as_ref());
        let opts = OpenOptions { checkpoint: target.checkpoint, ..OpenOptions::default() };
        let trained = TrainedModel::open(dev.clone(), run_dir, spec, shape, opts)?;
        let TrainedModel { model, store, plugins, checkpoint: ckpt, step, learned_prior } = trained;
        let is_latest = match checkpoint::latest(&paths::checkpoints_dir(run_dir)) {
            Ok(l) => target.checkpoint.is_none() || same_file(&l, &ckpt),
            Err(_) => false,
        };
        let out_dir = match &target.out {
            Some(name) => run_dir.join(name),
            None if is_latest && target.split == Split::Test && target.data.is_none() => paths::eval_dir(run_dir),
            None => paths::other_eval_dir(run_dir, step, target.split, target.data.as_deref()),
        };
        Ok(Evaluated { dev, dataset, shape, plugins, model, store, step, learned_prior, out_dir })
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The metric registry (built-ins and the run's plugins) after checking that every metric the spec
/// names exists, and the FID network if `fid` is asked for: loaded before the long part, so a
/// missing weight file fails at once.
fn metrics_asked_for<D: Backend>(
    spec: &Experiment,
    run: &Evaluated<D>,
) -> Result<(MetricRegistry, Option<vaelab_metrics::inception::Inception>), EvalError> {
    let mut registry = MetricRegistry::builtin();
    run.plugins.register_metrics(&mut registry, spec.data.batch).map_err(EvalError::Plugin)?;
    if run.model.generator_only {
        generator_metrics_apply(spec)?;
    }
    let fid_net = if spec.eval.metrics.iter().any(|m| m == "fid") {
        let path =
            fid::weights_path(spec.eval.fid_weights.as_deref()).ok_or_else(|| EvalError::Fid(fid::missing_weights_help()))?;
        Some(fid::load(&path).map_err(EvalError::Fid)?)
    } else {
        None
    };
    for name in spec.eval.metrics.iter().filter(|m| !MODEL_METRICS.contains(&m.as_str())) {
        if registry.get(name).is_none() {
            let mut available = registry.names();
            available.extend(MODEL_METRICS);
            return Err(MetricError::Unknown { name: name.clone(), available: available.join(", ") }.into());
        }
    }
    Ok((registry, fid_net))
}

/// One pass over the evaluated test images: their reconstructions (decoded from the posterior
/// mean), the ELBO's terms from one sampled code, the KL per dimension and each image's code.
struct TestPass {
    n: usize,
    real: ImageBatch,
    /// The reconstructions (the test images themselves for a generator alone).
    fake: ImageBatch,
    rec_sum: f64,
    kl_sum: f64,
    kl_dims: Vec<f64>,
    /// The first test image's code: the traversal starts there.
    first_code: Vec<f32>,
    /// Each test image's posterior mean.
    codes: Vec<Vec<f32>>,
    label_counts: BTreeMap<u32, usize>,
}

impl TestPass {
    fn run<D: Backend>(run: &Evaluated<D>, spec: &Experiment, split: Split) -> Result<TestPass, EvalError> {
        let (dataset, model, dev) = (run.dataset.as_ref(), &run.model, &run.dev);
        let n = spec.eval.test_images.min(dataset.len(split));
        if n == 0 {
            return Err(EvalError::Unfit(format!(
                "the {} split is empty{}",
                split.name(),
                if split == Split::Val { "; set `data.val_size` in the spec to hold out validation images" } else { "" }
            )));
        }
        let code = model.latent.code_shape().len();
        let (mut real_px, mut fake_px) = (Vec::new(), Vec::new());
        let (mut rec_sum, mut kl_sum, mut kl_dims) = (0.0f64, 0.0f64, vec![0.0f64; code]);
        let (mut first_code, mut codes, mut label_counts): (Vec<f32>, Vec<Vec<f32>>, _) = (vec![], vec![], BTreeMap::new());
        let mut factors: Vec<Vec<f32>> = Vec::new();
        // Not the first n in storage order (class folders list the lowest grade first): a seeded
        // shuffle, stratified by label where the dataset has labels.
        let labels = dataset.labels(split);
        let mut indices = vaelab_datasets::stratified_order(&labels, spec.seed, "eval-subset");
        indices.truncate(n);
        for l in indices.iter().filter_map(|&i| labels[i]) {
            *label_counts.entry(l).or_insert(0) += 1;
        }
        let bar = crate::progress::progress_bar(true, n, "test images");
        for (bi, chunk) in indices.chunks(spec.data.batch).enumerate() {
            let batch = dataset.batch(split, chunk);
            factors.extend(batch.factors.iter().cloned());
            real_px.extend_from_slice(&batch.pixels);
            bar.inc(chunk.len() as u64);
            if model.generator_only {
                // Nothing to encode: the test images serve only the distribution metrics.
                continue;
            }
            let x = to_tensor(dev, &batch);
            let ctx = Ctx::inference(&run.store, spec.seed, bi as u64);
            let noise = normal_noise(dev, spec.seed, "eval-noise", bi as u64, code, chunk.len());
            // One encoder pass serves both: the sampled code scores the ELBO, the mean is reconstructed.
            let enc = model.encode(&ctx, x.clone(), noise);
            rec_sum += model.nll(&ctx, model.decode(&ctx, enc.z), x).as_vec()[0] as f64 * chunk.len() as f64;
            kl_sum += enc.reg.as_vec()[0] as f64 * chunk.len() as f64;
            let (mu, lv) = (enc.mu.with_empty_tape().as_vec(), enc.logvar.as_vec());
            for d in 0..code {
                for j in 0..chunk.len() {
                    let (m, l) = (mu[d * chunk.len() + j] as f64, lv[d * chunk.len() + j] as f64);
                    kl_dims[d] += -0.5 * (1.0 + l - m * m - l.exp());
                }
            }
            if bi == 0 {
                first_code = (0..code).map(|d| mu[d * chunk.len()]).collect();
            }
            codes.extend((0..chunk.len()).map(|j| (0..code).map(|d| mu[d * chunk.len() + j]).collect::<Vec<f32>>()));
            let recon = model.to_image(model.decode(&ctx, enc.mu));
            if let Some(failure) = ctx.failures.take() {
                return Err(EvalError::Plugin(failure));
            }
            fake_px.extend(from_batch_last(&recon.as_vec(), chunk.len()));
        }
        bar.finish_and_clear();
        let (c, h, w) = dataset.image_shape();
        let real = ImageBatch { n, c, h, w, pixels: real_px, factors, bit_depth: dataset.bit_depth() };
        // A generator alone reconstructs nothing; its grids show samples and traversals only.
        let fake = if model.generator_only { real.clone() } else { real.with_pixels(fake_px) };
        Ok(TestPass { n, real, fake, rec_sum, kl_sum, kl_dims, first_code, codes, label_counts })
    }
}

/// The image metrics of the spec (built-in and plugins'), each on the test images against their
/// reconstructions; one that fails is recorded and costs the others nothing.
fn image_metrics(spec: &Experiment, registry: &MetricRegistry, pass: &TestPass) -> (Metrics, Failed) {
    let (mut metrics, mut failed) = (Metrics::new(), Failed::new());
    for name in spec.eval.metrics.iter().filter(|m| !MODEL_METRICS.contains(&m.as_str())) {
        let m = registry.get(name).expect("checked by metrics_asked_for");
        match m.evaluate(&pass.real, &pass.fake) {
            Ok(scored) => {
                for s in scored {
                    let entry = MetricEntry {
                        value: s.value,
                        higher_is_better: m.higher_is_better(),
                        definition: m.definition().into(),
                        note: s.note,
                    };
                    metrics.insert(s.key, entry);
                }
            }
            Err(e) => {
                failed.insert(name.clone(), e.to_string());
            }
        }
    }
    (metrics, failed)
}

/// The ELBO and its terms from the test pass (an autoencoder has no posterior or prior: only its
/// reconstruction term means something).
fn elbo_metrics(pass: &TestPass, probabilistic: bool, metrics: &mut Metrics) {
    let (rec, kl) = (pass.rec_sum / pass.n as f64, pass.kl_sum / pass.n as f64);
    let entry = |value, hib, def: &str| MetricEntry { value, higher_is_better: hib, definition: def.into(), note: None };
    metrics.insert("rec_nll".into(), entry(rec, false, "−log p(x|z) summed over pixels, nats per image, one z sample"));
    if probabilistic {
        metrics.insert(
            "elbo".into(),
            entry(-(rec + kl), true, "evidence lower bound E[log p(x|z)] − KL(q(z|x)‖p(z)), nats per image, one z sample"),
        );
        metrics.insert("kl".into(), entry(kl, false, "KL(q(z|x) ‖ N(0, I)) summed over latent dimensions, nats per image"));
    }
}

/// The metrics of prior samples, as many as test images: FID, the sharpness ratio, and the domain
/// Fréchet distance with the domain FD of the mean-image and noise generators as baselines (returned).
fn sample_metrics<D: Backend>(
    run: &Evaluated<D>,
    spec: &Experiment,
    pass: &TestPass,
    fid_net: Option<&vaelab_metrics::inception::Inception>,
    mean_images: &ImageBatch,
    metrics: &mut Metrics,
    failed: &mut Failed,
) -> Result<BTreeMap<String, f64>, EvalError> {
    let (n, bs, real) = (pass.n, spec.data.batch, &pass.real);
    let wants = |name: &str| spec.eval.metrics.iter().any(|m| m == name);
    let wants_domain_fd = wants("domain_fd");
    let samples = (wants_domain_fd || wants("sharpness") || fid_net.is_some())
        .then(|| domain_fd::prior_samples(&run.model, &run.store, spec.seed, real, bs));
    if let (true, Some(samples)) = (wants("sharpness"), &samples) {
        match vaelab_metrics::sharpness::sharpness_ratio(real, samples) {
            Ok(value) => {
                let definition =
                    format!("{} ({n} decoded prior samples, {n} test images)", vaelab_metrics::sharpness::DEFINITION);
                metrics.insert("sharpness".into(), MetricEntry { value, higher_is_better: true, definition, note: None });
            }
            Err(m) => {
                failed.insert("sharpness".into(), m);
            }
        }
    }
    if let (Some(net), Some(samples)) = (fid_net, &samples) {
        let real_features = fid::features(net, real, Some("FID features, test"));
        let fake_features = fid::features(net, samples, Some("FID features, samples"));
        match fid::distance(&real_features, &fake_features) {
            Ok(value) => {
                let definition = format!("{} of the {n} test images and {n} decoded prior samples", fid::DEFINITION);
                let note = fid::sample_note(n, n);
                metrics.insert("fid".into(), MetricEntry { value, higher_is_better: false, definition, note });
            }
            Err(m) => {
                failed.insert("fid".into(), m);
            }
        }
    }
    let mut baselines = BTreeMap::new();
    let (true, Some(fake_samples)) = (wants_domain_fd, &samples) else { return Ok(baselines) };
    let reference = match &spec.eval.domain_encoder {
        Some(dir) => Some(domain_fd::load_reference(&run.dev, dir, run.shape)?),
        None => None,
    };
    let encoder = match &reference {
        Some((m, s, seed)) => domain_fd::FeatureEncoder::new(m, s, *seed),
        None => domain_fd::FeatureEncoder::new(&run.model, &run.store, spec.seed),
    };
    // The run's own encoder already gave the test images' means in the test pass.
    let real_features = match &reference {
        Some(_) => encoder.features(real, bs),
        None => pass.codes.iter().map(|c| c.iter().map(|v| *v as f64).collect()).collect(),
    };
    let value = domain_fd::distance(&real_features, &encoder.features(fake_samples, bs))?;
    let mut rng = vaelab_datasets::StreamRng::new(spec.seed, &[vaelab_datasets::tag("domain-fd-noise")]);
    let noise_images = real.with_pixels((0..real.pixels.len()).map(|_| rng.uniform() as f32).collect());
    for (name, images) in [("mean_image", mean_images), ("noise", &noise_images)] {
        baselines.insert(name.to_string(), domain_fd::distance(&real_features, &encoder.features(images, bs))?);
    }
    let source = match &spec.eval.domain_encoder {
        Some(dir) => format!("the encoder of run {}", dir.display()),
        None => "this run's own encoder (compare checkpoints of this run only)".into(),
    };
    let definition = format!(
        "Fréchet distance between Gaussians fitted to encoder means of the {n} test images and of {n} decoded prior samples; features from {source}; not FID"
    );
    metrics.insert("domain_fd".into(), MetricEntry { value, higher_is_better: false, definition, note: None });
    Ok(baselines)
}

/// The KL per dimension (empty without a posterior), the traversal's rows (largest KL first, or
/// largest code variance for an autoencoder; at most [`TRAVERSAL_ROWS`]) and its starting code.
fn traversal(model: &Model, pass: &TestPass, probabilistic: bool) -> (Vec<f64>, Vec<usize>, Vec<f32>) {
    let (n, code) = (pass.n, model.latent.code_shape().len());
    let kl_per_dim: Vec<f64> = if probabilistic { pass.kl_dims.iter().map(|k| k / n as f64).collect() } else { vec![] };
    let score: Vec<f64> = if probabilistic {
        kl_per_dim.clone()
    } else {
        (0..code)
            .map(|d| {
                let mean = pass.codes.iter().map(|c| c[d] as f64).sum::<f64>() / n as f64;
                pass.codes.iter().map(|c| (c[d] as f64 - mean).powi(2)).sum::<f64>() / n as f64
            })
            .collect()
    };
    let mut order: Vec<usize> = (0..code).collect();
    let mut first_code = pass.first_code.clone();
    if model.generator_only {
        // Every noise dimension has the same prior; traverse the first ones from the prior mean.
        first_code = vec![0.0; code];
    } else {
        order.sort_by(|a, b| score[*b].total_cmp(&score[*a]));
    }
    order.truncate(TRAVERSAL_ROWS);
    (kl_per_dim, order, first_code)
}

/// The evaluation's folder: room made (an earlier evaluation there merged or moved aside), the
/// grids, `metrics.json` and `report.html`; every other evaluation's report is rendered again so
/// that each lists all of them.
fn write_outputs<D: Backend>(
    run: &Evaluated<D>,
    spec: &Experiment,
    run_dir: &Path,
    target: &Target,
    pass: &TestPass,
    first_code: &[f32],
    record: &mut EvalRecord,
) -> Result<(), EvalError> {
    let out_dir = &run.out_dir;
    let (moved, earlier) = make_room(run_dir, out_dir, run.step, target.split, target.data.as_deref())?;
    record.notes.extend(moved);
    std::fs::create_dir_all(out_dir).map_err(|e| EvalError::Write(format!("cannot create {}: {e}", out_dir.display())))?;
    let (dev, model, store) = (&run.dev, &run.model, &run.store);
    write_grids(dev, model, store, spec, &pass.real, &pass.fake, first_code, &record.traversal_order, out_dir)?;
    if !model.generator_only {
        let names = run.dataset.factor_names();
        record.factor_grids = write_factor_grids(dev, model, store, spec, &pass.fake, &pass.codes, &names, out_dir)?;
    }
    if let Some(earlier) = earlier {
        merge_earlier(record, earlier);
    }
    let json = serde_json::to_string_pretty(&record).expect("reports serialize");
    let path = paths::metrics_file(out_dir);
    checkpoint::write_atomic(&path, json.as_bytes())
        .map_err(|e| EvalError::Write(format!("cannot write {}: {e}", path.display())))?;
    crate::report::write(run_dir, out_dir, record).map_err(EvalError::Write)?;
    let all = evaluations(run_dir);
    for (_, other) in all.iter().filter(|(_, r)| &r.folder != out_dir) {
        crate::report::rewrite_html(&other.folder, other, &all).map_err(EvalError::Write)?;
    }
    Ok(())
}
