use std::net::IpAddr;

use herald_storage::NewMessage;
use ractor::RpcReplyPort;

use crate::IngestResult;

#[derive(Debug)]
pub enum IngressMsg {
    /// Store a verified message; the reply goes out after the commit.
    Accept(Box<NewMessage>, RpcReplyPort<IngestResult>),
    /// A request from this client failed signature verification. Counted, then answered.
    InvalidSignature(IpAddr, RpcReplyPort<IngestResult>),
    /// Periodic housekeeping: expire blocks, forget old idempotency keys.
    Tick,
}
