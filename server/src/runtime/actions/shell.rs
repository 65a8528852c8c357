//! knockd's `command` action: `start_command` / `stop_command` / `cmd_timeout` templates, run
//! with `/bin/sh -c` as knockd runs them with `system()`.
//!
//! **What reaches the shell.** [`render`] copies the template verbatim and substitutes only
//! `%IP%` (the canonical text of a parsed address, so `[0-9a-f.:]` only), `%PORT%` (a number) and
//! `%DOOR%` (a name of `[A-Za-z0-9_.-]`, refused otherwise). Nothing else from the network ever
//! reaches the command, so there is no injection path.
//!
//! **Pending stops are journaled.** [`CommandRunner::start`] writes the rendered stop command
//! and its due time to the journal `<state_dir>/pending-stops` ([`crate::state::pending_stops`],
//! replaced whole and durably) *before* it runs the start command, so a crash at any point never
//! leaves a start without its stop. [`CommandRunner::run_due`] (call it from the daemon's tick)
//! runs what is due and then removes it from the journal; a crash in between runs that stop
//! again after the restart (at least once, never lost; knockd-style stops such as `iptables -D`
//! tolerate it). [`CommandRunner::overdue_at_start`] runs what fell due while the daemon was
//! down. A journal with a line that cannot be read is refused: the daemon does not start.
//!
//! **The caller is not blocked for long.** A command is spawned in its own process group; the
//! caller waits for it at most [`CALLER_WAIT`] (2 s). A command still running then is handed to a
//! reaper thread, which logs its exit or kills its whole process group after [`KILL_AFTER`]
//! (30 s) from its start, and logs that. Exit statuses are logged with the door, the address and
//! the command; never the environment.

use std::net::IpAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use knock_core::config::CommandAction;
use knock_core::time::unix_now_ms;
use tracing::{error, info, warn};

use crate::state::pending_stops::{JournalError, PendingStop, PendingStops};
/// How long `start` / `run_due` wait for their commands before leaving them to the reaper.
pub const CALLER_WAIT: Duration = Duration::from_secs(2);
/// A command still running this long after its start is killed (with its process group).
pub const KILL_AFTER: Duration = Duration::from_secs(30);
/// The shell, as knockd's `system()` uses it.
const SHELL: &str = "/bin/sh";
/// A due stop that could not even be spawned is retried this much later.
const SPAWN_RETRY_MS: u64 = 5_000;
/// How often the reaper looks at its commands.
const REAP_TICK: Duration = Duration::from_millis(100);

/// Renders a knockd command template: `%IP%` becomes the canonical text of `addr` (an
/// IPv4-mapped IPv6 address as IPv4), `%PORT%` the number `port` (refused when the template uses
/// it and there is none), `%DOOR%` the door's name (refused unless it is 1-64 characters of
/// `[A-Za-z0-9_.-]`). Everything else, other `%` included, is copied verbatim; substituted text
/// is never scanned again.
pub fn render(template: &str, addr: IpAddr, port: Option<u16>, door: &str) -> Result<String, RenderError> {
    if template.contains('\0') {
        return Err(RenderError::Nul);
    }
    let mut out = String::with_capacity(template.len() + 40);
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("%IP%") {
            out.push_str(&addr.to_canonical().to_string());
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%PORT%") {
            let port = port.ok_or(RenderError::NoPort)?;
            out.push_str(&port.to_string());
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%DOOR%") {
            if !safe_door(door) {
                return Err(RenderError::UnsafeDoor(door.to_string()));
            }
            out.push_str(door);
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a door name may be substituted for `%DOOR%`.
fn safe_door(door: &str) -> bool {
    (1..=64).contains(&door.len()) && door.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Why a command template cannot be rendered safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A NUL byte.
    #[error("the command contains a NUL byte, which no shell command can hold; remove it")]
    Nul,
    /// `%PORT%` without a port.
    #[error(
        "the command uses %PORT%, but this action has no single port to give it; remove %PORT% from the \
         command or write the port number into it"
    )]
    NoPort,
    /// `%DOOR%` with a name that is not safe in a shell command.
    #[error(
        "the command uses %DOOR%, but the door name {0:?} is not 1-64 characters of A-Z, a-z, 0-9, `_`, `.` \
         or `-`; rename the door or remove %DOOR% from the command"
    )]
    UnsafeDoor(String),
}

