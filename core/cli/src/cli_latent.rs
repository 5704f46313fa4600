//! `vaelab latent RUN_DIR …` and `vaelab explore RUN_DIR`: the command-line side of
//! `vaelab::analysis` and `vaelab::explore`.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use vaelab::analysis::{attributes, embed, interpolate, traverse};
use vaelab::runs::LoadedRun;

#[derive(Args)]
pub struct LatentArgs {
    pub run_dir: PathBuf,
    #[command(subcommand)]
    pub command: LatentCommand,
    /// A checkpoint file [default: the run's latest].
    #[arg(long, global = true)]
    pub checkpoint: Option<PathBuf>,
    /// Test images to encode (the pool that images are picked from and statistics use).
    #[arg(long, global = true, default_value_t = 1000)]
    pub test_images: usize,
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Subcommand)]
pub enum LatentCommand {
    /// A row per latent dimension (channel for spatial codes, position for quantized ones), most
    /// informative first, decoded from −span·σ to +span·σ around a test image's code or the prior mean.
    Traverse {
        /// Start from this test image's code.
        #[arg(long, default_value_t = 0, conflicts_with = "prior")]
        image: usize,
        /// Start from the prior mean instead.
        #[arg(long)]
        prior: bool,
        /// Rows at most.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        /// Columns per row (codebook entries for quantized codes).
        #[arg(long, default_value_t = 9)]
        steps: usize,
        /// Half-width of each row, in σ.
        #[arg(long, default_value_t = 3.0)]
        span: f32,
        /// Spatial codes: only cells y0,x0,y1,x1 of the code grid (end exclusive).
        #[arg(long, value_delimiter = ',')]
        region: Option<Vec<usize>>,
        /// Quantized codes: swap codes at these grid positions (row-major).
        #[arg(long, value_delimiter = ',')]
        positions: Option<Vec<usize>>,
    },
    /// Decode the way from test image A's code to B's (linear, and spherical for Gaussian codes).
    Interpolate {
        from: usize,
        to: usize,
        #[arg(long, default_value_t = 9)]
        steps: usize,
    },
    /// Latent directions between attribute values (factors or class labels), applied to test
    /// images, and how well each latent element predicts each attribute.
    Attributes {
        /// Only this attribute.
        #[arg(long)]
        attribute: Option<String>,
        /// Test images to push along each direction (one grid row each) [default: the first four
        /// test images at the direction's starting value, e.g. grade 0].
        #[arg(long, value_delimiter = ',')]
        images: Option<Vec<usize>>,
        /// Multiples of the direction to add.
        #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,1,1.25")]
        strengths: Vec<f32>,
    },
    /// A 2-D PCA map of the test codes, coloured by each factor or label.
    Embed {
        /// Only colour by this factor.
        #[arg(long)]
        factor: Option<String>,
    },
}

pub fn run_latent(args: LatentArgs) -> Result<()> {
    let run = LoadedRun::open(&args.run_dir, args.checkpoint.as_deref())?;
    let codes = run.encode(run.test_images(args.test_images));
    let dir = vaelab::runs::paths::latent_dir(&run.dir);
    match args.command {
        LatentCommand::Traverse { image, prior, rows, steps, span, region, positions } => {
            let start = if prior { traverse::Start::PriorMean } else { traverse::Start::Image(image) };
            let region = match region.as_deref() {
                None => None,
                Some(&[y0, x0, y1, x1]) => Some((y0, x0, y1, x1)),
                Some(other) => anyhow::bail!("--region takes 4 numbers y0,x0,y1,x1, got {}", other.len()),
            };
            let opts = traverse::TraverseOptions { start, rows, steps, span, region, positions };
            let s = traverse::run(&run, &codes, &opts)?;
            println!("traversal of `{}` ({} latent) from {}:", s.run, s.latent, s.start);
            for (label, score) in s.row_labels.iter().zip(&s.row_scores) {
                println!("  {label:<14} score {score:.4}");
            }
            println!("wrote {}/traverse.png and traverse.json", dir.display());
        }
        LatentCommand::Interpolate { from, to, steps } => {
            let s = interpolate::run(&run, &codes, from, to, steps)?;
            println!("interpolated test image {from} → {to} in {steps} steps ({})", s.rows.join(", "));
            println!("wrote {}/interpolate.png and interpolate.json", dir.display());
        }
        LatentCommand::Attributes { attribute, images, strengths } => {
            let s = attributes::run(&run, &codes, attribute.as_deref(), images.as_deref(), &strengths)?;
            println!("attribute directions of `{}` over {} test images:", s.run, s.images);
            for a in &s.attributes {
                println!(
                    "  {:<12} {} → {}  |direction| {:.3}  best single element z{} ({} {:.3})",
                    a.name, a.from, a.to, a.direction_norm, a.best_element.0, a.probe_kind, a.best_element.1
                );
            }
            println!("wrote {}/attributes-<name>.png, attributes-probe.png and attributes.json", dir.display());
        }
        LatentCommand::Embed { factor } => {
            let s = embed::run(&run, &codes, factor.as_deref())?;
            println!(
                "PCA of {} test codes: PC1 explains {:.1}%, PC2 {:.1}% of the variance",
                s.images,
                100.0 * s.explained_variance[0],
                100.0 * s.explained_variance[1]
            );
            for (_, file) in &s.plots {
                println!("wrote {}/{file}", dir.display());
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ExploreArgs {
    pub run_dir: PathBuf,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address to listen on. The default serves this machine only; anything else exposes the
    /// model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Test images offered as starting points.
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Sliders for the most informative latent dimensions.
    #[arg(long, default_value_t = 16)]
    pub sliders: usize,
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run_explore(args: ExploreArgs) -> Result<()> {
    use vaelab::explore::{ExploreOptions, Explorer};
    let opts = ExploreOptions {
        host: args.host,
        port: args.port,
        images: args.images,
        sliders: args.sliders,
        checkpoint: args.checkpoint,
    };
    let explorer = Explorer::start(&args.run_dir, &opts)?;
    let info = explorer.info();
    eprintln!(
        "exploring `{}` (step {}, {} latent, {} sliders, {} attribute sliders)",
        info.run,
        info.checkpoint_step,
        info.latent,
        info.sliders.len(),
        info.attributes.len()
    );
    if args.host.is_loopback() {
        eprintln!("open {} (bound to loopback: only this machine can connect; Ctrl-C stops)", explorer.url());
    } else {
        eprintln!("open {} (bound to {}: other machines CAN connect; Ctrl-C stops)", explorer.url(), args.host);
    }
    explorer.serve();
    Ok(())
}
