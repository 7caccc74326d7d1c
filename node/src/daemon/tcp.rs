//! The p2p connections' TCP sockets: a capped retransmission timeout.
//!
//! A connection that stays open through a partition keeps unacknowledged data queued, and the
//! kernel doubles its retransmission timeout (RTO) on every unanswered retransmission: after a
//! 10 s cut the next try is 3–13 s away (Linux's RTO_MAX is 120 s), so a healed network stays
//! silent that long although PBFT re-sends its view-changes every 250 ms — the campaign's 2|2
//! split resumed 3–7 s after the heal for a goal of two view-change timeouts (docs/decisions.md,
//! "A healed link speaks within a second"). Capping the RTO at one second (Linux ≥ 6.15,
//! `TCP_RTO_MAX_MS`; the kernel's floor for it) bounds that wait; an older kernel refuses the
//! option, which is logged once and leaves the kernel's default.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{debug, warn};

/// `TCP_RTO_MAX_MS` (include/uapi/linux/tcp.h, Linux 6.15); the libc crate does not name it yet.
const TCP_RTO_MAX_MS: libc::c_int = 44;
/// The longest retransmission timeout of a p2p connection, in ms (the kernel accepts 1000 to
/// 120000).
pub const RTO_MAX_MS: libc::c_int = 1000;

static REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Caps `stream`'s retransmission timeout at [`RTO_MAX_MS`]; where the kernel refuses, says so
/// once and goes on with its default.
pub fn cap_retransmission_timeout(stream: &tokio::net::TcpStream) {
    if let Err(error) = set_rto_max(stream, RTO_MAX_MS) {
        if REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
            debug!(%error, "TCP_RTO_MAX_MS refused");
        } else {
            warn!(
                %error,
                "the kernel refuses TCP_RTO_MAX_MS (Linux 6.15 or later has it): after a network \
                 partition heals, p2p connections may stay silent for up to the kernel's \
                 backed-off retransmission timeout"
            );
        }
    }
}

/// The socket's current `TCP_RTO_MAX_MS`, in ms (for tests).
#[cfg(test)]
fn rto_max(stream: &tokio::net::TcpStream) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the fd is an open socket borrowed from `stream` for the call; `value` and `len`
    // are live locals of the sizes the kernel is told.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 { Ok(value) } else { Err(std::io::Error::last_os_error()) }
}

fn set_rto_max(stream: &tokio::net::TcpStream, ms: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the fd is an open socket borrowed from `stream` for the call; the pointer and
    // length describe `ms`, a live c_int.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_RTO_MAX_MS,
            (&raw const ms).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_p2p_socket_retransmits_at_least_once_a_second() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (dialed, accepted) = tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        let (dialed, (accepted, _)) = (dialed.expect("connect"), accepted.expect("accept"));
        if let Err(error) = rto_max(&dialed) {
            // An older kernel (or a sandbox) without the option: nothing to cap, and the node
            // only logs it.
            let unsupported = [libc::ENOPROTOOPT, libc::EOPNOTSUPP, libc::EINVAL];
            assert!(
                error.raw_os_error().is_some_and(|code| unsupported.contains(&code)),
                "getsockopt: {error}"
            );
            cap_retransmission_timeout(&dialed);
            return;
        }
        for stream in [&dialed, &accepted] {
            cap_retransmission_timeout(stream);
            assert_eq!(rto_max(stream).expect("getsockopt"), RTO_MAX_MS);
        }
    }
}