/// Why a door's command did not run, or failed; names the door, the command and the address.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// A template cannot be rendered: nothing ran.
    #[error("door {door}: cannot render its {which} command for {addr}: {reason}")]
    Render {
        /// The door.
        door: String,
        /// `start` or `stop`.
        which: &'static str,
        /// The address.
        addr: IpAddr,
        /// Why.
        reason: RenderError,
    },
    /// The stop could not be journaled: the start did not run.
    #[error("door {door}: start command for {addr} not run: {source}")]
    Journal {
        /// The door.
        door: String,
        /// The address.
        addr: IpAddr,
        /// Why.
        source: JournalError,
    },
    /// The shell could not be started.
    #[error("door {door}: cannot run its {which} command for {addr} with {SHELL}: {source}")]
    Spawn {
        /// The door.
        door: String,
        /// `start` or `stop`.
        which: &'static str,
        /// The address.
        addr: IpAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The start command exited unsuccessfully within the caller's wait.
    #[error("door {door}: start command for {addr} failed ({status})")]
    Failed {
        /// The door.
        door: String,
        /// The address.
        addr: IpAddr,
        /// `exit code N` or `killed by signal N`.
        status: String,
    },
}

/// Which of a door's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Stop,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Stop => "stop",
        }
    }
}

/// A spawned command, until it is reaped.
struct Running {
    child: Child,
    kind: Kind,
    door: String,
    addr: IpAddr,
    command: String,
    started: Instant,
    kill_at: Instant,
}

/// Runs a door's start commands and, `cmd_timeout` later, its journaled stop commands.
///
/// Dropping it runs nothing: the pending stops stay in the journal for the next
/// [`CommandRunner::open`], as after a crash.
pub struct CommandRunner {
    journal: PendingStops,
    pending: Vec<PendingStop>,
    reaper: Option<Sender<Running>>,
    caller_wait: Duration,
    kill_after: Duration,
}

impl CommandRunner {
    /// Loads the journal `<state_dir>/pending-stops` (missing = nothing pending). Runs nothing:
    /// call [`CommandRunner::overdue_at_start`] next. A line that cannot be read is an error naming
    /// the file and line, and the journal is left as it is.
    pub fn open(state_dir: &Path) -> Result<CommandRunner, JournalError> {
        let journal = PendingStops::in_dir(state_dir);
        let pending = journal.load()?;
        Ok(CommandRunner { journal, pending, reaper: None, caller_wait: CALLER_WAIT, kill_after: KILL_AFTER })
    }

    /// The journal's path.
    pub fn journal(&self) -> &Path {
        self.journal.path()
    }

    /// How many stop commands are waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The waiting stop commands, in the order they were journaled.
    pub fn pending_stops(&self) -> &[PendingStop] {
        &self.pending
    }

