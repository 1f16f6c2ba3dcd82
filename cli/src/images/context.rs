//! A build context as the tar the builder reads, as `docker build DIR` makes it: the
//! directory's files minus what `.dockerignore` leaves out, the Dockerfile and the
//! `.dockerignore` always included, symlinks kept as symlinks (never followed), modes
//! and modification times kept, owners set to root (the CLI does the same, so a
//! `COPY` gives root-owned files whoever runs the build).
//!
//! A Dockerfile that is not a file inside the context (`dockerfile_inline`, or a path
//! outside it) is added under a generated name. Entries are written in name order, so
//! the same directory gives the same tar. Hard links become separate copies, and
//! sockets, FIFOs and devices are left out (said on stderr).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use shoal_proto::spec::BuildSpec;

use super::dockerignore::Ignore;

/// The name a generated Dockerfile has in the tar (replacing any such file there).
pub const GENERATED_DOCKERFILE: &str = ".shoal.Dockerfile";

/// The tar and what the builder must be told about it.
#[derive(Debug)]
pub struct ContextTar {
    pub tar: Vec<u8>,
    /// The Dockerfile's path inside the tar.
    pub dockerfile: String,
    /// Entries written (for the progress line).
    pub entries: usize,
    /// Special files left out, relative to the context.
    pub skipped: Vec<String>,
}

/// Tars `spec.context` for the builder. Errors say which file could not be read.
pub fn tar_context(spec: &BuildSpec) -> anyhow::Result<ContextTar> {
    use anyhow::Context as _;
    let root = Path::new(&spec.context);
    anyhow::ensure!(
        root.is_dir(),
        "build context {} is not a directory",
        spec.context
    );
    let dockerfile = locate_dockerfile(root, spec)?;
    let ignore_text = match fs::read_to_string(root.join(".dockerignore")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e).with_context(|| format!("read {}", root.join(".dockerignore").display()))
        }
    };
    let in_tar = match &dockerfile {
        Dockerfile::InContext(rel) => rel.clone(),
        Dockerfile::Generated(_) => GENERATED_DOCKERFILE.to_string(),
    };
    let ignore = Ignore::parse(&ignore_text, &[".dockerignore", &in_tar])
        .map_err(|e| anyhow::anyhow!("{}: {e}", root.join(".dockerignore").display()))?;
    let mut walk = Walk {
        ignore,
        builder: tar::Builder::new(Vec::new()),
        entries: 0,
        skipped: Vec::new(),
    };
    walk.dir(root, "")?;
    if let Dockerfile::Generated(text) = &dockerfile {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        // A fixed time: the same text gives the same entry (and builder cache hits).
        header.set_mtime(0);
        header.set_size(text.len() as u64);
        walk.builder
            .append_data(&mut header, GENERATED_DOCKERFILE, text.as_bytes())
            .context("add the generated Dockerfile to the context")?;
        walk.entries += 1;
    }
    let tar = walk
        .builder
        .into_inner()
        .context("finish the context tar")?;
    Ok(ContextTar {
        tar,
        dockerfile: in_tar,
        entries: walk.entries,
        skipped: walk.skipped,
    })
}

enum Dockerfile {
    /// A file of the context, by its `/`-separated path inside it.
    InContext(String),
    /// Text to add under [`GENERATED_DOCKERFILE`].
    Generated(String),
}

/// Where the Dockerfile comes from: `dockerfile_inline`, a file of the context, or a
/// file outside it (read now). The docker CLI takes a lowercase `dockerfile` when no
/// `Dockerfile` is given and there is none.
fn locate_dockerfile(root: &Path, spec: &BuildSpec) -> anyhow::Result<Dockerfile> {
    if let Some(text) = &spec.dockerfile_inline {
        return Ok(Dockerfile::Generated(text.clone()));
    }
    let given = match &spec.dockerfile {
        Some(f) => PathBuf::from(f),
        None if !root.join("Dockerfile").exists() && root.join("dockerfile").is_file() => {
            PathBuf::from("dockerfile")
        }
        None => PathBuf::from("Dockerfile"),
    };
    let path = normalize(&root.join(&given));
    anyhow::ensure!(
        path.is_file(),
        "Dockerfile {} ({}) is not there",
        given.display(),
        path.display()
    );
    match path.strip_prefix(normalize(root)) {
        Ok(rel) if !rel.as_os_str().is_empty() => {
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            Ok(Dockerfile::InContext(rel.join("/")))
        }
        _ => {
            let text = fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("read the Dockerfile {}: {e}", path.display()))?;
            Ok(Dockerfile::Generated(text))
        }
    }
}

