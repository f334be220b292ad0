//! Refusing waits that can never end: a task waiting on itself, or on a
//! task that (transitively) waits on it, across every pool in the process.
//!
//! Each blocked pool thread records the tasks it holds (the one it runs
//! and any it runs inline inside it) and what it waits for: one future (a
//! handle's wait, `all`), or several, needing all of them (module-level
//! `wait(ALL_COMPLETED)`) or any one (`FIRST_COMPLETED`,
//! `FIRST_EXCEPTION`, `as_completed`). Before a thread blocks, it asks
//! which of the futures it is about to wait for could never finish if it
//! never resumed: a future it holds cannot; one held by a blocked thread
//! can only once that thread resumes; a thread resumes once what its edge
//! needs can finish, and always if its wait has a deadline. Those that can
//! finish are the least fixpoint of these rules (`stuck`), so every future
//! called stuck really is: a handle's wait on one is refused with
//! [`TaskError::WouldDeadlock`](crate::TaskError::WouldDeadlock), and
//! module-level `wait` leaves such futures out.
//!
//! A shutdown's wait from a pool thread is an edge too, on a pool rather
//! than on futures: it needs every thread of that pool to finish. Each
//! worker's base frame carries its pool's tag (a thread's snapshot lists
//! the pools of its own thread and of those that lent it work), so the
//! pool can finish unless the asker holds it or a blocked thread holding
//! it cannot resume. A shutdown that could never finish
//! does not wait; one that waits refuses, while its edge stands, a
//! handle's wait by a thread of the pool that would close the cycle (and
//! module-level `wait` leaves that handle out, as above).
//!
//! There is one graph for the process ([`WAITS`]), not one per pool: a
//! server's CPU pool and I/O pool can wait on each other's tasks, and a
//! cycle through both must be seen. Task addresses are unique in the
//! process while the tasks live (a held or awaited task is alive: every
//! waiter keeps the handles it waits on for as long as its edge stands).
//!
//! The graph is a `Mutex`-guarded list consulted only on this slow path,
//! by a thread that is about to park anyway: check and insert happen under
//! one lock, so two threads closing a cycle at once cannot both miss it.
//! Addresses are compared, never dereferenced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::future::blocking::{Holds, WaitOn};

/// One blocked thread's wait: what it holds and what it waits for.
struct Edge {
    /// Names the edge for its removal.
    id: u64,
    holds: Holds,
    /// The futures it waits for.
    waits_for: Vec<usize>,
    /// Or the pool it waits for (a shutdown's wait): every blocked thread
    /// holding it must resume, and the asker must not hold it.
    waits_pool: Option<u16>,
    /// Whether it needs every one of them, or resumes once any one is done.
    all: bool,
    /// Whether it resumes whatever happens to them: its wait has a
    /// deadline, or (a long `as_completed`) its targets are not listed.
    resumes: bool,
}

/// The wait-for graph of blocked pool threads.
pub(crate) struct WaitGraph(Mutex<Vec<Edge>>);

/// The process's wait-for graph, shared by every pool.
pub(crate) static WAITS: WaitGraph = WaitGraph(Mutex::new(Vec::new()));

/// Numbers edges (unique in the process: a counter of 64 bits).
static EDGES: AtomicU64 = AtomicU64::new(0);

/// A registered wait; removes its edge when dropped.
pub(crate) struct Registered<'a> {
    graph: &'a WaitGraph,
    id: u64,
}

/// Which blocked threads could resume if a thread holding `holds` never
/// did (see the module's rules), and so which futures could finish.
struct Fixpoint<'a> {
    holds: &'a Holds,
    /// The edges of the blocked threads holding each future. Several
    /// threads can hold one task: its own, and each running work it lent
    /// out and waits for (a scope's tasks, a stolen `join` half, an
    /// `install`ed closure). It finishes only once every one of them
    /// resumes: its thread waits for the lent work, and the lent work
    /// waits where it blocked.
    holders: HashMap<usize, Vec<usize>>,
    /// The edges of the blocked threads holding each pool (a thread of it,
    /// or work one of its threads lent).
    pool_holders: HashMap<u16, Vec<usize>>,
    resumes: Vec<bool>,
}

