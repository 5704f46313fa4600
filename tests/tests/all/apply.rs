//! A trained run applied to other images (`vaelab sample`, `reconstruct`, `encode`, `decode`):
//! round trips bit for bit for every latent kind, samples independent of the batch size, NumPy
//! reading the NPY files, the DICOM reconstruction scored as `eval` scores it, and the messages of
//! bad inputs. Also `eval`'s folders: an evaluation never erases another, and `--data`.

use crate::training::{options, tiny};
use std::path::{Path, PathBuf};
use vaelab::apply::encode::{decode, encode, DecodeOptions, EncodeInput, EncodeOptions};
use vaelab::apply::output::ImageFormat;
use vaelab::apply::reconstruct::{reconstruct, ReconstructOptions};
use vaelab::apply::sample::{sample, SampleOptions};
use vaelab::apply::Trained;
use vaelab::spec::{Experiment, Latent, Layer::*, Loss, Prior};
use vaelab_datasets::{Dataset, Shapes, ShapesConfig, Split, SplitSizes};
use vaelab_tests::scratch::Scratch;

/// A tiny run of each latent kind: Gaussian, spatial, quantized (with a fitted PixelCNN prior) and
/// none (an autoencoder), trained a few steps (the values do not matter here, only the plumbing).
fn spec_of(kind: &str) -> Experiment {
    let mut spec = tiny();
    spec.train.steps = 4;
    spec.train.checkpoint_every = 4;
    let convs = vec![Conv { out: 8, k: 4, s: 2, p: 1 }, Relu, Conv { out: 16, k: 4, s: 2, p: 1 }, Relu];
    let up = |cin_layers: Vec<vaelab::spec::Layer>| {
        let mut d = cin_layers;
        d.extend([ConvT { out: 8, k: 4, s: 2, p: 1 }, Relu, ConvT { out: 1, k: 4, s: 2, p: 1 }]);
        d
    };
    match kind {
        "gaussian" => {}
        "spatial" => {
            spec.model.encoder = convs;
            spec.model.latent = Latent::Spatial { channels: 2 };
            spec.model.decoder = up(vec![]);
        }
        "quantized" => {
            spec.model.encoder = convs;
            spec.model.latent = Latent::Quantized { codes: 8, dim: 4, beta: 0.25, ema: true };
            spec.model.decoder = up(vec![]);
            spec.model.prior = Prior::PixelCnn { channels: 8, layers: 1, kernel: 3, steps: 5, lr: 3e-3, batch: 16 };
            spec.losses = vec![Loss::Reconstruction { weight: 1.0 }, Loss::Vq { weight: 1.0 }];
        }
        "none" => {
            spec.model.latent = Latent::None;
            spec.losses = vec![Loss::Reconstruction { weight: 1.0 }];
        }
        other => panic!("no kind {other}"),
    }
    spec
}

fn trained(kind: &str, dir: &Path) {
    let spec = spec_of(kind);
    vaelab::train::train(&spec, &options(dir)).unwrap();
    if matches!(spec.model.prior, Prior::PixelCnn { .. }) {
        let opts = vaelab::prior_fit::PriorOptions { progress: false, force: true };
        vaelab::prior_fit::fit_prior(dir, &opts).unwrap();
    }
}

