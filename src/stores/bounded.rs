//! A canary connection's reads, bounded: the stream a driver reads from
//! draws every byte from a budget, refilled before each round trip (connect,
//! probe, identity read). A server that declares a huge reply and streams it
//! (a PostgreSQL message of 2 GiB) costs the budget and a `protocol` error,
//! not the agent's memory: drivers believe declared lengths, the budget does
//! not. The stores that parse their protocol themselves (Redis, MySQL) check
//! a declared length before buffering it, within the same bound per reply.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one round trip may read: far more than any identity or probe reply,
/// far less than a hostile declared length.
pub const ROUND_TRIP_BYTES: usize = 4 << 20;

/// The bytes a connection may still read before its next refill.
#[derive(Debug)]
pub struct ReadBudget {
    left: AtomicUsize,
    limit: usize,
}

impl ReadBudget {
    /// A full budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(limit),
            limit,
        })
    }

    /// Refills the budget before a round trip.
    pub fn refill(&self) {
        self.left.store(self.limit, Ordering::Relaxed);
    }

    /// Bytes read since the last refill.
    pub fn used(&self) -> usize {
        self.limit - self.left.load(Ordering::Relaxed)
    }
}

/// The error a read past the budget fails with: `InvalidData` (classified
/// `protocol`), carrying this type so that it can be told by type.
#[derive(Debug, thiserror::Error)]
#[error("the server sent more than {0} bytes for one round trip")]
pub struct BudgetExceeded(pub usize);

/// A stream whose reads draw from a [`ReadBudget`].
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    budget: Arc<ReadBudget>,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, budget: Arc<ReadBudget>) -> Self {
        Self { inner, budget }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.budget.left.load(Ordering::Relaxed);
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                BudgetExceeded(self.budget.limit),
            )));
        }
        // Read at most what is left, so the budget is never overdrawn.
        let room = buf.remaining().min(left);
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = &poll {
            buf.advance(n);
            self.budget.left.fetch_sub(n, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Whether an error chain holds a [`BudgetExceeded`].
pub fn exceeded(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BudgetExceeded>()
            || err
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<BudgetExceeded>())
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_stop_at_the_budget_until_it_is_refilled() {
        let (mut tx, rx) = tokio::io::duplex(64 << 10);
        let budget = ReadBudget::new(1000);
        let mut r = Bounded::new(rx, budget.clone());
        tokio::io::AsyncWriteExt::write_all(&mut tx, &[7u8; 4000])
            .await
            .unwrap();
        let mut got = vec![0u8; 4000];
        let mut n = 0;
        let err = loop {
            match r.read(&mut got[n..]).await {
                Ok(k) => n += k,
                Err(e) => break e,
            }
        };
        assert_eq!(n, 1000, "never more than the budget");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(exceeded(&err), "{err}");
        budget.refill();
        let k = r.read(&mut got[..]).await.unwrap();
        assert!(k > 0 && k <= 1000);
    }
}