impl<'a> Fixpoint<'a> {
    fn new(edges: &[Edge], holds: &'a Holds) -> Self {
        let mut holders: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut pool_holders: HashMap<u16, Vec<usize>> = HashMap::new();
        for (i, e) in edges.iter().enumerate() {
            for &h in &e.holds.tasks {
                holders.entry(h).or_default().push(i);
            }
            for &p in &e.holds.pools {
                pool_holders.entry(p).or_default().push(i);
            }
        }
        let mut fix = Fixpoint {
            holds,
            holders,
            pool_holders,
            resumes: edges.iter().map(|e| e.resumes).collect(),
        };
        // Least fixpoint: each pass marks the threads that can resume given
        // those marked so far; at most one pass per edge adds one.
        loop {
            let mut changed = false;
            for (i, e) in edges.iter().enumerate() {
                if fix.resumes[i] {
                    continue;
                }
                let mut targets = e.waits_for.iter();
                let can = if let Some(pool) = e.waits_pool {
                    fix.pool_can_finish(pool)
                } else if e.all {
                    targets.all(|&t| fix.can_finish(t))
                } else {
                    targets.any(|&t| fix.can_finish(t))
                };
                if can {
                    fix.resumes[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        fix
    }

    fn can_finish(&self, f: usize) -> bool {
        !self.holds.tasks.contains(&f)
            && self
                .holders
                .get(&f)
                .is_none_or(|edges| edges.iter().all(|&i| self.resumes[i]))
    }

    /// Whether every thread of the pool tagged `pool` could finish what it
    /// runs: the asker does not hold the pool, and every blocked thread
    /// holding it could resume (a thread that is not blocked finishes by
    /// itself, as far as the graph knows).
    fn pool_can_finish(&self, pool: u16) -> bool {
        !self.holds.pools.contains(&pool)
            && self
                .pool_holders
                .get(&pool)
                .is_none_or(|edges| edges.iter().all(|&i| self.resumes[i]))
    }
}

/// Which of `targets` could never finish if a thread holding `holds`
/// never resumed (see the module's rules).
fn stuck(edges: &[Edge], holds: &Holds, targets: &[usize]) -> Vec<bool> {
    if edges.is_empty() {
        // Nobody else blocks (the usual case): only what the caller holds.
        return targets.iter().map(|t| holds.tasks.contains(t)).collect();
    }
    let fix = Fixpoint::new(edges, holds);
    targets.iter().map(|&t| !fix.can_finish(t)).collect()
}

impl WaitGraph {
    /// Records that the caller, holding `holds`, waits for `target`
    /// (`timed`: with a deadline), unless `target` could never finish
    /// while it waits (then `None`).
    pub(crate) fn register(
        &self,
        holds: Holds,
        target: usize,
        timed: bool,
    ) -> Option<Registered<'_>> {
        let mut edges = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if stuck(&edges, &holds, &[target])[0] {
            return None;
        }
        Some(self.push(&mut edges, holds, vec![target], None, true, timed))
    }

    /// Records that the caller, holding `holds`, waits for every thread of
    /// the pool tagged `pool` to finish (a shutdown's wait; `timed`: with a
    /// deadline), unless one of them could never finish while it waits
    /// (then `None`). Check and insert are under one lock, as for
    /// [`register`](Self::register), so a thread of the pool that then
    /// waits on what the caller holds is refused.
    pub(crate) fn register_pool(
        &self,
        holds: Holds,
        pool: u16,
        timed: bool,
    ) -> Option<Registered<'_>> {
        let mut edges = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !Fixpoint::new(&edges, &holds).pool_can_finish(pool) {
            return None;
        }
        Some(self.push(&mut edges, holds, Vec::new(), Some(pool), true, timed))
    }

    /// For a wait on several futures (`targets`, waited for as `on` says):
    /// which of them could never finish while the caller, holding `holds`,
    /// waits (`stuck`, in `targets`' order), and the caller's edge, listing
    /// the others (with `on.stuck_listed`, all of them), or none if that
    /// leaves nothing to wait for. Check and insert are under one lock, as
    /// for [`register`](Self::register).
    pub(crate) fn watch(
        &self,
        holds: Holds,
        targets: &[usize],
        on: WaitOn,
    ) -> (Option<Registered<'_>>, Vec<bool>) {
        let mut edges = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let stuck = stuck(&edges, &holds, targets);
        let waits_for: Vec<usize> = targets
            .iter()
            .zip(&stuck)
            .filter(|(_, s)| on.stuck_listed || !**s)
            .map(|(t, _)| *t)
            .collect();
        if waits_for.is_empty() {
            return (None, stuck);
        }
        let edge = self.push(&mut edges, holds, waits_for, None, on.all, on.timed);
        (Some(edge), stuck)
    }

    fn push(
        &self,
        edges: &mut Vec<Edge>,
        holds: Holds,
        waits_for: Vec<usize>,
        waits_pool: Option<u16>,
        all: bool,
        resumes: bool,
    ) -> Registered<'_> {
        let id = EDGES.fetch_add(1, Ordering::Relaxed); // a name only
        edges.push(Edge {
            id,
            holds,
            waits_for,
            waits_pool,
            all,
            resumes,
        });
        Registered { graph: self, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut edges = self.graph.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = edges.iter().position(|e| e.id == self.id) {
            edges.swap_remove(i);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::{Holds, WaitGraph, WaitOn};

    /// What a blocked thread waits for, in these tests.
    #[derive(Clone, Copy)]
    enum On {
        All,
        Any,
        Timed,
    }

    /// `on`, with its stuck targets listed in its edge or not.
    fn wait(on: On, stuck_listed: bool) -> WaitOn {
        WaitOn {
            all: !matches!(on, On::Any),
            timed: matches!(on, On::Timed),
            stuck_listed,
        }
    }

    /// On another thread, registers a wait of `holds` for `targets` in
    /// `graph` (every target listed) and keeps it until `leave` is passed.
    fn blocked_elsewhere<'s>(
        s: &'s std::thread::Scope<'s, '_>,
        graph: &'s WaitGraph,
        holds: Vec<usize>,
        targets: Vec<usize>,
        on: On,
        leave: &'s Barrier,
    ) {
        edge_elsewhere(s, leave, move || {
            graph.watch(Holds::tasks(holds), &targets, wait(on, true)).0
        });
    }

    /// On another thread, registers an edge with `register` (which must
    /// take it) and keeps it until `leave` is passed.
    fn edge_elsewhere<'s>(
        s: &'s std::thread::Scope<'s, '_>,
        leave: &'s Barrier,
        register: impl FnOnce() -> Option<super::Registered<'s>> + Send + 's,
    ) {
        let entered = Arc::new(Barrier::new(2));
        let e = entered.clone();
        s.spawn(move || {
            let registered = register();
            assert!(registered.is_some());
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
            blocked_elsewhere(s, &graph, vec![1], vec![10, 3], On::All, &leave);
            let (edge, stuck) = graph.watch(Holds::tasks(vec![10]), &[1, 2], wait(On::All, false));
            assert_eq!(stuck, [true, false]);
            assert!(edge.is_some(), "it still waits for 2");
            drop(edge);
            // A handle's wait on 1 is refused, timed or not.
            assert!(graph.register(Holds::tasks(vec![10]), 1, false).is_none());
            assert!(graph.register(Holds::tasks(vec![10]), 1, true).is_none());
            assert!(graph.register(Holds::tasks(vec![11]), 1, false).is_some());
            leave.wait();
        });
    }

    #[test]
    fn a_wait_for_any_is_stuck_only_when_every_target_is() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(3);
        std::thread::scope(|s| {
            // Task 1 waits for any of 10 (ours) and 3: 3 may finish.
            blocked_elsewhere(s, &graph, vec![1], vec![10, 3], On::Any, &leave);
            let (_, stuck) = graph.watch(Holds::tasks(vec![10]), &[1], wait(On::All, false));
            assert_eq!(stuck, [false]);
            // Now task 3 waits for 10 as well: nothing 1 waits for can end.
            blocked_elsewhere(s, &graph, vec![3], vec![10], On::All, &leave);
            let (edge, stuck) = graph.watch(Holds::tasks(vec![10]), &[1, 3], wait(On::Any, false));
            assert_eq!(stuck, [true, true]);
            assert!(edge.is_none(), "nothing left to wait for");
            leave.wait();
        });
    }

    #[test]
    fn a_thread_in_a_timed_wait_resumes() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(2);
        std::thread::scope(|s| {
            // Task 1 waits for 10 (ours), but with a deadline: it ends.
            blocked_elsewhere(s, &graph, vec![1], vec![10], On::Timed, &leave);
            let (_, stuck) = graph.watch(Holds::tasks(vec![10]), &[1], wait(On::All, false));
            assert_eq!(stuck, [false]);
            assert!(graph.register(Holds::tasks(vec![10]), 1, false).is_some());
            leave.wait();
        });
    }

