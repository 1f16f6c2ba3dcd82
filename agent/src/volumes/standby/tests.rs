use super::*;
use std::os::unix::fs::symlink;

fn filled(dir: &Path, what: &str) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/file"), what).unwrap();
    symlink("sub/file", dir.join("link")).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(dir.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
}

fn receive(s: &Standbys, name: &str, what: &str) -> Result<(), StandbyError> {
    let next = s.begin(name)?;
    filled(&next, what);
    s.commit(name)
}

#[test]
fn a_refresh_is_swapped_in_only_when_committed() {
    let data = tempfile::tempdir().unwrap();
    let s = Standbys::in_data_dir(data.path());
    let dir = data.path().join("standby/shop_data");
    assert!(!s.has("shop_data"));
    receive(&s, "shop_data", "one").unwrap();
    assert!(s.has("shop_data"));
    assert_eq!(
        fs::read_to_string(dir.join("current/sub/file")).unwrap(),
        "one"
    );
    assert!(!dir.join("next").exists() && !dir.join("old").exists());

    // A second refresh at once is refused; an aborted one leaves `current` as it was.
    let next = s.begin("shop_data").unwrap();
    assert!(matches!(s.begin("shop_data"), Err(StandbyError::Busy(_))));
    filled(&next, "two");
    s.abort("shop_data");
    assert!(!next.exists());
    assert_eq!(
        fs::read_to_string(dir.join("current/sub/file")).unwrap(),
        "one"
    );

    receive(&s, "shop_data", "three").unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("current/sub/file")).unwrap(),
        "three"
    );
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec!["current"]);

    // A leftover `next` (an agent that died while receiving) is replaced.
    fs::create_dir_all(dir.join("next/junk")).unwrap();
    receive(&s, "shop_data", "four").unwrap();
    assert!(!dir.join("current/junk").exists());

    // A swap cut short after `current` became `old`: `old` is the copy.
    fs::rename(dir.join("current"), dir.join("old")).unwrap();
    assert!(s.has("shop_data"));
    receive(&s, "shop_data", "five").unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("current/sub/file")).unwrap(),
        "five"
    );
    assert!(!dir.join("old").exists());
}

#[test]
fn a_first_refresh_that_fails_leaves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let s = Standbys::in_data_dir(data.path());
    let next = s.begin("shop_data").unwrap();
    filled(&next, "partial");
    s.abort("shop_data");
    assert!(!data.path().join("standby/shop_data").exists());
    assert!(!s.has("shop_data"));
}

#[test]
fn removing_or_promoting_during_a_refresh_drops_the_refresh() {
    let data = tempfile::tempdir().unwrap();
    let s = Standbys::in_data_dir(data.path());
    receive(&s, "shop_data", "one").unwrap();
    let next = s.begin("shop_data").unwrap();
    assert!(s.remove("shop_data").unwrap());
    // The receiving thread writes on, re-making directories...
    filled(&next, "two");
    assert!(matches!(
        s.commit("shop_data"),
        Err(StandbyError::Cancelled(_))
    ));
    assert!(!s.has("shop_data"));
    assert!(!data.path().join("standby/shop_data").exists());
    assert!(!s.remove("shop_data").unwrap(), "nothing left to remove");
}

#[test]
fn names_that_are_not_one_path_component_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let s = Standbys::in_data_dir(data.path());
    for bad in ["", ".", "..", "a/b", "../x"] {
        assert!(
            matches!(s.begin(bad), Err(StandbyError::BadName(_))),
            "{bad:?}"
        );
        assert!(!s.has(bad));
    }
}

fn assert_filled(dst: &Path, what: &str) {
    assert_eq!(fs::read_to_string(dst.join("sub/file")).unwrap(), what);
    assert_eq!(
        fs::read_link(dst.join("link")).unwrap(),
        Path::new("sub/file")
    );
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(dst), 0o700, "the root's mode travels");
    assert_eq!(mode(&dst.join("sub")), 0o750);
}

#[test]
fn promotion_moves_or_copies_the_copy_with_its_modes_and_links() {
    let data = tempfile::tempdir().unwrap();
    let s = Standbys::in_data_dir(data.path());
    receive(&s, "shop_data", "one").unwrap();
    let mtime = fs::symlink_metadata(data.path().join("standby/shop_data/current/sub/file"))
        .unwrap()
        .mtime();
    let volume = data.path().join("volume");
    fs::create_dir(&volume).unwrap();
    assert!(s.promote_into("shop_data", &volume).unwrap());
    assert_filled(&volume, "one");
    assert_eq!(
        fs::symlink_metadata(volume.join("sub/file"))
            .unwrap()
            .mtime(),
        mtime
    );
    assert!(!data.path().join("standby/shop_data").exists());
    assert!(
        !s.promote_into("shop_data", &volume).unwrap(),
        "nothing left"
    );

    // Across file systems: copied, the source left as it is.
    let src = data.path().join("src");
    fs::create_dir(&src).unwrap();
    filled(&src, "two");
    let copy = data.path().join("copy");
    fs::create_dir(&copy).unwrap();
    copy_into(&src, &copy).unwrap();
    assert_filled(&copy, "two");
    assert_filled(&src, "two");
}

#[test]
fn a_failed_move_puts_everything_back() {
    let data = tempfile::tempdir().unwrap();
    let src = data.path().join("src");
    fs::create_dir(&src).unwrap();
    filled(&src, "one");
    // `link` cannot replace a directory: whatever moved before it comes back.
    let dst = data.path().join("dst");
    fs::create_dir_all(dst.join("link/taken")).unwrap();
    let err = move_into(&src, &dst).unwrap_err();
    assert!(matches!(err, StandbyError::Io { .. }), "{err}");
    assert_filled(&src, "one");
}

/// Unmounts on drop (also when the test panics).
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn promotion_across_a_bind_mount_of_the_same_device_copies() {
    // The engine's volume directory and the agent's data dir on one device but through
    // two mounts (as on the test hosts): rename says EXDEV, so fill copies instead.
    let data = tempfile::tempdir().unwrap();
    let s = Standbys::in_data_dir(data.path());
    receive(&s, "shop_data", "three").unwrap();
    let real = data.path().join("real");
    let volume = data.path().join("volume");
    fs::create_dir(&real).unwrap();
    fs::create_dir(&volume).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&real)
        .arg(&volume)
        .status()
        .expect("run mount (the agent's tests run as root, as the agent does)");
    assert!(ok.success(), "mount --bind needs root, as the agent does");
    let _mounted = Mounted(volume.clone());
    assert!(s.promote_into("shop_data", &volume).unwrap());
    assert_filled(&volume, "three");
    assert_filled(&real, "three");
    assert!(!data.path().join("standby/shop_data").exists());
}
