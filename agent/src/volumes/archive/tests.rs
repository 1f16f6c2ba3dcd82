use super::*;
use std::cell::RefCell;
use std::os::unix::fs::{symlink, PermissionsExt};
use tar::{Archive, Builder, EntryType, Header};

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mtime_of(path: &Path) -> i64 {
    fs::symlink_metadata(path).unwrap().mtime()
}

fn set_time(path: &Path, secs: u64) {
    set_mtime(path, secs).unwrap();
}

/// A volume's worth of everything: nested directories, an empty one, modes, a symlink
/// inside and one pointing out, a file owned by someone else.
fn sample(root: &Path) -> u32 {
    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).unwrap();
    write(&root.join("PG_VERSION"), b"16\n", 0o600);
    fs::create_dir_all(root.join("base/1")).unwrap();
    write(&root.join("base/1/1259"), &vec![7u8; 300_000], 0o640);
    write(&root.join("base/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    fs::create_dir(root.join("empty")).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("base/1/1259", root.join("current")).unwrap();
    symlink("/etc/passwd", root.join("outside")).unwrap();
    // Someone else's file: another uid when we may chown, else ours (kept either way).
    write(&root.join("owned"), b"x", 0o644);
    let me = fs::metadata(root.join("owned")).unwrap().uid();
    let uid = if me == 0 { 1234 } else { me };
    std::os::unix::fs::chown(root.join("owned"), Some(uid), Some(uid)).unwrap();
    set_time(&root.join("PG_VERSION"), 1_600_000_000);
    set_time(&root.join("base/1"), 1_500_000_000);
    set_time(&root.join("empty"), 1_400_000_000);
    set_time(root, 1_300_000_000);
    uid
}

#[test]
fn a_directory_round_trips_with_modes_owners_links_and_times() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let uid = sample(src.path());
    let (bytes, digest) = pack(src.path(), Vec::new()).unwrap();
    assert_eq!(digest.bytes, bytes.len() as u64);
    assert_eq!(digest.sha256, sha256_hex(&bytes));

    let n = unpack(dst.path(), &bytes[..]).unwrap();
    assert_eq!(n, 10, "root, 3 dirs, 4 files, 2 links");
    let (s, d) = (src.path(), dst.path());
    assert_eq!(fs::read(d.join("PG_VERSION")).unwrap(), b"16\n");
    assert_eq!(fs::read(d.join("base/1/1259")).unwrap(), vec![7u8; 300_000]);
    for f in ["PG_VERSION", "base/1/1259", "base/run.sh", "empty", "owned"] {
        assert_eq!(mode_of(&d.join(f)), mode_of(&s.join(f)), "mode of {f}");
    }
    assert_eq!(mode_of(d), 0o700, "the root's mode travels");
    assert!(d.join("empty").is_dir());
    assert_eq!(fs::read_dir(d.join("empty")).unwrap().count(), 0);
    assert_eq!(
        fs::read_link(d.join("current")).unwrap(),
        Path::new("base/1/1259")
    );
    assert_eq!(
        fs::read_link(d.join("outside")).unwrap(),
        Path::new("/etc/passwd"),
        "a symlink out of the volume stays a symlink, not followed"
    );
    assert_eq!(fs::symlink_metadata(d.join("owned")).unwrap().uid(), uid);
    assert_eq!(mtime_of(&d.join("PG_VERSION")), 1_600_000_000);
    assert_eq!(mtime_of(&d.join("base/1")), 1_500_000_000);
    assert_eq!(mtime_of(&d.join("empty")), 1_400_000_000);
    assert_eq!(mtime_of(d), 1_300_000_000);

    // Packing again gives the same stream: what was received is what was sent.
    let (again, digest2) = pack(d, Vec::new()).unwrap();
    assert_eq!(digest2, digest);
    assert_eq!(again, bytes);
}

#[test]
fn an_empty_volume_round_trips() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let (bytes, digest) = pack(src.path(), Vec::new()).unwrap();
    assert!(digest.bytes > 0, "a root entry and the end marker");
    assert_eq!(unpack(dst.path(), &bytes[..]).unwrap(), 1);
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0);
}

