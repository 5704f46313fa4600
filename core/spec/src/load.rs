//! Reading spec files: RON parsing, `extends` chains, merging, resolution and validation.

use super::error::{SpecError, SpecErrors};
use super::locate::Locations;
use super::types::{Experiment, ExperimentPatch};
use super::validate::validate_values;
use std::path::{Path, PathBuf};

/// One file of an `extends` chain, kept so that later checks can point into it.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    pub locations: Locations,
}

/// A resolved experiment together with the files it came from (most derived first).
#[derive(Debug)]
pub struct LoadedSpec {
    pub experiment: Experiment,
    pub sources: Vec<SourceFile>,
}

impl LoadedSpec {
    /// An error about `path`, placed in the most derived file that writes it
    /// (or, failing that, at its nearest written ancestor in the top file).
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> SpecError {
        locate_error(&self.sources, path, message.into())
    }
}

fn locate_error(sources: &[SourceFile], path: &str, message: String) -> SpecError {
    let place = sources
        .iter()
        .find(|s| s.locations.contains(path))
        .or_else(|| sources.iter().find(|s| s.locations.find(path).is_some()))
        .or(sources.first());
    let (file, (line, col)) = match place {
        Some(s) => (s.path.clone(), s.locations.find(path).unwrap_or((0, 0))),
        None => (PathBuf::new(), (0, 0)),
    };
    SpecError { file, line, col, path: path.to_string(), message }
}

/// Loads, merges, resolves and value-checks the spec at `path`. Shape checks are separate
/// (`vaelab::check::check_file`, through `nn::infer`) because they need the layer definitions and plugins.
pub fn load_spec(path: &Path) -> Result<LoadedSpec, SpecErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        path: String::new(),
        message: format!("cannot read spec file: {e}"),
    })?;
    load_chain(path.to_path_buf(), text)
}

/// Like [`load_spec`] for text in memory; `extends` is resolved relative to `virtual_path`.
pub fn parse_spec_str(virtual_path: &Path, text: &str) -> Result<LoadedSpec, SpecErrors> {
    load_chain(virtual_path.to_path_buf(), text.to_string())
}

fn load_chain(path: PathBuf, text: String) -> Result<LoadedSpec, SpecErrors> {
    let mut sources: Vec<SourceFile> = Vec::new();
    let mut patches: Vec<ExperimentPatch> = Vec::new();
    let mut next = Some((path, text));
    while let Some((path, text)) = next.take() {
        let locations = Locations::scan(&text);
        let patch = parse_patch(&path, &text, &locations)?;
        let source = SourceFile { path: path.clone(), text, locations };
        if let Some(parent) = &patch.extends {
            let parent_path = path.parent().unwrap_or(Path::new(".")).join(parent);
            let here = |message: String| locate_error(std::slice::from_ref(&source), "extends", message);
            let seen = |p: &Path| sources.iter().chain([&source]).any(|s| same_file(&s.path, p));
            if seen(&parent_path) {
                let mut cycle: Vec<String> = sources.iter().chain([&source]).map(|s| display_name(&s.path)).collect();
                cycle.push(display_name(&parent_path));
                return Err(here(format!("`extends` cycle: {}", cycle.join(" → "))).into());
            }
            let parent_text = std::fs::read_to_string(&parent_path)
                .map_err(|e| here(format!("cannot read extended spec `{parent}` (looked for {}): {e}", parent_path.display())))?;
            next = Some((parent_path, parent_text));
        }
        sources.push(source);
        patches.push(patch);
    }

    // Most derived file wins: fold from the root ancestor down.
    let merged = patches.into_iter().rev().reduce(ExperimentPatch::merge).expect("at least one file");
    let experiment = resolve(merged).map_err(|(p, m)| SpecErrors::from(locate_error(&sources, p, m)))?;
    let mut loaded = LoadedSpec { experiment, sources };
    resolve_data_paths(&mut loaded);
    let problems = validate_values(&loaded.experiment);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(SpecErrors(problems.into_iter().map(|(p, m)| loaded.error_at(&p, m)).collect()))
    }
}

