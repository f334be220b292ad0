//! `futures::task::Spawn` for the pool: `SpawnExt::spawn`,
//! `spawn_with_handle` and every API generic over a spawner run futures on
//! the pool's workers (see [`ThreadPool::spawn_future`]).

use futures_task::{FutureObj, Spawn, SpawnError};

use crate::ThreadPool;

/// Spawns onto the pool's workers; refused with [`SpawnError::shutdown`]
/// once the pool is shut down. The inherent [`ThreadPool::spawn`] takes a
/// closure and wins method lookup: call the trait's as `SpawnExt::spawn(&pool,
/// future)`, or use [`ThreadPool::spawn_future`].
///
/// ```
/// use futures::task::SpawnExt;
/// use concurrent_futures::ThreadPool;
///
/// let pool = ThreadPool::new(2).unwrap();
/// let sum = pool.spawn_with_handle(async { (1..=4).sum::<u32>() }).unwrap();
/// assert_eq!(futures::executor::block_on(sum), 10);
/// pool.shutdown(true, false);
/// assert!(SpawnExt::spawn(&pool, async {}).is_err());
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "futures")))]
impl Spawn for ThreadPool {
    fn spawn_obj(&self, future: FutureObj<'static, ()>) -> Result<(), SpawnError> {
        self.spawn_future(future)
            .map_err(|_| SpawnError::shutdown())
    }

    fn status(&self) -> Result<(), SpawnError> {
        if self.is_shutdown() {
            Err(SpawnError::shutdown())
        } else {
            Ok(())
        }
    }
}
