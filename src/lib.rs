//! Sluice: the command line, and the IO around the sans-IO media core. The `sluice`
//! binary is [`main`]; the library exists so the fuzz targets can reach the real
//! router, gate and edge ([`fuzzing`]).

mod cli;
mod edge;
mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod ingest;
mod limits;
mod metrics;
mod node;
mod origin;
mod package;
mod sdi;
mod support;

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

// Parsed once per process: the size of the `serve` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a node: with no arguments, a one-node cluster in ./sluice-data.
    Serve(node::ServeArgs),
    /// Channels: create (prints the stream key once), list, show, delete.
    Channel {
        #[command(subcommand)]
        command: cli::ChannelCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Stream keys: create (printed once), revoke.
    Key {
        #[command(subcommand)]
        command: cli::KeyCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Admin API tokens: create (printed once), list, revoke.
    Token {
        #[command(subcommand)]
        command: cli::TokenCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// The cluster's members and leader; membership changes.
    Cluster {
        #[command(subcommand)]
        command: cli::ClusterCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Endpoints (nodes, external edges and origins, their parents) and their snapshots.
    Endpoint {
        #[command(subcommand)]
        command: cli::EndpointCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Live streams: status, stop, history (a channel's generations).
    Stream {
        #[command(subcommand)]
        command: cli::StreamCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Nodes: lease health, what each originates, capture ports.
    Node {
        #[command(subcommand)]
        command: cli::NodeCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Recordings (every generation of a recording channel): list, show, delete.
    Recording {
        #[command(subcommand)]
        command: cli::RecordingCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Private channels' playback: tokens, signing keys (list, rotate, retire).
    Playback {
        #[command(subcommand)]
        command: cli::PlaybackCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Capture ports (found on the nodes' hardware): list, label, enable, bind.
    Port {
        #[command(subcommand)]
        command: cli::PortCommand,
        #[command(flatten)]
        api: cli::ApiArgs,
    },
    /// Configuration files: `check FILE` says what is wrong before a node runs it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// An edge outside the cluster: serves viewers by pull-through from its upstreams.
    Edge(node::edge::EdgeArgs),
    /// Package an FLV or MPEG-TS file (as ffmpeg, an RTMP recorder or an SRT encoder
    /// writes it) into LL-HLS, as the live origin would show it at the end of the stream.
    Package {
        /// The input `.flv` or `.ts` file (told apart by content).
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a `sluice serve --config` file: unknown keys, bad values and addresses,
    /// clashing listeners, unreadable secret and certificate files.
    Check {
        file: PathBuf,
        /// Leave out whether the secret and certificate files can be read (for a file
        /// checked where they do not exist, e.g. when a deployment is built).
        #[arg(long)]
        skip_files: bool,
        #[arg(long)]
        json: bool,
    },
}

/// The `sluice` command: parses the arguments and runs what they ask for.
pub fn main() -> Result<()> {
    // One TLS crypto provider for the process, before anything uses rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            log_to_stderr();
            runtime()?.block_on(node::run(args))
        }
        Command::Edge(args) => {
            log_to_stderr();
            runtime()?.block_on(node::edge::run(args))
        }
        Command::Cluster { command, api } => runtime()?.block_on(cli::cluster(&api, command)),
        Command::Channel { command, api } => runtime()?.block_on(cli::channel(&api, command)),
        Command::Key { command, api } => runtime()?.block_on(cli::key(&api, command)),
        Command::Endpoint { command, api } => runtime()?.block_on(cli::endpoint(&api, command)),
        Command::Token { command, api } => runtime()?.block_on(cli::token(&api, command)),
        Command::Config {
            command:
                ConfigCommand::Check {
                    file,
                    skip_files,
                    json,
                },
        } => node::check::run(&file, skip_files, json),
        Command::Stream { command, api } => runtime()?.block_on(cli::stream(&api, command)),
        Command::Node { command, api } => runtime()?.block_on(cli::node(&api, command)),
        Command::Port { command, api } => runtime()?.block_on(cli::port(&api, command)),
        Command::Recording { command, api } => runtime()?.block_on(cli::recording(&api, command)),
        Command::Playback { command, api } => runtime()?.block_on(cli::playback(&api, command)),
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

fn log_to_stderr() {
    use std::io::IsTerminal;
    // Colours for a terminal only: a log file or the journal gets plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,openraft=warn,srt_protocol=warn,srt_tokio=warn",
                )
            }),
        )
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
