//! What installing and uninstalling do, as a list of [`Step`]s decided purely from what
//! is on the machine, and [`apply`], which carries them out and prints each one.
//! `systemctl` sits behind the [`Systemctl`] trait so tests record its calls.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::unit::{env_path, unit_name, unit_path, Files};
use super::Role;

/// Where systemd keeps its runtime state when it is the init system; `sd_booted(3)`
/// checks the same directory.
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// Test hook: the directory whose presence means "systemd is running" (default
/// [`SYSTEMD_RUN_DIR`]), so a test can simulate a machine without systemd.
pub const SYSTEMD_RUN_DIR_ENV: &str = "SHOAL_SYSTEMD_RUN_DIR";

/// One thing done to the machine, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write a whole file (creating its directory), replacing any, with this mode.
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    /// Remove a file.
    Remove { path: PathBuf },
    /// Run `systemctl ARGS`.
    Systemctl(Vec<String>),
}

/// Runs `systemctl`; a fake records the calls in tests.
pub trait Systemctl {
    fn run(&mut self, args: &[String]) -> anyhow::Result<()>;
}

/// The machine's `systemctl`.
pub struct Real;

impl Systemctl for Real {
    fn run(&mut self, args: &[String]) -> anyhow::Result<()> {
        let status = std::process::Command::new("systemctl")
            .args(args)
            .status()
            .with_context(|| format!("run systemctl {}", args.join(" ")))?;
        anyhow::ensure!(
            status.success(),
            "systemctl {} failed ({status}): see `journalctl -xe`",
            args.join(" ")
        );
        Ok(())
    }
}

/// Whether systemd is this machine's init system (the check `sd_booted` makes).
pub fn running() -> bool {
    let dir = std::env::var_os(SYSTEMD_RUN_DIR_ENV).unwrap_or_else(|| SYSTEMD_RUN_DIR.into());
    Path::new(&dir).is_dir()
}

/// Installing `role` under `root`. `systemctl` is false with `--root` (the files are
/// for another system). `replacing` says a unit was installed already: it is restarted
/// so that the new flags take effect (`enable --now` leaves a running service alone).
pub fn plan_install(
    role: Role,
    files: &Files,
    root: &Path,
    systemctl: bool,
    replacing: bool,
) -> Vec<Step> {
    let name = unit_name(role);
    let mut steps = vec![
        Step::Write {
            path: root.join(env_path(role)),
            contents: files.env.clone(),
            mode: 0o600,
        },
        Step::Write {
            path: root.join(unit_path(role)),
            contents: files.unit.clone(),
            mode: 0o644,
        },
    ];
    if systemctl {
        steps.push(systemctl_step(&["daemon-reload"]));
        steps.push(systemctl_step(&["enable", "--now", &name]));
        if replacing {
            steps.push(systemctl_step(&["restart", &name]));
        }
    }
    steps
}

/// What is installed of one role: which of its files exist under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub role: Role,
    pub unit: bool,
    pub env: bool,
}

impl Installed {
    pub fn look(role: Role, root: &Path) -> Installed {
        Installed {
            role,
            unit: root.join(unit_path(role)).exists(),
            env: root.join(env_path(role)).exists(),
        }
    }
}

/// Uninstalling what `installed` lists: stop and disable each installed unit, remove
/// its files, then one `daemon-reload`. Data directories are never in the plan.
pub fn plan_uninstall(installed: &[Installed], root: &Path, systemctl: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    for i in installed {
        if systemctl && i.unit {
            steps.push(systemctl_step(&["disable", "--now", &unit_name(i.role)]));
        }
        if i.unit {
            steps.push(Step::Remove {
                path: root.join(unit_path(i.role)),
            });
        }
        if i.env {
            steps.push(Step::Remove {
                path: root.join(env_path(i.role)),
            });
        }
    }
    if systemctl && installed.iter().any(|i| i.unit) {
        steps.push(systemctl_step(&["daemon-reload"]));
    }
    steps
}

/// Carries out `steps` in order, printing each to `out` as it is done; stops at the
/// first failure, which says which step failed.
pub fn apply(
    steps: &[Step],
    systemctl: &mut dyn Systemctl,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for step in steps {
        match step {
            Step::Write {
                path,
                contents,
                mode,
            } => {
                write_file(path, contents, *mode)?;
                writeln!(out, "wrote {} (mode {mode:04o})", path.display())?;
            }
            Step::Remove { path } => {
                std::fs::remove_file(path)
                    .map_err(as_root_hint)
                    .with_context(|| format!("remove {}", path.display()))?;
                writeln!(out, "removed {}", path.display())?;
            }
            Step::Systemctl(args) => {
                systemctl.run(args)?;
                writeln!(out, "ran systemctl {}", args.join(" "))?;
            }
        }
    }
    Ok(())
}