/// Makes a relative dataset folder relative to the spec file that writes it (like `extends`), so a
/// run's resolved `spec.ron` works from any working directory.
fn resolve_data_paths(loaded: &mut LoadedSpec) {
    for (field, path) in [
        ("eval.domain_encoder", &mut loaded.experiment.eval.domain_encoder),
        ("eval.fid_weights", &mut loaded.experiment.eval.fid_weights),
    ] {
        if let Some(dir) = path.as_mut().filter(|d| d.is_relative()) {
            let writer = loaded.sources.iter().find(|s| s.locations.contains(field)).or(loaded.sources.first());
            if let Some(base) = writer.and_then(|s| s.path.parent()) {
                *dir = base.join(&*dir);
            }
        }
    }
    // Plugin paths become absolute: the run records them in its spec.ron, and `eval` or `--resume`
    // must find the same libraries from any working directory.
    let plugin_writer = loaded.sources.iter().find(|s| s.locations.contains("plugins")).or(loaded.sources.first());
    if let Some(base) = plugin_writer.and_then(|s| s.path.parent()) {
        for p in loaded.experiment.plugins.iter_mut().filter(|p| p.is_relative()) {
            *p = absolute(&base.join(&*p));
        }
    }
    if let Some(dir) = loaded.experiment.data.dataset.root_mut() {
        if dir.is_relative() {
            let writer = loaded.sources.iter().find(|s| s.locations.contains("data.dataset")).or(loaded.sources.first());
            if let Some(base) = writer.and_then(|s| s.path.parent()) {
                *dir = base.join(&*dir);
            }
        }
    }
}

fn parse_patch(path: &Path, text: &str, locations: &Locations) -> Result<ExperimentPatch, SpecError> {
    let options = ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    options.from_str::<ExperimentPatch>(text).map_err(|e| {
        let (line, col) = (e.position.line, e.position.col);
        SpecError {
            file: path.to_path_buf(),
            line,
            col,
            path: locations.path_at(line, col).unwrap_or_default(),
            message: ron_message(&e.code),
        }
    })
}

/// ron's messages, reworded where they would confuse someone who has never read ron's source.
fn ron_message(code: &ron::Error) -> String {
    match code {
        ron::Error::NoSuchStructField { expected, found, outer } => format!(
            "unknown field `{found}`{}; expected one of: {}",
            outer.as_ref().map(|o| format!(" in {}", section_name(o))).unwrap_or_default(),
            expected.join(", ")
        ),
        ron::Error::NoSuchEnumVariant { expected, found, outer } => format!(
            "unknown variant `{found}`{}; expected one of: {}",
            outer.as_ref().map(|o| format!(" of {o}")).unwrap_or_default(),
            expected.join(", ")
        ),
        other => format!("{other}"),
    }
}

/// `Train` (the name serde reports for a section's patch) → "the `train` section"; other names as
/// they are.
fn section_name(type_name: &str) -> String {
    match type_name {
        "Experiment" => "the experiment".to_string(),
        "Data" | "Model" | "Train" | "Eval" => format!("the `{}` section", type_name.to_lowercase()),
        other => format!("`{other}`"),
    }
}

fn resolve(p: ExperimentPatch) -> Result<Experiment, (&'static str, String)> {
    Ok(Experiment {
        name: p.name.ok_or(("name", "missing field `name`: every experiment needs a name".to_string()))?,
        seed: p.seed.unwrap_or(0),
        device: p.device.unwrap_or_default(),
        data: p.data.unwrap_or_default().resolve(),
        model: p.model.unwrap_or_default().resolve(),
        losses: p.losses.unwrap_or_default(),
        train: p.train.unwrap_or_default().resolve(),
        eval: p.eval.unwrap_or_default().resolve(),
        plugins: p.plugins.unwrap_or_default(),
        adversarial: p.adversarial.unwrap_or_default(),
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn display_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// `path` made absolute against the working directory, with `.` and `..` resolved by name (the file
/// need not exist yet, and a symlinked folder keeps the name the user wrote).
pub fn absolute(path: &Path) -> PathBuf {
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in full.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
