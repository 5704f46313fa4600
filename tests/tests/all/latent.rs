//! Latent-space analysis (`vaelab latent`) and the live explorer (`vaelab explore`) on a small
//! trained shapes run.

use crate::training::{options, scratch, tiny, within, Tolerance};

/// Grid statistics (values in [0, 1], rounded to three decimals) after 2,500 training steps, which
/// carry a last-bit difference much further than 20 steps: measured between gemm's AVX-512 and AVX2
/// kernels before rounding, at most 9.3e-4 (a row mean of 0.0898 against 0.0889). The tolerance is
/// four times that, plus the two roundings.
const GRID_STATS: Tolerance = Tolerance { rel: 0.0, abs: 0.005 };
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use vaelab::analysis::{attributes, embed, interpolate, traverse};
use vaelab::runs::LoadedRun;

/// One β-VAE (β = 4) on 32 px shapes, trained once for every test here.
fn trained_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        // Shared by every test here and never dropped, so it lives at one pid-free path that each run replaces.
        let dir = std::env::temp_dir().join("vaelab-test-shared-latent-run");
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = tiny();
        spec.train.steps = 2500;
        spec.model.latent = vaelab::spec::Latent::Gaussian { dim: 8 };
        spec.train.log_every = 100;
        spec.train.checkpoint_every = 2500;
        spec.data.batch = 32;
        spec.losses = ron::from_str("[Reconstruction(), Kl(weight: 4.0, warmup: 300)]").unwrap();
        spec.data.test_size = 600;
        vaelab::train::train(&spec, &options(&dir)).unwrap();
        dir
    })
}

fn open() -> (LoadedRun, vaelab::analysis::Codes) {
    let run = LoadedRun::open(trained_run(), None).unwrap();
    let codes = run.encode(run.test_images(600));
    (run, codes)
}

