use scenarios::scenarios::ops;
use scenarios::sim::DelayModel;

#[test]
fn smoke() {
    let t = std::time::Instant::now();
    let o = ops::scenario(DelayModel::zero(), 1).run();
    println!("{} in {:?}", o.summary(), t.elapsed());
    println!("problems {:?}", o.problems);
    let bad: Vec<_> = o.ops.iter().filter(|r| !r.succeeded()).take(5).collect();
    println!("not ok: {bad:?}");
    println!("{:?}", o.failures());
}
