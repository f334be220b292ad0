//! Refusing waits that can never end: a task waiting on itself, or on a
//! task that (transitively) waits on it, across every pool in the process.
//!
//! Each blocked worker thread records the tasks it holds (the one it runs
//! and any it runs inline inside it) and the task it waits for. Before a
//! worker blocks, it follows the chain "task -> thread holding it -> task
//! that thread waits for" from the awaited task; reaching a task it holds
//! itself is a cycle, and the wait is refused with
//! [`TaskError::WouldDeadlock`](crate::TaskError::WouldDeadlock).
//!
//! There is one graph for the process ([`WAITS`]), not one per pool: a
//! server's CPU pool and I/O pool can wait on each other's tasks, and a
//! cycle through both must be seen. Task addresses are unique in the
//! process while the tasks live (a held or awaited task is alive).
//!
//! The graph is a `Mutex`-guarded list consulted only on this slow path,
//! by a thread that is about to park anyway: check and insert happen under
//! one lock, so two threads closing a cycle at once cannot both miss it.
//! Addresses are compared, never dereferenced.

use std::sync::Mutex;

/// One blocked thread: what it holds and what it waits for.
struct Edge {
    thread: std::thread::ThreadId,
    holds: Vec<usize>,
    /// The futures it waits for (one for a handle's wait; several for
    /// module-level `wait` and `as_completed`).
    waits_for: Vec<usize>,
    /// Whether it needs every one of them (`wait(ALL_COMPLETED)`, a
    /// handle's wait) or resumes once any one is done.
    all: bool,
}

/// The wait-for graph of blocked pool threads.
pub(crate) struct WaitGraph(Mutex<Vec<Edge>>);

/// The process's wait-for graph, shared by every pool.
pub(crate) static WAITS: WaitGraph = WaitGraph(Mutex::new(Vec::new()));

/// A registered wait; removes its edge when dropped.
pub(crate) struct Registered<'a> {
    graph: &'a WaitGraph,
}

/// Whether the future at `from` cannot finish until a thread holding
/// `holds` resumes: it is one of `holds`, or it is held by a blocked
/// thread that cannot resume before then (waiting for all of its targets,
/// one of which cannot finish; or for any one, none of which can).
///
/// A `true` is a proof, so a wait is never refused that could end.
/// `known` records each future's answer once found, so a future two
/// targets lead to is worked out once. A future met again while its own
/// answer is being worked out would be a cycle that does not pass through
/// `holds`; the graph refuses every edge that closes a cycle, so none is
/// there, and such a future would count as able to finish.
fn cannot_finish(
    edges: &[Edge],
    from: usize,
    holds: &[usize],
    known: &mut Vec<(usize, Option<bool>)>,
) -> bool {
    if holds.contains(&from) {
        return true;
    }
    if let Some(&(_, answer)) = known.iter().find(|(a, _)| *a == from) {
        return answer.unwrap_or(false); // `None`: still being worked out
    }
    let Some(edge) = edges.iter().find(|e| e.holds.contains(&from)) else {
        return false; // running, queued or done: not held by a blocked thread
    };
    known.push((from, None));
    let mut targets = edge.waits_for.iter();
    let answer = if edge.all {
        targets.any(|&t| cannot_finish(edges, t, holds, known))
    } else {
        !edge.waits_for.is_empty() && targets.all(|&t| cannot_finish(edges, t, holds, known))
    };
    if let Some(entry) = known.iter_mut().find(|(a, _)| *a == from) {
        entry.1 = Some(answer);
    }
    answer
}

