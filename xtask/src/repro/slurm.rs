//! `cargo xtask repro --emit slurm DIR`: the suite as a Slurm job array. Each array task trains and
//! evaluates one (entry, seed) with the `vaelab` binary into `DIR/runs/`, under the same names as a
//! local run, and records its timings; `cargo xtask repro --collect --out DIR` then writes the table.

use super::execute::Prepared;
use super::suite::Suite;
use std::fmt::Write as _;
use std::path::Path;
use vaelab::runs::paths;

/// Writes `DIR/specs/<task>.ron` (each task's resolved spec), `DIR/tasks.tsv` and `DIR/job.sh`.
pub fn emit(
    suite: &Suite,
    suite_file: &Path,
    prepared: &[Prepared],
    dir: &Path,
    threads: usize,
    vaelab: &Path,
) -> Result<(), String> {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| format!("cannot create {}: {e}", dir.join("logs").display()))?;
    let mut tasks = String::new();
    for p in prepared {
        // Resolved, so the task needs no other spec file (and the hash stays the same).
        let spec = format!("specs/{}.resolved.ron", p.task.slug());
        write(&spec, &vaelab::spec::format_resolved(&p.experiment))?;
        let run = p.run_dir.strip_prefix(dir).unwrap_or(&p.run_dir);
        let _ = writeln!(tasks, "{}\t{spec}\t{}\t{}", p.task.slug(), run.display(), super::execute::run_hash(&p.experiment));
    }
    write("tasks.tsv", &tasks)?;
    write("job.sh", &script(&suite.name, prepared.len(), threads, vaelab))?;
    let job = dir.join("job.sh");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755));
    }
    eprintln!(
        "wrote {} ({} tasks). Submit from {} with `sbatch job.sh`; then `cargo xtask repro --suite {} --collect --out {}`",
        job.display(),
        prepared.len(),
        dir.display(),
        suite_file.display(),
        dir.display()
    );
    Ok(())
}

/// The job-array script. Paths in `tasks.tsv` are relative to the script's folder (the submit
/// directory), so the folder can move to the cluster's shared file system as a whole.
pub fn script(suite: &str, tasks: usize, threads: usize, vaelab: &Path) -> String {
    // The run directory's files, spelled by `vaelab::runs::paths` with the shell's `$run` as the directory.
    let run = Path::new("$run");
    let metrics = paths::metrics_file(&paths::eval_dir(run));
    let record = paths::repro_record(run);
    let latest = vaelab::runs::checkpoint::latest_pointer(&paths::checkpoints_dir(run));
    format!(
        r#"#!/bin/bash
#SBATCH --job-name=vaelab-{suite}
#SBATCH --array=0-{last}
#SBATCH --cpus-per-task={threads}
#SBATCH --output=logs/%A_%a.out
# Written by `cargo xtask repro --emit slurm`: one array task per (entry, seed) of suite `{suite}`.
# Set VAELAB to the vaelab binary on the cluster [default: the one built here].
set -euo pipefail
cd "${{SLURM_SUBMIT_DIR:-$(dirname "$0")}}"
VAELAB="${{VAELAB:-{vaelab}}}"
THREADS="${{SLURM_CPUS_PER_TASK:-{threads}}}"
IFS=$'\t' read -r name spec run hash < <(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" tasks.tsv)
if [ -f "{metrics}" ] && [ -f "{record}" ]; then
    echo "$name: already done"
    exit 0
fi
start=$(date +%s.%N)
if [ -f "{latest}" ]; then
    "$VAELAB" train --resume "$run" --threads "$THREADS" --no-eval
else
    "$VAELAB" train "$spec" --out "$run" --threads "$THREADS" --no-eval
fi
trained=$(date +%s.%N)
"$VAELAB" eval "$run" --threads "$THREADS"
done_at=$(date +%s.%N)
awk -v h="$hash" -v t="$THREADS" -v a="$start" -v b="$trained" -v c="$done_at" \
    'BEGIN {{ printf "{{\"hash\": \"%s\", \"threads\": %d, \"train_s\": %.3f, \"eval_s\": %.3f}}\n", h, t, b - a, c - b }}' \
    > "{record}"
echo "$name: done"
"#,
        last = tasks.saturating_sub(1),
        vaelab = vaelab.display(),
        metrics = metrics.display(),
        record = record.display(),
        latest = latest.display(),
    )
}