/// A tar stream with one file whose name is written raw (the builder refuses bad names).
fn raw_tar(name: &[u8], kind: EntryType, link: Option<&[u8]>, data: &[u8]) -> Vec<u8> {
    let mut header = Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut b = Builder::new(Vec::new());
    b.append(&header, data).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn paths_escaping_the_root_are_refused_and_nothing_is_written_outside() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("vol");
    fs::create_dir(&root).unwrap();
    let evil = raw_tar(b"../evil", EntryType::Regular, None, b"pwned");
    let err = unpack(&root, &evil[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
    assert!(!outer.path().join("evil").exists());

    let target = outer.path().join("abs");
    let abs = raw_tar(
        format!("{}", target.display()).as_bytes(),
        EntryType::Regular,
        None,
        b"pwned",
    );
    let err = unpack(&root, &abs[..]).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafePath(_)), "{err}");
    assert!(!target.exists());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn writing_through_a_symlink_out_of_the_root_is_refused() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("vol");
    let elsewhere = outer.path().join("elsewhere");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    let mut stream = raw_tar(
        b"link",
        EntryType::Symlink,
        Some(elsewhere.display().to_string().as_bytes()),
        b"",
    );
    // Drop the first stream's end marker, then a file below the link.
    stream.truncate(stream.len() - 1024);
    stream.extend(raw_tar(b"link/x", EntryType::Regular, None, b"pwned"));
    assert!(unpack(&root, &stream[..]).is_err());
    assert!(!elsewhere.join("x").exists());
}

#[test]
fn a_changed_stream_fails_its_checksum() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let (mut bytes, digest) = pack(src.path(), Vec::new()).unwrap();
    verify(&digest.sha256, &sha256_hex(&bytes)).unwrap();
    verify(&digest.sha256.to_uppercase(), &sha256_hex(&bytes)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let err = verify(&digest.sha256, &sha256_hex(&bytes)).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::ChecksumMismatch { expected, .. } if *expected == digest.sha256),
        "{err}"
    );
}

#[test]
fn sizes_add_up_regular_files_without_following_links() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    assert_eq!(dir_size(src.path(), 1_000), Some(3 + 300_000 + 18 + 1));
    assert!(
        dir_size(src.path(), 2).unwrap() <= 300_022,
        "bounded: a lower bound"
    );
    assert_eq!(dir_size(&src.path().join("missing"), 1_000), None);
}

/// Every entry below `root` (and `root`) modified long ago: nothing is "racy".
fn age(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                set_link_mtime(&path, 1_500_000_000).unwrap();
            } else {
                set_time(&path, 1_500_000_000);
            }
            if meta.is_dir() {
                dirs.push(path);
            }
        }
        set_time(&dir, 1_500_000_000);
    }
}

/// The entries of a stream: normalized path (the root is ""), and their contents.
fn entries(stream: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = Archive::new(stream);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = normal(&e.path().unwrap()).display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .collect()
}

#[test]
fn a_frozen_stream_sends_what_changed_after_the_whole_and_deletes_what_went() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let s = src.path();
    sample(s);
    write(&s.join("new\nline"), b"odd name", 0o644);
    write(&s.join("back\\slash"), b"odder", 0o644);
    age(s);
    let log = RefCell::new(Vec::new());
    let freeze = || {
        log.borrow_mut().push("freeze");
        // What the containers did during pass 1.
        fs::remove_file(s.join("PG_VERSION")).unwrap();
        fs::write(s.join("base/run.sh"), b"#!/bin/sh\necho HI\n").unwrap();
        fs::write(s.join("base/new"), b"fresh").unwrap();
        fs::remove_dir(s.join("empty")).unwrap();
        fs::write(s.join("empty"), b"now a file").unwrap();
        fs::remove_file(s.join("current")).unwrap();
        fs::create_dir(s.join("current")).unwrap();
        fs::write(s.join("current/x"), b"below").unwrap();
        Ok(())
    };
    let thaw = || log.borrow_mut().push("thaw");
    let (bytes, digest) = pack_frozen(s, Vec::new(), freeze, thaw).unwrap();
    assert_eq!(*log.borrow(), vec!["freeze", "thaw"]);
    assert_eq!(
        digest.sha256,
        sha256_hex(&bytes),
        "one hash over both passes"
    );
    assert_eq!(digest.bytes, bytes.len() as u64);

    let all = entries(&bytes);
    let names: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    // Pass 1: the root, 3 dirs, 6 files, 2 links; then only what changed.
    assert_eq!(names.len(), 12 + 8, "{names:?}");
    assert_eq!(
        names[12..],
        [
            "",
            "base",
            "current",
            "empty",
            "base/new",
            "base/run.sh",
            "current/x",
            MANIFEST
        ]
    );
    let listed: std::collections::HashSet<PathBuf> = parse_manifest(&all.last().unwrap().1);
    let expected: std::collections::HashSet<PathBuf> = [
        "back\\slash",
        "base",
        "base/1",
        "base/1/1259",
        "base/new",
        "base/run.sh",
        "current",
        "current/x",
        "empty",
        "new\nline",
        "outside",
        "owned",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(listed, expected);

    unpack(dst.path(), &bytes[..]).unwrap();
    let d = dst.path();
    assert!(!d.join("PG_VERSION").exists(), "deleted between the passes");
    assert!(!d.join(MANIFEST).exists());
    assert_eq!(
        fs::read(d.join("base/run.sh")).unwrap(),
        b"#!/bin/sh\necho HI\n"
    );
    assert_eq!(fs::read(d.join("empty")).unwrap(), b"now a file");
    assert_eq!(fs::read(d.join("current/x")).unwrap(), b"below");
    assert_eq!(fs::read(d.join("new\nline")).unwrap(), b"odd name");
    // The copy is the volume as it was while frozen, to the byte of its stream.
    assert_eq!(
        pack(d, Vec::new()).unwrap().0,
        pack(s, Vec::new()).unwrap().0
    );
}