    #[test]
    fn a_cycle_with_a_way_out_is_not_stuck_and_one_without_is() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(3);
        std::thread::scope(|s| {
            // 1 waits for any of 2 and 5 (5 is free); 2 waits for 1.
            blocked_elsewhere(s, &graph, vec![1], vec![2, 5], On::Any, &leave);
            blocked_elsewhere(s, &graph, vec![2], vec![1], On::All, &leave);
            let (_, stuck) = graph.watch(Holds::tasks(vec![10]), &[1, 2], wait(On::All, false));
            assert_eq!(stuck, [false, false], "5 lets 1 go on, and 2 after it");
            // A thread holding 5 would close it: 1 and 2 wait, through
            // each other, on 5 alone.
            let (_, stuck) = graph.watch(Holds::tasks(vec![5]), &[1, 2], wait(On::All, false));
            assert_eq!(stuck, [true, true]);
            leave.wait();
        });
    }

    #[test]
    fn a_task_held_by_two_threads_is_stuck_if_either_never_resumes() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(3);
        std::thread::scope(|s| {
            // Task 1 lent two scoped tasks, 11 and 12, to other threads:
            // both hold 1. 11 waits for 20; then 12 waits for 30, which is
            // free. A wait on 1 from a thread holding 20 closes 1 -> 11 ->
            // 20 -> 1, whichever of 11 and 12 blocked last.
            blocked_elsewhere(s, &graph, vec![11, 1], vec![20], On::All, &leave);
            blocked_elsewhere(s, &graph, vec![12, 1], vec![30], On::All, &leave);
            // Nothing stops 1 for a thread holding neither 20 nor 30, but
            // one holding 30 stops it through 12 instead.
            let allowed = [(20, false), (20, true), (40, false), (30, false)]
                .map(|(held, timed)| graph.register(Holds::tasks(vec![held]), 1, timed).is_some());
            leave.wait(); // before asserting: a failure must not hang the threads
            assert_eq!(allowed, [false, false, true, false]);
        });
    }

    #[test]
    fn a_stuck_target_still_listed_keeps_the_waiter_in_the_graph() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let leave = Barrier::new(3);
        std::thread::scope(|s| {
            // 1 waits for 10; 10's thread then blocks on 1 anyway (as
            // `as_completed` does), listed: a third wait on 10 is refused.
            blocked_elsewhere(s, &graph, vec![1], vec![10], On::All, &leave);
            let entered = Arc::new(Barrier::new(2));
            let e = entered.clone();
            let g = &graph;
            let l = &leave;
            s.spawn(move || {
                let (edge, stuck) = g.watch(Holds::tasks(vec![10]), &[1], wait(On::Any, true));
                assert_eq!(stuck, [true]);
                assert!(edge.is_some());
                e.wait();
                l.wait();
            });
            entered.wait();
            assert!(graph.register(Holds::tasks(vec![20]), 10, false).is_none());
            leave.wait();
        });
    }

    /// Tasks of pools, as a pool thread's snapshot lists them.
    fn of_pool(tasks: Vec<usize>, pool: u16) -> Holds {
        Holds {
            tasks,
            pools: vec![pool],
        }
    }

    /// What `check` returns while another thread holds the edge that
    /// `register` takes in `graph`.
    fn while_an_edge_stands<'g, R>(
        graph: &'g WaitGraph,
        register: impl FnOnce(&'g WaitGraph) -> Option<super::Registered<'g>> + Send,
        check: impl FnOnce(&'g WaitGraph) -> R,
    ) -> R {
        let leave = Barrier::new(2);
        std::thread::scope(|s| {
            edge_elsewhere(s, &leave, move || register(graph));
            let r = check(graph);
            leave.wait();
            r
        })
    }

    #[test]
    fn a_shutdown_wait_is_refused_where_a_task_of_the_pool_cannot_finish() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        // The caller holds a task of pool 7 (work lent to another pool).
        assert!(
            graph
                .register_pool(of_pool(vec![20, 1], 7), 7, false)
                .is_none()
        );
        assert!(
            graph
                .register_pool(of_pool(vec![20, 1], 7), 8, false)
                .is_some()
        );
        // Task 1 of pool 7 waits for 20; a thread holding 20 shutting pool
        // 7 down would wait for good, timed or not; one holding 30 would
        // not.
        let refused = while_an_edge_stands(
            &graph,
            |g| g.register(of_pool(vec![1], 7), 20, false),
            |g| {
                [(20, false), (20, true), (30, false)].map(|(held, timed)| {
                    g.register_pool(of_pool(vec![held], 9), 7, timed).is_none()
                })
            },
        );
        assert_eq!(refused, [true, true, false]);
    }

    #[test]
    fn a_task_of_a_pool_whose_shutdown_waits_on_it_is_refused_its_wait() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        // The thread holding 20 (of pool 9) waits for pool 7's tasks. A task
        // of pool 7 waiting on 20 closes the cycle; a task of pool 8, or one
        // of no known pool, does not.
        let allowed = while_an_edge_stands(
            &graph,
            |g| g.register_pool(of_pool(vec![20], 9), 7, false),
            |g| {
                [
                    of_pool(vec![1], 7),
                    of_pool(vec![2], 8),
                    Holds::tasks(vec![3]),
                ]
                .map(|holds| g.register(holds, 20, false).is_some())
            },
        );
        assert_eq!(allowed, [false, true, true]);
    }

    #[test]
    fn a_timed_shutdown_wait_resumes() {
        let graph = WaitGraph(Mutex::new(Vec::new()));
        let allowed = while_an_edge_stands(
            &graph,
            |g| g.register_pool(of_pool(vec![20], 9), 7, true),
            |g| g.register(of_pool(vec![1], 7), 20, false).is_some(),
        );
        assert!(allowed);
    }
}
