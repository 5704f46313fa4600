//! Plugins: the C header against the Rust ABI types, the example metrics against the built-in ones,
//! the example block's gradients, and a clear message for every kind of bad plugin.

use dfdx::prelude::TensorFromVec;
use std::path::{Path, PathBuf};
use std::process::Command;
use vaelab::eval::MetricRegistry;
use vaelab::metrics::metric::{Metric, Psnr};
use vaelab::nn::{Act, BlockSource, Ctx, FeatShape, ParamStore, Sequential};
use vaelab::plugin::{self, PluginSet};
use vaelab::spec::Layer;
use vaelab_datasets::{ImageBatch, StreamRng};
use vaelab_plugin_abi as abi;
use vaelab_tests::plugin_build::{plugin_library, plugin_target_dir};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn header_dir() -> PathBuf {
    workspace().join("plugins/abi/include")
}

fn scratch(name: &str) -> vaelab_tests::scratch::Scratch {
    vaelab_tests::scratch::Scratch::created("plugins", name)
}

/// Compiles C with the system compiler (as a C plugin author would).
fn compile_c(source: &Path, out: &Path, defines: &[&str], shared: bool) {
    compile_c_against(source, out, defines, shared, &header_dir());
}

/// As [`compile_c`], with the plugin header from `include`.
fn compile_c_against(source: &Path, out: &Path, defines: &[&str], shared: bool, include: &Path) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    if shared {
        cmd.args(["-shared", "-fPIC"]);
    }
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    cmd.arg("-I").arg(include).arg("-o").arg(out).arg(source).arg("-lm");
    let o = cmd.output().expect("a C compiler (cc) is needed for the plugin tests");
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Every struct of the ABI: size and field offsets, as Rust lays them out.
macro_rules! rust_layout {
    ($($s:ident { $($f:ident),* })*) => {{
        let mut lines = Vec::new();
        $(
            lines.push(format!("{} {}", stringify!($s), std::mem::size_of::<abi::$s>()));
            $( lines.push(format!("{}.{} {}", stringify!($s), stringify!($f), std::mem::offset_of!(abi::$s, $f))); )*
        )*
        let c = vec![$( (stringify!($s), vec![$(stringify!($f)),*]) ),*];
        (lines, c)
    }};
}

#[test]
fn c_header_matches_the_rust_abi_types() {
    let (expected, structs) = rust_layout! {
        VaelabKeyValue { key, value }
        VaelabConfig { len, items }
        VaelabImages { n, c, h, w, bit_depth, data }
        VaelabShape { rank, dims }
        VaelabParamDecl { name, shape, init, init_arg }
        VaelabMetric { size, name, n_outputs, output_names, flags, create, compute, destroy, definition }
        VaelabBlock { size, name, create, param_count, param_decl, forward, backward, destroy, param_decl_ex, forward_ex }
        VaelabPlugin { size, abi_version, name, n_metrics, metrics, n_blocks, blocks }
    };
    let constants = [
        ("VAELAB_ABI_VERSION", abi::VAELAB_ABI_VERSION as i64),
        ("VAELAB_OK", abi::VAELAB_OK as i64),
        ("VAELAB_ERROR", abi::VAELAB_ERROR as i64),
        ("VAELAB_METRIC_HIGHER_IS_BETTER", abi::VAELAB_METRIC_HIGHER_IS_BETTER as i64),
        ("VAELAB_METRIC_THREAD_SAFE", abi::VAELAB_METRIC_THREAD_SAFE as i64),
        ("VAELAB_METRIC_NEEDS_REFERENCE", abi::VAELAB_METRIC_NEEDS_REFERENCE as i64),
        ("VAELAB_METRIC_WHOLE_SET", abi::VAELAB_METRIC_WHOLE_SET as i64),
        ("VAELAB_BLOCK_TRAINING", abi::VAELAB_BLOCK_TRAINING as i64),
        ("VAELAB_INIT_ZEROS", abi::VAELAB_INIT_ZEROS as i64),
        ("VAELAB_INIT_ONES", abi::VAELAB_INIT_ONES as i64),
        ("VAELAB_INIT_UNIFORM", abi::VAELAB_INIT_UNIFORM as i64),
        ("VAELAB_INIT_FAN_IN_UNIFORM", abi::VAELAB_INIT_FAN_IN_UNIFORM as i64),
        ("VAELAB_NAME_LEN", abi::VAELAB_NAME_LEN as i64),
        ("VAELAB_MAX_RANK", abi::VAELAB_MAX_RANK as i64),
    ];
    let mut probe = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"vaelab_plugin.h\"\nint main(void) {\n");
    for (s, fields) in &structs {
        probe += &format!("  printf(\"{s} %zu\\n\", sizeof({s}));\n");
        for f in fields {
            probe += &format!("  printf(\"{s}.{f} %zu\\n\", offsetof({s}, {f}));\n");
        }
    }
    for (name, _) in &constants {
        probe += &format!("  printf(\"{name} %lld\\n\", (long long)({name}));\n");
    }
    probe += "  return 0;\n}\n";
    let dir = scratch("layout");
    std::fs::write(dir.join("probe.c"), probe).unwrap();
    compile_c(&dir.join("probe.c"), &dir.join("probe"), &[], false);
    let out = Command::new(dir.join("probe")).output().unwrap();
    let mut want = expected;
    want.extend(constants.iter().map(|(n, v)| format!("{n} {v}")));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), want);
}

