//! `.dockerignore`: which files of a build context are left out of the tar sent to the
//! builder, with the semantics of the docker CLI (moby's `patternmatcher` and
//! `ignorefile`):
//!
//! - one pattern a line; blank lines and lines starting with `#` are skipped;
//!   surrounding whitespace is trimmed;
//! - a pattern is a path relative to the context root, cleaned (`./a/` is `a`, a
//!   leading `/` is dropped): `*.log` matches at the root only, `**/*.log` at any depth;
//! - `*` and `?` stay within one path segment, `**` spans any number of them, `[..]`
//!   are classes and `\` escapes;
//! - a pattern that matches a directory also matches everything under it;
//! - `!` makes an exception; the last pattern that matches a path decides;
//! - an excluded directory is not descended into unless an exception's text starts
//!   with its path (`build` then `!build/keep.txt`).
//!
//! Matching uses `globset` (ripgrep's), with `*` kept from crossing `/`. Two corners
//! differ from Docker's hand-rolled regexes and are accepted: `{a,b}` is taken
//! literally by escaping the braces (Docker has no alternation), and a `**` glued to
//! other characters (`a**`) stays within one segment where Docker's spans several.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The parsed patterns of a `.dockerignore`, plus the exceptions the CLI always adds.
#[derive(Debug, Clone)]
pub struct Ignore {
    patterns: Vec<Pattern>,
    set: GlobSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Cleaned, relative to the context, without its `!`.
    text: String,
    exception: bool,
}

impl Ignore {
    /// Parses a `.dockerignore`'s text, then adds exceptions for `always` (the
    /// Dockerfile and the `.dockerignore` itself, which the docker CLI always sends).
    /// The error names the line of a pattern that does not parse.
    pub fn parse(text: &str, always: &[&str]) -> Result<Ignore, String> {
        let mut patterns = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if rest.is_empty() {
                return Err(format!(
                    "line {}: `!` alone is not a pattern: write the path to keep after it",
                    n + 1
                ));
            }
            patterns.push((
                n + 1,
                Pattern {
                    text: relative(&clean(rest)),
                    exception,
                },
            ));
        }
        for path in always {
            patterns.push((
                0,
                Pattern {
                    text: relative(&clean(path)),
                    exception: true,
                },
            ));
        }
        let mut set = GlobSetBuilder::new();
        for (line, p) in &patterns {
            let glob = GlobBuilder::new(&escape_braces(&p.text))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("line {line}: {}: {e}", p.text))?;
            set.add(glob);
        }
        let set = set
            .build()
            .map_err(|e| format!("the patterns do not compile: {e}"))?;
        Ok(Ignore {
            patterns: patterns.into_iter().map(|(_, p)| p).collect(),
            set,
        })
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out: the last
    /// pattern matching it or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        let mut last: Option<usize> = None;
        let mut prefix_end = 0;
        loop {
            let next = path[prefix_end..].find('/').map(|i| prefix_end + i);
            let candidate = &path[..next.unwrap_or(path.len())];
            if let Some(&i) = self.set.matches(candidate).iter().max() {
                last = Some(last.map_or(i, |l| l.max(i)));
            }
            match next {
                Some(i) => prefix_end = i + 1,
                None => break,
            }
        }
        last.is_some_and(|i| !self.patterns[i].exception)
    }

    /// Whether an excluded directory must still be walked: some exception's text
    /// starts with its path, so a file under it may be kept.
    pub fn reaches_inside(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exception && format!("{}/", p.text).starts_with(&dir_slash))
    }
}

/// Go's `filepath.Clean` on a `/`-separated path: no empty or `.` segments, `..`
/// folded where it can be.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Patterns are relative to the context: a leading `/` is dropped.
fn relative(cleaned: &str) -> String {
    match cleaned.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => cleaned.to_string(),
    }
}

/// `{` and `}` taken literally (Docker's patterns have no alternation).
fn escape_braces(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut escaped = false;
    for c in pattern.chars() {
        if !escaped && (c == '{' || c == '}') {
            out.push('\\');
        }
        escaped = !escaped && c == '\\';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text, &[]).unwrap()
    }

    #[test]
    fn cleaning_follows_go() {
        assert_eq!(clean("./a/"), "a");
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/a/../../b"), "/b");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("a/.."), ".");
        assert_eq!(relative(&clean("/node_modules/")), "node_modules");
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let i = ignore("# a comment\n\n   *.log   \n#*.md\n");
        assert!(i.excludes("debug.log"));
        assert!(!i.excludes("README.md"));
        assert!(!i.excludes("# a comment"));
    }

    #[test]
    fn patterns_are_anchored_at_the_context_root() {
        let i = ignore("*.log\nnode_modules\n/tmp/\n");
        assert!(i.excludes("a.log"));
        assert!(!i.excludes("sub/a.log"), "* does not cross /");
        assert!(i.excludes("node_modules"));
        assert!(
            i.excludes("node_modules/x/y.js"),
            "a directory takes its contents"
        );
        assert!(!i.excludes("sub/node_modules"));
        assert!(i.excludes("tmp/cache"));
    }

    #[test]
    fn double_star_spans_directories() {
        let i = ignore("**/*.tmp\ndocs/**/draft.md\ncache/**\n");
        assert!(i.excludes("x.tmp"));
        assert!(i.excludes("a/b/c/x.tmp"));
        assert!(i.excludes("docs/draft.md"));
        assert!(i.excludes("docs/a/b/draft.md"));
        assert!(!i.excludes("docs/a/final.md"));
        assert!(i.excludes("cache/a/b"));
        assert!(!i.excludes("cache"), "cache/** leaves the directory itself");
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let i = ignore("*.md\n!README.md\n");
        assert!(i.excludes("CHANGES.md"));
        assert!(!i.excludes("README.md"));
        let i = ignore("!README.md\n*.md\n");
        assert!(i.excludes("README.md"), "a later pattern wins");
        let i = ignore("build\n!build/keep.txt\n");
        assert!(i.excludes("build"));
        assert!(i.excludes("build/out.o"));
        assert!(!i.excludes("build/keep.txt"));
        assert!(i.reaches_inside("build"));
        assert!(!i.reaches_inside("buil"));
        assert!(!ignore("build\n").reaches_inside("build"));
    }

    #[test]
    fn single_segment_wildcards_and_classes() {
        let i = ignore("file?.txt\n[ab]*.c\nlit\\*\n{x,y}\n");
        assert!(i.excludes("file1.txt"));
        assert!(!i.excludes("file12.txt"));
        assert!(i.excludes("a.c"));
        assert!(i.excludes("b2.c"));
        assert!(!i.excludes("c.c"));
        assert!(i.excludes("lit*"));
        assert!(!i.excludes("litx"));
        assert!(i.excludes("{x,y}"), "braces are literal");
        assert!(!i.excludes("x"));
    }

    #[test]
    fn always_sent_files_are_exceptions() {
        let i = Ignore::parse(
            "*\n",
            &["Dockerfile", ".dockerignore", "sub/Dockerfile.dev"],
        )
        .unwrap();
        assert!(i.excludes("main.go"));
        assert!(!i.excludes("Dockerfile"));
        assert!(!i.excludes(".dockerignore"));
        assert!(!i.excludes("sub/Dockerfile.dev"));
        assert!(i.excludes("sub/other"));
        assert!(i.reaches_inside("sub"));
    }

    #[test]
    fn a_bare_exclamation_mark_is_refused() {
        let err = Ignore::parse("a\n!\n", &[]).unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
    }
}