/// `a/./b/../c` as `a/c`, without touching the disk (symlinks are not resolved, as the
/// docker CLI does not resolve them either when it decides the Dockerfile is inside).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

struct Walk {
    ignore: Ignore,
    builder: tar::Builder<Vec<u8>>,
    entries: usize,
    skipped: Vec<String>,
}

impl Walk {
    /// Adds the entries of directory `abs` (at `rel` in the tar; `""`: the root).
    fn dir(&mut self, abs: &Path, rel: &str) -> anyhow::Result<()> {
        let mut children: Vec<(String, PathBuf)> = fs::read_dir(abs)
            .map_err(|e| anyhow::anyhow!("read directory {}: {e}", abs.display()))?
            .map(|entry| {
                let entry =
                    entry.map_err(|e| anyhow::anyhow!("read directory {}: {e}", abs.display()))?;
                Ok((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        children.sort();
        for (name, path) in children {
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if rel == GENERATED_DOCKERFILE {
                continue;
            }
            self.entry(&path, &rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &str) -> anyhow::Result<()> {
        let meta = fs::symlink_metadata(abs)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", abs.display()))?;
        let excluded = self.ignore.excludes(rel);
        let kind = meta.file_type();
        if kind.is_dir() {
            if excluded {
                // Docker walks an excluded directory only when an exception may keep
                // something under it, and then sends only what is kept.
                if self.ignore.reaches_inside(rel) {
                    self.dir(abs, rel)?;
                }
                return Ok(());
            }
            let mut header = header(&meta);
            self.builder
                .append_data(&mut header, rel, io::empty())
                .map_err(|e| anyhow::anyhow!("add {} to the context: {e}", abs.display()))?;
            self.entries += 1;
            return self.dir(abs, rel);
        }
        if excluded {
            return Ok(());
        }
        let mut header = header(&meta);
        let added = if kind.is_symlink() {
            let target = fs::read_link(abs)
                .map_err(|e| anyhow::anyhow!("read link {}: {e}", abs.display()))?;
            self.builder.append_link(&mut header, rel, target)
        } else if kind.is_file() {
            let file =
                fs::File::open(abs).map_err(|e| anyhow::anyhow!("open {}: {e}", abs.display()))?;
            self.builder.append_data(&mut header, rel, file)
        } else {
            self.skipped.push(rel.to_string());
            return Ok(());
        };
        added.map_err(|e| anyhow::anyhow!("add {} to the context: {e}", abs.display()))?;
        self.entries += 1;
        Ok(())
    }
}

/// The entry's header: type, mode, size and times from the file, owner root.
fn header(meta: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;

    /// What the tar holds: path -> (kind, mode, contents or link target, uid).
    #[derive(Debug, PartialEq, Eq)]
    struct Entry {
        kind: char,
        mode: u32,
        data: String,
        uid: u64,
    }

    fn entries(tar: &[u8]) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        let mut archive = tar::Archive::new(tar);
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header().clone();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Regular => 'f',
                other => panic!("unexpected {other:?}"),
            };
            let data = if kind == 'l' {
                e.link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            } else {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                s
            };
            let path = path.trim_end_matches('/').to_string();
            out.insert(
                path,
                Entry {
                    kind,
                    mode: h.mode().unwrap() & 0o7777,
                    data,
                    uid: h.uid().unwrap(),
                },
            );
        }
        out
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn spec(root: &Path) -> BuildSpec {
        BuildSpec {
            context: root.display().to_string(),
            ..Default::default()
        }
    }

    fn paths(t: &ContextTar) -> Vec<String> {
        entries(&t.tar).into_keys().collect()
    }

    #[test]
    fn dockerignore_leaves_files_out_and_keeps_exceptions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        write(root, "app.py", "print(1)\n");
        write(root, "debug.log", "x");
        write(root, "keep.log", "x");
        write(root, "sub/deep.log", "x");
        write(root, "sub/a.tmp", "x");
        write(root, "sub/x/b.tmp", "x");
        write(root, "node_modules/m/index.js", "x");
        write(root, "build/out.o", "x");
        write(root, "build/keep.txt", "kept");
        write(
            root,
            ".dockerignore",
            "# generated files\n*.log\n!keep.log\n**/*.tmp\nnode_modules\nbuild\n!build/keep.txt\n",
        );
        let t = tar_context(&spec(root)).unwrap();
        assert_eq!(
            paths(&t),
            vec![
                ".dockerignore",
                "Dockerfile",
                "app.py",
                "build/keep.txt",
                "keep.log",
                "sub",
                "sub/deep.log",
                "sub/x",
            ]
        );
        assert_eq!(t.dockerfile, "Dockerfile");
        assert_eq!(t.entries, 8);
    }

    #[test]
    fn the_dockerfile_and_dockerignore_are_always_sent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "docker/web.Dockerfile", "FROM scratch\n");
        write(root, "docker/other", "x");
        write(root, "src/main.rs", "x");
        write(root, ".dockerignore", "*\n");
        let t = tar_context(&BuildSpec {
            dockerfile: Some("docker/web.Dockerfile".into()),
            ..spec(root)
        })
        .unwrap();
        assert_eq!(paths(&t), vec![".dockerignore", "docker/web.Dockerfile"]);
        assert_eq!(t.dockerfile, "docker/web.Dockerfile");
    }

    #[test]
    fn symlinks_stay_links_and_modes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "Dockerfile", "FROM scratch\n");
        write(root, "run.sh", "#!/bin/sh\n");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        write(root, "secret.txt", "s");
        fs::set_permissions(root.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("run.sh", root.join("start")).unwrap();
        // A link to outside the context is sent as a link, never followed.
        std::os::unix::fs::symlink("/etc/hostname", root.join("outside")).unwrap();
        let t = tar_context(&spec(root)).unwrap();
        let e = entries(&t.tar);
        assert_eq!(
            e["run.sh"],
            Entry {
                kind: 'f',
                mode: 0o750,
                data: "#!/bin/sh\n".into(),
                uid: 0
            }
        );
        assert_eq!(e["secret.txt"].mode, 0o600);
        assert_eq!(e["start"].kind, 'l');
        assert_eq!(e["start"].data, "run.sh");
        assert_eq!(e["outside"].kind, 'l');
        assert_eq!(e["outside"].data, "/etc/hostname");
    }

