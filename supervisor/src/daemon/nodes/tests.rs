//! Tests of the node executor's crash handling.

use super::*;

#[test]
fn exits_without_a_ready_beacon_back_off_longer_each_time_then_show_crashloop() {
    let backoff = crate::model::Backoff::default();
    let mut node = Node::new("w-1");
    node.set(NodeState::Starting, "booting");
    let dir = Path::new("/nonexistent");
    let mut gaps = Vec::new();
    for _ in 0..CRASHLOOP_AFTER {
        let before = Instant::now();
        exited(&mut node, dir, &backoff);
        gaps.push(node.next_start.map(|t| t - before));
        // The pass starts it again once the gap passed.
        node.set(NodeState::Starting, "booting");
    }
    assert!(gaps.windows(2).all(|w| w[0] < w[1]), "gaps grow: {gaps:?}");
    exited(&mut node, dir, &backoff);
    assert_eq!(node.state, NodeState::Crashloop, "{}", node.reason);
    assert!(node.reason.contains("console.log"), "{}", node.reason);
    // Whatever state its VM's exits find it in, the third one without a ready beacon is a
    // crash loop (a state that refused the move would leave it never restarted).
    for state in NodeState::ALL.into_iter().filter(|s| {
        !s.is_leaving()
            && !matches!(
                s,
                NodeState::Waiting | NodeState::Exited | NodeState::Crashloop
            )
    }) {
        let mut node = Node::new("w-2");
        for _ in 0..CRASHLOOP_AFTER {
            node.state = state;
            node.pid = 1;
            exited(&mut node, dir, &backoff);
        }
        assert_eq!(
            node.state,
            NodeState::Crashloop,
            "from {state}: {}",
            node.reason
        );
    }
    // A ready beacon ends the loop: the next exit counts from one again.
    node.set(NodeState::Starting, "booting");
    node.ready_since_start = true;
    exited(&mut node, dir, &backoff);
    assert_eq!((node.state, node.failures), (NodeState::Exited, 1));
}
