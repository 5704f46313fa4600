//! The progress bars of the evaluation and apply commands.

/// A progress bar over `len` items, hidden when `show` is false or stderr is not a terminal.
pub(crate) fn progress_bar(show: bool, len: usize, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]")
            .expect("a valid template"),
    );
    bar.set_message(what.to_string());
    bar
}