/// Writes through a temporary file created with `mode` and renamed over `path`, so the
/// token is never readable by others, not even for a moment, and a failed write leaves
/// the old file whole.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    std::fs::create_dir_all(dir)
        .map_err(as_root_hint)
        .with_context(|| format!("create {}", dir.display()))?;
    let tmp = path.with_extension("shoal-tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` above is filtered by the umask, and an old temporary file keeps its own.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&tmp);
        as_root_hint(e).context(format!("write {}", path.display()))
    })
}

/// `/etc` is root's: say so when that is why a file could not be written or removed.
fn as_root_hint(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        anyhow::anyhow!("{e}: run as root (sudo)")
    } else {
        e.into()
    }
}

fn systemctl_step(args: &[&str]) -> Step {
    Step::Systemctl(args.iter().map(|s| s.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recording {
        calls: Vec<Vec<String>>,
        fail: Option<&'static str>,
    }

    impl Systemctl for Recording {
        fn run(&mut self, args: &[String]) -> anyhow::Result<()> {
            self.calls.push(args.to_vec());
            match self.fail {
                Some(verb) if args.first().is_some_and(|a| a == verb) => {
                    anyhow::bail!("{verb} failed")
                }
                _ => Ok(()),
            }
        }
    }

    fn s(args: &[&str]) -> Step {
        systemctl_step(args)
    }

    fn files() -> Files {
        Files {
            unit: "U\n".into(),
            env: "E\n".into(),
        }
    }

    #[test]
    fn install_writes_then_reloads_enables_and_starts() {
        let r = Path::new("/");
        let steps = plan_install(Role::Agent, &files(), r, true, false);
        assert_eq!(
            steps,
            vec![
                Step::Write {
                    path: "/etc/shoal/agent.env".into(),
                    contents: "E\n".into(),
                    mode: 0o600
                },
                Step::Write {
                    path: "/etc/systemd/system/shoal-agent.service".into(),
                    contents: "U\n".into(),
                    mode: 0o644
                },
                s(&["daemon-reload"]),
                s(&["enable", "--now", "shoal-agent.service"]),
            ]
        );
        let again = plan_install(Role::Agent, &files(), r, true, true);
        assert_eq!(again.last(), Some(&s(&["restart", "shoal-agent.service"])));
        let rooted = plan_install(Role::Controller, &files(), Path::new("/tmp/r"), false, true);
        assert_eq!(rooted.len(), 2);
        assert!(!rooted.iter().any(|st| matches!(st, Step::Systemctl(_))));
    }

    #[test]
    fn uninstall_stops_before_removing_and_reloads_once() {
        let r = Path::new("/");
        let both = [
            Installed {
                role: Role::Controller,
                unit: true,
                env: true,
            },
            Installed {
                role: Role::Agent,
                unit: true,
                env: false,
            },
        ];
        assert_eq!(
            plan_uninstall(&both, r, true),
            vec![
                s(&["disable", "--now", "shoal-controller.service"]),
                Step::Remove {
                    path: "/etc/systemd/system/shoal-controller.service".into()
                },
                Step::Remove {
                    path: "/etc/shoal/controller.env".into()
                },
                s(&["disable", "--now", "shoal-agent.service"]),
                Step::Remove {
                    path: "/etc/systemd/system/shoal-agent.service".into()
                },
                s(&["daemon-reload"]),
            ]
        );
        assert!(plan_uninstall(&[], r, true).is_empty());
        let env_only = [Installed {
            role: Role::Agent,
            unit: false,
            env: true,
        }];
        assert_eq!(
            plan_uninstall(&env_only, r, true),
            vec![Step::Remove {
                path: "/etc/shoal/agent.env".into()
            }]
        );
    }

    #[test]
    fn apply_writes_with_modes_runs_systemctl_and_prints_each_step() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let steps = plan_install(Role::Agent, &files(), dir.path(), true, false);
        let mut fake = Recording::default();
        let mut out = Vec::new();
        apply(&steps, &mut fake, &mut out).unwrap();
        let env = dir.path().join("etc/shoal/agent.env");
        assert_eq!(std::fs::read_to_string(&env).unwrap(), "E\n");
        let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fake.calls,
            vec![
                vec!["daemon-reload".to_string()],
                vec![
                    "enable".into(),
                    "--now".into(),
                    "shoal-agent.service".into()
                ]
            ]
        );
        let printed = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 4, "{printed}");
        assert_eq!(lines[0], format!("wrote {} (mode 0600)", env.display()));
        assert_eq!(lines[3], "ran systemctl enable --now shoal-agent.service");
        assert!(!dir.path().join("etc/shoal/agent.shoal-tmp").exists());

        // A failing step stops the rest and says which.
        let installed = [Installed::look(Role::Agent, dir.path())];
        let uninstall = plan_uninstall(&installed, dir.path(), true);
        let mut failing = Recording {
            fail: Some("disable"),
            ..Recording::default()
        };
        let err = apply(&uninstall, &mut failing, &mut Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("disable failed"));
        assert!(env.exists(), "nothing is removed once systemctl failed");
    }
}
