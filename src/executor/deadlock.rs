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
    waits_for: usize,
}

/// The wait-for graph of blocked pool threads.
pub(crate) struct WaitGraph(Mutex<Vec<Edge>>);

/// The process's wait-for graph, shared by every pool.
pub(crate) static WAITS: WaitGraph = WaitGraph(Mutex::new(Vec::new()));

/// A registered wait; removes its edge when dropped.
pub(crate) struct Registered<'a> {
    graph: &'a WaitGraph,
}

impl WaitGraph {
    /// Records that the caller, holding `holds`, waits for `target`, unless
    /// that closes a cycle (then `None`).
    pub(crate) fn register(&self, holds: Vec<usize>, target: usize) -> Option<Registered<'_>> {
        let mut edges = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut cur = target;
        // Each step moves to another blocked thread; more steps than edges
        // would mean a cycle that does not involve us: stop looking.
        for _ in 0..=edges.len() {
            if holds.contains(&cur) {
                return None;
            }
            match edges.iter().find(|e| e.holds.contains(&cur)) {
                Some(e) => cur = e.waits_for,
                None => break,
            }
        }
        edges.push(Edge {
            thread: std::thread::current().id(),
            holds,
            waits_for: target,
        });
        Some(Registered { graph: self })
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
