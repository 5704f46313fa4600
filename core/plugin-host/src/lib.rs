//! The plugin host: shared libraries loaded at run time through the C ABI of `vaelab-plugin-abi`.
//!
//! * [`library`]: opening a library and checking its tables (version, sizes, functions).
//! * [`metric`]: plugin metrics behind the evaluator's [`Metric`](vaelab_metrics::metric::Metric) trait.
//! * [`block`]: plugin model blocks behind [`nn::ExternalBlock`](vaelab_nn::ExternalBlock).
//! * `raw`: error buffers, configurations and C strings as the ABI passes them.
//!
//! A [`PluginSet`] is the set of libraries one run uses: those its spec names, plus `--plugin` and
//! `VAELAB_PLUGIN_PATH`, all recorded as absolute paths in the run's resolved spec.

pub mod block;
pub mod isolated;
pub mod library;
pub mod metric;
mod raw;

pub use library::{BlockDecl, Library, MetricDecl};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vaelab_metrics::registry::MetricRegistry;
use vaelab_nn::{BlockSource, ExternalBlock, FeatShape};
use vaelab_plugin_abi as abi;

/// The environment variable with extra plugin files or folders (`:`-separated, `;` on Windows).
pub const PLUGIN_PATH_VAR: &str = "VAELAB_PLUGIN_PATH";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {0}: no such file")]
    Missing(PathBuf),
    #[error("plugin {0}: cannot load it as a shared library: {1}")]
    Open(PathBuf, String),
    #[error("plugin {0}: missing symbol `{1}`: not a vaelab plugin, or built without `export_plugin!`")]
    MissingSymbol(PathBuf, &'static str),
    #[error(
        "plugin {file}: wrong ABI version: the library was built for ABI {found}, this vaelab speaks ABI {expected}; \
         rebuild the plugin against vaelab-plugin-abi with ABI {expected}"
    )]
    WrongVersion { file: PathBuf, found: u32, expected: u32 },
    #[error(
        "plugin {file}: its {table} table is {size} bytes, smaller than the {expected} bytes of ABI 1; \
         it was built against a broken or foreign header"
    )]
    TableTooSmall { file: PathBuf, table: String, size: usize, expected: usize },
    #[error("plugin {0}: bad table: {1}")]
    BadTable(PathBuf, String),
    #[error("{kind} `{name}` is exported by two plugins: {first} and {second}")]
    Duplicate { kind: &'static str, name: String, first: PathBuf, second: PathBuf },
    #[error("metric `{name}` from plugin {file} has the name of a built-in metric; rename it in the plugin")]
    ShadowsBuiltin { name: String, file: PathBuf },
    #[error("plugin folder {0}: {1}")]
    Folder(PathBuf, String),
}

/// The libraries one run uses, checked for clashing names.
#[derive(Clone, Default)]
pub struct PluginSet {
    pub libraries: Vec<Arc<Library>>,
}

/// The platform's file name for library `stem`: `libstem.so`, `libstem.dylib` or `stem.dll`.
pub fn library_file_name(stem: &str) -> String {
    format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// The files one plugin entry stands for: a file, every library in a folder (sorted by name), or a
/// bare library name completed with the platform's prefix and suffix.
pub fn expand_entry(entry: &Path) -> Result<Vec<PathBuf>, PluginError> {
    if entry.is_dir() {
        let read = std::fs::read_dir(entry).map_err(|e| PluginError::Folder(entry.to_path_buf(), e.to_string()))?;
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.to_string_lossy().ends_with(std::env::consts::DLL_SUFFIX))
            .collect();
        files.sort();
        return Ok(files);
    }
    if !entry.exists() {
        if let Some(stem) = entry.file_name().and_then(|n| n.to_str()) {
            let completed = entry.with_file_name(library_file_name(stem));
            if completed.exists() {
                return Ok(vec![completed]);
            }
        }
    }
    Ok(vec![entry.to_path_buf()])
}

/// Entries from `VAELAB_PLUGIN_PATH`, made absolute against the working directory.
pub fn env_entries() -> Vec<PathBuf> {
    match std::env::var_os(PLUGIN_PATH_VAR) {
        Some(v) => std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).map(|p| absolute(&p)).collect(),
        None => vec![],
    }
}

/// `p` made absolute against the working directory (not canonicalised, so messages keep the user's names).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

impl PluginSet {
    /// Loads every entry. On failure, also returns the index of the entry that failed.
    pub fn load(entries: &[PathBuf]) -> Result<PluginSet, (usize, PluginError)> {
        let mut set = PluginSet::default();
        for (i, entry) in entries.iter().enumerate() {
            for file in expand_entry(entry).map_err(|e| (i, e))? {
                let lib = library::open(&file).map_err(|e| (i, e))?;
                set.add(lib).map_err(|e| (i, e))?;
            }
        }
        Ok(set)
    }

