use crate::common::{BIN, Env};
use std::path::Path;
use std::process::Command;

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The committed completions/ and man/ are exactly what the binary generates:
/// regenerate with `cargo run -- generate --out-dir .` when the CLI changes.
#[test]
fn committed_completions_and_man_pages_are_current() {
    let env = Env::new();
    let out = env.dir.path().join("gen");
    env.run(&["generate", "--out-dir", out.to_str().unwrap()])
        .success();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["completions", "man"] {
        let generated = files(&out.join(sub));
        let committed = files(&repo.join(sub));
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&generated),
            names(&committed),
            "{sub}/ file list differs"
        );
        for ((name, a), (_, b)) in generated.iter().zip(&committed) {
            assert!(
                a == b,
                "{sub}/{name} is stale: run `cargo run -- generate --out-dir .`"
            );
        }
    }
    let completions = files(&out.join("completions"));
    for shell_file in [
        "orproxy.bash",
        "_orproxy",
        "orproxy.fish",
        "_orproxy.ps1",
        "orproxy.elv",
    ] {
        assert!(
            completions.iter().any(|(n, _)| n == shell_file),
            "missing {shell_file}"
        );
    }
    let man = files(&out.join("man"));
    for page in [
        "orproxy.1",
        "orproxy-keys.1",
        "orproxy-keys-add.1",
        "orproxy-keys-list.1",
    ] {
        assert!(man.iter().any(|(n, _)| n == page), "missing {page}");
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let env = Env::new();
    env.run(&["keys"]).failure(2);
    env.run(&["keys", "reactivate"]).failure(2);
    env.run(&["keys", "reactivate", "abc", "--all"]).failure(2);
    env.run(&["no-such-command"]).failure(2);
    let help = env.run(&["keys", "add", "--help"]).success();
    assert!(help.stdout.contains("--no-verify"));
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("orproxy "));
}
