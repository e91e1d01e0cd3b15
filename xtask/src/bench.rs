//! `cargo xtask bench [--gpu]`: the project's benchmarks.
//!
//! - Without `--gpu`: runs the criterion CPU benchmarks of `ttq-kernels`
//!   (`cargo bench -p ttq-kernels`).
//! - With `--gpu`: builds the CUDA release binary (`ttq` with `--features cuda`), copies it and
//!   the torch peer script into `.device-kbin/` (ignored by git, carried to the GPU machine),
//!   and prints the command to run there. xtask cannot reach the GPU machine itself.

use std::path::Path;
use std::process::Command;

/// Runs `cargo` with `args` in `root`, failing on a non-zero exit.
fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Builds the GPU property tests (`ttq-kernels/tests/cuda`) without running them and
/// returns the path of their binary, which cargo prints as `Executable … (PATH)`.
fn cuda_test_binary(root: &Path) -> Result<std::path::PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let args = [
        "test",
        "--release",
        "-p",
        "ttq-kernels",
        "--features",
        "cuda",
        "--test",
        "cuda",
        "--no-run",
    ];
    let out = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("`cargo {}` failed:\n{stderr}", args.join(" ")));
    }
    stderr
        .lines()
        .filter(|l| l.contains("Executable"))
        .find_map(|l| Some(l.rsplit_once('(')?.1.strip_suffix(')')?.to_string()))
        .map(|p| root.join(p))
        .ok_or_else(|| {
            format!(
                "`cargo {}` printed no test binary:\n{stderr}",
                args.join(" ")
            )
        })
}

/// The `bench` task.
pub fn bench(root: &Path, args: &[String]) -> Result<(), String> {
    let mut gpu = false;
    for a in args {
        match a.as_str() {
            "--gpu" => gpu = true,
            other => return Err(format!("unknown option `{other}` for bench")),
        }
    }
    if !gpu {
        return cargo(root, &["bench", "-p", "ttq-kernels"]);
    }
    cargo(
        root,
        &["build", "--release", "-p", "ttq-cli", "--features", "cuda"],
    )?;
    let test_binary = cuda_test_binary(root)?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let kbin = root.join(".device-kbin");
    std::fs::create_dir_all(&kbin).map_err(|e| format!("{}: {e}", kbin.display()))?;
    for (from, to) in [
        (target.join("release").join("ttq"), kbin.join("ttq")),
        (test_binary, kbin.join("cuda")),
        (
            root.join("scripts/device/torch_bench.py"),
            kbin.join("torch_bench.py"),
        ),
        (root.join("scripts/device/bench.sh"), kbin.join("bench.sh")),
        (
            root.join("scripts/device/cuda_libs.sh"),
            kbin.join("cuda_libs.sh"),
        ),
    ] {
        std::fs::copy(&from, &to)
            .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
    }
    println!(
        "Built {} and the GPU test binary {}.\n\
         Make sure `/.device-kbin/` is in .git/info/exclude, then run on the GPU machine\n\
         (device tool `run`, carry [\".device-kbin\"]):\n\n    \
         bash scripts/device/bench.sh      # torch peers, then `ttq bench kernels --peers`\n    \
         bash scripts/device/tests.sh      # the GPU property tests, every kernel\n    \
         bash scripts/device/decode.sh     # decode end to end beside the torch peer",
        kbin.join("ttq").display(),
        kbin.join("cuda").display()
    );
    Ok(())
}
