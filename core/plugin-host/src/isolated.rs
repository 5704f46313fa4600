//! Plugin metrics run out of process: a crash in a third-party metric (a segfault, an `abort()`)
//! must cost that metric, not the evaluation. Browsers isolate plugins in a process, PostgreSQL
//! restarts a crashed backend; here each evaluation of a plugin metric runs in a child `vaelab
//! plugin-worker` that loads the library and receives the images over a pipe.
//!
//! The protocol (host → worker, on stdin): one JSON line ([`Request`]), then the fake images and,
//! for metrics that need them, the reference images, as little-endian f32. Worker → host, on stdout:
//! `batch K M` before scoring batch K of M, then one `ok <json scores>` or `error <message>` line.
//! A worker killed by a signal is reported with the signal's name and the last batch it announced.

use super::library::{self, MetricDecl};
use super::metric::PluginMetric;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use vaelab_datasets::ImageBatch;
use vaelab_metrics::metric::{Metric, MetricError, Scored};
use vaelab_plugin_abi as abi;

/// The environment variable naming the worker executable (a `vaelab` binary).
pub const WORKER_VAR: &str = "VAELAB_WORKER";

static IN_PROCESS: AtomicBool = AtomicBool::new(false);

/// `--in-process`: call plugin metrics directly (faster; a crash then ends vaelab).
pub fn set_in_process(yes: bool) {
    IN_PROCESS.store(yes, Ordering::SeqCst);
}

/// The `vaelab` executable that runs plugin metrics: `$VAELAB_WORKER`, or this process when it is
/// the `vaelab` binary. `None` (calls stay in process) under `--in-process`, and for other programs
/// that use this library (test binaries, xtask) unless they set `VAELAB_WORKER`: a `vaelab` found
/// elsewhere could be a stale build speaking another protocol.
pub fn worker() -> Option<PathBuf> {
    if IN_PROCESS.load(Ordering::SeqCst) {
        return None;
    }
    if let Some(w) = std::env::var_os(WORKER_VAR) {
        return Some(PathBuf::from(w));
    }
    let exe = std::env::current_exe().ok()?;
    let name = format!("vaelab{}", std::env::consts::EXE_SUFFIX);
    exe.file_name().is_some_and(|n| n == name.as_str()).then_some(exe)
}

/// A crashing plugin must not leave a core file the size of vaelab in the working folder (CI once
/// ran out of disk): a worker never dumps core, whatever the shell's limit.
pub fn no_core_dumps() {
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads the struct and changes only this process's limit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
}

#[derive(Serialize, Deserialize)]
struct Request {
    library: PathBuf,
    metric: String,
    batch: usize,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    bit_depth: u8,
    reference: bool,
}

#[derive(Serialize, Deserialize)]
struct ScoredWire {
    key: String,
    value: f64,
    note: Option<String>,
}

/// A plugin metric whose every evaluation runs in a child process.
pub struct IsolatedMetric {
    library: PathBuf,
    decl: MetricDecl,
    batch: usize,
    worker: PathBuf,
    definition: String,
}

impl IsolatedMetric {
    pub fn new(library: &Path, decl: MetricDecl, batch: usize, worker: PathBuf, definition: String) -> IsolatedMetric {
        IsolatedMetric { library: library.to_path_buf(), decl, batch: batch.max(1), worker, definition }
    }

    fn fail(&self, message: String) -> MetricError {
        MetricError::Failed { metric: self.decl.name.clone(), message: format!("{message} (plugin {})", self.library.display()) }
    }
}

/// Little-endian bytes of `v`.
fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What a signal number means, for the message.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        4 => "illegal instruction",
        6 => "aborted",
        7 => "bus error",
        8 => "floating-point exception",
        9 => "killed",
        11 => "segmentation fault",
        15 => "terminated",
        _ => "",
    };
    if name.is_empty() {
        format!("signal {signal}")
    } else {
        format!("signal {signal} ({name})")
    }
}

