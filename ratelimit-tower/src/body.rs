//! Response bodies the layer can build its own rejections in.

use bytes::Bytes;
use http_body_util::{Either, Full};

/// A response body type the layer can build a rejection in.
///
/// The layer returns the inner service's own response type: admitted responses pass through
/// untouched (no wrapping, no re-boxing by the framework), and only a rejection is built, in the same
/// body type, through this trait. It is implemented for axum's and tonic's bodies, `Full<Bytes>`,
/// boxed bodies, and `Either<B, Full<Bytes>>` for any other body `B`.
pub trait RejectionBody: Sized {
    /// A body holding `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

#[cfg(feature = "axum")]
impl RejectionBody for axum::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        axum::body::Body::from(bytes)
    }
}

#[cfg(feature = "tonic")]
impl RejectionBody for tonic::body::Body {
    fn from_bytes(bytes: Bytes) -> Self {
        tonic::body::Body::new(Full::new(bytes))
    }
}

impl RejectionBody for Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
    }
}

impl<B> RejectionBody for Either<B, Full<Bytes>> {
    fn from_bytes(bytes: Bytes) -> Self {
        Either::Right(Full::new(bytes))
    }
}

impl<E> RejectionBody for http_body_util::combinators::BoxBody<Bytes, E>
where
    E: Send + Sync + 'static,
{
    fn from_bytes(bytes: Bytes) -> Self {
        use http_body_util::BodyExt;
        Full::new(bytes).map_err(|never| match never {}).boxed()
    }
}

impl<E> RejectionBody for http_body_util::combinators::UnsyncBoxBody<Bytes, E>
where
    E: Send + 'static,
{
    fn from_bytes(bytes: Bytes) -> Self {
        use http_body_util::BodyExt;
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}
