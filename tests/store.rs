//! The store's truth survives what the disk does: a change that could not be
//! written lands once the disk takes writes again, with no request needed; a
//! store reached through a symbolic link stays a link; fields a newer
//! version wrote are kept; loose permissions are tightened or reported.
//!
//! Making writes fail as root takes more than `chmod` (root ignores file
//! modes). Where this machine lets the test mount (root with
//! CAP_SYS_ADMIN, as in CI), a "full disk" is a small tmpfs filled to the
//! last byte: reads, the lock and creating a file still work, writing the
//! new store fails with ENOSPC. Where it cannot mount, the test says so on
//! stderr and uses a read-only directory instead (see [`ReadOnlyDir`]).

use crate::common::fake_openrouter::{FakeOpenRouter, Reply};
use crate::common::{Env, Server, chat, key, key_id, request, reset_ms_in, wait_until};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// For things that take a second or two.
const T: Duration = Duration::from_secs(10);
/// For a failed write to be tried again: the waits between tries double up
/// to 30 s, and a test's disk may recover just after a long one started.
const RETRY: Duration = Duration::from_secs(45);

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether a new file can be created in `dir` (what every store write does).
fn can_create_in(dir: &Path) -> bool {
    let probe = dir.join(".probe");
    let ok = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// A directory in which nothing can be created, as root too, until
/// [`ReadOnlyDir::restore`]. Tried in order: `chmod 0500` (enough when not
/// root), `chattr +i` (root, on ext4/xfs/btrfs: not even root may create
/// files in an immutable directory), a read-only bind mount of the
/// directory on itself (root with CAP_SYS_ADMIN, any file system).
pub struct ReadOnlyDir {
    dir: PathBuf,
    how: &'static str,
}

impl ReadOnlyDir {
    pub fn make(dir: &Path) -> Self {
        let path = dir.to_str().unwrap();
        let tries: [(&'static str, &dyn Fn() -> bool); 3] = [
            ("chmod 0500", &|| {
                !is_root() && run("chmod", &["0500", path]) && !can_create_in(dir)
            }),
            ("chattr +i", &|| {
                run("chattr", &["+i", path]) && !can_create_in(dir)
            }),
            ("a read-only bind mount", &|| {
                run("mount", &["--bind", path, path])
                    && run("mount", &["-o", "remount,bind,ro", path])
                    && !can_create_in(dir)
            }),
        ];
        for (how, attempt) in tries {
            if attempt() {
                eprintln!("store directory made read-only with {how}");
                return Self {
                    dir: dir.to_path_buf(),
                    how,
                };
            }
            Self::undo(dir, how);
        }
        panic!(
            "cannot make {} read-only on this machine (tried chmod 0500 as non-root, \
             chattr +i and a read-only bind mount): this test needs one of them",
            dir.display()
        );
    }

    fn undo(dir: &Path, how: &str) {
        let path = dir.to_str().unwrap();
        match how {
            "chmod 0500" => {
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            "chattr +i" => {
                run("chattr", &["-i", path]);
            }
            _ => {
                // Only when the bind mount is there: never a mount above it.
                if is_mount_point(dir) {
                    run("umount", &[path]);
                }
            }
        }
    }

    fn restore(&self) {
        Self::undo(&self.dir, self.how);
        assert!(
            can_create_in(&self.dir),
            "{} still read-only",
            self.dir.display()
        );
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        Self::undo(&self.dir, self.how);
    }
}

fn is_mount_point(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap_or_default()))
    })
}

/// Where the store's directory cannot take a write: a full tmpfs when the
/// machine allows mounting one, else a read-only directory.
enum Unwritable {
    Full { dir: PathBuf, filler: PathBuf },
    ReadOnly(ReadOnlyDir),
}

/// Mount a small tmpfs on `dir` (empty, created here). None when this
/// machine does not let us mount (not root, no CAP_SYS_ADMIN, no `mount`).
fn mount_tmpfs(dir: &Path) -> Option<TmpfsMount> {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.to_str().unwrap();
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64k,mode=0700",
            "orproxy-test",
            path,
        ],
    )
    .then(|| TmpfsMount(dir.to_path_buf()))
}

/// A tmpfs mounted by the test, unmounted on drop.
struct TmpfsMount(PathBuf);

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let path = self.0.to_str().unwrap();
        if !run("umount", &[path]) {
            run("umount", &["-l", path]);
        }
    }
}

impl Unwritable {
    /// Stop writes to `dir` (the store's directory, on `mount` if any).
    fn start(dir: &Path, mount: Option<&TmpfsMount>) -> Self {
        match mount {
            Some(_) => {
                // Fill every byte left: the next file written gets ENOSPC.
                use std::io::Write;
                let filler = dir.join("filler");
                let mut f = std::fs::File::create(&filler).unwrap();
                let page = [0u8; 4096];
                while f.write_all(&page).and_then(|()| f.sync_all()).is_ok() {}
                let small = [0u8; 1];
                while f.write_all(&small).and_then(|()| f.sync_all()).is_ok() {}
                assert!(!can_create_in_with_data(dir), "the tmpfs is not full");
                Unwritable::Full {
                    dir: dir.to_path_buf(),
                    filler,
                }
            }
            None => Unwritable::ReadOnly(ReadOnlyDir::make(dir)),
        }
    }

