//! Input images for `reconstruct` and `encode`: files read in parallel with the run's
//! preprocessing, handed on in batches of exactly the run's batch size (the last one smaller), in
//! sorted order, so that the same inputs always meet the model in the same batches.

use super::ApplyError;
use rayon::prelude::*;
use std::path::PathBuf;
use vaelab_datasets::{read_input, InputFile, InputImage, Preprocess};

/// Files read per parallel round: bounds memory for folders of any size.
const FILES_PER_ROUND: usize = 256;

/// What happened to the inputs.
#[derive(Debug, Default)]
pub struct InputTally {
    pub files: usize,
    pub images: usize,
    /// Files left out under `--skip-bad`, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Reads `files` and calls `each` with batches of `batch` images, in order. A file that cannot be
/// read stops everything, naming it, unless `skip_bad` (then it is left out with a warning).
pub fn for_each_batch(
    files: &[InputFile],
    pre: &Preprocess,
    batch: usize,
    skip_bad: bool,
    progress: &indicatif::ProgressBar,
    mut each: impl FnMut(Vec<InputImage>) -> Result<(), ApplyError>,
) -> Result<InputTally, ApplyError> {
    let batch = batch.max(1);
    let mut tally = InputTally { files: files.len(), ..Default::default() };
    let mut pending: Vec<InputImage> = Vec::new();
    for round in files.chunks(FILES_PER_ROUND) {
        let read: Vec<Result<Vec<InputImage>, String>> = round.par_iter().map(|f| read_input(f, pre)).collect();
        for (file, result) in round.iter().zip(read) {
            match result {
                Ok(images) => pending.extend(images),
                Err(message) if skip_bad && !message.contains("`size`") => {
                    progress.suspend(|| eprintln!("warning: skipping {}: {message}", file.path.display()));
                    tally.skipped.push((file.path.clone(), message));
                }
                Err(message) => {
                    let hint = if skip_bad { "" } else { " (--skip-bad leaves unreadable files out)" };
                    return Err(ApplyError::Input(format!("{}: {message}{hint}", file.path.display())));
                }
            }
            progress.inc(1);
        }
        while pending.len() >= batch {
            let rest = pending.split_off(batch);
            tally.images += batch;
            each(std::mem::replace(&mut pending, rest))?;
        }
    }
    if !pending.is_empty() {
        tally.images += pending.len();
        each(pending)?;
    }
    if tally.images == 0 {
        return Err(ApplyError::Input("every input file was skipped: nothing to do".into()));
    }
    Ok(tally)
}