impl WaitGraph {
    /// Records that the caller, holding `holds`, waits for `target`, unless
    /// that closes a cycle (then `None`).
    pub(crate) fn register(&self, holds: Vec<usize>, target: usize) -> Option<Registered<'_>> {
        let mut edges = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cannot_finish(&edges, target, &holds, &mut Vec::new()) {
            return None;
        }
        edges.push(Edge {
            thread: std::thread::current().id(),
            holds,
            waits_for: vec![target],
            all: true,
        });
        Some(Registered { graph: self })
    }

    /// For a wait on several futures (`all`: it needs every one): which
    /// of `targets` cannot finish while the caller, holding `holds`, waits
    /// (`stuck`, in the same order), and the caller's edge to the others,
    /// which it waits for (none if it waits for nothing). Check and insert
    /// are under one lock, as for [`register`](Self::register).
    pub(crate) fn watch(
        &self,
        holds: Vec<usize>,
        targets: &[usize],
        all: bool,
    ) -> (Option<Registered<'_>>, Vec<bool>) {
        let mut edges = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut known = Vec::new();
        let stuck: Vec<bool> = targets
            .iter()
            .map(|&t| cannot_finish(&edges, t, &holds, &mut known))
            .collect();
        let waits_for: Vec<usize> = targets
            .iter()
            .zip(&stuck)
            .filter(|(_, s)| !**s)
            .map(|(t, _)| *t)
            .collect();
        if waits_for.is_empty() {
            return (None, stuck);
        }
        edges.push(Edge {
            thread: std::thread::current().id(),
            holds,
            waits_for,
            all,
        });
        (Some(Registered { graph: self }), stuck)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut edges = self.graph.0.lock().unwrap_or_else(|e| e.into_inner());
        let me = std::thread::current().id();
        if let Some(i) = edges.iter().position(|e| e.thread == me) {
            edges.swap_remove(i);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::WaitGraph;

    /// On another thread, registers a wait of `holds` for `targets` (`all`
    /// or any) in `graph` and keeps it until `leave` is passed.
    fn blocked_elsewhere<'s>(
        s: &'s std::thread::Scope<'s, '_>,
        graph: &'s WaitGraph,
        holds: Vec<usize>,
        targets: Vec<usize>,
        all: bool,
        leave: &'s Barrier,
    ) {
        let entered = Arc::new(Barrier::new(2));
        let e = entered.clone();
        s.spawn(move || {
            let (registered, stuck) = graph.watch(holds, &targets, all);
            assert!(registered.is_some() && !stuck.contains(&true));
            e.wait();
            leave.wait();
        });
        entered.wait();
    }

    #[test]
    fn a_wait_for_all_is_stuck_through_any_one_target() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(2);
        std::thread::scope(|s| {
            // Task 1 waits for 10 (ours) and 3: it needs both.
            blocked_elsewhere(s, &graph, vec![1], vec![10, 3], true, &leave);
            let (edge, stuck) = graph.watch(vec![10], &[1, 2], true);
            assert_eq!(stuck, [true, false]);
            assert!(edge.is_some(), "it still waits for 2");
            drop(edge);
            // A handle's wait on 1 is refused.
            assert!(graph.register(vec![10], 1).is_none());
            assert!(graph.register(vec![11], 1).is_some());
            leave.wait();
        });
    }

    #[test]
    fn a_wait_for_any_is_stuck_only_when_every_target_is() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(3);
        std::thread::scope(|s| {
            // Task 1 waits for any of 10 (ours) and 3: 3 may finish.
            blocked_elsewhere(s, &graph, vec![1], vec![10, 3], false, &leave);
            let (_, stuck) = graph.watch(vec![10], &[1], true);
            assert_eq!(stuck, [false]);
            // Now task 3 waits for 10 as well: nothing 1 waits for can end.
            blocked_elsewhere(s, &graph, vec![3], vec![10], true, &leave);
            let (edge, stuck) = graph.watch(vec![10], &[1, 3], false);
            assert_eq!(stuck, [true, true]);
            assert!(edge.is_none(), "nothing left to wait for");
            leave.wait();
        });
    }

    #[test]
    fn a_wait_that_would_close_a_cycle_is_told_so() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(2);
        std::thread::scope(|s| {
            // Task 1 waits for 2; the thread running 2 now looks at 1.
            blocked_elsewhere(s, &graph, vec![1], vec![2], true, &leave);
            let (edge, stuck) = graph.watch(vec![2], &[1, 3], false);
            assert_eq!(stuck, [true, false]);
            assert!(edge.is_some(), "it still waits for 3");
            drop(edge);
            assert!(graph.register(vec![2], 1).is_none());
            leave.wait();
        });
    }
}