/// Size (the radius of gyration of the intensity: independent of brightness and position),
/// centroid x and centroid y of a decoded shape.
fn measure(img: &[f32], side: usize) -> [f64; 3] {
    let (mut m, mut sx, mut sy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
    for (i, v) in img.iter().enumerate() {
        let (v, x, y) = (*v as f64, (i % side) as f64, (i / side) as f64);
        m += v;
        sx += v * x;
        sy += v * y;
        sxx += v * (x * x + y * y);
    }
    let m = m.max(1e-9);
    let (cx, cy) = (sx / m, sy / m);
    [(sxx / m - cx * cx - cy * cy).max(0.0).sqrt(), cx, cy]
}

#[test]
fn traversal_and_interpolation_statistics() {
    let (run, codes) = open();
    let opts = traverse::TraverseOptions { rows: 4, steps: 5, ..Default::default() };
    let (images, summary) = traverse::traverse(&run, &codes, &opts).unwrap();
    assert_eq!(images.len(), 20);
    let (images_prior, prior) =
        traverse::traverse(&run, &codes, &traverse::TraverseOptions { start: traverse::Start::PriorMean, ..opts }).unwrap();
    assert_eq!(images_prior.len(), 20);
    assert_eq!(prior.row_labels, summary.row_labels, "rows are ranked by the same KL");
    let (interp_images, interp) = interpolate::interpolate(&run, &codes, 0, 1, 5).unwrap();
    // Both rows start at image 0's code and end at image 1's: the end columns are the same images.
    assert_eq!(interp.rows, ["linear", "spherical"]);
    assert_eq!(interp_images[0], interp_images[5]);
    let end_gap = interp_images[4].iter().zip(&interp_images[9]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(end_gap < 1e-4, "{end_gap}");
    let stats = (summary.row_labels.clone(), summary.stats.clone(), interp.rows.clone(), interp.stats.clone());
    within(GRID_STATS, || insta::assert_yaml_snapshot!(stats));
    let err = interpolate::interpolate(&run, &codes, 0, 100_000, 5).unwrap_err().to_string();
    assert_eq!(err, "test image 100000 does not exist (600 encoded)");
}

/// Moving along the direction found for x (or y) moves the decoded shape along x (or y) more than
/// along the other axis, and the direction for scale changes the size more than either position,
/// in units of each measurement's spread over the test images. (Position directions are not
/// compared with size: a VAE decoder moves a blob partly by fading it out in one place and in at
/// another, and the half-faded superposition inflates any size measure.)
#[test]
fn attribute_directions_change_their_own_factor_most() {
    let (run, codes) = open();
    let side = run.image_shape().1;
    let attrs = attributes::directions(&run, &codes, None).unwrap();
    let names: Vec<&str> = attrs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["shape", "scale", "rotation", "x", "y"]);
    let real: Vec<[f64; 3]> = (0..codes.images.n).map(|i| measure(codes.images.image(i), side)).collect();
    let spread: Vec<f64> = (0..3)
        .map(|k| {
            let mean = real.iter().map(|m| m[k]).sum::<f64>() / real.len() as f64;
            (real.iter().map(|m| (m[k] - mean).powi(2)).sum::<f64>() / real.len() as f64).sqrt()
        })
        .collect();
    let mut report = String::new();
    for (name, own, others) in [("scale", 0, [1, 2]), ("x", 1, [2, 2]), ("y", 2, [1, 1])] {
        let a = attrs.iter().find(|a| a.name == name).unwrap();
        let mut change = [0.0f64; 3];
        let starts: Vec<usize> = (0..40).collect();
        for &i in &starts {
            let z = attributes::apply(&codes.mu[i], &a.direction, &[-0.2, 0.2]);
            let imgs = run.decode(&z);
            let (lo, hi) = (measure(&imgs[0], side), measure(&imgs[1], side));
            for k in 0..3 {
                change[k] += (hi[k] - lo[k]).abs() / spread[k] / starts.len() as f64;
            }
        }
        report += &format!("{name}: size {:.2}, x {:.2}, y {:.2}\n", change[0], change[1], change[2]);
        for k in others {
            assert!(change[own] > change[k], "the {name} direction changes measurement {k} more than its own:\n{report}");
        }
    }
    eprintln!("{report}");
    // The probe finds position information in single elements, and little of it in noise-level ones.
    let x = attrs.iter().find(|a| a.name == "x").unwrap();
    assert!(x.best_element.1 > 0.3, "{:?}", x.best_element);
    // Scores are compared with guessing: a third for the three shapes, a sixth for the six scales.
    let chance: Vec<f64> = attrs.iter().map(|a| a.chance).collect();
    assert_eq!(chance, [1.0 / 3.0, 1.0 / 6.0, 0.0, 0.0, 0.0]);
    let above = x.probe_above_chance();
    assert_eq!(above[x.best_element.0], x.best_element.1.clamp(0.0, 1.0));
    assert!(above.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn embed_writes_one_plot_per_factor() {
    let (run, codes) = open();
    let s = embed::run(&run, &codes, None).unwrap();
    assert_eq!(s.plots.len(), 5);
    assert!(s.explained_variance[0] >= s.explained_variance[1] && s.explained_variance[0] > 0.2);
    let img = image::open(trained_run().join("latent").join(&s.plots[3].1)).unwrap();
    assert_eq!((img.width(), img.height()), (710, 560));
    let err = embed::run(&run, &codes, Some("colour")).unwrap_err().to_string();
    assert_eq!(err, "no factor `colour`; this dataset has shape, scale, rotation, x, y");
}

/// A running explorer on the shared run, stopped when dropped.
struct Running {
    explorer: std::sync::Arc<vaelab::explore::Explorer>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start() -> Running {
        use vaelab::explore::{ExploreOptions, Explorer};
        let opts = ExploreOptions { port: 0, images: 16, sliders: 8, ..Default::default() };
        let explorer = std::sync::Arc::new(Explorer::start(trained_run(), &opts).unwrap());
        assert!(explorer.addr.ip().is_loopback(), "binds to loopback by default");
        let e = explorer.clone();
        let thread = Some(std::thread::spawn(move || e.serve()));
        Running { explorer, thread }
    }

    /// One HTTP request: (status, body).
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.explorer.addr).unwrap();
        write!(s, "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).to_string();
        let status = text.split(' ').nth(1).unwrap().parse().unwrap();
        (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.explorer.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bad requests get 4xx replies with a message; good ones images and codes.
#[test]
fn explorer_api_answers_bad_requests_with_4xx() {
    let server = Running::start();
    let run = &server.explorer.info().run;
    let code_len = server.explorer.info().code_len;
    let zeros = format!("{{\"z\": {:?}}}", vec![0.0f32; code_len]);
    let (status, png) = server.request("POST", &format!("/api/runs/{run}/decode"), &zeros);
    assert_eq!(status, 200);
    assert!(png.len() > 50);
    let mut report = String::new();
    let too_big = zeros.replacen("0.0", "5000.0", 1);
    for (method, path, body) in [
        ("POST", format!("/api/runs/{run}/decode"), "{\"z\": [1, 2]}".to_string()),
        ("POST", format!("/api/runs/{run}/decode"), too_big),
        ("POST", format!("/api/runs/{run}/decode"), "not json".to_string()),
        ("GET", "/api/runs/someone-else/info".to_string(), String::new()),
        ("GET", format!("/api/runs/{run}/image/99.png"), String::new()),
        ("GET", format!("/api/runs/{run}/prior?seed=-1"), String::new()),
        ("GET", "/nowhere".to_string(), String::new()),
        ("DELETE", format!("/api/runs/{run}/info"), String::new()),
    ] {
        let (status, body) = server.request(method, &path, &body);
        assert!((400..500).contains(&status), "{method} {path}: {status}");
        report += &format!("{method} {path} → {status} {body}\n");
    }
    insta::assert_snapshot!(report);
}

/// The page in headless Chromium: moving a slider redraws the decoded image; a screenshot is kept
/// in target/test-artifacts/explorer.png.
#[test]
fn explorer_works_in_headless_chromium() {
    let Some(browser) = crate::browser::chromium_or_skip("the explorer test") else { return };
    let server = Running::start();
    let profile = scratch("chromium-profile");
    let mut page = crate::browser::Devtools::open(&browser, &server.explorer.url(), (1300, 760), profile.to_path_buf());
    let result = page.eval(
        r##"(async () => {
            const ready = await window.explorerReady;
            if (!ready) return { error: document.getElementById("status").textContent };
            const img = document.getElementById("decoded");
            const pixels = () => {
                const c = document.createElement("canvas");
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext("2d"); g.drawImage(img, 0, 0);
                return g.getImageData(0, 0, c.width, c.height).data;
            };
            const before = pixels(), decodes = +img.dataset.decodes;
            const slider = document.querySelector("#sliders input[type=range]");
            slider.value = slider.max;
            slider.dispatchEvent(new Event("input"));
            const t0 = performance.now();
            while (+img.dataset.decodes === decodes && performance.now() - t0 < 15000) await new Promise(r => setTimeout(r, 10));
            const after = pixels();
            let diff = 0;
            for (let i = 0; i < before.length; i += 4) diff += Math.abs(before[i] - after[i]);
            return { sliders: document.querySelectorAll("#sliders input").length,
                     attributes: document.querySelectorAll("#attributes input").length,
                     decodes: +img.dataset.decodes, before: decodes, diff, original: document.getElementById("original").naturalWidth };
        })()"##,
    );
    assert!(result.get("error").is_none(), "{result}");
    assert_eq!(result["sliders"], 8);
    assert_eq!(result["attributes"], 5, "one per shapes factor");
    assert!(result["decodes"].as_u64() > result["before"].as_u64(), "{result}");
    assert!(result["diff"].as_f64().unwrap() > 255.0, "the decoded image did not change: {result}");
    assert!(result["original"].as_u64().unwrap() > 0, "the original image is shown");
    page.screenshot(&crate::browser::artifacts().join("explorer.png"));
}