/// `n` shapes images as 8-bit PNGs: class folders `0/` and `1/`, and a nested `deep/er/` folder.
fn write_inputs(dir: &Path, n: usize) -> Vec<PathBuf> {
    let ds = Shapes::new(ShapesConfig { size: 32, splits: SplitSizes { train: 1, val: 0, test: n }, seed: 11 });
    (0..n)
        .map(|i| {
            let sub = ["0", "1", "deep/er"][i % 3];
            let path = dir.join(sub).join(format!("img-{i:02}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let px = ds.sample(Split::Test, i).pixels;
            image::GrayImage::from_fn(32, 32, |x, y| image::Luma([(px[(y * 32 + x) as usize] * 255.0).round() as u8]))
                .save(&path)
                .unwrap();
            path
        })
        .collect()
}

/// Every file under `dir` (relative path → bytes), leaving out `skip`.
fn files(dir: &Path, skip: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else if p.file_name().unwrap() != skip {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Runs `python3 -c code` when NumPy is there (required under `VAELAB_REQUIRE_DATA`, as in CI).
fn numpy(code: &str) -> Option<String> {
    let has = std::process::Command::new("python3").args(["-c", "import numpy"]).status().is_ok_and(|s| s.success());
    if !has {
        assert!(std::env::var_os("VAELAB_REQUIRE_DATA").is_none(), "python3 with numpy is needed (python3 -m pip install numpy)");
        eprintln!("skipping the NumPy check: no python3 with numpy");
        return None;
    }
    let out = std::process::Command::new("python3").args(["-c", code]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn encode_then_decode_gives_reconstruct_bit_for_bit_for_every_latent_kind() {
    let work = Scratch::created("apply", "roundtrip");
    let inputs = work.join("inputs");
    write_inputs(&inputs, 21);
    for kind in ["gaussian", "spatial", "quantized", "none"] {
        let run_dir = work.join(kind);
        trained(kind, &run_dir);
        let run = Trained::open(&run_dir, None).unwrap();
        let rec = work.join(format!("{kind}-rec"));
        let opts = ReconstructOptions {
            input: inputs.clone(),
            out: rec.clone(),
            skip_bad: false,
            force: false,
            fit: None,
            format: Some(ImageFormat::Png16),
            progress: false,
        };
        let summary = reconstruct(&run, &opts).unwrap();
        assert_eq!((summary.tally.files, summary.tally.images), (21, 21));
        let want = files(&rec, "reconstruct.csv");
        assert_eq!(want.len(), 21);
        assert_eq!(want[0].0, Path::new("0/img-00.png"), "outputs keep the inputs' relative paths");
        for format in ["csv", "jsonl", "npy"] {
            let codes = work.join(format!("{kind}.{format}"));
            let e = EncodeOptions {
                input: EncodeInput::Files(inputs.clone()),
                out: codes.clone(),
                skip_bad: false,
                force: false,
                fit: None,
                progress: false,
            };
            encode(&run, &e).unwrap();
            let out = work.join(format!("{kind}-{format}"));
            let d = DecodeOptions { codes, out: out.clone(), force: false, format: Some(ImageFormat::Png16), progress: false };
            assert_eq!(decode(&run, &d).unwrap(), 21);
            let got = files(&out, "");
            assert_eq!(got.len(), want.len(), "{kind} {format}");
            for ((gp, gb), (wp, wb)) in got.iter().zip(&want) {
                assert_eq!(gp, wp, "{kind} {format}");
                assert!(gb == wb, "{kind} {format}: {} differs from its reconstruction", gp.display());
            }
        }
        // Column names say which element is which; labels come from the class folders.
        let csv = std::fs::read_to_string(work.join(format!("{kind}.csv"))).unwrap();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let want_start: &[&str] = match kind {
            "gaussian" => &["path", "label", "mu_0", "mu_1", "mu_2", "mu_3", "logvar_0"],
            "spatial" => &["path", "label", "mu_c0_y0_x0", "mu_c0_y0_x1"],
            "quantized" => &["path", "label", "code_y0_x0", "code_y0_x1"],
            _ => &["path", "label", "z_0", "z_1"],
        };
        assert_eq!(&header[..want_start.len()], want_start, "{kind}");
        let per_row = match kind {
            "gaussian" => 8,
            "spatial" => 2 * 2 * 8 * 8,
            "quantized" => 8 * 8,
            _ => 64,
        };
        assert_eq!(header.len(), 2 + per_row, "{kind}");
        assert!(csv.lines().nth(1).unwrap().starts_with("0/img-00.png,0,"), "{kind}");
        assert!(csv.lines().any(|l| l.starts_with("deep/er/img-02.png,,")), "no label outside numbered class folders");
        let dtype = if kind == "quantized" { "int64" } else { "float32" };
        let check = format!(
            "import numpy, json; a = numpy.load({:?}); s = json.load(open({:?})); \
             assert a.shape == (21, {per_row}) and a.dtype == numpy.{dtype}, (a.shape, a.dtype); \
             assert len(s['rows']) == 21 and s['rows'][0]['path'] == '0/img-00.png' and len(s['columns']) == {per_row}; print('ok')",
            work.join(format!("{kind}.npy")),
            work.join(format!("{kind}.npy.json"))
        );
        if let Some(out) = numpy(&check) {
            assert_eq!(out.trim(), "ok");
        }
    }
}

#[test]
fn samples_are_the_same_across_calls_and_batch_sizes() {
    let work = Scratch::created("apply", "samples");
    for kind in ["default", "quantized"] {
        let run_dir = work.join(kind);
        if kind == "default" {
            // The default spec (64 px, batch 64): its decoder sums in another order at widths 1–8 than
            // at 9 or more (measured), which only padding to one width hides.
            let path = crate::specs::workspace().join("specs/shapes/beta-vae.ron");
            let mut spec = vaelab::spec::load_spec(&path).unwrap().experiment;
            spec.train.steps = 2;
            spec.train.checkpoint_every = 2;
            vaelab::train::train(&spec, &options(&run_dir)).unwrap();
        } else {
            trained(kind, &run_dir);
        }
        let run = Trained::open(&run_dir, None).unwrap();
        let draw = |name: &str, batch: Option<usize>, seed: Option<u64>, temperature: f32| {
            let out = work.join(format!("{kind}-{name}"));
            let opts = SampleOptions {
                n: 37,
                out: out.clone(),
                seed,
                format: ImageFormat::Npy,
                temperature,
                batch,
                force: false,
                progress: false,
            };
            let s = sample(&run, &opts).unwrap();
            if kind == "quantized" {
                assert_eq!(s.prior, "the fitted PixelCNN prior");
            }
            std::fs::read(out.join("samples.npy")).unwrap()
        };
        let first = draw("a", None, None, 1.0);
        assert!(first == draw("b", None, None, 1.0), "{kind}: two calls differ");
        for batch in [1, 5, 16, 40] {
            assert!(first == draw(&format!("batch{batch}"), Some(batch), None, 1.0), "{kind}: --batch {batch} differs");
        }
        assert!(first != draw("seed", None, Some(99), 1.0), "{kind}: the seed changes nothing");
        assert!(first != draw("cold", None, None, 0.5), "{kind}: the temperature changes nothing");
        let check = format!(
            "import numpy; a = numpy.load({:?}); assert a.shape == (37, 1, {side}, {side}) and a.dtype == numpy.float32; \
             assert 0 <= a.min() and a.max() <= 1; print('ok')",
            work.join(format!("{kind}-a/samples.npy")),
            side = if kind == "default" { 64 } else { 32 }
        );
        if let Some(out) = numpy(&check) {
            assert_eq!(out.trim(), "ok");
        }
    }
    // PNG files, named by index.
    let run = Trained::open(&work.join("default"), None).unwrap();
    let out = work.join("png");
    let opts = SampleOptions {
        n: 3,
        out: out.clone(),
        seed: None,
        format: ImageFormat::Png8,
        temperature: 1.0,
        batch: None,
        force: false,
        progress: false,
    };
    sample(&run, &opts).unwrap();
    let names: Vec<_> = files(&out, "").into_iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(names, ["sample-000000.png", "sample-000001.png", "sample-000002.png"]);
    assert_eq!(image::open(out.join("sample-000001.png")).unwrap().color(), image::ColorType::L8);
}

/// The DICOM radiograph of pydicom-data, trained on and reconstructed: the CSV's MSE is the MSE
/// `eval` reports for the same image (its test split is that one radiograph).
#[test]
fn reconstructing_a_radiograph_scores_it_as_eval_does() {
    let Some(data) = crate::dicom::real_data() else { return };
    let file = data.join("RG3_UNCR.dcm");
    let work = Scratch::created("apply", "dicom");
    let mut spec = tiny();
    spec.train.steps = 3;
    spec.data.dataset = vaelab::spec::Dataset::Dicom {
        root: file.clone(),
        fit: vaelab_datasets::Fit::Resize,
        window: None,
        patches: None,
        on_bad_file: Default::default(),
    };
    spec.data.batch = 4;
    spec.eval.test_images = 1;
    spec.eval.metrics = vec!["mse".into(), "psnr".into(), "ssim".into()];
    let run_dir = work.join("run");
    vaelab::train::train(&spec, &options(&run_dir)).unwrap();
    let report = vaelab::eval::evaluate(&run_dir, &Default::default()).unwrap();
    let run = Trained::open(&run_dir, None).unwrap();
    let out = work.join("rec");
    let opts = ReconstructOptions {
        input: file,
        out: out.clone(),
        skip_bad: false,
        force: false,
        fit: None,
        format: None,
        progress: false,
    };
    reconstruct(&run, &opts).unwrap();
    let csv = std::fs::read_to_string(out.join("reconstruct.csv")).unwrap();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(&row[..2], ["RG3_UNCR.dcm", "RG3_UNCR.png"]);
    for (i, name) in [(2, "mse"), (3, "psnr"), (4, "ssim")] {
        assert_eq!(row[i].parse::<f64>().unwrap(), report.metrics[name].value, "{name}");
    }
    // A 12-bit radiograph is written as a 16-bit PNG.
    assert_eq!(image::open(out.join("RG3_UNCR.png")).unwrap().color(), image::ColorType::L16);
}

/// Every bad input is refused with a message naming the file (and row), and no command panics.
#[test]
fn bad_inputs_are_refused_with_located_messages() {
    let work = Scratch::created("apply", "bad");
    let run_dir = work.join("run");
    trained("gaussian", &run_dir);
    let run = Trained::open(&run_dir, None).unwrap();
    let inputs = work.join("inputs");
    write_inputs(&inputs, 4);
    std::fs::write(inputs.join("0/corrupt.png"), b"not a png").unwrap();
    let redact = |s: String| s.replace(&work.display().to_string(), "<work>");
    let mut messages = Vec::new();

    // A corrupt image stops the command, naming the file, and leaves no output folder behind...
    let rec = |out: &str, skip_bad: bool, force: bool| ReconstructOptions {
        input: inputs.clone(),
        out: work.join(out),
        skip_bad,
        force,
        fit: None,
        format: None,
        progress: false,
    };
    messages.push(reconstruct(&run, &rec("rec", false, false)).unwrap_err().to_string());
    assert!(!work.join("rec").exists(), "a failed command left its output folder");
    // ...or is skipped and counted with --skip-bad.
    let summary = reconstruct(&run, &rec("rec", true, false)).unwrap();
    assert_eq!((summary.tally.images, summary.tally.skipped.len()), (4, 1));
    // An output folder that already holds files.
    messages.push(reconstruct(&run, &rec("rec", true, false)).unwrap_err().to_string());
    reconstruct(&run, &rec("rec", true, true)).unwrap();

    // Wrong code lengths and types, in each format.
    let codes = work.join("codes.csv");
    let e = EncodeOptions {
        input: EncodeInput::Files(inputs.clone()),
        out: codes.clone(),
        skip_bad: true,
        force: false,
        fit: None,
        progress: false,
    };
    encode(&run, &e).unwrap();
    messages.push(encode(&run, &e).unwrap_err().to_string());
    let text = std::fs::read_to_string(&codes).unwrap();
    let bad = |name: &str, content: String| {
        let p = work.join(name);
        std::fs::write(&p, content).unwrap();
        let d = DecodeOptions { codes: p, out: work.join(format!("dec-{name}")), force: false, format: None, progress: false };
        decode(&run, &d).unwrap_err().to_string()
    };
    messages.push(bad("short.csv", text.replace(",mu_3,", ",mu_x,")));
    let with_text_value: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut cells: Vec<&str> = l.split(',').collect();
            if i == 2 {
                cells[3] = "abc";
            }
            cells.join(",")
        })
        .collect();
    messages.push(bad("value.csv", with_text_value.join("\n")));
    messages.push(bad("long.jsonl", "{\"path\":\"a.png\",\"mu\":[0,0,0,0]}\n{\"path\":\"b.png\",\"mu\":[0,0,0,0,1]}\n".into()));
    messages.push(bad("text.jsonl", "{\"path\":\"a.png\",\"mu\":[0,0,\"x\",0]}\n".into()));
    let npy = |name: &str, shape: &[u64], ints: bool| {
        use npyz::WriterBuilder;
        let p = work.join(name);
        let n: u64 = shape.iter().product();
        let f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        if ints {
            let mut w = npyz::WriteOptions::<i64>::new().default_dtype().shape(shape).writer(f).begin_nd().unwrap();
            w.extend(0..n as i64).unwrap();
            w.finish().unwrap();
        } else {
            let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(shape).writer(f).begin_nd().unwrap();
            w.extend((0..n).map(|v| v as f32)).unwrap();
            w.finish().unwrap();
        }
        let d = DecodeOptions { codes: p, out: work.join(format!("dec-{name}")), force: false, format: None, progress: false };
        decode(&run, &d).unwrap_err().to_string()
    };
    messages.push(npy("shape.npy", &[3, 5], false));
    messages.push(npy("ints.npy", &[3, 4], true));

    // The run's own test split, with the dataset's ground-truth factors as columns.
    let own = work.join("own.csv");
    let e = EncodeOptions {
        input: EncodeInput::Split(Split::Test),
        out: own.clone(),
        skip_bad: false,
        force: false,
        fit: None,
        progress: false,
    };
    assert_eq!(encode(&run, &e).unwrap().images, 128);
    let csv = std::fs::read_to_string(&own).unwrap();
    let names = Shapes::new(ShapesConfig { size: 32, splits: SplitSizes { train: 1, val: 0, test: 1 }, seed: 3 }).factor_names();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(header[0], "path");
    assert_eq!(header[1..1 + names.len()], names.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    assert_eq!(header[1 + names.len()], "mu_0");
    assert!(csv.lines().nth(1).unwrap().starts_with("test/000000,"));
    assert_eq!(csv.lines().count(), 129);

    // A run without a checkpoint.
    let empty = work.join("no-checkpoint");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(run_dir.join("spec.ron"), empty.join("spec.ron")).unwrap();
    messages.push(Trained::open(&empty, None).err().unwrap().to_string());
    insta::assert_snapshot!(redact(messages.join("\n")));
}

#[test]
fn an_evaluation_never_erases_another() {
    let work = Scratch::created("apply", "evals");
    let dir = work.join("run");
    let mut spec = tiny();
    spec.train.steps = 4;
    spec.train.checkpoint_every = 2;
    spec.eval.metrics = vec!["mse".into(), "psnr".into(), "ssim".into()];
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    use vaelab::eval::{evaluate, EvalOptions};
    let full = evaluate(&dir, &Default::default()).unwrap();
    assert_eq!(full.folder, dir.join("eval"));
    // One metric again, same checkpoint, split and data: merged, the others kept and said so.
    let one = EvalOptions { metrics: Some(vec!["mse".into()]), ..Default::default() };
    let merged = evaluate(&dir, &one).unwrap();
    assert_eq!(merged.metrics.keys().collect::<Vec<_>>(), ["mse", "psnr", "ssim"]);
    assert_eq!(merged.metrics, full.metrics);
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval/metrics.json")).unwrap()).unwrap();
    assert_eq!(stored["metrics"].as_object().unwrap().len(), 3);
    // Another checkpoint: its own folder.
    let ckpt = dir.join("checkpoints/step-0000002.safetensors");
    let older = evaluate(&dir, &EvalOptions { checkpoint: Some(ckpt.clone()), ..one.clone() }).unwrap();
    assert_eq!((older.folder.clone(), older.checkpoint_step), (dir.join("eval-2-test"), 2));
    // Told to write another checkpoint's evaluation into eval/: the one there is moved aside.
    let into_eval = EvalOptions { checkpoint: Some(ckpt), out: Some("eval".into()), ..one.clone() };
    let moved = evaluate(&dir, &into_eval).unwrap();
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval-4-test/metrics.json")).unwrap()).unwrap();
    assert_eq!(stored["metrics"].as_object().unwrap().len(), 3, "the step-4 evaluation was not kept whole");
    let redact = |s: &str| s.replace(&work.display().to_string(), "<work>");
    let notes: Vec<String> = merged.notes.iter().chain(&moved.notes).map(|n| redact(n)).collect();
    insta::assert_snapshot!(notes.join("\n"));
    // Every report lists every evaluation.
    let html = std::fs::read_to_string(dir.join("eval-2-test/report.html")).unwrap();
    assert!(html.contains("eval-2-test (this report)"));
    for folder in ["eval", "eval-4-test"] {
        assert!(html.contains(&format!("href=\"../{folder}/report.html\"")), "{folder} missing from the list");
    }
}

#[test]
fn eval_scores_another_folder_of_images() {
    let work = Scratch::created("apply", "eval-data");
    let dir = work.join("run");
    let mut spec = tiny();
    spec.train.steps = 2;
    spec.eval.metrics = vec!["mse".into()];
    vaelab::train::train(&spec, &options(&dir)).unwrap();
    // 40×40 images in a flat folder: a procedural run's model gets them resized to 32×32.
    let other = work.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for i in 0..10u32 {
        image::GrayImage::from_fn(40, 40, |x, y| image::Luma([((x * 6 + y * i) % 256) as u8]))
            .save(other.join(format!("{i}.png")))
            .unwrap();
    }
    let opts = vaelab::eval::EvalOptions { data: Some(other.clone()), ..Default::default() };
    let r = vaelab::eval::evaluate(&dir, &opts).unwrap();
    assert_eq!(r.folder, dir.join("eval-2-test-other"));
    assert_eq!(r.data.as_deref(), Some(other.display().to_string().as_str()));
    assert_eq!(r.test_images, 5, "a flat folder holds out half its images at most");
    assert!(!dir.join("eval").exists(), "the run's own evaluation folder was touched");
    let wrong = work.join("big.ron");
    std::fs::write(&wrong, std::fs::read_to_string("specs/tiny.ron").unwrap().replace("size: 32", "size: 64")).unwrap();
    let opts = vaelab::eval::EvalOptions { data: Some(wrong), ..Default::default() };
    let err = vaelab::eval::evaluate(&dir, &opts).unwrap_err().to_string();
    assert!(err.ends_with("its images are 64×64 but the run's are 32×32; a model scores images of its own size"), "{err}");
}
