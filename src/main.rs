//! The `sluice` binary.

fn main() -> anyhow::Result<()> {
    sluice::main()
}
