//! Draining a replica of the connections other nodes' mesh proxies forward to it. The
//! stopping agent cannot count those in its own proxy, so it reads the container's own
//! socket table (`/proc/PID/net/tcp` and `tcp6`: the container's network namespace) and
//! waits until no connection to its published target ports is established.

use std::time::Duration;

/// How long other nodes may still pick a replica after it was told to stop: the time
/// for the controller's endpoint update to reach every agent (milliseconds on a LAN).
pub const PROPAGATION: Duration = Duration::from_secs(1);

/// Established TCP connections to any of `ports` in a `/proc/net/tcp` table.
pub fn established(table: &str, ports: &[u16]) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut w = l.split_whitespace();
            let local = w.nth(1);
            let state = w.nth(1);
            let port = local
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            state == Some("01") && port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

/// Established connections into the container of `pid` on `ports`; `None` if its
/// tables cannot be read (it exited, or no access).
pub fn count(pid: u32, ports: &[u16]) -> Option<usize> {
    let mut n = 0;
    let mut read = false;
    for f in ["tcp", "tcp6"] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) {
            n += established(&t, ports);
            read = true;
        }
    }
    read.then_some(n)
}

/// Waits until the container has no established connection on `ports`, at most
/// `bound`; returns how many were still open.
pub async fn wait(pid: u32, ports: &[u16], bound: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let n = count(pid, ports).unwrap_or(0);
        if n == 0 || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_connections_on_the_given_ports() {
        // Port 0x0050 = 80 listening (0A), two established to 80, one to 8080 (0x1F90),
        // one closing (06) to 80.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0201D00A:0050 0C4D4D0A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 0201D00A:0050 0D4D4D0A:A1B3 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   3: 0201D00A:1F90 0D4D4D0A:A1B4 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n\
   4: 0201D00A:0050 0D4D4D0A:A1B5 06 00000000:00000000 00:00000000 00000000     0        0 5 1\n";
        assert_eq!(established(table, &[80]), 2);
        assert_eq!(established(table, &[80, 8080]), 3);
        assert_eq!(established(table, &[443]), 0);
    }
}
