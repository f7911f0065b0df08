//! The floor of a keep-alive proxy's cost (issue 16): bytes relayed in
//! lockstep (a client's request to the upstream as it came, the upstream's
//! response back), one upstream connection per client connection, no
//! parsing, no checks. A measuring tool, not a proxy: it assumes a request
//! and a response each fit one read (true of `benches/relay_floor.sh`'s
//! wrk and `return 200` upstream) and panics on anything else.
//!
//! The same state machine on four I/O back ends:
//! - `epoll`: mio, edge-triggered, 2 `recv` + 2 `send` per request, as
//!   revgate and nginx make;
//! - `uring`: io_uring with `SINGLE_ISSUER | DEFER_TASKRUN`, every
//!   completion of a turn handled and its follow-up operations submitted
//!   in one `io_uring_enter`;
//! - `uring-link`: the same, each send linked to the receive after it;
//! - `uring-plain`: io_uring without those two set-up flags.
//!
//! usage: relay-floor {epoll|uring|uring-link|uring-plain} LISTEN_PORT UPSTREAM_PORT
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

const BUF: usize = 8192;
static LINK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].as_str();
    let listen: u16 = args[2].parse().unwrap();
    let upstream: SocketAddr = format!("127.0.0.1:{}", args[3]).parse().unwrap();
    match mode {
        "epoll" => epoll(listen, upstream),
        "uring" => uring(listen, upstream, true),
        "uring-plain" => uring(listen, upstream, false),
        "uring-link" => {
            LINK.store(true, std::sync::atomic::Ordering::Relaxed);
            uring(listen, upstream, true)
        }
        _ => panic!("mode"),
    }
}

