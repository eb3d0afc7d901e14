//! The `sluice` binary: command line, and the IO around the sans-IO media core.

mod package;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Clustered Low-Latency HLS origin/edge server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Package an FLV file (as ffmpeg or an RTMP recorder writes it) into LL-HLS, as the
    /// live origin would show it at the end of the stream.
    Package {
        /// The input `.flv` file.
        input: PathBuf,
        /// Output folder: `index.m3u8` (multivariant) and `source/` (playlist and objects).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        part_target_ms: u32,
        #[arg(long, default_value_t = 2000)]
        segment_target_ms: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Package {
            input,
            out,
            part_target_ms,
            segment_target_ms,
        } => {
            let summary = package::run(&package::Options {
                input,
                out,
                part_target_ms,
                segment_target_ms,
            })?;
            println!("{summary}");
            Ok(())
        }
    }
}