fn random_batch(seed: u64, n: usize) -> ImageBatch {
    let mut r = StreamRng::new(seed, &[1]);
    let pixels = (0..n * 16 * 16).map(|_| r.uniform() as f32).collect();
    ImageBatch { n, c: 1, h: 16, w: 16, pixels, factors: vec![], bit_depth: 8 }
}

fn example_metrics() -> PluginSet {
    let entries = [plugin_library("vaelab-metric-psnr"), PathBuf::from(vaelab_metric_c_example::LIBRARY)];
    PluginSet::load(&entries).map_err(|(_, e)| e.to_string()).unwrap()
}

#[test]
fn rust_and_c_psnr_plugins_agree_with_the_builtin_metric() {
    let mut registry = MetricRegistry::builtin();
    example_metrics().register_metrics(&mut registry, 7).unwrap();
    let real = random_batch(1, 50);
    // Blend towards the references so the per-image MSEs vary; include one exact copy (100 dB cap).
    let mut fake = random_batch(2, 50);
    for (i, img) in fake.pixels.chunks_mut(256).enumerate() {
        let t = i as f32 / 50.0;
        for (f, r) in img.iter_mut().zip(real.image(i)) {
            *f = if i == 0 { *r } else { t * *r + (1.0 - t) * *f };
        }
    }
    let builtin = Psnr.compute(&real, &fake).unwrap();
    let rs = registry.get("psnr_rs").unwrap().evaluate(&real, &fake).unwrap();
    let c = registry.get("psnr_c").unwrap().evaluate(&real, &fake).unwrap();
    assert_eq!((rs[0].key.as_str(), c[0].key.as_str()), ("psnr_rs", "psnr_c"));
    assert!((rs[0].value - builtin).abs() < 1e-9, "{} vs built-in {builtin}", rs[0].value);
    assert!((rs[0].value - c[0].value).abs() < 1e-6, "Rust {} vs C {}", rs[0].value, c[0].value);
    assert!(registry.get("psnr_rs").unwrap().higher_is_better() && !registry.get("mae_c").unwrap().higher_is_better());

    let mae = registry.get("mae_c").unwrap().evaluate(&real, &fake).unwrap()[0].value;
    let direct =
        real.pixels.iter().zip(&fake.pixels).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / real.pixels.len() as f64;
    assert!((mae - direct).abs() < 1e-9, "{mae} vs {direct}");
}

fn se_set() -> PluginSet {
    PluginSet::load(&[plugin_library("vaelab-block-se")]).map_err(|(_, e)| e.to_string()).unwrap()
}

