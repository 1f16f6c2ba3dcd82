//! `--gpu-inventory FILE`: the node's GPUs listed by hand, standing in for NVML.
//!
//! JSON (DESIGN.md): `[{"uuid":"GPU-…","index":0,"model":"NVIDIA H100 80GB HBM3",
//! "memory_bytes":85899345920}]`. A file ending in `.toml` holds the same fields as
//! `[[gpu]]` tables. The file is read at every rediscovery, so editing it adds or
//! removes GPUs on a running agent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{GpuDevice, GpuError, GpuInventory};

#[derive(Debug, Clone)]
pub struct FileInventory {
    path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    uuid: String,
    index: u32,
    model: String,
    memory_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    gpu: Vec<Entry>,
}

impl FileInventory {
    pub fn new(path: PathBuf) -> FileInventory {
        FileInventory { path }
    }

    /// Reads and checks `path`; the error names the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Vec<GpuDevice>, GpuError> {
        let bad = |why: String| GpuError::Inventory {
            file: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let is_toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let entries: Vec<Entry> = if is_toml {
            toml::from_str::<TomlFile>(&text)
                .map_err(|e| bad(format!("invalid TOML: {}", e.message())))?
                .gpu
        } else {
            serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "invalid JSON at line {} column {}: {e} (expected a list of \
                     {{\"uuid\",\"index\",\"model\",\"memory_bytes\"}})",
                    e.line(),
                    e.column()
                ))
            })?
        };
        let mut uuids = BTreeSet::new();
        let mut indexes = BTreeSet::new();
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            if e.uuid.trim().is_empty() {
                return Err(bad(format!("entry {i} has an empty uuid")));
            }
            if !uuids.insert(e.uuid.clone()) {
                return Err(bad(format!("uuid {} is listed twice", e.uuid)));
            }
            if !indexes.insert(e.index) {
                return Err(bad(format!("index {} is listed twice", e.index)));
            }
            out.push(GpuDevice {
                uuid: e.uuid,
                index: e.index,
                model: e.model,
                memory_bytes: e.memory_bytes,
                utilization_percent: None,
                memory_used_bytes: None,
            });
        }
        Ok(out)
    }
}

impl GpuInventory for FileInventory {
    fn discover(&self) -> Result<Vec<GpuDevice>, GpuError> {
        FileInventory::load(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_json_and_toml() {
        let dir = tempfile::tempdir().unwrap();
        let json = write(
            dir.path(),
            "g.json",
            r#"[{"uuid":"GPU-a","index":0,"model":"NVIDIA H100 80GB HBM3","memory_bytes":85899345920}]"#,
        );
        let gpus = FileInventory::load(&json).unwrap();
        assert_eq!(
            gpus,
            vec![GpuDevice {
                uuid: "GPU-a".into(),
                index: 0,
                model: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 85899345920,
                utilization_percent: None,
                memory_used_bytes: None,
            }]
        );
        let toml = write(
            dir.path(),
            "g.toml",
            "[[gpu]]\nuuid = \"GPU-a\"\nindex = 0\nmodel = \"NVIDIA H100 80GB HBM3\"\nmemory_bytes = 85899345920\n",
        );
        assert_eq!(FileInventory::load(&toml).unwrap(), gpus);
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("a.json", "{\"uuid\": 1}", "invalid JSON at line 1"),
            (
                "b.json",
                r#"[{"uuid":"G","index":0,"model":"m"}]"#,
                "missing field `memory_bytes`",
            ),
            (
                "c.json",
                r#"[{"uuid":"G","index":0,"model":"m","memory_bytes":1},{"uuid":"G","index":1,"model":"m","memory_bytes":1}]"#,
                "uuid G is listed twice",
            ),
            (
                "d.json",
                r#"[{"uuid":" ","index":0,"model":"m","memory_bytes":1}]"#,
                "entry 0 has an empty uuid",
            ),
            ("e.toml", "[[gpu]]\nuuid = 3\n", "invalid TOML"),
            (
                "f.json",
                r#"[{"uuid":"G","index":0,"model":"m","memory_bytes":1,"mem":2}]"#,
                "unknown field `mem`",
            ),
        ];
        for (name, text, want) in cases {
            let p = write(dir.path(), name, text);
            let err = FileInventory::load(&p).unwrap_err().to_string();
            assert!(err.contains(&p.display().to_string()), "{err}");
            assert!(err.contains(want), "{name}: {err}");
        }
        let missing = dir.path().join("missing.json");
        let err = FileInventory::load(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json: cannot read"), "{err}");
    }
}