    /// When the next stop is due (unix ms), if any.
    pub fn next_due(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.due_unix_ms).min()
    }

    /// Runs the door's start command for `addr` (`start6` for IPv6, falling back to `start`; an
    /// IPv4-mapped address counts as IPv4) and journals its stop, due `cmd_timeout` from now.
    /// See [`CommandRunner::start_with`].
    pub fn start(&mut self, door: &str, action: &CommandAction, addr: IpAddr) -> Result<(), ShellError> {
        self.start_with(door, action, addr, None, unix_now_ms())
    }

    /// [`CommandRunner::start`] with a `%PORT%` value and an explicit clock.
    ///
    /// Both commands are rendered first: if either cannot be, nothing runs. The stop is journaled
    /// durably before the start runs; if that fails, nothing runs. Then the start is spawned and
    /// awaited for at most 2 s: an error if it could not be spawned or exited unsuccessfully in
    /// that time, `Ok` if it succeeded or is still running (the reaper logs how it ends).
    pub fn start_with(
        &mut self,
        door: &str,
        action: &CommandAction,
        addr: IpAddr,
        port: Option<u16>,
        now_unix_ms: u64,
    ) -> Result<(), ShellError> {
        let addr = addr.to_canonical();
        let (start, stop) = match addr {
            IpAddr::V4(_) => (action.start.as_ref(), action.stop.as_ref()),
            IpAddr::V6(_) => {
                (action.start6.as_ref().or(action.start.as_ref()), action.stop6.as_ref().or(action.stop.as_ref()))
            }
        };
        let rendered = |which: &'static str, template: Option<&String>| {
            template.map(|t| render(t, addr, port, door)).transpose().map_err(|reason| ShellError::Render {
                door: door.to_owned(),
                which,
                addr,
                reason,
            })
        };
        let start = rendered("start", start)?;
        let stop = rendered("stop", stop)?;
        if let Some(command) = stop {
            let due_ms = u64::try_from(action.cmd_timeout.as_millis()).unwrap_or(u64::MAX);
            self.pending.push(PendingStop {
                due_unix_ms: now_unix_ms.saturating_add(due_ms),
                door: door.to_owned(),
                addr,
                command,
            });
            if let Err(source) = self.journal.save(&self.pending) {
                self.pending.pop();
                return Err(ShellError::Journal { door: door.to_owned(), addr, source });
            }
        }
        let Some(command) = start else { return Ok(()) };
        let running = self.spawn(Kind::Start, door, addr, command)?;
        match self.finish(vec![running]).pop().flatten() {
            Some(status) if !status.success() => {
                Err(ShellError::Failed { door: door.to_owned(), addr, status: describe(status) })
            }
            _ => Ok(()),
        }
    }

    /// Runs every stop due at `now_unix_ms` (in due order) and removes them from the journal
    /// durably. A stop that cannot be spawned stays journaled and is retried 5 s later.
    pub fn run_due(&mut self, now_unix_ms: u64) {
        if !self.pending.iter().any(|p| p.due_unix_ms <= now_unix_ms) {
            return;
        }
        let (mut due, mut keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.due_unix_ms <= now_unix_ms);
        due.sort_by_key(|p| p.due_unix_ms);
        let mut running = Vec::new();
        for stop in due {
            match self.spawn(Kind::Stop, &stop.door, stop.addr, stop.command.clone()) {
                Ok(r) => running.push(r),
                Err(e) => {
                    error!("{e}; retrying in {} s", SPAWN_RETRY_MS / 1000);
                    keep.push(PendingStop { due_unix_ms: now_unix_ms.saturating_add(SPAWN_RETRY_MS), ..stop });
                }
            }
        }
        self.pending = keep;
        if let Err(e) = self.journal.save(&self.pending) {
            // The stops ran; the journal still lists them, so a restart runs them again.
            error!("{e}; the stop commands just run will run again after a restart");
        }
        self.finish(running);
    }

    /// Runs the stops that fell due while the daemon was not running: `run_due(now)`.
    pub fn overdue_at_start(&mut self) {
        self.run_due(unix_now_ms());
    }

    /// Spawns `command` with `/bin/sh -c` in its own process group.
    fn spawn(&self, kind: Kind, door: &str, addr: IpAddr, command: String) -> Result<Running, ShellError> {
        let mut shell = Command::new(SHELL);
        shell.arg("-c").arg(&command).stdin(Stdio::null()).process_group(0);
        let child = shell.spawn().map_err(|source| ShellError::Spawn {
            door: door.to_owned(),
            which: kind.as_str(),
            addr,
            source,
        })?;
        info!(door, %addr, command = %command, "running {} command", kind.as_str());
        let started = Instant::now();
        Ok(Running { child, kind, door: door.to_owned(), addr, command, started, kill_at: started + self.kill_after })
    }

    /// Waits up to the caller's bound for `running`; returns each one's status (None if it is
    /// still running and went to the reaper, or could not be waited for).
    fn finish(&mut self, mut running: Vec<Running>) -> Vec<Option<ExitStatus>> {
        let deadline = Instant::now() + self.caller_wait;
        let mut statuses = vec![None; running.len()];
        let mut live: Vec<usize> = (0..running.len()).collect();
        let mut pause = Duration::from_millis(1);
        while !live.is_empty() {
            live.retain(|&i| match reap(&mut running[i]) {
                Reaped::Exited(status) => {
                    statuses[i] = Some(status);
                    false
                }
                Reaped::Gone => false,
                Reaped::Running => true,
            });
            if live.is_empty() || Instant::now() >= deadline {
                break;
            }
            thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        let mut leftover: Vec<Running> = Vec::new();
        for (i, r) in running.into_iter().enumerate() {
            if live.contains(&i) {
                leftover.push(r);
            }
        }
        for r in leftover {
            self.hand_to_reaper(r);
        }
        statuses
    }

    /// Hands a still-running command to the reaper thread (started on first use).
    fn hand_to_reaper(&mut self, r: Running) {
        let r = match &self.reaper {
            None => r,
            Some(tx) => match tx.send(r) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
        };
        let (tx, rx) = channel::<Running>();
        let spawned = thread::Builder::new().name("knockd-commands".into()).spawn(move || {
            let mut live: Vec<Running> = Vec::new();
            let mut open = true;
            while open || !live.is_empty() {
                match rx.recv_timeout(REAP_TICK) {
                    Ok(r) => live.push(r),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        thread::sleep(REAP_TICK);
                    }
                }
                live.retain_mut(|r| matches!(reap(r), Reaped::Running));
            }
        });
        match spawned {
            Ok(_) => {
                let _ = tx.send(r);
                self.reaper = Some(tx);
            }
            Err(e) => {
                let mut r = r;
                warn!(door = r.door, addr = %r.addr, "cannot start the reaper thread ({e}); waiting for the command here");
                while matches!(reap(&mut r), Reaped::Running) {
                    thread::sleep(REAP_TICK);
                }
            }
        }
    }
}

