//! The text of the files `shoal install` writes: the systemd unit and its environment
//! file. Pure rendering, so tests compare exact bytes.
//!
//! The unit runs `EXE ROLE $SHOAL_ARGS`: systemd replaces a word that is exactly `$VAR`
//! by the variable split at whitespace (`${VAR}` would be one argument), which is why
//! [`super::flags`] refuses flags holding spaces or quotes. The flags live in the
//! environment file so that changing them is an edit there and a restart; the file is
//! mode 0600 because it may hold the join token (`SHOAL_TOKEN`).

use std::path::Path;

use super::flags::ServiceFlags;
use super::Role;

/// The two files of one installed role ([`unit_path`], [`env_path`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub unit: String,
    pub env: String,
}

/// The unit's name, as `systemctl` takes it.
pub fn unit_name(role: Role) -> String {
    format!("shoal-{role}.service")
}

/// Where the unit is installed, relative to the root (`/` unless `--root`).
pub fn unit_path(role: Role) -> String {
    format!("etc/systemd/system/{}", unit_name(role))
}

/// Where the environment file is installed, relative to the root.
pub fn env_path(role: Role) -> String {
    format!("etc/shoal/{role}.env")
}

/// Both files for `role`, whose service runs the binary at `exe`.
pub fn render(role: Role, exe: &Path, flags: &ServiceFlags) -> Files {
    Files {
        unit: unit(role, exe),
        env: env(role, flags),
    }
}

fn unit(role: Role, exe: &Path) -> String {
    let (description, deps) = match role {
        Role::Controller => (
            "shoal controller (a member of the cluster's Raft group)",
            "network-online.target",
        ),
        // `Wants=`, not `Requires=`: an engine not run by systemd (or named otherwise)
        // still lets the agent start; the agent waits for the engine itself.
        Role::Agent => (
            "shoal agent (runs this node's tasks on the local Docker engine)",
            "network-online.target docker.service",
        ),
    };
    // Containers are dockerd's children, so no kill mode would reach them; `process`
    // also leaves alone anything else in the agent's cgroup, so stopping or restarting
    // the agent (an upgrade, `systemctl restart`) never interrupts what runs on the node.
    let kill_mode = match role {
        Role::Controller => "",
        Role::Agent => "KillMode=process\n",
    };
    format!(
        "# Written by `shoal install {role}`; `shoal uninstall {role}` removes it.\n\
         # The flags are in /{env} (SHOAL_ARGS); edit them there, then\n\
         # `systemctl restart {name}`.\n\
         [Unit]\n\
         Description={description}\n\
         Wants={deps}\n\
         After={deps}\n\
         \n\
         [Service]\n\
         Type=exec\n\
         EnvironmentFile=/{env}\n\
         ExecStart={exe} {role} $SHOAL_ARGS\n\
         Restart=always\n\
         RestartSec=2\n\
         {kill_mode}\
         LimitNOFILE=1048576\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        env = env_path(role),
        name = unit_name(role),
        exe = exec_word(&exe.to_string_lossy()),
    )
}

fn env(role: Role, flags: &ServiceFlags) -> String {
    let mut out = format!(
        "# Written by `shoal install {role}`: the flags of `shoal {role}`, split at spaces.\n\
         SHOAL_ARGS={}\n",
        env_value(&flags.args.join(" "))
    );
    if let Some(token) = &flags.token {
        out.push_str("# The join token (--token), kept out of the command line.\n");
        out.push_str(&format!("SHOAL_TOKEN={}\n", env_value(token)));
    }
    out
}

/// The flags in an environment file written by [`render`]: `SHOAL_ARGS` split back into
/// words, for `shoal uninstall` to find the data directory. `None` if it is not there.
pub fn args_in_env(text: &str) -> Option<Vec<String>> {
    let line = text.lines().find_map(|l| l.strip_prefix("SHOAL_ARGS="))?;
    let value = unescape(line.trim());
    Some(value.split_whitespace().map(str::to_string).collect())
}

