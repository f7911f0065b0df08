//! The client listener, one socket per I/O thread (issue 16).
//!
//! [`bind`] binds the client-facing address with `SO_REUSEPORT`, and
//! [`siblings`] adds one more socket on the same address for every other
//! I/O thread: the kernel then spreads new connections over the sockets by
//! the hash of their addresses and ports, and each thread accepts its own.
//! No connection is handed from one thread to another, which costs (per
//! connection, measured with `strace`) two `epoll_ctl` calls (leaving the
//! accepting thread's reactor, joining the other's) and a wake-up of the
//! other thread.
//!
//! # Decisions
//!
//! - A port another process already holds is refused as before: [`bind`]
//!   first binds the address *without* `SO_REUSEPORT` (which fails with
//!   "address in use" while any socket holds it), releases it, then binds
//!   the reusable socket on the address that probe got (for port 0, the
//!   port the kernel picked). So a second gateway started on the same
//!   address by mistake fails to start instead of silently taking half the
//!   traffic. Only another process of the same user that itself sets
//!   `SO_REUSEPORT` could join the group (a process of the same user can
//!   already do worse to this one).
//! - Balance: the kernel's hash spreads connections at random, and a few
//!   dozen long-lived ones land unevenly (~64 on two threads: 27 / 38 as
//!   often as not). `serve` corrects it at accept time
//!   (`server::placement`): a connection that would widen the gap by two
//!   is handed to the thread with the fewest. The same rule deals
//!   connections when the listener it was given cannot have siblings (a
//!   listener bound elsewhere without `SO_REUSEPORT`, or a kernel that
//!   refuses it), and thread 0 accepts alone.
//! - A thread that fails to start drops its socket, and the kernel stops
//!   sending connections to it.
//! - `TCP_NODELAY` is set once, on the listening socket ([`nodelay`]):
//!   Linux copies it to every connection accepted from it, which saves a
//!   `setsockopt` per connection (one of ~9 system calls a connection per
//!   request costs, issue 16). Elsewhere, or when the listener refuses it,
//!   each accepted connection sets it as before.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The listen backlog (tokio's and std's default).
const BACKLOG: i32 = 1024;

/// Binds `addr` for the client listener: refused when the address is in
/// use, reusable by this process's [`siblings`] otherwise.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let probe = TcpListener::bind(addr)?;
    let bound = probe.local_addr()?;
    drop(probe);
    reusable(bound)
}

/// `n` more sockets on `first`'s address, for the other I/O threads; an
/// error when `first` was not bound with `SO_REUSEPORT` (or the kernel
/// refuses it): the caller then deals connections from `first`.
pub fn siblings(first: &TcpListener, n: usize) -> io::Result<Vec<TcpListener>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if !SockRef::from(first).reuse_port()? {
        return Err(io::Error::other(
            "the listener was bound without SO_REUSEPORT",
        ));
    }
    let addr = first.local_addr()?;
    (0..n).map(|_| reusable(addr)).collect()
}

/// Sets `TCP_NODELAY` on `listener`; true when the connections accepted
/// from it have it already (Linux copies the option to each), so that the
/// accept loop need not set it on every one.
pub fn nodelay(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux") && SockRef::from(listener).set_tcp_nodelay(true).is_ok()
}

/// A non-blocking listening socket on `addr` with `SO_REUSEPORT` (and
/// `SO_REUSEADDR`, as std and tokio set it).
fn reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_share_the_port_and_a_second_gateway_is_refused() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let more = siblings(&first, 2).unwrap();
        assert!(more.iter().all(|s| s.local_addr().unwrap() == addr));
        // Another gateway on the same address: refused, as without SO_REUSEPORT.
        let err = bind(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Every connection lands on one of the three sockets.
        let clients: Vec<_> = (0..30)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = 0;
        for l in std::iter::once(&first).chain(more.iter()) {
            l.set_nonblocking(true).unwrap();
            while l.accept().is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
    }

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let more = siblings(&first, 1).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(nodelay(&first) && nodelay(&more[0]));
        let clients: Vec<_> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = Vec::new();
        for l in [&first, &more[0]] {
            l.set_nonblocking(true).unwrap();
            while let Ok((s, _)) = l.accept() {
                accepted.push(s);
            }
        }
        assert_eq!(accepted.len(), clients.len());
        assert!(accepted.iter().all(|s| s.nodelay().unwrap()));
        // And a listener without it hands out connections without it: the
        // assertion above can fail.
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        assert!(!plain.accept().unwrap().0.nodelay().unwrap());
    }

    #[test]
    fn a_listener_bound_without_reuse_port_has_no_siblings() {
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(siblings(&plain, 1).is_err());
        assert!(siblings(&plain, 0).unwrap().is_empty());
    }
}