    fn recover(&self) {
        match self {
            Unwritable::Full { dir, filler } => {
                std::fs::remove_file(filler).unwrap();
                assert!(can_create_in_with_data(dir));
            }
            Unwritable::ReadOnly(ro) => ro.restore(),
        }
    }
}

/// Whether a file with some bytes in it can be written in `dir` (a full
/// tmpfs still creates empty files).
fn can_create_in_with_data(dir: &Path) -> bool {
    let probe = dir.join(".probe");
    let ok = std::fs::write(&probe, [b'x'; 2048]).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn reachable(server: &Server) -> bool {
    let health = request("GET", &server.url("/health"), &[], None).json();
    health["store"]["reachable"]
        .as_bool()
        .unwrap_or_else(|| panic!("no store.reachable in {health}"))
}

/// Whether the store file has key 1 parked (for every model, or for `:free`
/// ones: a per-minute free-model limit may be either).
fn key_1_parked_in_store(env: &Env) -> bool {
    let state = &env.store_json()["keys"][0]["state"];
    state["cooldown_until"].is_string() || state["free_cooldown_until"].is_string()
}

/// Key 1 answers a per-minute 429: the server parks it (a change it must
/// save) and key 2 serves the request.
fn park_key_1(fake: &FakeOpenRouter, server: &Server) {
    fake.push(&key(1), Reply::rate_limit_per_min(reset_ms_in(3600)));
    let r = chat(server, &json!({"model": "m:free"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-orproxy-key"), Some(key_id(&key(2)).as_str()));
}

/// The server serves while its store cannot be written, reports the store
/// unreachable, and once writes work again the pending cooldown lands and
/// the store is reachable, with no request arriving in between.
fn pending_change_lands_after_recovery(env: &Env, mount: Option<&TmpfsMount>) {
    env.add_keys(&[key(1), key(2)]);
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    assert!(reachable(&server));
    let data = env.store.parent().unwrap();
    let unwritable = Unwritable::start(data, mount);

    park_key_1(&fake, &server);
    wait_until("the store reported unreachable", T, || !reachable(&server));
    assert!(!key_1_parked_in_store(env), "nothing was written");
    // Serving from memory, key 1 parked there. (No proxied request from
    // here on: one would give the pool a new change to save, and the test
    // is about the change that was refused.)
    let health = request("GET", &server.url("/health"), &[], None);
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["keys"]["free_held"], 1, "{}", health.text());
    let requests = fake.request_count();

    unwritable.recover();
    // The file is read directly.
    wait_until("the pending cooldown in the store", RETRY, || {
        key_1_parked_in_store(env)
    });
    wait_until("the store reachable again", T, || reachable(&server));
    assert_eq!(fake.request_count(), requests);
    let log = server.log();
    assert!(log.contains("trying again"), "{log}");
    assert!(log.contains("is written again"), "{log}");
}

#[test]
fn a_change_refused_by_a_full_disk_lands_when_space_is_back_without_a_request() {
    let env = Env::new();
    let data = env.store.parent().unwrap().to_path_buf();
    let mount = mount_tmpfs(&data);
    if mount.is_none() {
        eprintln!(
            "cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN): \
             testing with a read-only store directory instead of a full disk"
        );
    }
    pending_change_lands_after_recovery(&env, mount.as_ref());
}

#[test]
fn a_change_refused_by_a_read_only_directory_lands_when_it_is_writable_again() {
    let env = Env::new();
    pending_change_lands_after_recovery(&env, None);
}

#[test]
fn a_server_stopping_while_its_store_cannot_be_written_says_what_is_lost() {
    let env = Env::new();
    env.add_keys(&[key(1), key(2)]);
    let fake = FakeOpenRouter::start();
    let mut server = env.serve(&fake.base_url(), &[]);
    let _unwritable = ReadOnlyDir::make(env.store.parent().unwrap());
    park_key_1(&fake, &server);
    wait_until("the store reported unreachable", T, || !reachable(&server));
    assert!(server.signal_and_wait("TERM").success());
    let log = server.log();
    assert!(
        log.contains("stopping without saving the last key states"),
        "{log}"
    );
    assert!(log.contains("orproxy stopped"), "{log}");
    assert!(!key_1_parked_in_store(&env));
}

#[test]
fn a_server_stopping_while_redis_is_down_says_what_is_lost() {
    let mut redis = crate::common::redis::Redis::start();
    let env = Env::with_store(&redis.url());
    env.add_keys(&[key(1), key(2)]);
    let fake = FakeOpenRouter::start();
    let mut server = env.serve(&fake.base_url(), &[]);
    redis.kill();
    park_key_1(&fake, &server);
    wait_until("the store reported unreachable", T, || !reachable(&server));
    assert!(server.signal_and_wait("TERM").success());
    let log = server.log();
    assert!(
        log.contains("stopping without sending") && log.contains("queued changes"),
        "{log}"
    );
    assert!(log.contains("orproxy stopped"), "{log}");
}

#[test]
fn a_store_reached_through_a_symbolic_link_is_written_through_it() {
    let env = Env::new();
    let real = env.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = env.store.parent().unwrap();
    std::fs::create_dir(data).unwrap();
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("../real/keys.json", &env.store).unwrap();
    let is_link = || {
        std::fs::symlink_metadata(&env.store)
            .unwrap()
            .file_type()
            .is_symlink()
    };

    env.add_keys(&[key(1), key(2)]);
    assert!(is_link(), "keys add replaced the link");
    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    park_key_1(&fake, &server);
    wait_until("the cooldown in the store", T, || {
        key_1_parked_in_store(&env)
    });
    assert!(is_link(), "the server replaced the link");
    let target: Value =
        serde_json::from_slice(&std::fs::read(real.join("keys.json")).unwrap()).unwrap();
    assert_eq!(target, env.store_json(), "the link leads to the real file");
    assert_eq!(env.list_json()[0]["status"], "free_held");
    // The lock is beside the real file; nothing but the link is beside it.
    assert!(real.join("keys.json.lock").exists());
    let beside_link: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside_link, ["keys.json"]);
}

#[test]
fn fields_a_newer_version_wrote_survive_the_keys_commands_and_the_server() {
    let env = Env::new();
    let today = chrono::Utc::now().date_naive().to_string();
    let (id1, id2, id3) = (key_id(&key(1)), key_id(&key(2)), key_id(&key(3)));
    env.write_store(&json!({
        "version": 1,
        "written_by": "orproxy 9.0",
        "keys": [
            {
                "id": id1, "key": key(1), "added_at": "2026-01-01T00:00:00Z",
                "owner": {"team": "infra"},
                "state": {"disabled": true, "disabled_reason": "401", "streak_started": "2026-01-02T00:00:00Z"},
                "info": {
                    "creator_user_id": "user_1",
                    "rate_limit": {"requests": 10, "interval": "10s"},
                    "free_model_daily_requests": {"used": 1, "window": "utc-day"}
                }
            },
            {"id": id2, "key": key(2), "added_at": "2026-01-01T00:00:00Z", "pinned": true}
        ],
        "accounts": {"user_1": {"day": today, "free_requests": 4, "tier": "gold"}}
    }));
    env.add_keys(&[key(3)]);
    env.run(&["keys", "reactivate", &id1]).success();
    env.run(&["keys", "remove", &id3]).success();
    assert_eq!(env.list_json().len(), 2);

    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &[]);
    park_key_1(&fake, &server);
    wait_until("the cooldown in the store", T, || {
        key_1_parked_in_store(&env)
    });
    drop(server);

    let v = env.store_json();
    assert_eq!(v["written_by"], "orproxy 9.0");
    let k1 = &v["keys"][0];
    assert_eq!(k1["owner"], json!({"team": "infra"}));
    assert_eq!(k1["state"]["streak_started"], "2026-01-02T00:00:00Z");
    assert_eq!(k1["state"]["disabled"], false, "reactivated");
    assert_eq!(
        k1["info"]["rate_limit"],
        json!({"requests": 10, "interval": "10s"})
    );
    assert_eq!(k1["info"]["free_model_daily_requests"]["window"], "utc-day");
    assert_eq!(v["keys"][1]["pinned"], true);
    assert_eq!(v["accounts"]["user_1"]["tier"], "gold");
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn loose_permissions_on_the_store_and_the_logs_are_tightened_or_reported() {
    let env = Env::new();
    env.add_keys(&[key(1)]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let data = env.store.parent().unwrap();
    chmod(data, 0o755);
    chmod(&env.store, 0o644);
    let logs = env.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    chmod(&logs, 0o755);
    let today = chrono::Local::now().date_naive().format("%Y-%m-%d");
    let errors = logs.join(format!("errors-{today}.log"));
    std::fs::write(&errors, "").unwrap();
    chmod(&errors, 0o644);

    let fake = FakeOpenRouter::start();
    let server = env.serve(&fake.base_url(), &["--log-dir", logs.to_str().unwrap()]);
    let said = |what: &str| server.log().lines().any(|l| l.contains(what));
    wait_until("the four permission warnings", T, || {
        said("the key store")
            && said("the store directory")
            && said("the log file")
            && said("the log directory")
    });
    let log = server.log();
    for line in log.lines().filter(|l| l.contains("open to other users")) {
        assert!(line.contains(" WARN "), "{line}");
    }
    assert!(log.contains("(mode 0644); it is 0600 now"), "{log}");
    assert!(
        log.contains(&format!("`chmod 700 {}`", data.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!("`chmod 700 {}`", logs.display())),
        "{log}"
    );
    // Files orproxy owns are now private; directories are left as they were.
    assert_eq!(mode(&env.store), 0o600);
    assert_eq!(mode(&errors), 0o600);
    assert_eq!((mode(data), mode(&logs)), (0o755, 0o755));
    // The warnings are in the errors file too.
    crate::common::wait_until("the warnings in the errors file", T, || {
        std::fs::read_to_string(&errors).is_ok_and(|t| t.contains("open to other users"))
    });
}