/// A double-quoted environment file value: systemd removes the backslash before `"`,
/// `\`, `` ` `` and `$` there.
fn env_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn unescape(v: &str) -> String {
    let inner = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// One word of an `ExecStart=` line: `%` (specifiers) and `$` (variables) doubled, and
/// the whole in double quotes with `\` escapes if it holds a space, quote or backslash.
fn exec_word(w: &str) -> String {
    let plain = w.replace('%', "%%").replace('$', "$$");
    if !plain
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        return plain;
    }
    let mut out = String::from("\"");
    for c in plain.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn flags(args: &[&str], token: Option<&str>) -> ServiceFlags {
        ServiceFlags {
            args: args.iter().map(|s| s.to_string()).collect(),
            token: token.map(str::to_string),
            data_dir: PathBuf::from("/d"),
        }
    }

    #[test]
    fn the_agent_unit_and_env_file() {
        let files = render(
            Role::Agent,
            Path::new("/usr/local/bin/shoal"),
            &flags(
                &["--data-dir", "/d", "--addr", "c1:7370"],
                Some("SHOAL-T$1"),
            ),
        );
        assert_eq!(
            files.unit,
            "# Written by `shoal install agent`; `shoal uninstall agent` removes it.\n\
             # The flags are in /etc/shoal/agent.env (SHOAL_ARGS); edit them there, then\n\
             # `systemctl restart shoal-agent.service`.\n\
             [Unit]\n\
             Description=shoal agent (runs this node's tasks on the local Docker engine)\n\
             Wants=network-online.target docker.service\n\
             After=network-online.target docker.service\n\
             \n\
             [Service]\n\
             Type=exec\n\
             EnvironmentFile=/etc/shoal/agent.env\n\
             ExecStart=/usr/local/bin/shoal agent $SHOAL_ARGS\n\
             Restart=always\n\
             RestartSec=2\n\
             KillMode=process\n\
             LimitNOFILE=1048576\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        );
        assert_eq!(
            files.env,
            "# Written by `shoal install agent`: the flags of `shoal agent`, split at spaces.\n\
             SHOAL_ARGS=\"--data-dir /d --addr c1:7370\"\n\
             # The join token (--token), kept out of the command line.\n\
             SHOAL_TOKEN=\"SHOAL-T\\$1\"\n"
        );
    }

    #[test]
    fn the_controller_unit_has_no_docker_and_default_kill_mode() {
        let files = render(
            Role::Controller,
            Path::new("/opt/shoal"),
            &flags(&["--init"], None),
        );
        assert!(files.unit.contains("Wants=network-online.target\n"));
        assert!(!files.unit.contains("docker"));
        assert!(!files.unit.contains("KillMode"));
        assert!(files
            .unit
            .contains("ExecStart=/opt/shoal controller $SHOAL_ARGS\n"));
        assert!(!files.env.contains("SHOAL_TOKEN"));
    }

    #[test]
    fn odd_binary_paths_are_quoted_for_exec_start() {
        assert_eq!(exec_word("/usr/bin/shoal"), "/usr/bin/shoal");
        assert_eq!(exec_word("/opt/50%/$x"), "/opt/50%%/$$x");
        assert_eq!(exec_word("/my apps/sho\"al"), "\"/my apps/sho\\\"al\"");
    }

    #[test]
    fn the_flags_are_read_back_from_the_env_file() {
        let files = render(
            Role::Agent,
            Path::new("/s"),
            &flags(&["--data-dir", "/var/x$y", "--name", "n"], Some("t")),
        );
        assert_eq!(
            args_in_env(&files.env),
            Some(vec![
                "--data-dir".to_string(),
                "/var/x$y".into(),
                "--name".into(),
                "n".into()
            ])
        );
        assert_eq!(args_in_env("# nothing\n"), None);
    }
}
