use scenarios::scenarios::resilience;
use scenarios::sim::DelayModel;
fn main() {
    let trace = std::env::args().any(|a| a == "--trace");
    let o = resilience::leader_crash_under_load(DelayModel::zero(), 123)
        .trace(trace)
        .run();
    eprintln!("{}", o.summary());
    eprintln!("killed {:?} problems {:?}", o.killed, o.problems);
    for r in &o.ops {
        if !r.succeeded() {
            eprintln!(
                "FAIL client {} {:?} call {} -> {:?}",
                r.session, r.op, r.call, r.result
            );
        }
    }
}
