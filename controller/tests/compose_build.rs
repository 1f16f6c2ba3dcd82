//! `build:` and `pull_policy` in the Compose loader (issue 13): the string and long forms
//! into `ServiceSpec.build`, contexts resolved like Compose, what shoal does not build with
//! said, a missing context a warning that `shoal deploy` acts on, and wrong input refused
//! with file:line. Each test writes its stack into a fresh directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use shoal_controller::compose::{
    load, render, Diagnostic, Disposition, LoadError, LoadOptions, Loaded, Severity,
};
use shoal_proto::spec::{BuildSpec, PullPolicy, ServiceSpec};

/// A stack directory: files written relative to it.
struct Stack {
    dir: tempfile::TempDir,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The directory as the loader names it (no symlinks, as `tempdir` may have).
    fn abs(&self, rel: &str) -> String {
        let root = fs::canonicalize(self.dir.path()).expect("canonical tempdir");
        if rel.is_empty() {
            root.display().to_string()
        } else {
            root.join(rel).display().to_string()
        }
    }

    fn write(&self, rel: &str, text: &str) -> &Stack {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, text).expect("write");
        self
    }

    fn mkdir(&self, rel: &str) -> &Stack {
        fs::create_dir_all(self.path(rel)).expect("mkdir");
        self
    }

    fn opts(&self, files: &[&str], env: &[(&str, &str)]) -> LoadOptions {
        let root = fs::canonicalize(self.dir.path()).expect("canonical tempdir");
        LoadOptions {
            files: files.iter().map(|f| root.join(f)).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn load(&self, env: &[(&str, &str)]) -> Result<Loaded, LoadError> {
        load(&self.opts(&["compose.yaml"], env))
    }

    fn ok(&self) -> Loaded {
        self.load(&[])
            .unwrap_or_else(|e| panic!("should load:\n{e}"))
    }

    fn err(&self) -> Vec<String> {
        match self.load(&[]) {
            Ok(l) => panic!("should fail, loaded {:#?}", l.stack),
            Err(e) => self.lines(&e.diagnostics),
        }
    }

    /// Diagnostics as `compose.yaml:LINE:COL: SEVERITY: KEY: MESSAGE`.
    fn lines(&self, diags: &[Diagnostic]) -> Vec<String> {
        let prefix = format!("{}/", self.abs(""));
        diags
            .iter()
            .map(|d| {
                let line = d.to_string();
                line.strip_prefix(&prefix).unwrap_or(&line).to_string()
            })
            .collect()
    }

    fn warnings(&self, l: &Loaded) -> Vec<String> {
        let w: Vec<Diagnostic> = l
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .cloned()
            .collect();
        self.lines(&w)
    }
}

fn build_of<'a>(l: &'a Loaded, service: &str) -> &'a BuildSpec {
    l.stack.services[service]
        .build
        .as_ref()
        .unwrap_or_else(|| panic!("{service} has no build"))
}

fn disposition<'a>(l: &'a Loaded, service: &str, key: &str) -> Option<&'a Disposition> {
    l.keys
        .iter()
        .find(|k| k.service == service && k.key == key)
        .map(|k| &k.disposition)
}

#[test]
fn string_form_is_the_context_relative_to_the_file() {
    let s = Stack::new();
    s.write("app/Dockerfile", "FROM scratch\n")
        .write("compose.yaml", "services:\n  web:\n    build: ./app\n");
    let l = s.ok();
    assert_eq!(
        build_of(&l, "web"),
        &BuildSpec {
            context: s.abs("app"),
            at: format!("{}:3", s.abs("compose.yaml")),
            ..Default::default()
        }
    );
    assert_eq!(
        l.stack.services["web"].image, "",
        "the CLI names the result"
    );
    assert_eq!(disposition(&l, "web", "build"), Some(&Disposition::Honored));
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
}