fn se(reduction: i64) -> Layer {
    Layer::Plugin("se".into(), ron::from_str(&format!("(reduction: {reduction})")).unwrap())
}

#[test]
fn se_block_gradients_match_finite_differences() {
    let set = se_set();
    // Alone (input gradient and all four parameters), and after a convolution, so the gradient
    // that the plugin returns flows on into vaelab's own layers.
    super::gradients::check_layers_with(vec![se(2)], FeatShape::Image(4, 3, 3), 3, &set);
    super::gradients::check_layers_with(
        vec![Layer::Conv { out: 6, k: 3, s: 1, p: 1 }, se(3), Layer::Tanh],
        FeatShape::Image(2, 4, 4),
        2,
        &set,
    );
}

#[test]
fn plugin_block_parameters_live_in_the_store_under_the_layer_name() {
    let set = se_set();
    let mut store = ParamStore::new(dfdx::prelude::Cpu::default(), 1);
    let block = Sequential::build(&[se(4)], FeatShape::Image(8, 5, 5), "encoder", "model.encoder", &mut store, &set).unwrap();
    assert_eq!(block.output, FeatShape::Image(8, 5, 5));
    let names: Vec<(String, Vec<usize>)> = store.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    assert_eq!(
        names,
        [
            ("encoder.0.fc1_weight".to_string(), vec![2, 8]),
            ("encoder.0.fc1_bias".to_string(), vec![2]),
            ("encoder.0.fc2_weight".to_string(), vec![8, 2]),
            ("encoder.0.fc2_bias".to_string(), vec![8]),
        ]
    );
    // Fan-in initialisation: |w| ≤ 1/√8 for fc1, and not all zero.
    let w = store.get(store.find("encoder.0.fc1_weight").unwrap()).tensor.as_vec();
    assert!(w.iter().all(|v| v.abs() <= 1.0 / 8f32.sqrt()) && w.iter().any(|v| *v != 0.0));
}

/// A folder holding `spec.ron`: a spec that extends `spec` and loads the test-built example plugins
/// instead of its own list. The folder goes when the returned guard does.
pub(crate) fn with_test_plugins(spec: &Path) -> vaelab_tests::scratch::Scratch {
    let dir = scratch(&spec.file_stem().unwrap().to_string_lossy());
    let libs = [plugin_library("vaelab-block-se"), plugin_library("vaelab-metric-psnr")];
    let list: Vec<String> = libs.iter().map(|l| format!("{:?}", l.display().to_string())).collect();
    let text =
        format!("Experiment(extends: {:?}, plugins: [{}])", spec.canonicalize().unwrap().display().to_string(), list.join(", "));
    std::fs::write(dir.join("spec.ron"), text).unwrap();
    dir
}

/// Path-independent text: scratch folders and the plugin build folder replaced by placeholders.
pub(crate) fn redact(text: &str, dirs: &[&Path]) -> String {
    let mut t = text.to_string();
    for d in dirs {
        t = t.replace(&d.display().to_string(), "[TMP]");
    }
    t.replace(&plugin_target_dir().display().to_string(), "[PLUGINS]")
}

fn load_error(entries: &[PathBuf]) -> String {
    match PluginSet::load(entries) {
        Ok(_) => panic!("{entries:?} should not load"),
        Err((_, e)) => e.to_string(),
    }
}

