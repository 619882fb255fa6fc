//! Open connections per client IP (`max_connections_per_ip`): a slot taken
//! per connection and released when its stream is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client IP.
#[derive(Default)]
pub(crate) struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Connections `ip` holds now.
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }

    /// Takes a slot for `ip` unless `cap` are taken.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, cap: Option<usize>) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if cap.is_some_and(|cap| *n >= cap) {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            table: self.clone(),
        })
    }
}

/// One connection's place in the per-IP count; released on drop.
pub(crate) struct IpSlot {
    ip: IpAddr,
    table: Arc<PerIp>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_cap_and_release() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = [127, 0, 0, 9].into();
        let a = table.acquire(ip, Some(2));
        let b = table.acquire(ip, Some(2));
        assert!(a.is_some() && b.is_some());
        assert!(table.acquire(ip, Some(2)).is_none());
        assert!(table.acquire([127, 0, 0, 8].into(), Some(2)).is_some());
        drop(a);
        assert!(table.acquire(ip, Some(2)).is_some());
    }
}