#[test]
fn contexts_resolve_against_the_file_that_writes_them() {
    let s = Stack::new();
    s.mkdir("src/api")
        .mkdir("shared/base-ctx")
        .write("src/api/Dockerfile", "FROM x\n");
    s.write("shared/base-ctx/Dockerfile", "FROM x\n");
    // `..` in a -c file below the project, `~` from HOME, and an extended service whose
    // context is relative to the file it comes from.
    s.write(
        "stacks/compose.yaml",
        concat!(
            "services:\n",
            "  api:\n",
            "    build: {context: ../src/api}\n",
            "  home:\n",
            "    build: ~/ctx\n",
            "  inherited:\n",
            "    extends: {file: ../shared/base.yaml, service: base}\n",
        ),
    );
    s.write(
        "shared/base.yaml",
        "services:\n  base:\n    build: ./base-ctx\n",
    );
    s.mkdir("home/ctx").write("home/ctx/Dockerfile", "FROM x\n");
    let home = s.abs("home");
    let l = load(&s.opts(&["stacks/compose.yaml"], &[("HOME", &home)]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(build_of(&l, "api").context, s.abs("src/api"));
    assert_eq!(build_of(&l, "home").context, s.abs("home/ctx"));
    let inherited = build_of(&l, "inherited");
    assert_eq!(inherited.context, s.abs("shared/base-ctx"));
    // `at` names the file as diagnostics do (the path `extends` gave, `..` and all).
    let (file, line) = inherited.at.rsplit_once(':').expect("FILE:LINE");
    assert_eq!(
        (fs::canonicalize(file).expect("at names a file"), line),
        (PathBuf::from(s.abs("shared/base.yaml")), "3")
    );
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
}

#[test]
fn long_form_fills_every_key() {
    let s = Stack::new();
    s.write("ctx/build/App.Dockerfile", "FROM x\n").write(
        "compose.yaml",
        r#"services:
  app:
    image: registry.local:5000/team/app:dev
    build:
      context: ./ctx
      dockerfile: build/App.Dockerfile
      args:
        VERSION: "1.2"
        EMPTY: ""
      target: runtime
      labels: [org.example.team=core, org.example.flag]
      network: host
      extra_hosts:
        - "db.local:10.0.0.5"
        - "ip6=::1"
      shm_size: 64m
      platforms: [linux/amd64]
      tags: ["app:latest", "app:1.2"]
      no_cache: true
      pull: "true"
      x-note: kept for humans
"#,
    );
    let l = s.ok();
    let expected = BuildSpec {
        context: s.abs("ctx"),
        dockerfile: Some("build/App.Dockerfile".into()),
        dockerfile_inline: None,
        args: [("VERSION", "1.2"), ("EMPTY", "")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        target: Some("runtime".into()),
        labels: [("org.example.team", "core"), ("org.example.flag", "")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        network: Some("host".into()),
        extra_hosts: vec!["db.local:10.0.0.5".into(), "ip6:::1".into()],
        shm_size: Some(64 << 20),
        platforms: vec!["linux/amd64".into()],
        tags: vec!["app:latest".into(), "app:1.2".into()],
        no_cache: true,
        pull: true,
        at: format!("{}:4", s.abs("compose.yaml")),
        context_missing: false,
    };
    assert_eq!(build_of(&l, "app"), &expected);
    assert_eq!(
        l.stack.services["app"].image, "registry.local:5000/team/app:dev",
        "image: beside build: names the result"
    );
    assert_eq!(
        disposition(&l, "app", "build.x-note"),
        Some(&Disposition::Ignored("extension field".into()))
    );
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);

    // Extra shm sizes are plain bytes too.
    s.write(
        "compose.yaml",
        "services:\n  app:\n    build: {context: ./ctx, dockerfile: build/App.Dockerfile, shm_size: 2000000}\n",
    );
    assert_eq!(build_of(&s.ok(), "app").shm_size, Some(2_000_000));
}

#[test]
fn keys_shoal_does_not_build_with_are_warned_with_the_reason() {
    let s = Stack::new();
    s.write("Dockerfile", "FROM x\n").write(
        "compose.yaml",
        r#"services:
  app:
    build:
      context: .
      ssh: [default]
      secrets: [token]
      cache_from: [type=local,src=/c]
      cache_to: [type=local,dest=/c]
      additional_contexts: {base: ../base}
      isolation: hyperv
      privileged: true
      ulimits: {nofile: 1024}
      entitlements: [network.host]
      no_cache_filter: [deps]
      provenance: true
      sbom: true
      platforms: [linux/amd64, linux/arm64]
secrets:
  token:
    file: ./token.txt
"#,
    );
    let l = s.ok();
    let unused = [
        ("ssh", 5, "SSH"),
        ("secrets", 6, "build secrets"),
        ("cache_from", 7, "cache"),
        ("cache_to", 8, "cache"),
        ("additional_contexts", 9, "only the main context"),
        ("isolation", 10, "Windows"),
        ("privileged", 11, "unprivileged"),
        ("ulimits", 12, "ulimits"),
        ("entitlements", 13, "entitlements"),
        ("no_cache_filter", 14, "no_cache"),
        ("provenance", 15, "attestations"),
        ("sbom", 16, "attestations"),
    ];
    let warnings = s.warnings(&l);
    for (key, line, why) in unused {
        let Some(Disposition::Ignored(reason)) = disposition(&l, "app", &format!("build.{key}"))
        else {
            panic!("build.{key} must be reported as ignored: {:?}", l.keys);
        };
        assert!(reason.contains(why), "build.{key}: {reason}");
        let prefix = format!("compose.yaml:{line}:7: warning: services.app.build.{key}: ignored: ");
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&prefix) && w.contains(why)),
            "{prefix}.. in {warnings:#?}"
        );
    }
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "compose.yaml:17:18: warning: services.app.build.platforms: the deploying engine builds one image, for linux/amd64"
        )),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), unused.len() + 1, "{warnings:#?}");
    assert_eq!(disposition(&l, "app", "build"), Some(&Disposition::Honored));
}

