//! Batched UDP sends for the QUIC endpoint: many datagrams per system call.
//!
//! Two kernel features, used together: `sendmmsg(2)` sends several messages (to any mix of
//! destinations) in one call, and UDP generic segmentation offload (`UDP_SEGMENT`, Linux 4.18)
//! lets one message carry a run of equal-sized datagrams for one destination, which the kernel
//! (or the NIC) cuts into packets. quinn-proto builds such runs when
//! `Connection::poll_transmit` is allowed more than one datagram ([`Transmit::segment`]).
//!
//! Sends never block: `MSG_DONTWAIT`. When the socket buffer is full the caller gets
//! [`io::ErrorKind::WouldBlock`] and falls back to the runtime's asynchronous send, which waits
//! for room. A kernel or device that refuses segmentation (`EIO`, `EINVAL`) makes the caller
//! turn GSO off and send datagram by datagram.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// One send: a datagram, or a run of datagrams of `segment` bytes each (the last may be
/// shorter) for the same destination.
#[derive(Debug)]
pub struct Transmit {
    /// Destination.
    pub dest: SocketAddr,
    /// The datagrams, back to back.
    pub data: Vec<u8>,
    /// Size of each datagram in `data`; `data.len()` for a single one.
    pub segment: usize,
}

impl Transmit {
    /// The datagrams one by one (for a socket without GSO).
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.data.chunks(self.segment.max(1))
    }

    /// How many datagrams it carries.
    pub fn count(&self) -> usize {
        self.data.len().div_ceil(self.segment.max(1))
    }
}

/// Most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64; quinn keeps runs
/// shorter than that and within 64 KiB).
pub const MAX_GSO_SEGMENTS: usize = 32;

/// Most messages per `sendmmsg` call.
pub const BATCH: usize = 32;

/// Whether `fd`'s kernel supports UDP GSO: `getsockopt(UDP_SEGMENT)` answers on kernels that
/// have it.
pub fn gso_supported(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes passed; the kernel writes at most
    // `len` bytes to `value`, and an invalid `fd` only makes the call fail.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    rc == 0
}

/// A socket address in the kernel's form.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

fn raw_addr(addr: SocketAddr) -> RawAddr {
    let a = socket2::SockAddr::from(addr);
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let len = a.len();
    // SAFETY: `a.as_ptr()` points to `a.len()` valid bytes of a socket address, at most
    // `size_of::<sockaddr_storage>()`; the destination is a zeroed `sockaddr_storage`, which
    // every byte pattern is a valid value of.
    let storage = unsafe {
        std::ptr::copy_nonoverlapping(
            a.as_ptr().cast::<u8>(),
            storage.as_mut_ptr().cast::<u8>(),
            len as usize,
        );
        storage.assume_init()
    };
    RawAddr { storage, len }
}

/// Room for one `UDP_SEGMENT` control message (`CMSG_SPACE(sizeof(u16))` is 24 bytes on
/// 64-bit Linux), aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; 32]);

/// Sends the first transmits of `batch` (at most [`BATCH`]) in one `sendmmsg` call, with the
/// segment size as a `UDP_SEGMENT` control message where a transmit carries several datagrams
/// (`gso` must be on then). Returns how many transmits were sent whole (at least one), or the
/// error of the first (`WouldBlock` when the socket buffer is full).
pub fn send_batch(fd: RawFd, batch: &[Transmit], gso: bool) -> io::Result<usize> {
    let n = batch.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut addrs: [MaybeUninit<RawAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    let mut controls = [Control([0; 32]); BATCH];
    // SAFETY: an all-zero `mmsghdr` is valid (null pointers, zero lengths and flags).
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, t) in batch[..n].iter().enumerate() {
        let addr = addrs[i].write(raw_addr(t.dest));
        let iov = iovs[i].write(libc::iovec {
            iov_base: t.data.as_ptr().cast_mut().cast(),
            iov_len: t.data.len(),
        });
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&raw mut addr.storage).cast();
        hdr.msg_namelen = addr.len;
        hdr.msg_iov = iov;
        hdr.msg_iovlen = 1;
        if t.segment < t.data.len() {
            if !gso {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "several datagrams in one send without GSO",
                ));
            }
            let control = &mut controls[i];
            hdr.msg_control = control.0.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE only computes a size.
            let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) };
            hdr.msg_controllen = space as usize;
            // SAFETY: `msg_control` points to `control`, 32 bytes aligned for `cmsghdr`, and
            // `msg_controllen` (24) fits in it, so CMSG_FIRSTHDR returns a pointer into it
            // with room for a header and a u16 of data (CMSG_SPACE(2) bytes), which is what is
            // written through it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(hdr);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                libc::CMSG_DATA(cmsg)
                    .cast::<u16>()
                    .write_unaligned(t.segment as u16);
            }
        }
    }
    // SAFETY: the first `n` entries of `msgs` point to addresses, iovecs, buffers and control
    // messages that all live until this call returns; the kernel only reads them (and writes
    // each `msg_len`).
    let rc = unsafe {
        libc::sendmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Whether a send error means the socket (or its device) cannot segment: GSO must go off.
pub fn is_gso_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::*;

    fn recv_all(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        for _ in 0..n {
            let (len, _) = s
                .recv_from(&mut buf)
                .unwrap_or((0, s.local_addr().unwrap()));
            out.push(buf[..len].to_vec());
        }
        out
    }

    #[test]
    fn one_call_sends_to_several_destinations_and_segments_runs() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
        }
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gso = gso_supported(tx.as_raw_fd());
        // A run of three datagrams for `a` (1200, 1200, 500 bytes) and one for `b`.
        let mut run = vec![1u8; 1200];
        run.extend(vec![2u8; 1200]);
        run.extend(vec![3u8; 500]);
        let batch = [
            Transmit {
                dest: a.local_addr().unwrap(),
                segment: if gso { 1200 } else { run.len() },
                data: run.clone(),
            },
            Transmit {
                dest: b.local_addr().unwrap(),
                data: b"single".to_vec(),
                segment: 6,
            },
        ];
        let sent = send_batch(tx.as_raw_fd(), &batch, gso).unwrap();
        assert_eq!(sent, 2, "both messages in one call");
        if gso {
            let got = recv_all(&a, 3);
            assert_eq!(got[0], vec![1u8; 1200]);
            assert_eq!(got[1], vec![2u8; 1200]);
            assert_eq!(
                got[2],
                vec![3u8; 500],
                "the kernel cut the run into datagrams"
            );
        } else {
            assert_eq!(recv_all(&a, 1)[0], run);
        }
        assert_eq!(recv_all(&b, 1)[0], b"single");
        assert_eq!(batch[0].count(), if gso { 3 } else { 1 });
    }

    #[test]
    fn this_kernel_segments() {
        // The machines this broker targets (Linux >= 4.18) have UDP GSO; the fallback is
        // exercised by the test above only where it does not.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(gso_supported(s.as_raw_fd()));
    }

    #[test]
    fn a_run_without_gso_is_refused_not_sent_whole() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = Transmit {
            dest: "127.0.0.1:9".parse().unwrap(),
            data: vec![0; 2400],
            segment: 1200,
        };
        let e = send_batch(tx.as_raw_fd(), std::slice::from_ref(&t), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(t.datagrams().count(), 2);
    }
}
