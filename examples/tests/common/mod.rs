//! What the process-level tests share: a child process killed on drop, and a free loopback port.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::process::Child;

/// A child process, killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
