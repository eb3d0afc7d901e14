//! The CLI's client side: commands that call a node's admin API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::serve::ClusterStatus;

/// Where the API is and how to authenticate: `--server` and `--token-file`, or both
/// found in a local `--data-dir`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    #[arg(long, global = true)]
    server: Option<String>,
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl ApiArgs {
    fn resolve(&self) -> Result<(String, String)> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("sluice-data"));
        let server = match &self.server {
            Some(s) => s.clone(),
            None => std::fs::read_to_string(data_dir.join("http.url"))
                .with_context(|| {
                    format!(
                        "no --server, and no running node's http.url in {}",
                        data_dir.display()
                    )
                })?
                .trim()
                .to_string(),
        };
        let token_file = self
            .token_file
            .clone()
            .unwrap_or_else(|| data_dir.join("admin.token"));
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading the admin token from {}", token_file.display()))?
            .trim()
            .to_string();
        Ok((server.trim_end_matches('/').to_string(), token))
    }
}

pub(crate) async fn cluster_status(api: &ApiArgs, json: bool) -> Result<()> {
    let (server, token) = api.resolve()?;
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("{server}/api/v1/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("calling {server}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{server} answered {status}: {text}");
    }
    if json {
        println!("{text}");
        return Ok(());
    }
    let s: ClusterStatus = serde_json::from_str(&text)?;
    println!(
        "leader: {}  term: {}",
        s.leader
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        s.term
    );
    println!(
        "{:<20} {:<16} {:<28} {:<6} healthy",
        "id", "name", "cluster url", "voter"
    );
    for m in s.members {
        println!(
            "{:<20} {:<16} {:<28} {:<6} {}",
            m.id, m.name, m.addr, m.voter, m.healthy
        );
    }
    Ok(())
}
