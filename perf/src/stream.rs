//! The byte stream under MQTT: a TCP connection (TLS and WebSocket ride on it through a
//! `Link`, transport.rs), or the MQTT stream of a QUIC connection (quic.rs). One type for the
//! set-up and one per half for the client's reader and writer, so their code is the same over
//! every transport.

use std::io;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, OwnedReadHalf,
    OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;

use crate::quic::{QuicRecv, QuicSend, QuicStream, ReadCanceller};

/// A connection's stream, before its reader and writer share it.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Quic(QuicStream),
}

/// The reading half.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Tcp(OwnedReadHalf<TcpStream>),
    Quic(QuicRecv),
}

/// The writing half.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Tcp(OwnedWriteHalf<TcpStream>),
    Quic(QuicSend),
}

impl Stream {
    /// The halves, and for QUIC what cancels a read (monoio's `Canceller` cancels the
    /// kernel's reads only).
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf, Option<ReadCanceller>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w), None)
            }
            Stream::Quic(s) => {
                let cancel = s.canceller();
                let (r, w) = s.into_split();
                (ReadHalf::Quic(r), WriteHalf::Quic(w), Some(cancel))
            }
        }
    }
}

impl AsyncReadRent for Stream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Quic(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.readv(buf).await,
            Stream::Quic(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.write(buf).await,
            Stream::Quic(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Tcp(s) => s.writev(buf).await,
            Stream::Quic(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush().await,
            Stream::Quic(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Quic(s) => s.shutdown().await,
        }
    }
}

impl AsyncReadRent for ReadHalf {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ReadHalf::Tcp(s) => s.read(buf).await,
            ReadHalf::Quic(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ReadHalf::Tcp(s) => s.readv(buf).await,
            ReadHalf::Quic(s) => s.readv(buf).await,
        }
    }
}

impl CancelableAsyncReadRent for ReadHalf {
    async fn cancelable_read<T: IoBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ReadHalf::Tcp(s) => s.cancelable_read(buf, c).await,
            ReadHalf::Quic(s) => s.cancelable_read(buf, c).await,
        }
    }

    async fn cancelable_readv<T: IoVecBufMut>(
        &mut self,
        buf: T,
        c: CancelHandle,
    ) -> BufResult<usize, T> {
        match self {
            ReadHalf::Tcp(s) => s.cancelable_readv(buf, c).await,
            ReadHalf::Quic(s) => s.cancelable_readv(buf, c).await,
        }
    }
}

impl AsyncWriteRent for WriteHalf {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            WriteHalf::Tcp(s) => s.write(buf).await,
            WriteHalf::Quic(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            WriteHalf::Tcp(s) => s.writev(buf).await,
            WriteHalf::Quic(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(s) => s.flush().await,
            WriteHalf::Quic(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(s) => s.shutdown().await,
            WriteHalf::Quic(s) => s.shutdown().await,
        }
    }
}