/// What [`reap`] found.
enum Reaped {
    Exited(ExitStatus),
    /// Killed after its time, or could not be waited for (logged).
    Gone,
    Running,
}

/// Checks one command without blocking: logs and reaps it if it exited, kills its process group
/// (and logs it) if it ran past its time.
fn reap(r: &mut Running) -> Reaped {
    let kind = r.kind.as_str();
    match r.child.try_wait() {
        Ok(Some(status)) => {
            let elapsed_ms = r.started.elapsed().as_millis() as u64;
            let code = status.code();
            if status.success() {
                info!(door = r.door, addr = %r.addr, exit_code = code, elapsed_ms, "{kind} command succeeded");
            } else {
                warn!(door = r.door, addr = %r.addr, exit_code = code, signal = status.signal(), elapsed_ms,
                    command = %r.command, "{kind} command failed ({})", describe(status));
            }
            Reaped::Exited(status)
        }
        Ok(None) if Instant::now() >= r.kill_at => {
            kill_group(&mut r.child);
            error!(door = r.door, addr = %r.addr, command = %r.command,
                "{kind} command still running after {:?}: killed it and its process group", r.kill_at - r.started);
            Reaped::Gone
        }
        Ok(None) => Reaped::Running,
        Err(e) => {
            error!(door = r.door, addr = %r.addr, "cannot wait for the {kind} command: {e}");
            Reaped::Gone
        }
    }
}

