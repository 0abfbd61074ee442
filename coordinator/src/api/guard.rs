//! The gate in front of a service: each call is admitted from its headers, before a byte of
//! its body is read, and each message is held to its method's limits as it streams in.
//!
//! Decoding is where memory goes: an empty `PowerSourceInfo` is 2 bytes on the wire and about
//! 100 in memory. So an anonymous or unapproved caller is refused before decoding, and an
//! approved agent is refused, still before decoding, when a message is larger than its method
//! needs or repeats a field more often than its method allows. Who is admitted is the
//! [`Admission`]'s to say (`auth.rs`); this module is the mechanics.

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::server::NamedService;
use tower::{Layer, Service};

/// What one method of the agent service may receive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The method's name, as in the path `/ipw.v1.AgentService/{name}`.
    pub method: &'static str,
    /// Largest message, in bytes on the wire.
    pub max_bytes: u32,
    /// Top-level repeated fields: (field number, most occurrences in one message).
    pub repeated: &'static [(u32, u32)],
    /// Whether a pending agent may call it (heartbeats and rotation only).
    pub pending_may_call: bool,
}

/// Each method's limits, sized to what the agent sends (batches of at most 1,000 results or
/// 4 MiB, telemetry every 5 s) with room to spare.
pub const METHODS: &[Limits] = &[
    Limits { method: "Heartbeat", max_bytes: 1 << 20, repeated: &[(1, 10_000), (4, 64)], pending_may_call: true },
    Limits { method: "RotateCredential", max_bytes: 1 << 10, repeated: &[], pending_may_call: true },
    Limits { method: "AcquireLease", max_bytes: 64 << 10, repeated: &[(1, 1_000)], pending_may_call: false },
    // The 10,000-result cap of a batch, counted before the batch is decoded.
    Limits { method: "UploadResults", max_bytes: 16 << 20, repeated: &[(2, 10_000)], pending_may_call: false },
    Limits { method: "CompleteShard", max_bytes: 4 << 10, repeated: &[], pending_may_call: false },
    Limits {
        method: "UploadShardTelemetry",
        max_bytes: 16 << 20,
        repeated: &[(6, 64), (8, 100_000)],
        pending_may_call: false,
    },
    Limits {
        method: "UploadSessionTelemetry",
        max_bytes: 16 << 20,
        repeated: &[(6, 64), (7, 10_000), (8, 100_000)],
        pending_may_call: false,
    },
    Limits { method: "ReportProvenance", max_bytes: 256 << 10, repeated: &[], pending_may_call: false },
    Limits {
        method: "ReleaseLeases",
        max_bytes: 4 << 20,
        repeated: &[(1, 10_000), (2, 100_000)],
        pending_may_call: false,
    },
];

/// The limits of the method at `path`, if the service has it.
pub fn limits_of(path: &str) -> Option<&'static Limits> {
    let method = path.rsplit_once('/').map_or(path, |(_, m)| m);
    METHODS.iter().find(|l| l.method == method)
}

/// Who a service lets in, decided from a call's headers and peer (its `parts`).
pub trait Admission: Clone + Send + Sync + 'static {
    /// What the handler learns of the caller, as a request extension.
    type Caller: Clone + Send + Sync + 'static;

    /// Admits a call to `path`, with the limits its body is held to (`None`: none), or
    /// refuses it.
    fn admit(
        &self,
        parts: &http::request::Parts,
    ) -> impl Future<Output = Result<(Self::Caller, Option<&'static Limits>), Status>> + Send;
}

/// Puts a [`Gate`] in front of a service.
#[derive(Debug, Clone)]
pub struct GateLayer<A> {
    admission: A,
}

impl<A> GateLayer<A> {
    /// A gate that admits calls by `admission`.
    pub fn new(admission: A) -> Self {
        Self { admission }
    }
}

impl<S, A: Clone> Layer<S> for GateLayer<A> {
    type Service = Gate<S, A>;

    fn layer(&self, inner: S) -> Gate<S, A> {
        Gate { inner, admission: self.admission.clone() }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Gate<S, A> {
    inner: S,
    admission: A,
}

impl<S: NamedService, A> NamedService for Gate<S, A> {
    const NAME: &'static str = S::NAME;
}

type Response = http::Response<tonic::body::Body>;

impl<S, A> Service<http::Request<tonic::body::Body>> for Gate<S, A>
where
    S: Service<http::Request<Checked<tonic::body::Body>>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    A: Admission,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule for Clone services).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let (caller, limits) = match admission.admit(&parts).await {
                Ok(admitted) => admitted,
                Err(status) => return Ok(status.into_http()),
            };
            let mut request = http::Request::from_parts(parts, Checked::new(body, limits));
            request.extensions_mut().insert(caller);
            inner.call(request).await
        })
    }
}

