//! A real `redis-server` for the shared-store tests: one per test, on a
//! free loopback port, without persistence, killed on drop. `scripts/test`
//! installs redis-server when it is missing.

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    /// With TLS: the CA that signed the server's certificate (for
    /// `SSL_CERT_FILE`).
    pub ca: Option<std::path::PathBuf>,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(None)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn start_with(password: Option<&str>) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            password: password.map(str::to_owned),
            ca: None,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.launch();
        redis
    }

    /// A server that only speaks TLS, with a certificate for `localhost`
    /// signed by a CA of its own (made with the openssl command).
    pub fn start_tls(password: &str) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("the openssl command (scripts/test installs it)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=orproxy-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let mut redis = Redis {
            child: None,
            port: free_port(),
            password: Some(password.to_owned()),
            ca: Some(d.join("ca.pem")),
            dir,
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        if self.ca.is_some() {
            let d = self.dir.path();
            cmd.args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(d.join("srv.pem"))
                .arg("--tls-key-file")
                .arg(d.join("srv.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}): install it (scripts/test does, with apt-get install redis-server)"
            )
        });
        self.child = Some(child);
        super::wait_until("redis-server answers", Duration::from_secs(20), || {
            self.cli(&["PING"]).trim() == "PONG"
        });
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://localhost:PORT/0` with TLS),
    /// with the password when there is one.
    pub fn url(&self) -> String {
        let (scheme, host) = if self.ca.is_some() {
            ("rediss", "localhost")
        } else {
            ("redis", "127.0.0.1")
        };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@{host}:{}/0", self.port),
            None => format!("{scheme}://{host}:{}/0", self.port),
        }
    }

    /// Run a command with redis-cli and return its raw output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string());
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        if let Some(ca) = &self.ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kill the server at once (SIGKILL): it loses everything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