#[test]
fn a_missing_context_is_a_warning_that_deploy_acts_on() {
    let s = Stack::new();
    s.write("a-file", "").write(
        "compose.yaml",
        concat!(
            "services:\n",
            "  gone:\n",
            "    build: ./x\n",
            "  long:\n",
            "    build:\n",
            "      context: ./y\n",
            "  file:\n",
            "    build: a-file\n",
            "  remote:\n",
            "    build: https://github.com/docker/app.git#main\n",
            "  git:\n",
            "    build: git@github.com:docker/app.git\n",
        ),
    );
    let l = s.ok();
    assert_eq!(
        s.warnings(&l),
        vec![
            format!("compose.yaml:3:12: warning: services.gone.build: build context ./x ({}) is not there: shoal deploy builds on this machine and will refuse it", s.abs("x")),
            format!("compose.yaml:6:16: warning: services.long.build.context: build context ./y ({}) is not there: shoal deploy builds on this machine and will refuse it", s.abs("y")),
            format!("compose.yaml:8:12: warning: services.file.build: build context a-file ({}) is not a directory: shoal deploy builds on this machine and will refuse it", s.abs("a-file")),
            "compose.yaml:10:12: warning: services.remote.build: build context https://github.com/docker/app.git#main is a URL or git context: shoal deploy builds only from a directory on this machine and will refuse it".to_string(),
            "compose.yaml:12:12: warning: services.git.build: build context git@github.com:docker/app.git is a URL or git context: shoal deploy builds only from a directory on this machine and will refuse it".to_string(),
        ]
    );
    for name in ["gone", "long", "file", "remote", "git"] {
        assert!(build_of(&l, name).context_missing, "{name}");
    }
    assert_eq!(build_of(&l, "gone").context, s.abs("x"));
    assert_eq!(
        build_of(&l, "remote").context,
        "https://github.com/docker/app.git#main",
        "a URL is kept as written"
    );
    // `shoal config` prints it all: the model and the warnings.
    let text = render(&l);
    assert!(text.contains("context_missing: true"), "{text}");
    assert!(
        text.contains("is not there: shoal deploy builds on this machine"),
        "{text}"
    );
}

#[test]
fn a_missing_dockerfile_in_an_existing_context_is_a_warning() {
    let s = Stack::new();
    s.mkdir("empty")
        .mkdir("lower")
        .write("lower/dockerfile", "FROM x\n");
    s.write(
        "compose.yaml",
        concat!(
            "services:\n",
            "  default:\n",
            "    build: ./empty\n",
            "  named:\n",
            "    build:\n",
            "      context: ./empty\n",
            "      dockerfile: Containerfile\n",
            "  inline:\n",
            "    build:\n",
            "      context: ./empty\n",
            "      dockerfile_inline: FROM x\n",
            "  lowercase:\n",
            "    build: ./lower\n",
        ),
    );
    let l = s.ok();
    assert_eq!(
        s.warnings(&l),
        vec![
            format!(
                "compose.yaml:3:12: warning: services.default.build: Dockerfile Dockerfile ({}) is not there: the build will fail",
                s.abs("empty/Dockerfile")
            ),
            format!(
                "compose.yaml:7:19: warning: services.named.build.dockerfile: Dockerfile Containerfile ({}) is not there: the build will fail",
                s.abs("empty/Containerfile")
            ),
        ]
    );
    for name in ["default", "named", "inline", "lowercase"] {
        assert!(
            !build_of(&l, name).context_missing,
            "{name}: the context is there; the builder reports a missing Dockerfile itself"
        );
    }
    assert_eq!(
        build_of(&l, "inline").dockerfile_inline.as_deref(),
        Some("FROM x")
    );
}

