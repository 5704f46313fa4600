//! A fitted PixelCNN prior's file (`prior.safetensors`): every `prior.*` tensor, with the fitting
//! report (which names the checkpoint step it was fitted to) as metadata.

use super::RunError;
use dfdx::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use vaelab_nn::ParamStore;

/// Writes every `prior.*` tensor, and the report as metadata, atomically.
pub fn save(path: &Path, store: &ParamStore<Cpu>, report: &impl serde::Serialize) -> Result<(), RunError> {
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = store
        .iter()
        .filter(|p| p.group == vaelab_nn::ParamGroup::Prior)
        .map(|p| (p.name.clone(), p.tensor.as_vec().iter().flat_map(|v| v.to_le_bytes()).collect(), p.shape.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, bytes, shape)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).expect("sizes match"))
        })
        .collect();
    // One metadata key: safetensors keeps metadata in a HashMap, whose order would change the bytes.
    let metadata: BTreeMap<String, String> =
        [("report".to_string(), serde_json::to_string(report).expect("reports serialize"))].into();
    let bytes = safetensors::serialize(views, &Some(metadata.into_iter().collect()))
        .map_err(|e| RunError::Write(path.to_path_buf(), e.to_string()))?;
    super::checkpoint::write_atomic(path, &bytes).map_err(|e| RunError::Write(path.to_path_buf(), e.to_string()))
}

/// Lays `run_dir/prior.safetensors` over a store loaded from the checkpoint of step `model_step`,
/// when the prior was fitted to that checkpoint's codes. Returns whether it did: a prior fitted to
/// another step would sample codes the decoder no longer means, so the frequencies serve instead.
pub fn overlay<D: Device<f32>>(run_dir: &Path, model_step: usize, store: &mut ParamStore<D>) -> Result<bool, RunError> {
    let path = super::paths::prior_file(run_dir);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(false) };
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| RunError::Prior(format!("{}: {e}", path.display())))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| RunError::Prior(format!("{}: {e}", path.display())))?;
    let fitted_to = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("report"))
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
        .and_then(|r| r["model_step"].as_u64())
        .map(|s| s as usize);
    if fitted_to != Some(model_step) {
        return Ok(false);
    }
    for (name, view) in file.tensors() {
        let id = store
            .find(&name)
            .ok_or_else(|| RunError::Prior(format!("{}: `{name}` is not a parameter of this run's prior", path.display())))?;
        let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let expected: usize = store.get(id).shape.iter().product();
        if values.len() != expected {
            return Err(RunError::Prior(format!(
                "{}: `{name}` has {} values, the spec makes {expected}",
                path.display(),
                values.len()
            )));
        }
        store.set_values(id, values);
    }
    Ok(true)
}
