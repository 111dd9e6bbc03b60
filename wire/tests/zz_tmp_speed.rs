mod common;
use common::*;
use kv_ports::{ClientMessage, ClientRequest, NetMessage, PlPayload};
use kv_protocols::sequence_paxos::messages::{AcceptDecide, PaxosMsg};
#[test]
fn speed() {
    let msg = NetMessage::Link(frame(
        vec![PlPayload::Paxos {
            partition: 1,
            msg: PaxosMsg::AcceptDecide(AcceptDecide {
                n: ballot(1, 1),
                start_idx: 5,
                entries: commands(64),
                decided_idx: 4,
            }),
        }],
        None,
    ));
    let t = std::time::Instant::now();
    let n = 20000;
    let mut total = 0;
    for _ in 0..n {
        let (id, b) = kv_wire::encode_to_vec(&msg);
        total += b.len();
        let m = kv_wire::decode_slice(id, &b).unwrap();
        std::hint::black_box(m);
    }
    let e = t.elapsed();
    println!(
        "64-entry frame: {} bytes, {:?}/roundtrip, {:.0} entries/s",
        total / n,
        e / n as u32,
        (64 * n) as f64 / e.as_secs_f64()
    );
    let req = NetMessage::Client(ClientMessage::Request(ClientRequest {
        client: 1,
        seq: 2,
        op: ops()[2].clone(),
    }));
    let t = std::time::Instant::now();
    for _ in 0..n * 10 {
        let (id, b) = kv_wire::encode_to_vec(&req);
        let m = kv_wire::decode_slice(id, &b).unwrap();
        std::hint::black_box(m);
    }
    println!("request roundtrip {:?}", t.elapsed() / (n as u32 * 10));
}
