//! `portcullis completions SHELL` and `portcullis man`: shell completion scripts and man
//! pages generated from the clap definition, so they list exactly the commands and options
//! the binary parses.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Command;
use clap_complete::Shell;

/// Writes the completion script for `shell` to stdout.
pub(crate) fn completions(shell: Shell, mut command: Command) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    // clap_complete panics when its writer fails: generate into memory, then write, so a
    // closed pipe (`| head`) is an error like any other.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// With `dir`: one page per command and subcommand (`portcullis.1`, `portcullis-serve.1`, …)
/// written there. Without: the top-level page on stdout.
pub(crate) fn man(command: Command, dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            let pages = std::fs::read_dir(dir)
                .with_context(|| format!("{}", dir.display()))?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".1"))
                .count();
            eprintln!("{}: {pages} man page(s)", dir.display());
            Ok(())
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("stdout")?;
            out.flush().context("stdout")
        }
    }
}
