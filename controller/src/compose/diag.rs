//! Diagnostics: what the loader tells the user, always with a place (file, line, key).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the Compose input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; `None` when the finding is about the file as a whole.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    /// Dotted path of the key, e.g. `services.web.ports[0]`; empty for the whole file.
    pub key: String,
    pub message: String,
    pub severity: Severity,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

/// The Compose input was refused. Holds every error found, not just the first.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in &self.diagnostics {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics while loading; knows the file table so positions become paths.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub files: Vec<PathBuf>,
    pub diags: Vec<Diagnostic>,
}

impl Sink {
    pub fn add_file(&mut self, path: PathBuf) -> super::yaml::FileId {
        self.files.push(path);
        self.files.len() - 1
    }

    pub fn file(&self, id: super::yaml::FileId) -> PathBuf {
        self.files.get(id).cloned().unwrap_or_default()
    }

    fn push(&mut self, pos: super::yaml::Pos, key: &str, message: String, severity: Severity) {
        let d = Diagnostic {
            file: self.file(pos.file),
            line: (pos.line > 0).then_some(pos.line),
            column: (pos.line > 0 && pos.col > 0).then_some(pos.col),
            key: key.to_string(),
            message,
            severity,
        };
        // One error per place, and one per key for the same message (schema and
        // conversion can both see a wrong type, at the key and at its value).
        let same_place = |o: &Diagnostic| {
            o.severity == Severity::Error
                && o.file == d.file
                && o.key == d.key
                && ((o.line == d.line && o.column == d.column) || o.message == d.message)
        };
        if severity == Severity::Error && self.diags.iter().any(same_place) {
            return;
        }
        if !self.diags.contains(&d) {
            self.diags.push(d);
        }
    }

    pub fn error(&mut self, pos: super::yaml::Pos, key: &str, message: impl Into<String>) {
        self.push(pos, key, message.into(), Severity::Error);
    }

    pub fn warn(&mut self, pos: super::yaml::Pos, key: &str, message: impl Into<String>) {
        self.push(pos, key, message.into(), Severity::Warning);
    }

    /// A finding about a file as a whole (unreadable, empty).
    pub fn file_error(&mut self, file: &std::path::Path, key: &str, message: impl Into<String>) {
        let d = Diagnostic {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: key.to_string(),
            message: message.into(),
            severity: Severity::Error,
        };
        self.diags.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
}
