//! Servers a test starts on loopback with one of the project's scripts
//! (`scripts/rabbitmq-cluster.sh`, `scripts/redis-sentinel.sh`): `start DIR
//! PORT` on free ports, `stop DIR` when dropped, also when the start failed
//! half-way or the test fails.

use std::path::PathBuf;
use std::process::Command;

/// Servers started by `scripts/<script>`, stopped when dropped.
pub struct Servers {
    script: PathBuf,
    /// Their folder (configuration, pid files, logs).
    pub dir: PathBuf,
    /// The first of their ports.
    pub port: u16,
    /// What `start` printed: `NAME=value` lines.
    out: String,
}

/// `count` consecutive loopback ports nobody listens on (nor on each plus
/// `shifted`, when given), from a random start at or above `from`.
fn free_ports(from: u16, count: u16, shifted: Option<u16>) -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let base = from + rand::random_range(0..1_000u16) * count;
        let all = (0..count).all(|i| free(base + i) && shifted.is_none_or(|s| free(base + i + s)));
        if all {
            return base;
        }
    }
}

impl Servers {
    /// Runs `scripts/<script> start DIR PORT` on `count` free ports from
    /// `from` (each also free at `+shifted`). A script that cannot start
    /// its servers fails the test with its reason. Only a missing
    /// prerequisite (exit 3) under `WF_TEST_ALLOW_SKIP=1`, which `make test`
    /// and CI never set, returns `None` after printing `SKIPPED` and why.
    pub fn start(script: &str, from: u16, count: u16, shifted: Option<u16>) -> Option<Servers> {
        let port = free_ports(from, count, shifted);
        let name = script.trim_end_matches(".sh");
        let mut servers = Servers {
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("scripts")
                .join(script),
            dir: std::env::temp_dir().join(format!("wf-{name}-{port}")),
            port,
            out: String::new(),
        };
        let out = Command::new(&servers.script)
            .args(["start", servers.dir.to_str().unwrap(), &port.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        // Exit 3: a prerequisite is missing (`make test` installs RabbitMQ
        // and Redis through scripts/ensure-services.sh; the cluster also
        // needs root and the `rabbitmq` user).
        if out.status.code() == Some(3) {
            let why = format!(
                "scripts/{script} cannot start its servers here: {}",
                stderr.trim()
            );
            if skip_allowed(std::env::var("WF_TEST_ALLOW_SKIP").ok().as_deref()) {
                println!("SKIPPED (WF_TEST_ALLOW_SKIP=1): {why}");
                return None;
            }
            panic!("{why} (set WF_TEST_ALLOW_SKIP=1 to skip on a machine without them)");
        }
        servers.out = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "scripts/{script} starts: {}{stderr}",
            servers.out
        );
        Some(servers)
    }

    /// The value `start` printed for `NAME`.
    pub fn printed(&self, name: &str) -> &str {
        let prefix = format!("{name}=");
        self.out
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("the script prints {name}: {}", self.out))
    }

    /// SIGKILL of the process whose pid file is `pidfile` in the folder.
    pub fn kill(&self, pidfile: &str) {
        let pid = std::fs::read_to_string(self.dir.join(pidfile)).unwrap();
        let killed = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_warnings();
        }
        let _ = Command::new(&self.script)
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

impl Servers {
    /// A failing test shows the servers' last warnings and errors (their
    /// folder is deleted with them): `<dir>/<server>/log/*.log`.
    fn print_log_warnings(&self) {
        let Ok(servers) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for server in servers.flatten() {
            let Ok(logs) = std::fs::read_dir(server.path().join("log")) else {
                continue;
            };
            for log in logs
                .flatten()
                .filter(|l| l.path().extension().is_some_and(|e| e == "log"))
            {
                let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                let notable: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("[warning]") || l.contains("[error]"))
                    .collect();
                let from = notable.len().saturating_sub(40);
                eprintln!(
                    "--- {}: the last {} warnings and errors ---",
                    log.path().display(),
                    notable.len() - from
                );
                for line in &notable[from..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Whether `WF_TEST_ALLOW_SKIP` (its value, if set) lets a test without its
/// servers skip: only exactly `1`.
fn skip_allowed(value: Option<&str>) -> bool {
    value == Some("1")
}

#[test]
fn only_an_explicit_opt_in_lets_a_test_skip() {
    assert!(skip_allowed(Some("1")));
    for v in [None, Some(""), Some("0"), Some("true"), Some("yes")] {
        assert!(!skip_allowed(v), "{v:?}");
    }
}