#[test]
#[cfg(target_os = "linux")]
fn every_bad_plugin_gets_a_clear_message() {
    let dir = scratch("bad");
    let mut report = String::new();
    let mut case = |title: &str, message: String| report.push_str(&format!("## {title}\n{}\n", redact(&message, &[&dir])));

    case("missing file", load_error(&[dir.join("libnothing.so")]));

    std::fs::write(dir.join("libnotes.so"), "these are my notes, not a library\n").unwrap();
    case("not a shared library", load_error(&[dir.join("libnotes.so")]));

    let source = workspace().join("tests/fixtures/plugins/abi_cases.c");
    for (title, define, file) in [
        ("missing symbol", "NO_VERSION", "libno_version.so"),
        ("wrong ABI version", "WRONG_VERSION", "libwrong_version.so"),
        ("table smaller than expected", "SMALL_TABLE", "libsmall_table.so"),
    ] {
        compile_c(&source, &dir.join(file), &[define], true);
        case(title, load_error(&[dir.join(file)]));
    }

    // The same metric name from two files (a copy of the Rust PSNR plugin).
    let psnr = plugin_library("vaelab-metric-psnr");
    std::fs::create_dir_all(dir.join("copy")).unwrap();
    std::fs::copy(&psnr, dir.join("copy/libpsnr_again.so")).unwrap();
    case("two plugins export the same name", load_error(&[psnr.clone(), dir.join("copy/libpsnr_again.so")]));

    let faulty = PluginSet::load(&[plugin_library("vaelab-test-faulty")]).map_err(|(_, e)| e.to_string()).unwrap();
    let mut registry = MetricRegistry::builtin();
    faulty.register_metrics(&mut registry, 10).unwrap();
    let (real, fake) = (random_batch(3, 40), random_batch(4, 40));
    for (title, name) in [("metric returns an error status", "always_fails"), ("Rust metric panics", "panics")] {
        let err = registry.get(name).unwrap().evaluate(&real, &fake).unwrap_err();
        case(title, err.to_string());
    }

    // NaN on every second batch of 10: batches 1 and 3 are left out of the mean, and said so.
    let scored = registry.get("nan_every_other_batch").unwrap().evaluate(&real, &fake).unwrap();
    let mean = |r: std::ops::Range<usize>| fake.pixels[r.start * 256..r.end * 256].iter().map(|v| *v as f64).sum::<f64>();
    let expected = (mean(0..10) + mean(20..30)) / (20.0 * 256.0);
    assert!((scored[0].value - expected).abs() < 1e-12, "{} vs {expected}", scored[0].value);
    case("metric writes NaN", format!("value {:.6}; note: {}", scored[0].value, scored[0].note.clone().unwrap()));

    let shape = FeatShape::Image(2, 3, 3);
    let empty = faulty.instantiate("empty_param", &ron::Value::Unit, shape).err().unwrap();
    case("block declares an empty parameter shape", empty);

    let mut store = ParamStore::new(dfdx::prelude::Cpu::default(), 1);
    let layers = [Layer::Plugin("wrong_output".into(), ron::Value::Unit)];
    let block = Sequential::build(&layers, shape, "encoder", "model.encoder", &mut store, &faulty).unwrap();
    let x = store.dev.tensor_from_vec(vec![0.5f32; 18 * 2], (18, 2));
    let ctx = Ctx::new(&store, true, 1, 0);
    let y = block.forward(&ctx, Act { t: dfdx::prelude::Tensor::retaped(&x), shape, needs_grad: true });
    assert_eq!(y.t.as_vec(), vec![0.0; 36], "a failed block yields zeros");
    case("block output contradicts its declared shape", ctx.failures.take().expect("the failure is recorded"));

    case("unknown block name", faulty.instantiate("film", &ron::Value::Unit, shape).err().unwrap());

    insta::assert_snapshot!(report);
}

#[test]
fn plugins_list_shows_versions_metrics_outputs_and_flags() {
    let libs: Vec<_> = [plugin_library("vaelab-metric-psnr"), plugin_library("vaelab-block-se")]
        .iter()
        .chain([&PathBuf::from(vaelab_metric_c_example::LIBRARY)])
        .map(|p| plugin::library::open(p).unwrap())
        .collect();
    let c_dir = Path::new(vaelab_metric_c_example::LIBRARY).parent().unwrap();
    insta::assert_snapshot!(redact(&plugin::describe(&libs), &[c_dir]));
}

