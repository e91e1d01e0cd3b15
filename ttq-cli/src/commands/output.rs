//! Output files that cannot destroy inputs: every report is written to a temporary file in
//! the same folder and renamed over the target (a reader never sees half a file, and a
//! failed write leaves the old file as it was); an output path that is one of the command's
//! inputs, or lies inside the model's directory, is refused before any work starts; and the
//! folder is checked to be writable before a long evaluation, not after it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `path` made absolute with symlinks resolved; for a file that does not exist yet, its
/// folder resolved and the name appended.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(name))
}

/// The command's inputs, by option name, for [`check_output`].
#[derive(Debug, Default)]
pub struct Inputs {
    files: Vec<(String, PathBuf)>,
    model: Option<PathBuf>,
}

impl Inputs {
    /// Inputs of a command that reads the model at `model` (a directory, or a GGUF file with
    /// perhaps a `tokenizer.json` beside it).
    pub fn with_model(model: &Path) -> Self {
        let mut files = vec![("--model".into(), model.to_path_buf())];
        if model.is_file() {
            files.push(("--model".into(), model.with_file_name("tokenizer.json")));
        }
        Self {
            files,
            model: resolved(model),
        }
    }

    /// Adds an input file read by `option`.
    pub fn file(mut self, option: &str, path: &Path) -> Self {
        self.files.push((option.into(), path.to_path_buf()));
        self
    }
}

/// Refuses an output `path` (given by `option`) that is one of `inputs` (compared after
/// resolving symlinks and `..`), lies inside the model's directory, or is a directory; then
/// checks that its folder exists and takes a new file, so that a bad path fails now rather
/// than after the work.
pub fn check_output(option: &str, path: &Path, inputs: &Inputs) -> Result<(), String> {
    let target = resolved(path).ok_or_else(|| {
        format!(
            "{option} {}: its folder does not exist or the path has no file name",
            path.display()
        )
    })?;
    if target.is_dir() {
        return Err(format!(
            "{option} {}: is a directory; give a file name",
            path.display()
        ));
    }
    for (input_option, input) in &inputs.files {
        if resolved(input).is_some_and(|i| i == target) {
            return Err(format!(
                "{option} {}: is the input of {input_option}; writing it would destroy the \
                 input (choose another file)",
                path.display()
            ));
        }
    }
    if let Some(model) = &inputs.model {
        if model.is_dir() && target.starts_with(model) {
            return Err(format!(
                "{option} {}: is inside the model directory {}; outputs are not written \
                 among model files (choose another folder)",
                path.display(),
                model.display()
            ));
        }
    }
    probe_folder(option, path, &target)
}

/// Creates and removes a temporary file beside `target`: the folder exists and is writable.
fn probe_folder(option: &str, shown: &Path, target: &Path) -> Result<(), String> {
    let tmp = temp_path(target);
    std::fs::File::create(&tmp)
        .and_then(|_| std::fs::remove_file(&tmp))
        .map_err(|e| format!("{option} {}: cannot write there: {e}", shown.display()))
}

/// The temporary name beside `target` used while writing it.
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over `path`. On error the temporary file is removed and `path` is untouched;
/// the message names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = temp_path(path);
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        std::fs::remove_file(&tmp).ok();
        format!("cannot write {}: {e}", path.display())
    })
}

/// Refuses a results folder `dir` that already holds `records.json` unless `force` (an
/// earlier run's measurements are never replaced silently), and one inside the model's
/// directory or over an input; creates it if missing.
pub fn prepare_results_dir(dir: &Path, force: bool, inputs: &Inputs) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "--out {}: exists and is not a directory",
            dir.display()
        ));
    }
    let records = dir.join("records.json");
    if records.exists() && !force {
        return Err(format!(
            "--out {}: already holds records.json from an earlier run; choose a new folder \
             or pass --force to replace it",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("--out {}: cannot create it: {e}", dir.display()))?;
    for name in ["records.json", "table.md"] {
        check_output("--out", &dir.join(name), inputs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ttq-output-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn outputs_over_inputs_or_model_files_are_refused() {
        let d = scratch("refuse");
        let model = d.join("model");
        std::fs::create_dir_all(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        let data = d.join("d.jsonl");
        std::fs::write(&data, "{}").unwrap();
        let inputs = Inputs::with_model(&model).file("--dataset", &data);
        // The same file by another spelling is still the input.
        let other_spelling = d.join("model/../d.jsonl");
        for (out, why) in [
            (data.clone(), "input of --dataset"),
            (other_spelling, "input of --dataset"),
            (model.join("config.json"), "inside the model directory"),
            (model.join("new.json"), "inside the model directory"),
            (d.clone(), "is a directory"),
            (d.join("missing/x.json"), "folder does not exist"),
        ] {
            let e = check_output("--json", &out, &inputs).unwrap_err();
            assert!(
                e.contains(why) && e.contains("--json"),
                "{}: {e}",
                out.display()
            );
        }
        assert!(check_output("--json", &d.join("report.json"), &inputs).is_ok());
        // A GGUF model file and the tokenizer beside it are inputs too.
        let gguf = d.join("m.gguf");
        std::fs::write(&gguf, "GGUF").unwrap();
        std::fs::write(d.join("tokenizer.json"), "{}").unwrap();
        let inputs = Inputs::with_model(&gguf);
        for out in [gguf.clone(), d.join("tokenizer.json")] {
            let e = check_output("--json", &out, &inputs).unwrap_err();
            assert!(e.contains("is the input of --model"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&data).unwrap(), "{}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let d = scratch("atomic");
        let p = d.join("r.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let e = write_atomic(&d.join("no/such/dir.json"), b"x").unwrap_err();
        assert!(e.contains("no/such/dir.json"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn an_earlier_results_folder_needs_force() {
        let d = scratch("force");
        let out = d.join("out");
        let inputs = Inputs::default();
        prepare_results_dir(&out, false, &inputs).unwrap();
        std::fs::write(out.join("records.json"), "old").unwrap();
        let e = prepare_results_dir(&out, false, &inputs).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(
            std::fs::read_to_string(out.join("records.json")).unwrap(),
            "old"
        );
        prepare_results_dir(&out, true, &inputs).unwrap();
        std::fs::remove_dir_all(&d).ok();
    }
}