#[test]
fn wrong_build_input_is_refused_with_file_line_and_key() {
    let s = Stack::new();
    s.mkdir("ctx").write(
        "compose.yaml",
        concat!(
            "services:\n",
            "  both:\n",
            "    build:\n",
            "      context: ./ctx\n",
            "      dockerfile: Dockerfile\n",
            "      dockerfile_inline: FROM x\n",
            "  list:\n",
            "    build: [./ctx]\n",
            "  types:\n",
            "    build:\n",
            "      context: ./ctx\n",
            "      no_cache: maybe\n",
            "      shm_size: lots\n",
            "      args: 3\n",
            "  empty:\n",
            "    build: \"\"\n",
        ),
    );
    assert_eq!(
        s.err(),
        vec![
            "compose.yaml:6:26: error: services.both.build.dockerfile_inline: `dockerfile` and `dockerfile_inline` are both given: keep one (dockerfile is a file in the context, dockerfile_inline the Dockerfile's text)",
            "compose.yaml:8:12: error: services.list.build: must be a string or a mapping, not a list",
            "compose.yaml:12:17: error: services.types.build.no_cache: must be true or false, not `maybe`",
            "compose.yaml:13:17: error: services.types.build.shm_size: invalid size `lots`: use a number with an optional unit b, k, m, g, t (e.g. 512m, 1g)",
            "compose.yaml:14:13: error: services.types.build.args: must be a mapping or a list, not an integer",
            "compose.yaml:16:12: error: services.empty.build: the build context must not be empty: give a directory, e.g. `.`",
        ]
    );
}

#[test]
fn args_from_a_list_or_a_mapping_and_value_less_args_from_the_environment() {
    let s = Stack::new();
    s.write("Dockerfile", "FROM x\n")
        .write(".env", "FROM_DOTENV=dotenv\nOVERRIDDEN=dotenv\n")
        .write(
            "compose.yaml",
            concat!(
                "services:\n",
                "  list:\n",
                "    build:\n",
                "      context: .\n",
                "      args: [A=1, B=with=equals, FROM_PROCESS, FROM_DOTENV, OVERRIDDEN, UNSET, EMPTY=]\n",
                "  dict:\n",
                "    build:\n",
                "      context: .\n",
                "      args:\n",
                "        A: 1\n",
                "        FLAG: true\n",
                "        FROM_PROCESS:\n",
                "        UNSET:\n",
                "        INTERPOLATED: ${FROM_DOTENV}-x\n",
            ),
        );
    let l = s
        .load(&[("FROM_PROCESS", "process"), ("OVERRIDDEN", "process")])
        .unwrap_or_else(|e| panic!("{e}"));
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        build_of(&l, "list").args,
        map(&[
            ("A", "1"),
            ("B", "with=equals"),
            ("FROM_PROCESS", "process"),
            ("FROM_DOTENV", "dotenv"),
            ("OVERRIDDEN", "process"),
            ("EMPTY", ""),
        ]),
        "UNSET is left out, so the Dockerfile's default applies"
    );
    assert_eq!(
        build_of(&l, "dict").args,
        map(&[
            ("A", "1"),
            ("FLAG", "true"),
            ("FROM_PROCESS", "process"),
            ("INTERPOLATED", "dotenv-x"),
        ])
    );
}

fn with_pull_policy(s: &Stack, policy: &str, build: bool) {
    let build = if build { "    build: .\n" } else { "" };
    s.write(
        "compose.yaml",
        &format!("services:\n  app:\n    image: app:1\n    pull_policy: {policy}\n{build}"),
    );
}

#[test]
fn pull_policy_values() {
    let s = Stack::new();
    s.write("Dockerfile", "FROM x\n");
    for (written, policy, build) in [
        ("always", PullPolicy::Always, false),
        ("missing", PullPolicy::Missing, false),
        ("if_not_present", PullPolicy::Missing, false),
        ("never", PullPolicy::Never, false),
        ("build", PullPolicy::Build, true),
    ] {
        with_pull_policy(&s, written, build);
        let l = s.ok();
        assert_eq!(l.stack.services["app"].pull_policy, policy, "{written}");
        assert!(l.diagnostics.is_empty(), "{written}: {:?}", l.diagnostics);
        assert_eq!(
            disposition(&l, "app", "pull_policy"),
            Some(&Disposition::Honored)
        );
    }
    // Scheduled refreshes are accepted, as `missing`, and said.
    for written in ["daily", "weekly", "every_12h", "every_1w2d30m", "refresh"] {
        with_pull_policy(&s, written, false);
        let l = s.ok();
        assert_eq!(l.stack.services["app"].pull_policy, PullPolicy::Missing);
        assert_eq!(
            s.warnings(&l),
            vec![format!("compose.yaml:4:18: warning: services.app.pull_policy: `{written}`: shoal does not refresh images on a schedule; treated as `missing` (pulled only when not there)")]
        );
    }
}

