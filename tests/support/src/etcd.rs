//! A real etcd cluster for tests: `n` members of Debian's etcd (see [`etcd_binary`]) with TLS on
//! the client and peer ports (a CA and certificates made by openssl for this cluster only),
//! stopped and removed on drop even when a test fails. Either on loopback ([`Cluster::start`]:
//! ports drawn free from the kernel) or each member in a network namespace of the test's, on an
//! address of its own ([`Cluster::start_in`]: ports 2379 and 2380, as a real cluster; the
//! members check each other's certificate against the address a connection comes from, so two
//! members cannot share a namespace, whose connections between its own addresses come from the
//! address they go to). The member processes are the test's own children, ended by their ids.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use knock_etcd::{Client, Settings, TlsFiles};

use crate::netns::{test_address, Netns};

static N: AtomicU32 = AtomicU32::new(0);

/// The cluster.
pub struct Cluster {
    pub dir: PathBuf,
    names: Vec<String>,
    /// The address each member listens on.
    hosts: Vec<String>,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    /// The namespace of each member; empty on loopback.
    netns: Vec<String>,
    members: Vec<Option<Child>>,
}

/// Debian's etcd, unpacked by scripts/setup.sh into `target/peers/etcd` (not installed, so no
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

/// A self-signed CA (`ca.key`, `ca.pem`) in `dir`.
fn make_ca(dir: &Path, subject: &str) {
    openssl(
        dir,
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
            subject,
        ],
    );
}

/// A key and a certificate signed by the test CA, for `usage` (serverAuth, clientAuth), valid
/// for IP address `ip`.
fn issue(dir: &Path, name: &str, usage: &str, ip: &str) {
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
    std::fs::write(dir.join(format!("{name}.ext")), format!("subjectAltName=IP:{ip}\nextendedKeyUsage={usage}\n"))
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
    /// Starts `n` members on loopback and waits until the cluster answers.
    pub fn start(n: usize) -> Cluster {
        let hosts = vec!["127.0.0.1".to_string(); n];
        let client_ports = (0..n).map(|_| free_port()).collect();
        let peer_ports = (0..n).map(|_| free_port()).collect();
        Cluster::launch(hosts, client_ports, peer_ports, Vec::new())
    }

    /// Starts one member in each of `members`' namespaces, on its address (on an interface
    /// there, in the test ranges), listening on 2379 for clients and 2380 for peers, and waits
    /// until the cluster answers. The namespaces must outlive the cluster.
    pub fn start_in(members: &[(&Netns, &str)]) -> Cluster {
        let hosts = members.iter().map(|(_, a)| test_address(a).to_string()).collect();
        let netns = members.iter().map(|(ns, _)| ns.name().to_string()).collect();
        let n = members.len();
        Cluster::launch(hosts, vec![2379; n], vec![2380; n], netns)
    }

    fn launch(hosts: Vec<String>, client_ports: Vec<u16>, peer_ports: Vec<u16>, netns: Vec<String>) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "knock-etcd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let n = hosts.len();
        let names: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
        let members = (0..n).map(|_| None).collect();
        let mut c = Cluster { dir, names, hosts, client_ports, peer_ports, netns, members };
        make_ca(&c.dir, "/CN=knock test CA");
        for (name, host) in c.names.iter().zip(&c.hosts) {
            issue(&c.dir, name, "serverAuth,clientAuth", host);
        }
        issue(&c.dir, "knockd", "clientAuth", "127.0.0.1");
        for i in 0..n {
            c.start_member(i, true);
        }
        c.wait_ready(Duration::from_secs(20));
        c
    }

    fn url(&self, i: usize, port: u16) -> String {
        format!("https://{}:{port}", self.hosts[i])
    }

    fn start_member(&mut self, i: usize, new: bool) {
        let name = &self.names[i];
        let initial: Vec<String> =
            (0..self.names.len()).map(|j| format!("{}={}", self.names[j], self.url(j, self.peer_ports[j]))).collect();
        let (client, peer) = (self.url(i, self.client_ports[i]), self.url(i, self.peer_ports[i]));
        let (cert, key, ca) = (format!("{name}.pem"), format!("{name}.key"), "ca.pem".to_string());
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{name}.log"))).unwrap();
        // `ip netns exec` execs etcd: the child's id is etcd's.
        let mut command = match self.netns.get(i) {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(etcd_binary());
                c
            }
            None => Command::new(etcd_binary()),
        };
        let child = command
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
        (0..self.names.len()).map(|i| self.url(i, self.client_ports[i])).collect()
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
        make_ca(&other, "/CN=another CA");
        issue(&other, "intruder", "clientAuth", "127.0.0.1");
        TlsFiles { ca: self.dir.join("ca.pem"), cert: other.join("intruder.pem"), key: other.join("intruder.key") }
    }

    /// A client of every member with `timeout` per endpoint, in this process (loopback
    /// clusters only: a namespace's members are out of this process's reach).
    pub fn client(&self, timeout: Duration) -> Client {
        assert!(self.netns.is_empty(), "the members run in namespaces {:?}: reach them from inside one", self.netns);
        Client::new(&Settings { endpoints: self.endpoints(), tls: Some(self.tls()), timeout }).unwrap()
    }

    /// Waits until a linearizable read succeeds (a leader with quorum). On loopback the reads go
    /// through one client of knock-etcd, so a read that failed makes the next ones wait for its
    /// cooldown (`knock_etcd::COOLDOWN`), as they did for every client of the test meanwhile.
    pub fn wait_ready(&self, timeout: Duration) {
        let started = Instant::now();
        let client = self.netns.is_empty().then(|| self.client(Duration::from_millis(500)));
        loop {
            let read = match (&client, self.netns.first()) {
                (Some(client), _) => client.get(b"/ready").map(|_| ()).map_err(|e| e.to_string()),
                (None, Some(ns)) => self.read_from(ns),
                (None, None) => unreachable!("a cluster on loopback has a client"),
            };
            match read {
                Ok(()) => return,
                Err(e) if started.elapsed() > timeout => {
                    panic!("etcd not ready after {timeout:?}: {e}\n{}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// One linearizable read of a key from inside namespace `ns`, with knockd's certificate: curl
    /// makes the JSON gateway's call (`/v3/kv/range`) to each member in turn, until one answers
    /// within a second. The error says what each member did.
    pub fn read_from(&self, ns: &str) -> Result<(), String> {
        let tls = self.tls();
        let mut errors = Vec::new();
        for endpoint in self.endpoints() {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "curl", "--silent", "--show-error", "--fail", "--max-time", "1"])
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.cert)
                .arg("--key")
                .arg(&tls.key)
                .args(["--data", r#"{"key":"L3JlYWR5"}"#, &format!("{endpoint}/v3/kv/range")])
                .output()
                .map_err(|e| format!("curl (apt-get install curl): {e}"))?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"header\"") {
                return Ok(());
            }
            errors.push(format!("{endpoint}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Err(errors.join("; "))
    }

    /// What the members wrote to their standard output and error.
    pub fn logs(&self) -> String {
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