#[test]
fn bare_names_and_folders_expand_to_platform_libraries() {
    let psnr = plugin_library("vaelab-metric-psnr");
    let bare = psnr.with_file_name("vaelab_metric_psnr");
    assert_eq!(plugin::expand_entry(&bare).unwrap(), vec![psnr.clone()]);
    let folder = plugin::expand_entry(psnr.parent().unwrap()).unwrap();
    assert!(folder.contains(&psnr) && folder.iter().all(|p| p.to_string_lossy().ends_with(std::env::consts::DLL_SUFFIX)));
    // Loading the same library twice (by two names) is one library, not a clash.
    let set = PluginSet::load(&[bare, psnr]).map_err(|(_, e)| e.to_string()).unwrap();
    assert_eq!(set.libraries.len(), 1);
}

/// The first ```fence code block of a markdown text.
fn readme_block(readme: &str, fence: &str) -> String {
    let start = readme.find(&format!("```{fence}\n")).unwrap_or_else(|| panic!("no ```{fence} block")) + fence.len() + 4;
    readme[start..start + readme[start..].find("```").unwrap()].to_string()
}

/// The README shows exactly the example code CI builds, and its C example builds with only the
/// header, using the README's own command, and loads.
#[test]
#[cfg(target_os = "linux")]
fn plugin_readme_examples_are_the_built_code_and_build_as_documented() {
    let readme = std::fs::read_to_string(workspace().join("plugins/README.md")).unwrap();
    let c_source = std::fs::read_to_string(workspace().join("plugins/metric-c-example/src/metric_c_example.c")).unwrap();
    let rust_source = std::fs::read_to_string(workspace().join("plugins/metric-psnr/src/lib.rs")).unwrap();
    let shown_c = readme.split("```c\n").find(|b| b.starts_with("/* A vaelab metric plugin")).expect("the C example");
    assert!(shown_c.starts_with(&c_source) && shown_c[c_source.len()..].starts_with("```"), "README's C example differs");
    assert_eq!(readme_block(&readme, "rust"), rust_source, "README's Rust example differs");

    let build = readme_block(&readme, "sh");
    let linux = build.lines().find(|l| l.starts_with("cc ") && l.contains("-shared")).expect("a Linux build line");
    let dir = scratch("readme-c");
    std::fs::write(dir.join("metric_c_example.c"), &c_source).unwrap();
    let command = linux.replace("plugins/abi/include", &header_dir().display().to_string());
    let status = Command::new("sh").arg("-c").arg(&command).current_dir(&dir).status().unwrap();
    assert!(status.success(), "{command}");
    let set = PluginSet::load(&[dir.join("libmetric_c_example.so")]).map_err(|(_, e)| e.to_string()).unwrap();
    let names: Vec<&str> = set.libraries[0].metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["psnr_c", "mae_c"]);
}

/// Tables only grow within ABI 1: a plugin compiled against the first ABI 1 header (frozen under
/// `tests/fixtures/plugins/abi1-frozen/`, smaller tables) loads into today's vaelab, its metric
/// scores and its block runs forward and backward; the appended fields read as absent. A plugin
/// built against today's header gives its definition text.
#[test]
fn a_plugin_built_against_the_first_abi1_header_still_works() {
    assert!(abi::VAELAB_METRIC_SIZE_V1 < std::mem::size_of::<abi::VaelabMetric>());
    assert!(abi::VAELAB_BLOCK_SIZE_V1 < std::mem::size_of::<abi::VaelabBlock>());
    let dir = scratch("old-abi");
    let lib = dir.join(plugin::library_file_name("old_abi1"));
    let frozen = workspace().join("tests/fixtures/plugins/abi1-frozen");
    compile_c_against(&workspace().join("tests/fixtures/plugins/old_abi_plugin.c"), &lib, &[], true, &frozen);
    let set = PluginSet::load(&[lib]).map_err(|(_, e)| e.to_string()).unwrap();
    let old = &set.libraries[0];
    assert_eq!((old.metrics.len(), old.blocks.len(), old.metrics[0].definition.clone()), (1, 1, None));
    let mut registry = MetricRegistry::builtin();
    set.register_metrics(&mut registry, 10).unwrap();
    let (real, fake) = (random_batch(5, 20), random_batch(6, 20));
    let got = registry.get("old_mean_gap").unwrap().compute(&real, &fake).unwrap();
    let gap = |r: std::ops::Range<usize>| {
        let sum = |b: &ImageBatch| b.pixels[r.start * 256..r.end * 256].iter().map(|v| *v as f64).sum::<f64>();
        (sum(&fake) - sum(&real)).abs() / ((r.end - r.start) * 256) as f64
    };
    let want = (gap(0..10) + gap(10..20)) / 2.0;
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    let block = set.instantiate("old_scale", &ron::Value::Unit, FeatShape::Flat(3)).unwrap();
    let x = [0.5f32, -1.0, 2.0, 0.0, 1.0, 3.0];
    assert_eq!(block.forward(2, &x, &[], true).unwrap(), [1.0, -2.0, 4.0, 0.0, 2.0, 6.0]);
    assert_eq!(block.backward(2, &x, &[], &[1.0; 6]).unwrap().0, [2.0; 6]);

    // Today's header: the C example's `psnr_c` carries its own definition.
    let c_example = PluginSet::load(&[PathBuf::from(vaelab_metric_c_example::LIBRARY)]).map_err(|(_, e)| e.to_string()).unwrap();
    let mut registry = MetricRegistry::builtin();
    c_example.register_metrics(&mut registry, 10).unwrap();
    let definition = registry.get("psnr_c").unwrap().definition().to_string();
    assert!(definition.starts_with("10 log10(1 / MSE) in dB") && definition.contains("[plugin metric from "), "{definition}");
    assert!(!registry.get("mae_c").unwrap().definition().contains('['), "no definition: the source alone");
}