#[test]
fn pull_policy_errors_say_where_and_what_is_valid() {
    let s = Stack::new();
    with_pull_policy(&s, "build", false);
    assert_eq!(
        s.err(),
        vec!["compose.yaml:4:18: error: services.app.pull_policy: pull_policy: build needs a build: section saying how to build the image"]
    );
    for bad in ["sometimes", "every_", "every_5x"] {
        with_pull_policy(&s, bad, false);
        assert_eq!(
            s.err(),
            vec![format!("compose.yaml:4:18: error: services.app.pull_policy: unknown pull_policy `{bad}`: use always, missing (or if_not_present), never or build")]
        );
    }
}

#[test]
fn image_and_build_name_the_result_and_neither_is_an_error() {
    let s = Stack::new();
    s.write("Dockerfile", "FROM x\n").write(
        "compose.yaml",
        concat!(
            "services:\n",
            "  named:\n",
            "    image: registry.local:5000/team/app:dev\n",
            "    build: .\n",
            "  unnamed:\n",
            "    build: .\n",
            "  pulled:\n",
            "    image: redis:7\n",
        ),
    );
    let l = s.ok();
    let svc = |n: &str| -> &ServiceSpec { &l.stack.services[n] };
    assert_eq!(svc("named").image, "registry.local:5000/team/app:dev");
    assert!(svc("named").build.is_some());
    assert_eq!(svc("unnamed").image, "");
    assert!(svc("pulled").build.is_none());
    // What the CLI will name them once built.
    let id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let stack = &l.stack.name;
    assert_eq!(
        svc("named").built_reference(stack, id),
        "registry.local:5000/team/app:shoal-0123456789ab"
    );
    assert_eq!(
        svc("unnamed").built_reference(stack, id),
        format!("{stack}-unnamed:shoal-0123456789ab")
    );

    s.write(
        "compose.yaml",
        "services:\n  nothing:\n    command: [run]\n",
    );
    assert_eq!(
        s.err(),
        vec!["compose.yaml:2:3: error: services.nothing: service nothing has no image: add image: (the image to run) or build: (how to build it)"]
    );
}

#[test]
fn shoal_config_prints_build_and_pull_policy_as_honored() {
    let s = Stack::new();
    s.write("app/Dockerfile", "FROM x\n").write(
        "compose.yaml",
        concat!(
            "services:\n",
            "  web:\n",
            "    pull_policy: always\n",
            "    build:\n",
            "      context: ./app\n",
            "      target: prod\n",
            "      ssh: [default]\n",
        ),
    );
    let l = s.ok();
    let text = render(&l);
    for line in [
        "    pull_policy: always\n".to_string(),
        "    build:\n".to_string(),
        format!("      context: {}\n", s.abs("app")),
        "      target: prod\n".to_string(),
        format!("      at: {}:4\n", s.abs("compose.yaml")),
        "#   build        honored\n".to_string(),
        "#   pull_policy  honored\n".to_string(),
        "#   build.ssh    ignored: shoal's build forwards no SSH agent".to_string(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    assert!(!text.contains("context_missing"), "{text}");
    assert!(Path::new(&s.abs("app")).is_dir());
}

#[test]
fn a_later_file_adds_to_a_string_form_build() {
    // Compose reads `build: DIR` as `build: {context: DIR}` before merging, so an override
    // or an extending service keeps the context and adds to it.
    let s = Stack::new();
    s.write("app/Dockerfile", "FROM x\n")
        .write("base/ctx/Dockerfile", "FROM x\n")
        .write(
            "compose.yaml",
            concat!(
                "services:\n",
                "  web:\n",
                "    build: ./app\n",
                "  child:\n",
                "    extends: {file: base/services.yaml, service: parent}\n",
                "    build:\n",
                "      args: [MODE=child]\n",
            ),
        )
        .write(
            "override.yaml",
            "services:\n  web:\n    build:\n      target: prod\n",
        )
        .write(
            "base/services.yaml",
            "services:\n  parent:\n    build: ./ctx\n",
        );
    let l =
        load(&s.opts(&["compose.yaml", "override.yaml"], &[])).unwrap_or_else(|e| panic!("{e}"));
    let web = build_of(&l, "web");
    assert_eq!(
        (web.context.as_str(), web.target.as_deref()),
        (s.abs("app").as_str(), Some("prod"))
    );
    let child = build_of(&l, "child");
    assert_eq!(child.context, s.abs("base/ctx"));
    assert_eq!(
        child.args,
        [("MODE".to_string(), "child".to_string())].into()
    );
    assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
}
