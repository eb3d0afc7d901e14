//! The seeded fault-injection suite (`sluice_e2e::fault_suite`), a bounded slice:
//! `FAULT_SEEDS` (default `1,2`), three faults each, on three real nodes (`FAULT_NODES`
//! for another count) with an encoder that retries like OBS, admin writes and hls.js. A
//! failing seed prints how to replay it; `bench faults --seeds N` runs as many as asked.

use anyhow::{ensure, Result};
use sluice_e2e::fault_suite::{print_table, run_seed};
use sluice_e2e::{make_small_stream, TempDir};

#[test]
fn seeded_faults_keep_every_invariant() -> Result<()> {
    let seeds: Vec<u64> = std::env::var("FAULT_SEEDS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let nodes: usize = std::env::var("FAULT_NODES")
        .unwrap_or_else(|_| "3".into())
        .parse()?;
    let tmp = TempDir::new("faults")?;
    let fixture = tmp.path().join("gop60.flv");
    make_small_stream(&fixture)?;
    let mut reports = Vec::new();
    for seed in seeds {
        eprintln!("faults: seed {seed}");
        reports.push(run_seed(
            seed,
            nodes,
            3,
            &fixture,
            &tmp.path().join(format!("seed-{seed}")),
        )?);
    }
    print_table(&reports);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .map(|r| {
            format!(
                "seed {}:\n  {}\n  replay: {}",
                r.seed,
                r.violations.join("\n  "),
                r.replay()
            )
        })
        .collect();
    ensure!(
        failed.is_empty(),
        "invariants broken:\n{}",
        failed.join("\n")
    );
    Ok(())
}
