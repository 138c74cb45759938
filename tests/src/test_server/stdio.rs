//! Serving over stdin/stdout. Stdout carries JSON-RPC only; stdin EOF ends the process.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use anyhow::Context as _;
use rmcp::{ServiceExt as _, service::ServerInitializeError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::server::TestServer;

/// Serves one MCP session on stdin/stdout until stdin closes or `shutdown` fires.
///
/// `on_eof` is cancelled as soon as stdin reports end of file, so requests that hang on
/// purpose let go and the session can end without waiting for them.
pub(crate) async fn serve(
    server: TestServer,
    shutdown: CancellationToken,
    on_eof: CancellationToken,
) -> anyhow::Result<()> {
    // Non-blocking pipe I/O when stdin/stdout are pipes (how MCP hosts start servers);
    // the blocking handles otherwise.
    let (reader, writer) = rmcp::transport::stdio_pipes();
    let reader = EofNotify {
        inner: reader,
        on_eof,
    };
    let running = match server.serve_with_ct((reader, writer), shutdown).await {
        Ok(running) => running,
        Err(ServerInitializeError::ConnectionClosed(context)) => {
            tracing::info!(%context, "stdin closed before the session started");
            return Ok(());
        }
        Err(ServerInitializeError::Cancelled) => {
            tracing::info!("shut down before the session started");
            return Ok(());
        }
        // The client closed our stdout (it gave up waiting, e.g. during a startup delay):
        // like EOF, the client is gone, so the exit code does not depend on which came first.
        Err(ServerInitializeError::TransportError { error, context }) if is_broken_pipe(&error) => {
            tracing::info!(%context, "stdout closed by the client (broken pipe)");
            return Ok(());
        }
        Err(error) => return Err(error).context("starting the MCP session on stdio"),
    };
    tracing::info!("serving MCP on stdio");
    let reason = running
        .waiting()
        .await
        .context("the stdio session task failed")?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}

/// Whether `error` is, or was caused by, writing to a pipe nobody reads any more.
fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// An [`AsyncRead`] that cancels a token when its inner reader reaches end of file.
struct EofNotify<R> {
    inner: R,
    on_eof: CancellationToken,
}

impl<R: AsyncRead + Unpin> AsyncRead for EofNotify<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let wanted = buf.remaining() > 0;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if wanted && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() == before {
            tracing::info!("stdin reached end of file");
            self.on_eof.cancel();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    #[test]
    fn broken_pipes_are_found_through_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let broken = Wrapper(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&broken));
        let other = Wrapper(std::io::Error::from(std::io::ErrorKind::InvalidData));
        assert!(!is_broken_pipe(&other));
    }

    #[tokio::test]
    async fn eof_cancels_the_token_only_at_the_end() -> std::io::Result<()> {
        let token = CancellationToken::new();
        let mut reader = EofNotify {
            inner: &b"hello"[..],
            on_eof: token.clone(),
        };
        let mut first = [0_u8; 5];
        reader.read_exact(&mut first).await?;
        assert!(!token.is_cancelled());
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await?;
        assert!(token.is_cancelled());
        Ok(())
    }
}
