//! Serialisation ids of the kompact-kv wire format: the one place where they are
//! assigned.
//!
//! Every top-level message type that crosses the network has its own id; the id
//! tells the receiver which protobuf message the bytes hold. Kompact reserves
//! `0..=20` ([`serialisation_ids::PBUF`] is the highest), and ids must be unique
//! across every binary that talks to a kompact-kv node, so ours start at 100.
//!
//! | range | use |
//! |---|---|
//! | 100–109 | node ⇄ node (PerfectLink) |
//! | 110–120 | client ⇄ node (115–116: status queries of `kvstore status`; 119–120:
//! | | admin requests of `kvstore remove` and `kvstore rebalance`) |
//! | 121–199 | free, for later additions |
//!
//! Rules: an id, once released, is never reused for anything else, even after its
//! message is retired; new messages take new ids. `docs/wire.md` lists the same
//! table, and a test checks that it mentions every id.

use kompact::prelude::{SerId, serialisation_ids};

/// A [`kv_ports::LinkFrame`] between two nodes (`kvstore.wire.v1.LinkFrame`).
pub const LINK_FRAME: SerId = 100;
/// [`kv_ports::ClientMessage::Connect`] (`kvstore.wire.v1.Connect`).
pub const CONNECT: SerId = 110;
/// [`kv_ports::ClientMessage::ConnectAck`] (`kvstore.wire.v1.ConnectAck`).
pub const CONNECT_ACK: SerId = 111;
/// [`kv_ports::ClientMessage::Request`] (`kvstore.wire.v1.ClientRequest`).
pub const REQUEST: SerId = 112;
/// [`kv_ports::ClientMessage::Response`] (`kvstore.wire.v1.Response`).
pub const RESPONSE: SerId = 113;
/// [`kv_ports::ClientMessage::Refused`] (`kvstore.wire.v1.Refused`).
pub const REFUSED: SerId = 114;
/// [`kv_ports::ClientMessage::Requests`] (`kvstore.wire.v1.RequestBatch`).
pub const REQUEST_BATCH: SerId = 117;
/// [`kv_ports::ClientMessage::Responses`] (`kvstore.wire.v1.ResponseBatch`).
pub const RESPONSE_BATCH: SerId = 118;
/// [`kv_ports::StatusMessage::Request`] (`kvstore.wire.v1.StatusRequest`).
pub const STATUS_REQUEST: SerId = 115;
/// [`kv_ports::StatusMessage::Reply`] (`kvstore.wire.v1.StatusReply`).
pub const STATUS_REPLY: SerId = 116;
/// [`kv_ports::StatusMessage::Admin`] (`kvstore.wire.v1.AdminRequest`).
pub const ADMIN_REQUEST: SerId = 119;
/// [`kv_ports::StatusMessage::AdminReply`] (`kvstore.wire.v1.AdminReply`).
pub const ADMIN_REPLY: SerId = 120;

/// Every id with the name used for it in logs and in `docs/wire.md`.
pub const ALL: &[(SerId, &str)] = &[
    (LINK_FRAME, "LINK_FRAME"),
    (CONNECT, "CONNECT"),
    (CONNECT_ACK, "CONNECT_ACK"),
    (REQUEST, "REQUEST"),
    (RESPONSE, "RESPONSE"),
    (REFUSED, "REFUSED"),
    (REQUEST_BATCH, "REQUEST_BATCH"),
    (RESPONSE_BATCH, "RESPONSE_BATCH"),
    (STATUS_REQUEST, "STATUS_REQUEST"),
    (STATUS_REPLY, "STATUS_REPLY"),
    (ADMIN_REQUEST, "ADMIN_REQUEST"),
    (ADMIN_REPLY, "ADMIN_REPLY"),
];

// Compile-time guards: every id is above kompact's reserved range and no id is
// assigned twice.
const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(
            ALL[i].0 > serialisation_ids::PBUF,
            "serialisation id in kompact's reserved range"
        );
        let mut j = i + 1;
        while j < ALL.len() {
            assert!(ALL[i].0 != ALL[j].0, "serialisation id assigned twice");
            j += 1;
        }
        i += 1;
    }
};

/// The name of a kompact-kv serialisation id (`"LINK_FRAME"`, ...), for log lines;
/// `None` if the id is not one of ours.
pub fn name_of(id: SerId) -> Option<&'static str> {
    ALL.iter().find(|(i, _)| *i == id).map(|(_, n)| *n)
}

/// Whether `id` is one of the kompact-kv serialisation ids.
pub fn is_known(id: SerId) -> bool {
    name_of(id).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_unique_and_outside_kompacts_range() {
        let mut seen = BTreeSet::new();
        for (id, name) in ALL {
            assert!(*id > serialisation_ids::PBUF, "{name} = {id} is reserved");
            assert!(*id >= 100, "{name} = {id} is below 100");
            assert!(seen.insert(*id), "{name} = {id} is assigned twice");
        }
        let names: BTreeSet<_> = ALL.iter().map(|(_, n)| *n).collect();
        assert_eq!(names.len(), ALL.len(), "a name is used twice");
    }

    #[test]
    fn name_of_knows_every_id_and_nothing_else() {
        for (id, name) in ALL {
            assert_eq!(name_of(*id), Some(*name));
        }
        for id in [0, 6, 20, 99, 101, 121, 200] {
            assert_eq!(name_of(id), None);
            assert!(!is_known(id));
        }
    }
}