/// The caller a [`Gate`] admitted, for the handler.
pub fn admitted<C: Clone + Send + Sync + 'static, T>(request: &tonic::Request<T>) -> Result<C, Status> {
    request.extensions().get::<C>().cloned().ok_or_else(|| Status::internal("the call did not pass the gate"))
}

/// A call's headers and peer, as a tonic request without a body (what authentication reads).
pub fn headers_only(parts: &http::request::Parts) -> tonic::Request<()> {
    let mut request = http::Request::new(());
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    tonic::Request::from_http(request)
}

/// A request body held to a method's [`Limits`] as it streams: each gRPC message's length is
/// checked from its 5-byte header, and its top-level fields are counted from their tags, all
/// without keeping the bytes. A breach ends the body with a `Status` that tonic passes on.
#[derive(Debug)]
pub struct Checked<B> {
    inner: B,
    scan: Option<Scan>,
}

impl<B> Checked<B> {
    fn new(inner: B, limits: Option<&'static Limits>) -> Self {
        Self { inner, scan: limits.map(Scan::new) }
    }
}

impl<B> Body for Checked<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(scan)) = (frame.data_ref(), this.scan.as_mut())
                    && let Err(status) = scan.feed(data.chunk())
                {
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum At {
    /// In a message's 5-byte header, this many bytes read.
    Header(usize),
    /// At a field's tag (a varint), as far as read.
    Tag(u64, u32),
    /// In a varint field's value.
    Varint,
    /// In a length-delimited field's length, as far as read.
    Length(u64, u32),
    /// Skipping this many bytes of a field's value.
    Skip(u64),
}

/// The streaming reader behind [`Checked`].
#[derive(Debug)]
struct Scan {
    limits: &'static Limits,
    at: At,
    header: [u8; 5],
    /// Bytes of the current message not yet read.
    left: u64,
    counts: Vec<u32>,
}

impl Scan {
    fn new(limits: &'static Limits) -> Self {
        Self { limits, at: At::Header(0), header: [0; 5], left: 0, counts: vec![0; limits.repeated.len()] }
    }

    /// Reads the next piece of the stream.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Status> {
        while !bytes.is_empty() {
            if let At::Header(n) = self.at {
                let take = (5 - n).min(bytes.len());
                self.header[n..n + take].copy_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                self.at = if n + take == 5 { self.start_message()? } else { At::Header(n + take) };
                continue;
            }
            if let At::Skip(n) = self.at {
                let take = n.min(self.left).min(bytes.len() as u64);
                bytes = &bytes[take as usize..];
                self.left -= take;
                self.at = if n == take { At::Tag(0, 0) } else { At::Skip(n - take) };
            } else {
                let byte = bytes[0];
                bytes = &bytes[1..];
                self.left -= 1;
                self.at = self.step(byte)?;
            }
            if self.left == 0 {
                // A field cut off by the message's end is prost's to refuse.
                self.at = At::Header(0);
            }
        }
        Ok(())
    }

    fn start_message(&mut self) -> Result<At, Status> {
        let [compressed, len @ ..] = self.header;
        let len = u32::from_be_bytes(len);
        let method = self.limits.method;
        if compressed != 0 {
            return Err(Status::unimplemented(format!("{method}: compressed messages are not accepted")));
        }
        if len > self.limits.max_bytes {
            return Err(Status::invalid_argument(format!(
                "{method}: a message of {len} bytes is over the method's limit of {} bytes",
                self.limits.max_bytes
            )));
        }
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.left = u64::from(len);
        Ok(if len == 0 { At::Header(0) } else { At::Tag(0, 0) })
    }

    /// One byte of a tag, varint or length.
    fn step(&mut self, byte: u8) -> Result<At, Status> {
        let malformed = || Status::invalid_argument(format!("{}: malformed message", self.limits.method));
        let more = byte & 0x80 != 0;
        Ok(match self.at {
            At::Tag(_, shift) | At::Length(_, shift) if shift > 63 => return Err(malformed()),
            At::Tag(v, shift) if more => At::Tag(v | u64::from(byte & 0x7f) << shift, shift + 7),
            At::Tag(v, shift) => {
                let tag = v | u64::from(byte) << shift;
                self.count((tag >> 3) as u32)?;
                match tag & 7 {
                    0 => At::Varint,
                    1 => At::Skip(8),
                    2 => At::Length(0, 0),
                    5 => At::Skip(4),
                    _ => return Err(malformed()),
                }
            }
            At::Varint if more => At::Varint,
            At::Varint => At::Tag(0, 0),
            At::Length(v, shift) if more => At::Length(v | u64::from(byte & 0x7f) << shift, shift + 7),
            At::Length(v, shift) => match v | u64::from(byte) << shift {
                0 => At::Tag(0, 0),
                n if n > self.left => return Err(malformed()),
                n => At::Skip(n),
            },
            At::Header(_) | At::Skip(_) => unreachable!("handled by feed"),
        })
    }

    fn count(&mut self, field: u32) -> Result<(), Status> {
        for (i, &(number, most)) in self.limits.repeated.iter().enumerate() {
            if number == field {
                self.counts[i] += 1;
                if self.counts[i] > most {
                    return Err(Status::invalid_argument(format!(
                        "{}: field {field} repeats more than {most} times in one message",
                        self.limits.method
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipw_proto::v1::{HeartbeatRequest, PowerReading, PowerSourceInfo, QueryResult, ResultBatch, SessionTelemetry};
    use prost::Message;

    /// `messages` framed as gRPC sends them.
    fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    /// Feeds `stream` in pieces of `piece` bytes.
    fn scan(method: &str, stream: &[u8], piece: usize) -> Result<(), Status> {
        let mut s = Scan::new(limits_of(method).expect("a method"));
        stream.chunks(piece).try_for_each(|c| s.feed(c))
    }

    #[test]
    fn real_messages_pass_in_any_pieces() {
        let batch = ResultBatch {
            batch_seq: 7,
            results: vec![QueryResult { response: "x".repeat(300), latency_s: 1.5, ..Default::default() }; 50],
        };
        let telemetry = SessionTelemetry {
            session_id: "s".into(),
            sources: vec![PowerSourceInfo { kind: "rapl".into(), ..Default::default() }; 3],
            ..Default::default()
        };
        let results = framed(&[batch.encode_to_vec(), batch.encode_to_vec(), Vec::new()]);
        let telemetry = framed(&[telemetry.encode_to_vec()]);
        for piece in [1, 3, 5, 64, 100_000] {
            scan("UploadResults", &results, piece).unwrap();
            scan("UploadSessionTelemetry", &telemetry, piece).unwrap();
        }
    }

    #[test]
    fn a_repeated_field_past_its_limit_is_refused_before_decoding() {
        // 10,001 empty results: 20 KB on the wire, refused at the 10,001st tag.
        let batch = ResultBatch { batch_seq: 1, results: vec![QueryResult::default(); 10_001] };
        let e = scan("UploadResults", &framed(&[batch.encode_to_vec()]), 4096).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("field 2 repeats more than 10000 times"), "{}", e.message());
        let sources = SessionTelemetry { sources: vec![PowerSourceInfo::default(); 65], ..Default::default() };
        let e = scan("UploadSessionTelemetry", &framed(&[sources.encode_to_vec()]), 7).unwrap_err();
        assert!(e.message().contains("field 6 repeats more than 64 times"), "{}", e.message());
        let beat = HeartbeatRequest { power: vec![PowerReading::default(); 65], ..Default::default() };
        let e = scan("Heartbeat", &framed(&[beat.encode_to_vec()]), 16).unwrap_err();
        assert!(e.message().contains("field 4 repeats more than 64 times"), "{}", e.message());
    }

    #[test]
    fn an_oversized_or_compressed_message_is_refused_at_its_header() {
        let e = scan("CompleteShard", &[0, 0, 0, 0x10, 0x01], 5).unwrap_err();
        assert!(e.message().contains("4097 bytes is over the method's limit of 4096"), "{}", e.message());
        let e = scan("CompleteShard", &[1, 0, 0, 0, 1, 0], 6).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(limits_of("/ipw.v1.AgentService/Nope").is_none());
        assert_eq!(limits_of("/ipw.v1.AgentService/UploadResults").map(|l| l.method), Some("UploadResults"));
    }

    #[test]
    fn a_length_past_the_message_end_is_malformed() {
        // Field 1, length-delimited, claiming 100 bytes inside a 3-byte message.
        let e = scan("ReportProvenance", &framed(&[vec![0x0a, 100, 0]]), 2).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
