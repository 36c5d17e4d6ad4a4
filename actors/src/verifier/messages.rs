use ractor::RpcReplyPort;

use crate::{InboundWebhook, IngestResult};

#[derive(Debug)]
pub enum VerifierMsg {
    /// Verify a partner's webhook and, if it is genuine, hand it to the ingress for storage.
    /// The reply comes from whichever actor finishes the request.
    Verify(Box<InboundWebhook>, RpcReplyPort<IngestResult>),
}
