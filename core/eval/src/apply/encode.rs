//! `vaelab encode RUN_DIR INPUT --out FILE` and its inverse `vaelab decode RUN_DIR CODES --out DIR`.

use super::codes::{read_codes, CodeKind, CodeLayout, CodeRow, CodeWriter};
use super::inputs::{for_each_batch, InputTally};
use super::output::{png_path, rel_text, write_png, ImageFormat, Output};
use super::{ApplyError, BatchCodes, Trained};
use crate::progress::progress_bar;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use vaelab_datasets::{list_inputs, Fit, Split};

/// What `encode` reads.
pub enum EncodeInput {
    /// An image or DICOM file, or a folder of them.
    Files(PathBuf),
    /// A split of the run's own dataset, with its factors (or class labels) as columns.
    Split(Split),
}

pub struct EncodeOptions {
    pub input: EncodeInput,
    /// `.csv`, `.jsonl` or `.npy`.
    pub out: PathBuf,
    pub skip_bad: bool,
    pub force: bool,
    pub fit: Option<Fit>,
    pub progress: bool,
}

/// Encodes every input image into one row of `opts.out`.
pub fn encode(run: &Trained, opts: &EncodeOptions) -> Result<InputTally, ApplyError> {
    run.require_encoder("encode")?;
    super::codes::CodeFormat::of(&opts.out)?;
    let layout = run.layout();
    let files = match &opts.input {
        EncodeInput::Split(split) => return encode_split(run, opts, *split),
        EncodeInput::Files(input) => list_inputs(input).map_err(|e| ApplyError::Input(e.to_string()))?,
    };
    let out_file = Output::file(&opts.out, opts.force)?;
    let labels: Vec<String> = if files.iter().any(|f| f.label.is_some()) { vec!["label".into()] } else { vec![] };
    let mut writer = CodeWriter::create(&opts.out, &layout, &labels)?;
    let pre = run.preprocess(opts.fit);
    let bar = progress_bar(opts.progress, files.len(), "encoding");
    let tally = for_each_batch(&files, &pre, run.spec.data.batch, opts.skip_bad, &bar, |images| {
        let pixels: Vec<Vec<f32>> = images.iter().map(|i| i.pixels.clone()).collect();
        let codes = run.encode(&pixels)?;
        for (i, image) in images.iter().enumerate() {
            let labels = image.label.map(|l| ("label".to_string(), l as f64)).into_iter().collect();
            writer.write(&code_row(&layout, &codes, i, rel_text(&image.rel), labels))?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    writer.finish()?;
    out_file.keep();
    Ok(tally)
}

/// Row `i` of a batch's codes: indices for a quantized code, else z (μ), and log σ² where there is one.
fn code_row(layout: &CodeLayout, codes: &BatchCodes, i: usize, path: String, labels: Vec<(String, f64)>) -> CodeRow {
    let values = match layout.kind {
        CodeKind::Quantized { .. } => codes.indices[i].iter().map(|k| *k as f64).collect(),
        _ => codes.z[i].iter().map(|v| *v as f64).collect(),
    };
    CodeRow { path, labels, values, logvar: codes.logvar.get(i).cloned().unwrap_or_default() }
}

/// `encode --split`: the run's own dataset, in index order, with its ground-truth factors.
fn encode_split(run: &Trained, opts: &EncodeOptions, split: Split) -> Result<InputTally, ApplyError> {
    let dataset = vaelab_runs::data::build_dataset(&run.spec).map_err(crate::EvalError::from)?;
    let n = dataset.len(split);
    if n == 0 {
        return Err(ApplyError::Input(format!("the {} split of this run's dataset is empty", split.name())));
    }
    let out_file = Output::file(&opts.out, opts.force)?;
    let names = dataset.factor_names();
    let layout = run.layout();
    let mut writer = CodeWriter::create(&opts.out, &layout, &names)?;
    let bar = progress_bar(opts.progress, n, "encoding");
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(run.spec.data.batch.max(1)) {
        let batch = dataset.batch(split, chunk);
        let pixels: Vec<Vec<f32>> = (0..batch.n).map(|i| batch.image(i).to_vec()).collect();
        let codes = run.encode(&pixels)?;
        for (i, &index) in chunk.iter().enumerate() {
            let labels = names.iter().cloned().zip(batch.factors[i].iter().map(|v| *v as f64)).collect();
            writer.write(&code_row(&layout, &codes, i, format!("{}/{index:06}", split.name()), labels))?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    writer.finish()?;
    out_file.keep();
    Ok(InputTally { files: n, images: n, skipped: vec![] })
}

pub struct DecodeOptions {
    pub codes: PathBuf,
    pub out: PathBuf,
    pub force: bool,
    /// PNG depth [default: 8-bit].
    pub format: Option<ImageFormat>,
    pub progress: bool,
}

/// Decodes every row of a code file to an image; returns how many.
pub fn decode(run: &Trained, opts: &DecodeOptions) -> Result<usize, ApplyError> {
    if opts.format == Some(ImageFormat::Npy) {
        return Err(ApplyError::Input("decode writes PNG files: --format png8 or png16".into()));
    }
    let layout = run.layout();
    let rows = read_codes(&opts.codes, &layout)?;
    let out_dir = Output::folder(&opts.out, opts.force)?;
    let names: Vec<PathBuf> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| match &r.path {
            Some(p) if safe_relative(Path::new(p)) => png_path(&opts.out, Path::new(p)),
            _ => opts.out.join(format!("decoded-{i:06}.png")),
        })
        .collect();
    let sixteen = opts.format == Some(ImageFormat::Png16);
    let shape = run.image_shape();
    let bar = progress_bar(opts.progress, rows.len(), "decoding");
    for (chunk, paths) in rows.chunks(run.spec.data.batch.max(1)).zip(names.chunks(run.spec.data.batch.max(1))) {
        let z: Vec<Vec<f32>> = match layout.kind {
            CodeKind::Quantized { .. } => {
                let grids: Vec<Vec<usize>> = chunk.iter().map(|r| r.values.iter().map(|v| *v as usize).collect()).collect();
                run.codes_to_z(&grids)
            }
            _ => chunk.iter().map(|r| r.values.iter().map(|v| *v as f32).collect()).collect(),
        };
        let images = run.decode(&z)?;
        images.par_iter().zip(paths).try_for_each(|(img, path)| write_png(path, img, shape, sixteen))?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out_dir.keep();
    Ok(rows.len())
}

/// A path from a code file may name an output only inside the output folder.
fn safe_relative(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// What `encode` prints.
pub fn encode_summary(run: &Trained, tally: &InputTally, out: &Path) -> String {
    let skipped = match tally.skipped.len() {
        0 => String::new(),
        k => format!(" ({k} unreadable file(s) skipped)"),
    };
    format!(
        "encoded {} images from {} files{skipped} into {}: {}",
        tally.images,
        tally.files - tally.skipped.len(),
        out.display(),
        run.layout().describe()
    )
}