#[test]
fn a_failed_freeze_ends_the_stream_and_a_failed_second_pass_still_thaws() {
    let src = tempfile::tempdir().unwrap();
    sample(src.path());
    let thawed = RefCell::new(false);
    let err = pack_frozen(
        src.path(),
        Vec::new(),
        || Err("pause container db: boom".to_string()),
        || *thawed.borrow_mut() = true,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "pause container db: boom");
    assert!(!*thawed.borrow(), "nothing was frozen");

    let gone = src.path().join("base");
    let err = pack_frozen(
        &gone,
        Vec::new(),
        || fs::remove_dir_all(&gone).map_err(|e| e.to_string()),
        || *thawed.borrow_mut() = true,
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err}");
    assert!(*thawed.borrow(), "thawed after a failed second pass");
}

/// A header owned by whoever runs the tests.
fn header_of_mine() -> Header {
    let mine = tempfile::tempdir().unwrap();
    let meta = fs::metadata(mine.path()).unwrap();
    let mut h = Header::new_gnu();
    h.set_uid(meta.uid().into());
    h.set_gid(meta.gid().into());
    h
}

fn append(b: &mut Builder<Vec<u8>>, path: &str, kind: EntryType, data: &[u8]) {
    let mut h = header_of_mine();
    h.set_entry_type(kind);
    h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_mtime(1_600_000_000);
    b.append_data(&mut h, path, data).unwrap();
}

fn append_link(b: &mut Builder<Vec<u8>>, path: &str, target: &Path) {
    let mut h = header_of_mine();
    h.set_entry_type(EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, path, target).unwrap();
}

#[test]
fn later_entries_replace_earlier_ones_and_symlinks_are_never_followed() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("vol");
    let elsewhere = outer.path().join("elsewhere");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    fs::write(elsewhere.join("keep"), b"theirs").unwrap();
    let mut b = Builder::new(Vec::new());
    append(&mut b, "a", EntryType::Regular, b"file first");
    append(&mut b, "d", EntryType::Directory, b"");
    append(&mut b, "d/f", EntryType::Regular, b"inside");
    append_link(&mut b, "l", &elsewhere);
    append_link(&mut b, "m", Path::new("a"));
    append(&mut b, "a", EntryType::Directory, b"");
    append(&mut b, "a/g", EntryType::Regular, b"now below");
    append(&mut b, "d", EntryType::Regular, b"dir became file");
    append(&mut b, "l", EntryType::Directory, b"");
    append(&mut b, "l/keep", EntryType::Regular, b"ours");
    append(&mut b, "m", EntryType::Regular, b"link became file");
    let stream = b.into_inner().unwrap();
    unpack(&root, &stream[..]).unwrap();
    assert_eq!(fs::read(root.join("a/g")).unwrap(), b"now below");
    assert_eq!(fs::read(root.join("d")).unwrap(), b"dir became file");
    assert!(fs::symlink_metadata(root.join("l")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("l/keep")).unwrap(), b"ours");
    assert_eq!(fs::read(elsewhere.join("keep")).unwrap(), b"theirs");
    assert_eq!(fs::read(root.join("m")).unwrap(), b"link became file");
    assert_eq!(
        fs::read(root.join("a/g")).unwrap(),
        b"now below",
        "not written through m"
    );
    assert_eq!(mtime_of(&root.join("a")), 1_600_000_000);

    // A symlink replaced by a file: the file is written in its place, not through it.
    let mut b = Builder::new(Vec::new());
    append_link(&mut b, "x", &elsewhere.join("keep"));
    append(&mut b, "x", EntryType::Regular, b"mine");
    let stream = b.into_inner().unwrap();
    unpack(&root, &stream[..]).unwrap();
    assert_eq!(fs::read(root.join("x")).unwrap(), b"mine");
    assert_eq!(fs::read(elsewhere.join("keep")).unwrap(), b"theirs");
}

#[test]
fn a_file_named_like_the_manifest_is_not_packed() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    fs::write(src.path().join(MANIFEST), b"PG_VERSION\n").unwrap();
    fs::write(src.path().join("data"), b"kept").unwrap();
    let (bytes, _) = pack(src.path(), Vec::new()).unwrap();
    unpack(dst.path(), &bytes[..]).unwrap();
    assert_eq!(fs::read(dst.path().join("data")).unwrap(), b"kept");
    assert!(!dst.path().join(MANIFEST).exists());
}
