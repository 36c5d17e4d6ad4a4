use std::net::IpAddr;

use ractor::RpcReplyPort;

use crate::IngestResult;

#[derive(Debug)]
pub enum IngressMsg {
    /// A request from this client failed signature verification. Counted, then answered.
    InvalidSignature(IpAddr, RpcReplyPort<IngestResult>),
    /// Periodic housekeeping: expire blocks, forget old idempotency keys.
    Tick,
}
