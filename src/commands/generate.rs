//! `orproxy generate`: shell completions and man pages from the clap definitions.

use crate::cli::{Cli, GenerateArgs};
use anyhow::Context;
use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;
use std::fs;
use std::path::Path;

/// Write `DIR/completions/*` and `DIR/man/*`.
pub(crate) fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    write_all(&args.out_dir)?;
    crate::out!(
        "wrote {} and {}",
        args.out_dir.join("completions").display(),
        args.out_dir.join("man").display()
    )?;
    Ok(())
}

/// Generate every completion script and man page into `out`.
pub(crate) fn write_all(out: &Path) -> anyhow::Result<()> {
    let completions = out.join("completions");
    let man = out.join("man");
    for dir in [&completions, &man] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut cmd = Cli::command();
    for shell in Shell::value_variants() {
        clap_complete::generate_to(*shell, &mut cmd, "orproxy", &completions)
            .with_context(|| format!("cannot write {shell} completions"))?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write man pages into {}", man.display()))?;
    Ok(())
}
