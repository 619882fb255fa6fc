//! The process lifecycle: signals, drain, pid file and upgrade.
//!
//! Shutdown:
//! - SIGTERM turns `/readyz` to 503 and keeps serving for `drain_delay` (each
//!   HTTP/1.1 answer closing its connection, so clients move on), then stops
//!   accepting and drains.
//! - SIGQUIT hands the listening sockets to a new instance (`run -u`), which
//!   must be waiting on `upgrade_sock` (within [`upgrade::UPGRADE_SOCK_WAIT`], else the
//!   SIGQUIT is refused and this instance keeps serving). Pingora keeps both
//!   instances accepting for 5 s, then this one stops accepting and drains.
//! - SIGINT exits at once (also during a drain), without Pingora's runtime
//!   teardown (see [`drain::exit_now`]).
//!
//! A drain: HTTP/2 connections get GOAWAY; an HTTP/1.1 keep-alive connection
//! answers its next request with `Connection: close` (idle ones are closed
//! after [`crate::connection::IDLE_LINGER`]), so a client that keeps sending never has a request
//! cut off. The process exits as soon as no request has been in flight for
//! [`drain::DRAIN_QUIET`], and at the latest when `grace_period` ends (Pingora alone
//! would always wait all of it).
//!
//! The pid file is written once the signal handlers are in place and removed
//! on exit only while it still holds this process's pid: after an upgrade it
//! holds the new instance's.

pub(crate) mod drain;
pub(crate) mod pid_file;
pub(crate) mod signals;
pub(crate) mod upgrade;