/// A metric plugin in C++ (`plugins/metric-cpp-example`, `extern "C"` entry points, exceptions
/// caught into the error buffer) loads and agrees with an independent computation; a C++ exception
/// becomes a reported error.
#[test]
fn a_cpp_metric_plugin_loads_and_agrees_with_an_independent_computation() {
    let set = PluginSet::load(&[PathBuf::from(vaelab_metric_cpp_example::LIBRARY)]).map_err(|(_, e)| e.to_string()).unwrap();
    let mut registry = MetricRegistry::builtin();
    set.register_metrics(&mut registry, 7).unwrap();
    let metric = registry.get("gradient_mse_cpp").unwrap();
    assert!(metric.definition().starts_with("mean over images of the squared difference"), "{}", metric.definition());
    let (real, fake) = (random_batch(7, 16), random_batch(8, 16));
    // Forward differences along x and y of every 16×16 image, squared differences averaged per batch
    // (batches of 7, 7, 2), batch values weighted by image count.
    let diffs = |b: &ImageBatch, i: usize| -> Vec<f64> {
        let p = b.image(i);
        let at = |y: usize, x: usize| p[y * 16 + x] as f64;
        let mut d: Vec<f64> = (0..16).flat_map(|y| (0..15).map(move |x| (y, x))).map(|(y, x)| at(y, x + 1) - at(y, x)).collect();
        d.extend((0..15).flat_map(|y| (0..16).map(move |x| (y, x))).map(|(y, x)| at(y + 1, x) - at(y, x)));
        d
    };
    let batch_value = |r: std::ops::Range<usize>| {
        let (mut sum, mut count) = (0.0, 0usize);
        for i in r {
            for (a, b) in diffs(&real, i).iter().zip(diffs(&fake, i)) {
                sum += (a - b) * (a - b);
                count += 1;
            }
        }
        sum / count as f64
    };
    let want = (7.0 * batch_value(0..7) + 7.0 * batch_value(7..14) + 2.0 * batch_value(14..16)) / 16.0;
    let got = metric.compute(&real, &fake).unwrap();
    assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
    // Two-pixel-wide images: the plugin throws; vaelab reports its message.
    let tiny = |seed| ImageBatch { n: 1, c: 1, h: 1, w: 2, pixels: vec![seed as f32 / 10.0; 2], factors: vec![], bit_depth: 8 };
    let err = metric.compute(&tiny(1), &tiny(2)).unwrap_err().to_string();
    assert!(err.contains("images need at least 2x2 pixels"), "{err}");
}