/// Kills the process group led by `child` (the shell and whatever it started), then reaps it.
/// The leader is not reaped yet, so its pid and group id cannot have been reused.
fn kill_group(child: &mut Child) {
    let group_killed = Command::new(SHELL)
        .arg("-c")
        .arg(format!("kill -9 -{}", child.id()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !group_killed {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// "exit code N" or "killed by signal N".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let d = std::env::temp_dir().join(format!("knockd-commands-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// start/stop commands that append "start IP" / "stop IP" to `out`.
    fn echo_action(out: &Path, cmd_timeout: Duration) -> CommandAction {
        let out = out.display();
        CommandAction {
            start: Some(format!("echo start %IP% >> '{out}'")),
            start6: None,
            stop: Some(format!("echo stop %IP% >> '{out}'")),
            stop6: None,
            cmd_timeout,
        }
    }

    #[test]
    fn render_substitutes_parsed_values_only() {
        let v4 = ip("198.18.0.7");
        assert_eq!(
            render("/sbin/iptables -A INPUT -s %IP% -p tcp --dport 22 -j ACCEPT", v4, None, "ssh").unwrap(),
            "/sbin/iptables -A INPUT -s 198.18.0.7 -p tcp --dport 22 -j ACCEPT"
        );
        assert_eq!(render("%IP% %IP%%IP%", v4, None, "d").unwrap(), "198.18.0.7 198.18.0.7198.18.0.7");
        assert_eq!(render("x %IP% y", ip("2001:0db8:0:0::0:1"), None, "d").unwrap(), "x 2001:db8::1 y");
        assert_eq!(render("%IP%", ip("::ffff:198.18.0.7"), None, "d").unwrap(), "198.18.0.7");
        assert_eq!(
            render("--dport %PORT% %DOOR%", v4, Some(2222), "open.SSH-1_x").unwrap(),
            "--dport 2222 open.SSH-1_x"
        );
        // Other percent signs are copied verbatim; substituted text is not scanned again.
        assert_eq!(render("date +%s %ip% %%IP% 100% %", v4, None, "d").unwrap(), "date +%s %ip% %198.18.0.7 100% %");
        assert_eq!(render("no placeholders", v4, None, "%IP%").unwrap(), "no placeholders");
        assert_eq!(render("", v4, None, "d").unwrap(), "");
    }

    #[test]
    fn render_refuses_what_it_cannot_substitute_safely() {
        let v4 = ip("198.18.0.7");
        let e = render("iptables --dport %PORT%", v4, None, "ssh").unwrap_err().to_string();
        assert!(e.contains("%PORT%") && e.contains("remove"), "{e}");
        for door in ["", "a b", "x;id", "$(id)", "`id`", "a\nb", "d'q", "ö", &"a".repeat(65)] {
            let e = render("logger %DOOR%", v4, None, door).unwrap_err().to_string();
            assert!(e.contains("%DOOR%") && e.contains("rename the door"), "{door:?}: {e}");
        }
        // An unsafe name is no problem when the template does not use it.
        assert_eq!(render("echo %IP%", v4, None, "x;id").unwrap(), "echo 198.18.0.7");
        assert!(render("echo \0 %IP%", v4, None, "d").unwrap_err().to_string().contains("NUL"));
    }

    /// A bounded random driver: templates made of shell-hostile literal text, stray `%` and the
    /// three placeholders, with random addresses, ports and door names. The output is exactly the
    /// template's literal text with each placeholder replaced by a value from a safe alphabet.
    #[test]
    fn rendered_text_is_the_template_plus_safe_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b6e_6f63_6b64);
        // No `%` and no upper case, so literals never form a placeholder with a stray `%`.
        const LITERAL: &[u8] = b"abcxyz019 ;|&$(){}`'\"\\<>*?!#~=\n\t-_./:";
        for _ in 0..5000 {
            let addr = match rng.random_range(0..3) {
                0 => IpAddr::from(rng.random::<[u8; 4]>()),
                1 => IpAddr::from(rng.random::<[u8; 16]>()),
                _ => IpAddr::from(std::net::Ipv4Addr::from(rng.random::<[u8; 4]>()).to_ipv6_mapped()),
            };
            let port = rng.random_bool(0.8).then(|| rng.random::<u16>());
            let door: String = (0..rng.random_range(0..8))
                .map(|_| *b"ab-_.Z9; $`'\n".get(rng.random_range(0..13)).unwrap() as char)
                .collect();
            let mut template = String::new();
            let mut expected = String::new();
            let mut refused = false;
            for _ in 0..rng.random_range(0..12) {
                match rng.random_range(0..6) {
                    0 => {
                        template.push_str("%IP%");
                        let value = addr.to_canonical().to_string();
                        assert!(value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':'), "{value}");
                        expected.push_str(&value);
                    }
                    1 => {
                        template.push_str("%PORT%");
                        match port {
                            Some(p) => expected.push_str(&p.to_string()),
                            None => refused = true,
                        }
                    }
                    2 => {
                        template.push_str("%DOOR%");
                        if safe_door(&door) {
                            assert!(door.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
                            expected.push_str(&door);
                        } else {
                            refused = true;
                        }
                    }
                    3 => {
                        template.push('%');
                        expected.push('%');
                    }
                    _ => {
                        let lit: String = (0..rng.random_range(1..10))
                            .map(|_| LITERAL[rng.random_range(0..LITERAL.len())] as char)
                            .collect();
                        template.push_str(&lit);
                        expected.push_str(&lit);
                    }
                }
            }
            match render(&template, addr, port, &door) {
                Ok(out) => {
                    assert!(!refused, "{template:?} with door {door:?} port {port:?} should be refused");
                    assert_eq!(out, expected, "template {template:?}");
                }
                Err(_) => assert!(refused, "{template:?} with door {door:?} port {port:?} refused"),
            }
        }
    }

    #[test]
    fn stops_are_journaled_before_the_start_runs() {
        let dir = TempDir::new("journal");
        let out = dir.file("out");
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        assert_eq!(runner.pending(), 0);
        let action = echo_action(&out, Duration::from_secs(60));
        runner.start_with("ssh", &action, ip("198.18.0.7"), None, 1_000).unwrap();
        runner.start_with("ssh", &action, ip("2001:db8::7"), None, 2_000).unwrap();
        let before = runner.pending_stops().to_vec();
        assert_eq!(before.len(), 2);
        assert_eq!(before[0].due_unix_ms, 61_000);
        assert_eq!(before[1].command, format!("echo stop 2001:db8::7 >> '{}'", out.display()));
        drop(runner);
        let reopened = CommandRunner::open(&dir.0).unwrap();
        assert_eq!(reopened.pending_stops(), &before[..]);
        assert_eq!(reopened.next_due(), Some(61_000));
        assert!(!dir.file("pending-stops.tmp").exists());
    }

    #[test]
    fn start_then_stop_after_cmd_timeout() {
        let dir = TempDir::new("both");
        let out = dir.file("out");
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        let t0 = Instant::now();
        runner.start("ssh", &echo_action(&out, Duration::from_secs(1)), ip("198.18.0.7")).unwrap();
        assert_eq!(lines(&out), ["start 198.18.0.7"], "start runs before start() returns");
        assert_eq!(runner.pending(), 1);
        runner.run_due(unix_now_ms());
        assert_eq!(runner.pending(), 1, "the stop is not due yet");
        while runner.pending() > 0 && t0.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(50));
            runner.run_due(unix_now_ms());
        }
        assert!(t0.elapsed() >= Duration::from_millis(950), "stop ran early: {:?}", t0.elapsed());
        assert_eq!(lines(&out), ["start 198.18.0.7", "stop 198.18.0.7"]);
        assert_eq!(CommandRunner::open(&dir.0).unwrap().pending(), 0, "the journal forgot the stop");
    }

    #[test]
    fn overdue_stop_runs_after_a_crash_and_restart() {
        let dir = TempDir::new("crash");
        let out = dir.file("out");
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        runner.start("ssh", &echo_action(&out, Duration::from_secs(1)), ip("::ffff:198.18.0.9")).unwrap();
        drop(runner); // the crash: nothing more runs
        thread::sleep(Duration::from_millis(1100));
        assert_eq!(lines(&out), ["start 198.18.0.9"]);
        let mut restarted = CommandRunner::open(&dir.0).unwrap();
        assert_eq!(restarted.pending(), 1);
        restarted.overdue_at_start();
        assert_eq!(restarted.pending(), 0);
        assert_eq!(lines(&out), ["start 198.18.0.9", "stop 198.18.0.9"]);
        assert_eq!(CommandRunner::open(&dir.0).unwrap().pending(), 0);
    }

    #[test]
    fn a_corrupt_journal_keeps_the_runner_from_opening() {
        let dir = TempDir::new("corrupt");
        std::fs::write(dir.file("pending-stops"), "{\"due_ms\": 7\n").unwrap();
        let err = CommandRunner::open(&dir.0).err().expect("a corrupt journal must be refused");
        assert!(matches!(err, JournalError::Unreadable { line: 1, .. }), "{err}");
    }

    #[test]
    fn family_picks_the_command_and_six_falls_back() {
        let dir = TempDir::new("family");
        let out = dir.file("out");
        let o = out.display();
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        let mut action = CommandAction {
            start: Some(format!("echo four %IP% >> '{o}'")),
            start6: Some(format!("echo six %IP% >> '{o}'")),
            stop: Some("echo stop4".into()),
            stop6: Some("echo stop6 %IP%".into()),
            cmd_timeout: Duration::from_secs(10),
        };
        runner.start_with("d", &action, ip("198.18.0.1"), None, 0).unwrap();
        runner.start_with("d", &action, ip("2001:db8::1"), None, 0).unwrap();
        runner.start_with("d", &action, ip("::ffff:198.18.0.2"), None, 0).unwrap();
        action.start6 = None;
        action.stop6 = None;
        runner.start_with("d", &action, ip("2001:db8::2"), None, 0).unwrap();
        assert_eq!(lines(&out), ["four 198.18.0.1", "six 2001:db8::1", "four 198.18.0.2", "four 2001:db8::2"]);
        let stops: Vec<&str> = runner.pending_stops().iter().map(|p| p.command.as_str()).collect();
        assert_eq!(stops, ["echo stop4", "echo stop6 2001:db8::1", "echo stop4", "echo stop4"]);
    }

    #[test]
    fn unrenderable_stop_runs_nothing() {
        let dir = TempDir::new("refuse");
        let out = dir.file("out");
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        let mut action = echo_action(&out, Duration::from_secs(1));
        action.stop = Some("iptables -D INPUT -p tcp --dport %PORT% -s %IP% -j ACCEPT".into());
        let err = runner.start("ssh", &action, ip("198.18.0.7")).unwrap_err().to_string();
        assert!(err.contains("door ssh") && err.contains("stop command") && err.contains("%PORT%"), "{err}");
        assert!(!out.exists(), "the start ran although its stop could not be rendered");
        assert_eq!(runner.pending(), 0);
        runner.start_with("ssh", &action, ip("198.18.0.7"), Some(22), unix_now_ms()).unwrap();
        assert_eq!(runner.pending_stops()[0].command, "iptables -D INPUT -p tcp --dport 22 -s 198.18.0.7 -j ACCEPT");
    }

    #[test]
    fn failing_start_is_reported_and_its_stop_kept() {
        let dir = TempDir::new("fail");
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        let action = CommandAction {
            start: Some("exit 3".into()),
            stop: Some("true".into()),
            cmd_timeout: Duration::from_secs(1),
            ..CommandAction::default()
        };
        let err = runner.start("ssh", &action, ip("198.18.0.7")).unwrap_err().to_string();
        assert!(err.contains("exit code 3") && err.contains("198.18.0.7"), "{err}");
        assert_eq!(runner.pending(), 1, "the stop still runs, as with knockd");
        let one_shot = CommandAction { start: Some("true".into()), ..CommandAction::default() };
        runner.start("ssh", &one_shot, ip("198.18.0.7")).unwrap();
        assert_eq!(runner.pending(), 1, "a one-shot command journals nothing");
    }

    #[test]
    fn long_commands_go_to_the_reaper_which_kills_their_group() {
        let dir = TempDir::new("reaper");
        let (shell_pid, sleep_pid) = (dir.file("shell"), dir.file("sleep"));
        let mut runner = CommandRunner::open(&dir.0).unwrap();
        runner.caller_wait = Duration::from_millis(200);
        runner.kill_after = Duration::from_millis(600);
        let action = CommandAction {
            start: Some(format!(
                "echo $$ > '{}'; sleep 30 & echo $! > '{}'; wait",
                shell_pid.display(),
                sleep_pid.display()
            )),
            ..CommandAction::default()
        };
        let t0 = Instant::now();
        runner.start("ssh", &action, ip("198.18.0.7")).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1), "the caller waited {:?}", t0.elapsed());
        let pid = |p: &Path| lines(p).first().cloned().unwrap_or_default();
        // Alive: exists and is not a zombie waiting for init.
        let alive = |pid: &str| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            !pid.is_empty() && stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
        };
        let (shell, sleep) = (pid(&shell_pid), pid(&sleep_pid));
        assert!(alive(&shell) && alive(&sleep), "shell {shell:?}, sleep {sleep:?}");
        while (alive(&shell) || alive(&sleep)) && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(&shell) && !alive(&sleep), "not killed: shell {shell}, sleep {sleep}");
        assert!(t0.elapsed() >= Duration::from_millis(550), "killed too early: {:?}", t0.elapsed());
    }
}
