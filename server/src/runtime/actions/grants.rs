//! The grants this daemon made and that have not expired yet: who (door, client) opened what
//! for which address until when. The kernel expires grants by itself; this list exists so that
//! revoking a client can remove its live grants at once, and so they can be restored if the
//! firewall table is lost under the daemon.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use knock_core::config::OpenPort;

/// One live grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGrant {
    /// Door name.
    pub door: String,
    /// Client name (`-` for file and static doors).
    pub client: String,
    /// The address it opened for.
    pub addr: IpAddr,
    /// What it opened.
    pub ports: Vec<OpenPort>,
    /// When the kernel drops it.
    pub until: Instant,
}

/// The live grants.
#[derive(Debug, Default)]
pub struct LiveGrants(Vec<LiveGrant>);

impl LiveGrants {
    /// Records a grant (replacing an earlier one for the same door and address).
    pub fn add(&mut self, door: &str, client: &str, addr: IpAddr, ports: &[OpenPort], open_for: Duration) {
        self.0.retain(|g| !(g.door == door && g.addr == addr));
        self.0.push(LiveGrant {
            door: door.into(),
            client: client.into(),
            addr,
            ports: ports.to_vec(),
            until: Instant::now() + open_for,
        });
    }

    /// Forgets the grant of `door` for `addr` (a closing sequence removed it).
    pub fn remove(&mut self, door: &str, addr: IpAddr) {
        self.0.retain(|g| !(g.door == door && g.addr == addr));
    }

    /// Takes out every live grant matching `pick`.
    pub fn take_where(&mut self, pick: impl Fn(&LiveGrant) -> bool) -> Vec<LiveGrant> {
        let now = Instant::now();
        let (taken, kept) = std::mem::take(&mut self.0).into_iter().partition(|g| g.until > now && pick(g));
        self.0 = kept;
        taken
    }

    /// Drops the expired ones.
    pub fn prune(&mut self) {
        let now = Instant::now();
        self.0.retain(|g| g.until > now);
    }

    /// The live grants, with the time each has left.
    pub fn live(&self) -> impl Iterator<Item = (&LiveGrant, Duration)> {
        let now = Instant::now();
        self.0.iter().filter(move |g| g.until > now).map(move |g| (g, g.until - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_revoke_takes_its_grants_only() {
        let mut g = LiveGrants::default();
        let ssh: Vec<OpenPort> = vec!["22/tcp".parse().unwrap()];
        g.add("ssh", "alice", "198.18.0.2".parse().unwrap(), &ssh, Duration::from_secs(30));
        g.add("ssh", "bob", "198.18.0.3".parse().unwrap(), &ssh, Duration::from_secs(30));
        g.add("ssh", "alice", "198.18.0.2".parse().unwrap(), &ssh, Duration::from_secs(30));
        let taken = g.take_where(|x| x.client == "alice");
        assert_eq!(taken.len(), 1, "a re-grant replaces the earlier one");
        assert_eq!(g.live().count(), 1);
        g.add("web", "-", "198.18.0.4".parse().unwrap(), &ssh, Duration::ZERO);
        g.prune();
        assert_eq!(g.live().count(), 1);
    }
}