    #[test]
    fn inline_and_outside_dockerfiles_are_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        write(&root, "a.txt", "a");
        // A file of that name in the context is replaced, not sent twice.
        write(&root, GENERATED_DOCKERFILE, "stale");
        let t = tar_context(&BuildSpec {
            dockerfile_inline: Some("FROM scratch\nCOPY a.txt /\n".into()),
            ..spec(&root)
        })
        .unwrap();
        let e = entries(&t.tar);
        assert_eq!(t.dockerfile, GENERATED_DOCKERFILE);
        assert_eq!(e[GENERATED_DOCKERFILE].data, "FROM scratch\nCOPY a.txt /\n");
        assert_eq!(e.len(), 2);

        write(dir.path(), "shared.Dockerfile", "FROM scratch\n");
        let t = tar_context(&BuildSpec {
            dockerfile: Some("../shared.Dockerfile".into()),
            ..spec(&root)
        })
        .unwrap();
        assert_eq!(t.dockerfile, GENERATED_DOCKERFILE);
        assert_eq!(entries(&t.tar)[GENERATED_DOCKERFILE].data, "FROM scratch\n");
    }

    #[test]
    fn a_missing_dockerfile_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.txt", "a");
        let err = tar_context(&spec(dir.path())).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "Dockerfile Dockerfile ({}/Dockerfile) is not there",
                dir.path().display()
            )
        );
        // The lowercase name is taken when `Dockerfile` is absent, as the CLI does.
        write(dir.path(), "dockerfile", "FROM scratch\n");
        assert_eq!(
            tar_context(&spec(dir.path())).unwrap().dockerfile,
            "dockerfile"
        );
    }

    #[test]
    fn the_same_directory_gives_the_same_tar() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["c", "a", "b/z", "b/y"] {
            write(dir.path(), name, name);
        }
        write(dir.path(), "Dockerfile", "FROM scratch\n");
        let one = tar_context(&spec(dir.path())).unwrap();
        let two = tar_context(&spec(dir.path())).unwrap();
        assert_eq!(one.tar, two.tar);
        assert_eq!(paths(&one), vec!["Dockerfile", "a", "b", "b/y", "b/z", "c"]);
    }
}
