//! Checkpoints: one safetensors file holding parameters (by their store names), optimizer state
//! (`optim.first.<name>`, `optim.second.<name>`) and, in the metadata, the step and update count.
//! Files are written to a temporary name and renamed, so a crash or a full disk never leaves a
//! half-written checkpoint behind, and `latest` is only updated after the rename.

use dfdx::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use vaelab_nn::optim::Optimizer;
use vaelab_nn::ParamStore;

pub const FORMAT: &str = "vaelab-checkpoint-1";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read checkpoint {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a vaelab checkpoint: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("checkpoint {path} does not match the model: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("no checkpoint in {dir} (expected a `latest` file naming one)")]
    None { dir: PathBuf },
}

/// What a checkpoint restores besides tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    /// Steps completed: training resumes at this step index.
    pub step: usize,
    pub updates: u64,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `dir/step-NNNNNNN.safetensors` atomically, then points `dir/latest` at it.
pub fn save<D: Device<f32>>(
    dir: &Path,
    store: &ParamStore<D>,
    opts: &[&Optimizer<D>],
    info: &CheckpointInfo,
) -> Result<PathBuf, CheckpointError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for p in store.iter() {
        tensors.push((p.name.clone(), p.shape.clone(), f32_bytes(&p.tensor.as_vec())));
    }
    // Optimizer state is keyed by parameter name; the optimizers own disjoint parameter groups.
    for opt in opts {
        for (prefix, map) in [("optim.first.", &opt.first), ("optim.second.", &opt.second)] {
            for (name, t) in map {
                tensors.push((format!("{prefix}{name}"), vec![t.shape().0], f32_bytes(&t.as_vec())));
            }
        }
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("consistent sizes")))
        .collect();
    let mut meta: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), info.step.to_string()),
        ("updates".to_string(), info.updates.to_string()),
    ]
    .into();
    for o in opts.iter().skip(1) {
        meta.insert(o.group.updates_key().into(), o.updates.to_string());
    }
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| CheckpointError::Write { path: dir.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    let path = dir.join(format!("step-{:07}.safetensors", info.step));
    write_atomic(&path, &bytes).map_err(write_err(&path))?;
    let latest = latest_pointer(dir);
    write_atomic(&latest, path.file_name().unwrap().to_string_lossy().as_bytes()).map_err(write_err(&latest))?;
    Ok(path)
}

/// Writes to `path.tmp`, syncs, then renames over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The file naming the newest complete checkpoint of `dir`.
pub fn latest_pointer(dir: &Path) -> PathBuf {
    dir.join("latest")
}

/// The checkpoint that `dir/latest` names.
pub fn latest(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let name = std::fs::read_to_string(latest_pointer(dir)).map_err(|_| CheckpointError::None { dir: dir.to_path_buf() })?;
    Ok(dir.join(name.trim()))
}

/// Loads parameters (and, when `opt` is given, optimizer state) into an already built store.
pub fn load<D: Device<f32>>(
    path: &Path,
    store: &mut ParamStore<D>,
    opts: &mut [&mut Optimizer<D>],
) -> Result<CheckpointInfo, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read { path: path.to_path_buf(), source })?;
    let format_err = |reason: String| CheckpointError::Format { path: path.to_path_buf(), reason };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format_err(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(format_err(format!("metadata `format` is {:?}, expected {FORMAT:?}", meta.get("format"))));
    }
    let number =
        |key: &str| meta.get(key).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| format_err(format!("missing `{key}`")));
    let info = CheckpointInfo { step: number("step")? as usize, updates: number("updates")? };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format_err(e.to_string()))?;
    let read = |name: &str| -> Option<Vec<f32>> {
        let t = st.tensor(name).ok()?;
        Some(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    };
    let mismatch = |reason: String| CheckpointError::Mismatch { path: path.to_path_buf(), reason };
    let mut loaded = BTreeMap::new();
    for p in store.iter() {
        let v = read(&p.name).ok_or_else(|| mismatch(format!("it has no tensor `{}`", p.name)))?;
        if v.len() != p.tensor.shape().0 {
            return Err(mismatch(format!("`{}` has {} values, the model needs {}", p.name, v.len(), p.tensor.shape().0)));
        }
        loaded.insert(p.name.clone(), v);
    }
    for (name, v) in loaded {
        let id = store.find(&name).expect("name from the store");
        store.set_values(id, v);
    }
    for (i, opt) in opts.iter_mut().enumerate() {
        opt.updates = if i == 0 { info.updates } else { number(opt.group.updates_key())? };
        opt.first.clear();
        opt.second.clear();
        for name in st.names() {
            for (prefix, second) in [("optim.first.", false), ("optim.second.", true)] {
                let owned = |p: &&str| store.find(p).is_some_and(|id| opt.owns(store.get(id).group));
                if let Some(param) = name.strip_prefix(prefix).filter(owned) {
                    let v = read(name).expect("listed tensor");
                    let n = v.len();
                    let t = store.dev.tensor_from_vec(v, (n,));
                    if second {
                        opt.second.insert(param.to_string(), t);
                    } else {
                        opt.first.insert(param.to_string(), t);
                    }
                }
            }
        }
    }
    Ok(info)
}
