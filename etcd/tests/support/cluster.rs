//! A real etcd cluster for tests: `n` members of Debian's etcd (see [`etcd_binary`]) on loopback, with TLS on the
//! client and peer ports (a CA and certificates made by openssl for this cluster only), stopped
//! and removed on drop even when a test fails. Ports are drawn free from the kernel; the member
//! processes are the test's own children, ended by their ids.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use knock_etcd::{Client, Settings, TlsFiles};

static N: AtomicU32 = AtomicU32::new(0);

/// The cluster.
pub struct Cluster {
    pub dir: PathBuf,
    names: Vec<String>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    members: Vec<Option<Child>>,
}

/// Debian's etcd, unpacked by scripts/setup.sh into <target>/peers/etcd (not installed, so no
/// etcd service runs on the machine).
pub fn etcd_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let etcd = target.join("peers/etcd/usr/bin/etcd");
    assert!(
        etcd.exists(),
        "{} is missing: run `sudo bash scripts/setup.sh` (it unpacks Debian's etcd-server)",
        etcd.display()
    );
    etcd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A key and a certificate signed by the test CA, for `usage` (serverAuth, clientAuth).
fn issue(dir: &Path, name: &str, usage: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"))
        .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Cluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "knock-etcd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=knock test CA",
            ],
        );
        let names: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
        for name in &names {
            issue(&dir, name, "serverAuth,clientAuth");
        }
        issue(&dir, "knockd", "clientAuth");
        let client_ports = (0..n).map(|_| free_port()).collect();
        let peer_ports = (0..n).map(|_| free_port()).collect();
        let mut c = Cluster { dir, names, client_ports, peer_ports, members: (0..n).map(|_| None).collect() };
        for i in 0..n {
            c.start_member(i, true);
        }
        c.wait_ready(Duration::from_secs(20));
        c
    }

    fn start_member(&mut self, i: usize, new: bool) {
        let name = &self.names[i];
        let initial: Vec<String> =
            self.names.iter().zip(&self.peer_ports).map(|(n, p)| format!("{n}=https://127.0.0.1:{p}")).collect();
        let (client, peer) = (
            format!("https://127.0.0.1:{}", self.client_ports[i]),
            format!("https://127.0.0.1:{}", self.peer_ports[i]),
        );
        let (cert, key, ca) = (format!("{name}.pem"), format!("{name}.key"), "ca.pem".to_string());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(etcd_binary())
            .args(["--name", name, "--data-dir", &format!("{name}.data")])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", "knock-test"])
            .args(["--initial-cluster-state", if new { "new" } else { "existing" }])
            .args(["--cert-file", &cert, "--key-file", &key, "--client-cert-auth", "--trusted-ca-file", &ca])
            .args([
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file",
                &ca,
            ])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.members[i] = Some(child);
    }

    /// Kills member `i` (SIGKILL, by its process id).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.start_member(i, false);
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.client_ports.iter().map(|p| format!("https://127.0.0.1:{p}")).collect()
    }

    /// The TLS files of a client (`knockd`'s certificate).
    pub fn tls(&self) -> TlsFiles {
        TlsFiles { ca: self.dir.join("ca.pem"), cert: self.dir.join("knockd.pem"), key: self.dir.join("knockd.key") }
    }

    /// Client TLS files whose certificate another CA signed (the cluster's CA is still trusted
    /// for the members' certificates).
    pub fn foreign_client_tls(&self) -> TlsFiles {
        let other = self.dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        openssl(
            &other,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=another CA",
            ],
        );
        issue(&other, "intruder", "clientAuth");
        TlsFiles { ca: self.dir.join("ca.pem"), cert: other.join("intruder.pem"), key: other.join("intruder.key") }
    }

    /// A client of every member with `timeout` per endpoint.
    pub fn client(&self, timeout: Duration) -> Client {
        Client::new(&Settings { endpoints: self.endpoints(), tls: Some(self.tls()), timeout }).unwrap()
    }

    /// Waits until a linearizable read succeeds (a leader with quorum).
    pub fn wait_ready(&self, timeout: Duration) {
        let client = self.client(Duration::from_millis(500));
        let started = Instant::now();
        loop {
            match client.get(b"/ready") {
                Ok(_) => return,
                Err(e) if started.elapsed() > timeout => {
                    panic!("etcd not ready after {timeout:?}: {e}\n{}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn logs(&self) -> String {
        self.names
            .iter()
            .map(|n| std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::env::var_os("KNOCK_ETCD_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