impl Metric for IsolatedMetric {
    fn name(&self) -> &str {
        &self.decl.name
    }
    fn definition(&self) -> &str {
        &self.definition
    }
    fn higher_is_better(&self) -> bool {
        self.decl.has(abi::VAELAB_METRIC_HIGHER_IS_BETTER)
    }
    fn compute(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<f64, MetricError> {
        Ok(self.evaluate(real, fake)?[0].value)
    }

    fn evaluate(&self, real: &ImageBatch, fake: &ImageBatch) -> Result<Vec<Scored>, MetricError> {
        let reference = self.decl.has(abi::VAELAB_METRIC_NEEDS_REFERENCE);
        if reference {
            vaelab_metrics::metric::check_pair(&self.decl.name, real, fake)?;
        }
        let request = Request {
            library: self.library.clone(),
            metric: self.decl.name.clone(),
            batch: self.batch,
            n: fake.n,
            c: fake.c,
            h: fake.h,
            w: fake.w,
            bit_depth: fake.bit_depth,
            reference,
        };
        let mut child = Command::new(&self.worker)
            .arg("plugin-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| self.fail(format!("cannot start the worker {}: {e}", self.worker.display())))?;
        // The worker reads everything before it answers, so writing first cannot deadlock. A worker
        // that dies early closes the pipe: the write fails and its exit status says why.
        let written = {
            let mut stdin = child.stdin.take().expect("piped");
            let header = serde_json::to_string(&request).expect("requests serialize") + "\n";
            stdin.write_all(header.as_bytes()).and_then(|_| stdin.write_all(&le_bytes(&fake.pixels))).and_then(|_| {
                if reference {
                    stdin.write_all(&le_bytes(&real.pixels))
                } else {
                    Ok(())
                }
            })
        };
        let (mut last_batch, mut answer) = (None, None);
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("batch ") {
                last_batch = Some(rest.replacen(' ', " of ", 1));
            } else if line.starts_with("ok ") || line.starts_with("error ") {
                answer = Some(line);
            }
        }
        let status = child.wait().map_err(|e| self.fail(format!("lost the worker: {e}")))?;
        match answer {
            Some(line) if line.starts_with("ok ") => {
                let scores: Vec<ScoredWire> =
                    serde_json::from_str(&line[3..]).map_err(|e| self.fail(format!("unreadable worker answer: {e}")))?;
                Ok(scores.into_iter().map(|s| Scored { key: s.key, value: s.value, note: s.note }).collect())
            }
            Some(line) => Err(MetricError::Failed { metric: self.decl.name.clone(), message: line[6..].to_string() }),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let how = match status.signal() {
                    Some(sig) => format!("crashed: {}", signal_name(sig)),
                    None => format!("crashed: the worker exited with {status}"),
                };
                let when = match &last_batch {
                    Some(b) => format!(" while scoring batch {b}"),
                    None if written.is_err() => " while receiving the images".to_string(),
                    None => " before scoring".to_string(),
                };
                Err(self.fail(format!("{how}{when}")))
            }
        }
    }
}

/// `vaelab plugin-worker`: the child side. Reads one request and its images from stdin, scores them
/// with the plugin in this process, and answers on stdout. Returns the exit status.
pub fn worker_main() -> i32 {
    no_core_dumps();
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let stdout = std::io::stdout();
    let answer = |line: String| {
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let result = (|| -> Result<Vec<Scored>, String> {
        let mut header = String::new();
        stdin.read_line(&mut header).map_err(|e| format!("cannot read the request: {e}"))?;
        let req: Request = serde_json::from_str(&header).map_err(|e| format!("bad request: {e}"))?;
        let len = req.n * req.c * req.h * req.w;
        let read = |stdin: &mut BufReader<_>| -> Result<Vec<f32>, String> {
            let mut bytes = vec![0u8; len * 4];
            Read::read_exact(stdin, &mut bytes).map_err(|e| format!("cannot read the images: {e}"))?;
            Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        let batch = |pixels: Vec<f32>| ImageBatch {
            n: req.n,
            c: req.c,
            h: req.h,
            w: req.w,
            pixels,
            factors: vec![vec![]; req.n],
            bit_depth: req.bit_depth,
        };
        let fake = batch(read(&mut stdin)?);
        let real = if req.reference { batch(read(&mut stdin)?) } else { fake.clone() };
        let lib = library::open(&req.library).map_err(|e| e.to_string())?;
        let decl = lib
            .metrics
            .iter()
            .find(|m| m.name == req.metric)
            .ok_or_else(|| format!("{} has no metric `{}`", req.library.display(), req.metric))?
            .clone();
        let metric = PluginMetric::create(lib, decl, req.batch)?;
        let report = |k: usize, m: usize| answer(format!("batch {k} {m}"));
        // The host names the metric; a failure's message already names the plugin.
        metric.evaluate_with(&real, &fake, Some(&report)).map_err(|e| match e {
            MetricError::Failed { message, .. } => message,
            other => other.to_string(),
        })
    })();
    match result {
        Ok(scores) => {
            let wire: Vec<ScoredWire> =
                scores.into_iter().map(|s| ScoredWire { key: s.key, value: s.value, note: s.note }).collect();
            answer(format!("ok {}", serde_json::to_string(&wire).expect("scores serialize")));
            0
        }
        Err(message) => {
            answer(format!("error {}", message.replace('\n', " ")));
            1
        }
    }
}
