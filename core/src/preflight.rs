//! Plugin blocks stay in process (they sit inside the autodiff graph), so a block that crashes would
//! take training with it at step 1, or at step 40,000. Before training, `vaelab train` therefore
//! runs one forward and one backward of every plugin block on a dummy batch in a child process
//! (`vaelab plugin-worker --blocks`); a crash there is reported with the block's name and library
//! before any step.
//!
//! The child reads the resolved spec (RON) on stdin, builds the model with a block source that
//! records every block it instantiates (with its input shape), and calls each one, announcing
//! `block <i> <phase>` on stdout first; it ends with `ok`, or `error <message>`.

use dfdx::prelude::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use vaelab_models::model::Model;
use vaelab_nn::{BlockSource, ExternalBlock, FeatShape, ParamStore};
use vaelab_plugin_host::isolated::worker;
use vaelab_plugin_host::PluginSet;
use vaelab_spec::Experiment;

/// Records what it instantiates.
struct Recording<'a> {
    inner: &'a PluginSet,
    seen: Mutex<Vec<(Arc<dyn ExternalBlock>, FeatShape)>>,
}

impl BlockSource for Recording<'_> {
    fn instantiate(&self, name: &str, config: &ron::Value, input: FeatShape) -> Result<Arc<dyn ExternalBlock>, String> {
        let block = self.inner.instantiate(name, config, input)?;
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).push((block.clone(), input));
        Ok(block)
    }
}

/// The spec as the child reads it (RON with struct names, as `spec.ron` is written).
fn spec_text(spec: &Experiment) -> String {
    let config = ron::ser::PrettyConfig::default().struct_names(true);
    ron::ser::to_string_pretty(spec, config).expect("specs serialize")
}

/// Whether the spec uses any plugin block (else there is nothing to check). Read from the spec's
/// text, so layers nested at any depth (inside `SpectralNorm(...)`, a discriminator) count.
pub fn uses_blocks(spec: &Experiment) -> bool {
    spec_text(spec).contains("Plugin(")
}

/// Runs the pre-flight check in a child process. `Ok(None)`: nothing to check, or no worker (the
/// library is used by a program other than `vaelab`, or `--in-process`).
pub fn check(spec: &Experiment) -> Result<Option<usize>, String> {
    if !uses_blocks(spec) {
        return Ok(None);
    }
    let Some(worker) = worker() else { return Ok(None) };
    let mut child = Command::new(&worker)
        .args(["plugin-worker", "--blocks"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the plugin pre-flight worker {}: {e}", worker.display()))?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        let _ = stdin.write_all(spec_text(spec).as_bytes());
    }
    let (mut last, mut answer, mut names) = (None, None, Vec::new());
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix("name ") {
            names.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("block ") {
            last = Some(rest.to_string());
        } else if line == "ok" || line.starts_with("error ") {
            answer = Some(line);
        }
    }
    let status = child.wait().map_err(|e| format!("lost the plugin pre-flight worker: {e}"))?;
    let at = |last: &Option<String>| -> String {
        let Some(l) = last else { return "while loading the blocks".into() };
        let (index, phase) = l.split_once(' ').unwrap_or((l, ""));
        let name = index.parse::<usize>().ok().and_then(|i| names.get(i)).cloned().unwrap_or_default();
        format!("in {phase} of block {name}")
    };
    match answer {
        Some(a) if a == "ok" => Ok(Some(names.len())),
        Some(a) => Err(format!("plugin block pre-flight check failed {}, before any training step: {}", at(&last), &a[6..])),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let how = match status.signal() {
                Some(sig) => vaelab_plugin_host::isolated::signal_name(sig),
                None => format!("exit status {status}"),
            };
            Err(format!(
                "plugin block crashed in the pre-flight check ({how}) {}, before any training step; \
                 fix the block or leave it out of the spec",
                at(&last)
            ))
        }
    }
}

/// The child side of [`check`]: returns the exit status.
pub fn worker_main() -> i32 {
    vaelab_plugin_host::isolated::no_core_dumps();
    let stdout = std::io::stdout();
    let say = |line: String| {
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let result = (|| -> Result<(), String> {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| e.to_string())?;
        let spec: Experiment = ron::from_str(&text).map_err(|e| format!("bad spec: {e}"))?;
        let plugins = PluginSet::load(&spec.plugins).map_err(|(_, e)| e.to_string())?;
        let source = Recording { inner: &plugins, seen: Mutex::new(Vec::new()) };
        let mut store = ParamStore::new(Cpu::default(), spec.seed);
        let (c, h, w) = vaelab_spec::image_shape(&spec);
        let shape = FeatShape::Image(c, h, w);
        Model::build(&spec.model, shape, &mut store, &source).map_err(|e| e.to_string())?;
        vaelab_models::adversarial::Gan::build(&spec.adversarial, shape, &mut store, &source).map_err(|e| e.to_string())?;
        let seen = source.seen.into_inner().unwrap_or_else(|p| p.into_inner());
        for (block, _) in &seen {
            say(format!("name {}", block.describe()));
        }
        let batch = 2;
        for (i, (block, input)) in seen.iter().enumerate() {
            // Small, varied values: zeros could hide a division or an index computed from the data.
            let x: Vec<f32> = (0..batch * input.len()).map(|k| 0.1 + 0.8 * ((k * 7919) % 101) as f32 / 100.0).collect();
            let params: Vec<Vec<f32>> = block
                .params()
                .iter()
                .map(|p| (0..p.shape.iter().product::<usize>()).map(|k| 0.01 * ((k % 13) as f32 - 6.0)).collect())
                .collect();
            let views: Vec<&[f32]> = params.iter().map(Vec::as_slice).collect();
            say(format!("block {i} forward"));
            // The block's errors already name it and its library.
            let y = block.forward(batch, &x, &views, true)?;
            say(format!("block {i} backward"));
            let dy = vec![1.0f32; y.len()];
            block.backward(batch, &x, &views, &dy)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            say("ok".into());
            0
        }
        Err(m) => {
            say(format!("error {}", m.replace('\n', " ")));
            1
        }
    }
}
