//! Opening one plugin library and checking its table against the ABI before anything is called.
//! Libraries are never unloaded: their code may still be referenced from tables, contexts and
//! recorded backward ops, and unloading Rust cdylibs is unsound with thread-locals anyway.

use super::raw::text;
use super::PluginError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use vaelab_plugin_abi as abi;

/// A metric as its library declares it.
#[derive(Clone, Debug)]
pub struct MetricDecl {
    pub name: String,
    pub outputs: Vec<String>,
    pub flags: u32,
    /// The plugin's own definition text (`VaelabMetric::definition`, appended within ABI 1).
    pub definition: Option<String>,
    pub(crate) table: abi::VaelabMetric,
}

// SAFETY: the copied tables point at the library's static data and functions (never unloaded).
unsafe impl Send for MetricDecl {}
unsafe impl Sync for MetricDecl {}
unsafe impl Send for BlockDecl {}
unsafe impl Sync for BlockDecl {}

impl MetricDecl {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// A model block as its library declares it.
#[derive(Clone, Debug)]
pub struct BlockDecl {
    pub name: String,
    pub(crate) table: abi::VaelabBlock,
}

/// A loaded, checked plugin library.
#[derive(Debug)]
pub struct Library {
    /// The path it was opened from (canonical).
    pub path: PathBuf,
    /// The name in its table, e.g. `metric-psnr`.
    pub name: String,
    pub abi_version: u32,
    pub metrics: Vec<MetricDecl>,
    pub blocks: Vec<BlockDecl>,
}

// SAFETY: the tables hold pointers to the library's static data and functions, which live forever
// (libraries are never unloaded) and are only read.
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

/// Opens `path` once per process; later calls return the same checked library.
pub fn open(path: &Path) -> Result<Arc<Library>, PluginError> {
    static OPENED: OnceLock<Mutex<HashMap<PathBuf, Arc<Library>>>> = OnceLock::new();
    if !path.exists() {
        return Err(PluginError::Missing(path.to_path_buf()));
    }
    let canonical = path.canonicalize().map_err(|e| PluginError::Open(path.to_path_buf(), e.to_string()))?;
    let mut opened = OPENED.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(lib) = opened.get(&canonical) {
        return Ok(lib.clone());
    }
    let lib = Arc::new(load(&canonical)?);
    opened.insert(canonical, lib.clone());
    Ok(lib)
}

fn load(path: &Path) -> Result<Library, PluginError> {
    let file = || path.to_path_buf();
    // SAFETY: loading runs the library's initialisers; that is the trust a user gives a plugin by naming it.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Open(file(), short_reason(&e, path)))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let symbol = |name: &'static str| PluginError::MissingSymbol(file(), name);

    // SAFETY: the symbol's type is fixed by the ABI; a library that exports it with another type is
    // not a vaelab plugin and breaks the contract the user opted into.
    let version: libloading::Symbol<abi::AbiVersionFn> =
        unsafe { lib.get(abi::ABI_VERSION_SYMBOL.as_bytes()) }.map_err(|_| symbol(abi::ABI_VERSION_SYMBOL))?;
    let found = unsafe { version() };
    if found != abi::VAELAB_ABI_VERSION {
        return Err(PluginError::WrongVersion { file: file(), found, expected: abi::VAELAB_ABI_VERSION });
    }
    let entry: libloading::Symbol<abi::PluginFn> =
        unsafe { lib.get(abi::PLUGIN_SYMBOL.as_bytes()) }.map_err(|_| symbol(abi::PLUGIN_SYMBOL))?;
    let table = unsafe { entry() };
    let bad = |what: String| PluginError::BadTable(file(), what);
    // SAFETY (this block): pointers come from the table; each table's size is checked before
    // any field beyond `size` is read.
    unsafe {
        let table = table.as_ref().ok_or_else(|| bad("vaelab_plugin() returned NULL".into()))?;
        check_size(path, "VaelabPlugin", table.size, std::mem::size_of::<abi::VaelabPlugin>())?;
        let table = *table;
        if table.abi_version != found {
            return Err(bad(format!("its table says ABI {} but vaelab_plugin_abi_version() says {found}", table.abi_version)));
        }
        let name = text(table.name).ok_or_else(|| bad("the plugin name is NULL or not UTF-8".into()))?;
        let mut metrics = Vec::new();
        for i in 0..table.n_metrics {
            let m = *table.metrics.add(i);
            if m.is_null() {
                return Err(bad(format!("metric {i} is NULL")));
            }
            // `size` is the first field of every table: readable whatever header the plugin used.
            let size = std::ptr::addr_of!((*m).size).read();
            check_size(path, &format!("VaelabMetric {i}"), size, abi::VAELAB_METRIC_SIZE_V1)?;
            let m = &read_table(m, size);
            let name = text(m.name).ok_or_else(|| bad(format!("metric {i} has no name")))?;
            if m.create.is_none() || m.compute.is_none() || m.destroy.is_none() {
                return Err(bad(format!("metric `{name}` lacks create, compute or destroy")));
            }
            if m.n_outputs == 0 {
                return Err(bad(format!("metric `{name}` declares no outputs")));
            }
            let outputs = (0..m.n_outputs)
                .map(|j| text(*m.output_names.add(j)).ok_or_else(|| bad(format!("metric `{name}`: output {j} has no name"))))
                .collect::<Result<Vec<_>, _>>()?;
            let definition = text(m.definition);
            metrics.push(MetricDecl { name, outputs, flags: m.flags, definition, table: *m });
        }
        let mut blocks = Vec::new();
        for i in 0..table.n_blocks {
            let b = *table.blocks.add(i);
            if b.is_null() {
                return Err(bad(format!("block {i} is NULL")));
            }
            let size = std::ptr::addr_of!((*b).size).read();
            check_size(path, &format!("VaelabBlock {i}"), size, abi::VAELAB_BLOCK_SIZE_V1)?;
            let b = &read_table(b, size);
            let name = text(b.name).ok_or_else(|| bad(format!("block {i} has no name")))?;
            let t = *b;
            if t.create.is_none()
                || t.param_count.is_none()
                || t.param_decl.is_none()
                || t.forward.is_none()
                || t.backward.is_none()
                || t.destroy.is_none()
            {
                return Err(bad(format!("block `{name}` lacks one of its six functions")));
            }
            blocks.push(BlockDecl { name, table: t });
        }
        Ok(Library { path: file(), name, abi_version: found, metrics, blocks })
    }
}

/// A copy of a plugin's table of `size` bytes: the fields it covers, the rest zero (NULL, `None`).
/// A plugin built against an older header has a smaller table; reading the host's full struct from
/// it would read past its end.
///
/// # Safety
/// `table` must point to at least `size` readable bytes; `T` must be valid when all-zero (pointers,
/// integers and `Option`s of function pointers).
unsafe fn read_table<T: Copy>(table: *const T, size: usize) -> T {
    let mut out = std::mem::MaybeUninit::<T>::zeroed();
    let n = size.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(table as *const u8, out.as_mut_ptr() as *mut u8, n);
    out.assume_init()
}

fn check_size(path: &Path, table: &str, size: usize, expected: usize) -> Result<(), PluginError> {
    if size < expected {
        return Err(PluginError::TableTooSmall { file: path.to_path_buf(), table: table.into(), size, expected });
    }
    Ok(())
}

/// The loader's reason without the path it repeats (dlopen messages begin with it).
fn short_reason(e: &libloading::Error, path: &Path) -> String {
    let full = e.to_string();
    let p = path.display().to_string();
    match full.find(&p) {
        Some(i) => full[i + p.len()..].trim_start_matches(':').trim().to_string(),
        None => full,
    }
}