    /// Adds a library unless it is already in the set; names must not clash with the set's or with
    /// built-in metrics.
    pub fn add(&mut self, lib: Arc<Library>) -> Result<(), PluginError> {
        if self.libraries.iter().any(|l| l.path == lib.path) {
            return Ok(());
        }
        let builtin = MetricRegistry::builtin();
        for m in &lib.metrics {
            if builtin.get(&m.name).is_some() || m.name == "elbo" {
                return Err(PluginError::ShadowsBuiltin { name: m.name.clone(), file: lib.path.clone() });
            }
            let dup_inside = lib.metrics.iter().filter(|o| o.name == m.name).count() > 1;
            if let Some(other) = self.metric_owner(&m.name).or(dup_inside.then_some(&lib)) {
                return Err(PluginError::Duplicate {
                    kind: "metric",
                    name: m.name.clone(),
                    first: other.path.clone(),
                    second: lib.path.clone(),
                });
            }
        }
        for b in &lib.blocks {
            let dup_inside = lib.blocks.iter().filter(|o| o.name == b.name).count() > 1;
            if let Some(other) = self.block_owner(&b.name).or(dup_inside.then_some(&lib)) {
                return Err(PluginError::Duplicate {
                    kind: "block",
                    name: b.name.clone(),
                    first: other.path.clone(),
                    second: lib.path.clone(),
                });
            }
        }
        self.libraries.push(lib);
        Ok(())
    }

    fn metric_owner(&self, name: &str) -> Option<&Arc<Library>> {
        self.libraries.iter().find(|l| l.metrics.iter().any(|m| m.name == name))
    }

    fn block_owner(&self, name: &str) -> Option<&Arc<Library>> {
        self.libraries.iter().find(|l| l.blocks.iter().any(|b| b.name == name))
    }

    /// Adds each plugin metric to `registry`; `batch` is how many images one `compute` call sees.
    pub fn register_metrics(&self, registry: &mut MetricRegistry, batch: usize) -> Result<(), String> {
        for lib in &self.libraries {
            for m in &lib.metrics {
                // Out of process unless told otherwise (see `isolated`): a crash costs one metric.
                let metric: Box<dyn vaelab_metrics::metric::Metric> = match isolated::worker() {
                    Some(worker) => {
                        let definition = metric_definition(lib, m, true);
                        Box::new(isolated::IsolatedMetric::new(&lib.path, m.clone(), batch, worker, definition))
                    }
                    None => Box::new(metric::PluginMetric::create(lib.clone(), m.clone(), batch)?),
                };
                registry.register(metric).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    pub fn block_names(&self) -> Vec<&str> {
        self.libraries.iter().flat_map(|l| l.blocks.iter().map(|b| b.name.as_str())).collect()
    }
}

impl BlockSource for PluginSet {
    fn instantiate(&self, name: &str, config: &ron::Value, input: FeatShape) -> Result<Arc<dyn ExternalBlock>, String> {
        let Some(lib) = self.block_owner(name) else {
            let known = self.block_names();
            return Err(if known.is_empty() {
                vaelab_nn::NoBlocks.instantiate(name, config, input).err().expect("NoBlocks always errs")
            } else {
                format!("unknown block `{name}`; the loaded plugins provide: {}", known.join(", "))
            });
        };
        let decl = lib.blocks.iter().find(|b| b.name == name).expect("owner has it").clone();
        let pairs = vaelab_spec::config_pairs(config)?;
        Ok(Arc::new(block::PluginBlock::create(lib.clone(), decl, &pairs, input)?))
    }
}

/// What `metrics.json` says a plugin metric is: the plugin's own definition where it gives one
/// (`VaelabMetric::definition`), and where it comes from.
pub(crate) fn metric_definition(lib: &Library, decl: &library::MetricDecl, isolated: bool) -> String {
    let source = format!(
        "plugin metric from {} (library `{}`){}",
        lib.path.display(),
        lib.name,
        if isolated { ", run in a separate process" } else { "" }
    );
    match &decl.definition {
        Some(d) => format!("{d} [{source}]"),
        None => source,
    }
}

/// `vaelab plugins list`: each library with its ABI version, metrics (outputs, flags) and blocks.
pub fn describe(libs: &[Arc<Library>]) -> String {
    let mut s = String::new();
    for lib in libs {
        writeln!(s, "{}  (`{}`, ABI {})", lib.path.display(), lib.name, lib.abi_version).unwrap();
        for m in &lib.metrics {
            let mut flags = vec![if m.has(abi::VAELAB_METRIC_HIGHER_IS_BETTER) { "higher-is-better" } else { "lower-is-better" }];
            flags.push(if m.has(abi::VAELAB_METRIC_NEEDS_REFERENCE) { "needs-reference" } else { "reference-free" });
            if m.has(abi::VAELAB_METRIC_THREAD_SAFE) {
                flags.push("thread-safe");
            }
            if m.has(abi::VAELAB_METRIC_WHOLE_SET) {
                flags.push("whole-set");
            }
            writeln!(s, "  metric {:<24} outputs: {:<20} {}", m.name, m.outputs.join(", "), flags.join(", ")).unwrap();
        }
        for b in &lib.blocks {
            writeln!(s, "  block  {}", b.name).unwrap();
        }
        if lib.metrics.is_empty() && lib.blocks.is_empty() {
            writeln!(s, "  (exports nothing)").unwrap();
        }
    }
    s
}
