//! The hickory-server [`RequestHandler`]: a thin adapter from hickory's
//! request/response plumbing to [`crate::answer::answer`].
//!
//! Layer: shell. Contract: the reply is exactly what the pure core computed
//! from the raw request bytes (hickory's zone-handler path cannot emit ECS
//! with a decision scope, so we do not use it); the adapter only re-frames
//! it as a hickory `MessageResponse` for hickory's UDP/TCP writers. The
//! snapshot is read through `ArcSwap::load`, so health updates never block
//! a query.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, HeaderCounts, Message, MessageType, Metadata, ResponseCode};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use tracing::{debug, warn};

use crate::answer::{Snapshot, Transport, answer};
use crate::metrics::Metrics;

/// Geo-DNS request handler for [`hickory_server::Server`].
#[derive(Debug, Clone)]
pub struct GeoDnsHandler {
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
}

impl GeoDnsHandler {
    /// A handler answering from `state`.
    pub fn new(state: Arc<ArcSwap<Snapshot>>, metrics: Arc<Metrics>) -> Self {
        Self { state, metrics }
    }
}

fn info_without_reply(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for GeoDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        let mut out = Vec::with_capacity(512);
        let outcome = {
            let snap = self.state.load();
            answer(
                &snap,
                request.as_slice(),
                request.src().ip(),
                transport,
                &mut out,
            )
        };
        self.metrics.record(transport, outcome.as_ref());
        if outcome.is_none() {
            return info_without_reply(request);
        }
        // Re-frame our bytes for hickory's writer. Our encoder already
        // applied the size limit and TC; the OPT we advertise has our payload
        // size, which hickory uses as its own limit, so nothing is cut twice.
        let reply = match Message::from_vec(&out) {
            Ok(m) => m,
            Err(error) => {
                warn!(%error, "reply failed to re-parse; sending SERVFAIL");
                let builder = MessageResponseBuilder::from_message_request(request);
                let response = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                return response_handle
                    .send_response(response)
                    .await
                    .unwrap_or_else(|_| info_without_reply(request));
            }
        };
        let no_question =
            Queries::read(&mut BinDecoder::new(&[]), 0).expect("zero queries always decode");
        let queries = if reply.queries.is_empty() {
            &no_question
        } else {
            &request.queries
        };
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(edns) = reply.edns.as_ref() {
            builder.edns(edns);
        }
        let response = builder.build(
            reply.metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            [],
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                debug!(%error, "failed to send reply");
                info_without_reply(request)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use hickory_proto::rr::Record;
    use hickory_proto::serialize::binary::BinEncoder;
    use hickory_server::net::NetError;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::zone_handler::MessageResponse;

    use super::*;

    /// A response sink that encodes what hickory would send and keeps it.
    #[derive(Clone, Default)]
    pub(crate) struct CapturingSink {
        pub(crate) sent: Arc<Mutex<Vec<Vec<u8>>>>,
        udp: bool,
    }

    #[async_trait::async_trait]
    impl ResponseHandler for CapturingSink {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut buf = Vec::new();
            let mut encoder = BinEncoder::new(&mut buf);
            if self.udp {
                // What hickory's UDP writer applies (response_handler.rs).
                let limit = response.edns().map_or(512, |e| e.max_payload());
                encoder.set_max_size(limit);
            }
            let info = response
                .destructive_emit(&mut encoder)
                .map_err(NetError::from)?;
            self.sent.lock().expect("sink lock").push(buf);
            Ok(info)
        }
    }

    /// Runs `query` through the hickory handler; returns the captured reply
    /// bytes, or `None` if hickory could not parse the request at all (its
    /// server then answers FORMERR itself) or nothing was sent.
    pub(crate) fn via_hickory(
        snap: Snapshot,
        query: &[u8],
        src: SocketAddr,
        protocol: Protocol,
    ) -> Option<Vec<u8>> {
        let request = Request::from_bytes(query.to_vec(), src, protocol).ok()?;
        let handler = GeoDnsHandler::new(
            Arc::new(ArcSwap::from_pointee(snap)),
            Arc::new(Metrics::new(vec![])),
        );
        let sink = CapturingSink {
            udp: protocol == Protocol::Udp,
            ..CapturingSink::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(handler.handle_request::<_, TokioTime>(&request, sink.clone()));
        let sent = sink.sent.lock().expect("sink lock");
        sent.first().cloned()
    }
}