fn connect_up(upstream: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(upstream).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

// ---------------------------------------------------------------- epoll
fn epoll(listen: u16, upstream: SocketAddr) {
    use mio::net::{TcpListener as MListener, TcpStream as MStream};
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().unwrap();
    let mut listener = MListener::bind(format!("127.0.0.1:{listen}").parse().unwrap()).unwrap();
    poll.registry()
        .register(&mut listener, Token(0), Interest::READABLE)
        .unwrap();
    struct C {
        client: MStream,
        up: MStream,
        buf: Box<[u8]>,
    }
    let mut conns: Vec<Option<C>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        poll.poll(&mut events, None).unwrap();
        for ev in events.iter() {
            let t = ev.token().0;
            if t == 0 {
                while let Ok((mut client, _)) = listener.accept() {
                    client.set_nodelay(true).unwrap();
                    let up = connect_up(upstream);
                    up.set_nonblocking(true).unwrap();
                    let mut up = MStream::from_std(up);
                    let i = conns.len();
                    poll.registry()
                        .register(&mut client, Token(2 * i + 2), Interest::READABLE)
                        .unwrap();
                    poll.registry()
                        .register(&mut up, Token(2 * i + 3), Interest::READABLE)
                        .unwrap();
                    conns.push(Some(C {
                        client,
                        up,
                        buf: vec![0; BUF].into_boxed_slice(),
                    }));
                }
                continue;
            }
            let i = (t - 2) / 2;
            let from_client = t % 2 == 0;
            let Some(c) = conns[i].as_mut() else { continue };
            let (src, dst) = if from_client {
                (&mut c.client, &mut c.up)
            } else {
                (&mut c.up, &mut c.client)
            };
            match src.read(&mut c.buf) {
                Ok(0) => conns[i] = None,
                Ok(n) => {
                    if dst.write_all(&c.buf[..n]).is_err() {
                        conns[i] = None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => conns[i] = None,
            }
        }
    }
}

// ---------------------------------------------------------------- io_uring
const ACCEPT: u64 = 0;
const RECV_C: u64 = 1;
const SEND_U: u64 = 2;
const RECV_U: u64 = 3;
const SEND_C: u64 = 4;

fn uring(listen: u16, upstream: SocketAddr, tuned: bool) {
    use io_uring::{opcode, squeue, types, IoUring};
    let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
    let lfd = listener.as_raw_fd();
    let mut b = IoUring::builder();
    if tuned {
        b.setup_single_issuer().setup_defer_taskrun();
    }
    let mut ring: IoUring = b.build(1024).unwrap();
    struct C {
        client: RawFd,
        up: RawFd,
        buf: Box<[u8]>,
        len: usize,
    }
    let mut conns: Vec<Option<C>> = Vec::new();
    let mut pending: Vec<squeue::Entry> = Vec::new();
    let ud = |i: usize, op: u64| ((i as u64) << 8) | op;
    pending.push(
        opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(ACCEPT),
    );
    let mut cqes: Vec<(u64, i32)> = Vec::with_capacity(1024);
    let link = LINK.load(std::sync::atomic::Ordering::Relaxed);
    loop {
        {
            let mut sq = ring.submission();
            for e in pending.drain(..) {
                unsafe { sq.push(&e).unwrap() };
            }
        }
        ring.submit_and_wait(1).unwrap();
        cqes.clear();
        for cqe in ring.completion() {
            cqes.push((cqe.user_data(), cqe.result()));
        }
        for &(u, res) in &cqes {
            let op = u & 0xff;
            let i = (u >> 8) as usize;
            if op == ACCEPT {
                pending.push(
                    opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
                        .build()
                        .user_data(ACCEPT),
                );
                if res < 0 {
                    continue;
                }
                let fd = res;
                let one: libc::c_int = 1;
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::IPPROTO_TCP,
                        libc::TCP_NODELAY,
                        &one as *const _ as *const libc::c_void,
                        4,
                    )
                };
                let up = connect_up(upstream).into_raw_fd();
                let j = conns.len();
                conns.push(Some(C {
                    client: fd,
                    up,
                    buf: vec![0; BUF].into_boxed_slice(),
                    len: 0,
                }));
                let c = conns[j].as_mut().unwrap();
                pending.push(
                    opcode::Recv::new(types::Fd(fd), c.buf.as_mut_ptr(), BUF as u32)
                        .build()
                        .user_data(ud(j, RECV_C)),
                );
                continue;
            }
            let Some(c) = conns[i].as_mut() else { continue };
            if res <= 0 {
                unsafe {
                    libc::close(c.client);
                    libc::close(c.up);
                }
                conns[i] = None;
                continue;
            }
            let n = res as usize;
            let e = match op {
                RECV_C | RECV_U => {
                    c.len = n;
                    let dst = if op == RECV_C { c.up } else { c.client };
                    let next = if op == RECV_C { SEND_U } else { SEND_C };
                    let send = opcode::Send::new(types::Fd(dst), c.buf.as_ptr(), n as u32)
                        .build()
                        .user_data(ud(i, next));
                    if link {
                        // send, then (linked) the next receive on the same buffer
                        pending.push(send.flags(squeue::Flags::IO_LINK));
                        let (src, rop) = if op == RECV_C {
                            (c.up, RECV_U)
                        } else {
                            (c.client, RECV_C)
                        };
                        opcode::Recv::new(types::Fd(src), c.buf.as_mut_ptr(), BUF as u32)
                            .build()
                            .user_data(ud(i, rop))
                    } else {
                        send
                    }
                }
                SEND_U | SEND_C if link => {
                    assert_eq!(n, c.len, "short send");
                    continue;
                }
                SEND_U | SEND_C => {
                    assert_eq!(n, c.len, "short send");
                    let src = if op == SEND_U { c.up } else { c.client };
                    let next = if op == SEND_U { RECV_U } else { RECV_C };
                    opcode::Recv::new(types::Fd(src), c.buf.as_mut_ptr(), BUF as u32)
                        .build()
                        .user_data(ud(i, next))
                }
                _ => unreachable!(),
            };
            pending.push(e);
        }
    }
}
