//! `cargo xtask experiment NAME [ttq experiment options]`: runs one named experiment of
//! docs/results.md with the release CLI on this machine, writes JSON and a Markdown table
//! into a results folder, and draws its PNG plot with scripts/plot_results.py when
//! matplotlib is installed.
//!
//! The GPU runs in docs/results.md used the same `ttq experiment` command through
//! scripts/device/eval.sh experiments (the GPU machine has no cargo).

use std::path::Path;
use std::process::Command;

/// Runs the experiment; `args[0]` is its name, the rest goes to `ttq experiment`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let name = args
        .first()
        .filter(|a| !a.starts_with('-'))
        .ok_or("which experiment? (methods, groups, domain, sensitivity)")?;
    let rest = &args[1..];
    let out = match rest.iter().position(|a| a == "--out") {
        Some(i) => rest.get(i + 1).ok_or("--out needs a folder")?.into(),
        None => root.join("results-local").join(name),
    };
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).args([
        "run",
        "--release",
        "-p",
        "ttq-cli",
        "--",
        "experiment",
        name,
    ]);
    cmd.args(rest);
    if !rest.iter().any(|a| a == "--out") {
        cmd.arg("--out").arg(&out);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("ttq experiment {name} failed ({status})"));
    }
    let plot = Command::new("python3")
        .current_dir(root)
        .arg("scripts/plot_results.py")
        .arg(&out)
        .status();
    match plot {
        Ok(s) if s.success() => {}
        _ => eprintln!(
            "note: no plot (scripts/plot_results.py needs python3 with matplotlib); \
             the tables are in {}",
            out.display()
        ),
    }
    println!("{}", out.display());
    Ok(())
}
