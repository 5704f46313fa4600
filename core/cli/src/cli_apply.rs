//! `vaelab sample`, `reconstruct`, `encode` and `decode`: the command-line side of
//! `vaelab::apply`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use vaelab::apply::{encode, output::ImageFormat, reconstruct, sample, Trained};
use vaelab::datasets::Fit;

/// Options every apply command takes.
#[derive(Args)]
pub struct RunArgs {
    /// The trained run.
    pub run_dir: PathBuf,
    /// A checkpoint file [default: the run's latest].
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Write into an output that already holds files (files of the same names are replaced).
    #[arg(long)]
    pub force: bool,
    /// A plugin library (or folder) replacing one the run was trained with that is missing (repeatable).
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// How many images.
    #[arg(long)]
    pub n: usize,
    /// Output folder: sample-000000.png … (or samples.npy).
    #[arg(long)]
    pub out: PathBuf,
    /// [default: the run's seed]
    #[arg(long)]
    pub seed: Option<u64>,
    /// png8, png16 or npy (one float32 array of shape (N, C, H, W)).
    #[arg(long, default_value = "png8")]
    pub format: ImageFormat,
    /// The prior's spread: 1 is the prior itself; below 1 draws more typical images.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Images decoded at once [default: the run's batch size]; the images do not depend on it.
    #[arg(long)]
    pub batch: Option<usize>,
}

/// Options of the commands that read images.
#[derive(Args)]
pub struct InputArgs {
    /// Leave out files that cannot be decoded (with a warning) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// How images of another size are brought to the run's: exact, resize or center-crop
    /// [default: the run's own `fit`].
    #[arg(long, value_parser = parse_fit)]
    pub fit: Option<Fit>,
}

#[derive(Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// An image file, a DICOM file, or a folder of them (searched recursively).
    pub input: PathBuf,
    #[command(flatten)]
    pub reading: InputArgs,
    /// Output folder: each reconstruction under its input's relative path, and reconstruct.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// png8 or png16 [default: png16 for inputs of more than 8 bits, else png8].
    #[arg(long)]
    pub format: Option<ImageFormat>,
}

#[derive(Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// An image file, a DICOM file, or a folder of them (searched recursively).
    #[arg(required_unless_present = "split", conflicts_with = "split")]
    pub input: Option<PathBuf>,
    /// Encode a split of the run's own dataset instead (train, val or test), with its ground-truth
    /// factors or labels as columns (rows named `<split>/<index>`).
    #[arg(long)]
    pub split: Option<vaelab::datasets::Split>,
    #[command(flatten)]
    pub reading: InputArgs,
    /// The code file: .csv, .jsonl or .npy (with FILE.json naming its rows and columns).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Codes as `vaelab encode` writes them: .csv, .jsonl or .npy.
    pub codes: PathBuf,
    /// Output folder: one PNG per row, named by its `path` (else decoded-000000.png …).
    #[arg(long)]
    pub out: PathBuf,
    /// png8 or png16 [default: png8].
    #[arg(long)]
    pub format: Option<ImageFormat>,
}

fn parse_fit(s: &str) -> Result<Fit, String> {
    match s {
        "exact" => Ok(Fit::Exact),
        "resize" => Ok(Fit::Resize),
        "center-crop" => Ok(Fit::CenterCrop),
        other => Err(format!("unknown fit `{other}`: expected exact, resize or center-crop")),
    }
}

fn open(run: &RunArgs) -> Result<Trained> {
    let plugins: Vec<PathBuf> = run.plugins.iter().map(|p| vaelab::plugin::absolute(p)).collect();
    let (trained, notes) = Trained::open_with(&run.run_dir, run.checkpoint.as_deref(), &plugins)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    Ok(trained)
}

pub fn run_sample(args: SampleArgs) -> Result<()> {
    let trained = open(&args.run)?;
    let opts = sample::SampleOptions {
        n: args.n,
        out: args.out,
        seed: args.seed,
        format: args.format,
        temperature: args.temperature,
        batch: args.batch,
        force: args.run.force,
        progress: true,
    };
    print!("{}", sample::sample(&trained, &opts)?.text());
    Ok(())
}

pub fn run_reconstruct(args: ReconstructArgs) -> Result<()> {
    let trained = open(&args.run)?;
    let opts = reconstruct::ReconstructOptions {
        input: args.input,
        out: args.out.clone(),
        skip_bad: args.reading.skip_bad,
        force: args.run.force,
        fit: args.reading.fit,
        format: args.format,
        progress: true,
    };
    print!("{}", reconstruct::reconstruct(&trained, &opts)?.text(&args.out));
    Ok(())
}

pub fn run_encode(args: EncodeArgs) -> Result<()> {
    let trained = open(&args.run)?;
    let input = match (args.input, args.split) {
        (_, Some(split)) => encode::EncodeInput::Split(split),
        (Some(path), None) => encode::EncodeInput::Files(path),
        (None, None) => anyhow::bail!("give INPUT (a file or folder) or --split"),
    };
    let opts = encode::EncodeOptions {
        input,
        out: args.out.clone(),
        skip_bad: args.reading.skip_bad,
        force: args.run.force,
        fit: args.reading.fit,
        progress: true,
    };
    let tally = encode::encode(&trained, &opts)?;
    println!("{}", encode::encode_summary(&trained, &tally, &args.out));
    Ok(())
}

pub fn run_decode(args: DecodeArgs) -> Result<()> {
    let trained = open(&args.run)?;
    let opts = encode::DecodeOptions {
        codes: args.codes,
        out: args.out.clone(),
        force: args.run.force,
        format: args.format,
        progress: true,
    };
    let n = encode::decode(&trained, &opts)?;
    println!("decoded {n} codes into {}", args.out.display());
    Ok(())
}
